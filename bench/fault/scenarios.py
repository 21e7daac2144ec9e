"""The five fault scenarios. Each starts its own Redis (when it has one)
and sidecast processes on free loopback ports, runs for a bounded time, and
returns what analyse() found plus what the scenario itself observed."""

import signal
import time

from harness import Run, log
from procs import wait_until

FULL = {"subs": 1000, "rate": 100, "topics": 20, "per_sub": 2, "procs": 4, "warm": 10,
        "settle": 10, "outage": 10, "soak_streams": 10000, "soak_rate": 10,
        "soak_topics": 100, "soak_minutes": 30, "soak_history_ttl": "1m"}
QUICK = {"subs": 150, "rate": 40, "topics": 10, "per_sub": 2, "procs": 2, "warm": 3,
         "settle": 3, "outage": 4, "soak_streams": 300, "soak_rate": 10, "soak_topics": 20,
         "soak_minutes": 0.5, "soak_history_ttl": "1m"}


def _drain_and_restart(run, node, grace_s):
    t = time.monotonic()
    node.proc.signal(signal.SIGTERM)
    code = node.proc.wait(grace_s + 10)
    took = time.monotonic() - t
    run.note(f"{node.name}: SIGTERM, exited {code} after {took:.1f}s")
    node.proc.kill()
    node.start(wait_ready=False)
    node.wait_ready()
    run.note(f"{node.name}: restarted on the same ports, ready "
             f"{time.monotonic() - t:.1f}s after the signal")
    return code, took


def rolling(binary, work, p):
    """1. Every replica in turn gets SIGTERM (drain: delay 0s, grace 5s) and
    is restarted on its ports while events are published round-robin."""
    run = Run(binary, work, "1-rolling")
    try:
        run.start_redis()
        run.start_nodes(3, grace="5s")
        topics = run.topics(p["topics"])
        run.start_subscribers(p["subs"], topics, p["per_sub"], p["procs"])
        run.start_publisher(p["rate"], topics)
        time.sleep(p["warm"])
        exits = []
        for node in run.nodes:
            code, took = _drain_and_restart(run, node, 5)
            exits.append({"node": node.name, "exit": code, "drain_s": round(took, 1)})
            run.await_open(30)
            time.sleep(p["settle"])
        res = run.finish()
        res["exits"] = exits
        checks = _goals(res, reconnect_p99_ms=5000)
        bad = [f"{e['node']} exited {e['exit']}" for e in exits if e["exit"] != 0]
        checks.append(("every drain exits 0", not bad, ", ".join(bad) or "all exited 0"))
        return _close(res, checks)
    finally:
        run.close()


def sigkill(binary, work, p):
    """2. One replica of three is SIGKILLed (no drain); its subscribers
    resume on the others from Redis; then it is started again."""
    run = Run(binary, work, "2-sigkill")
    try:
        run.start_redis()
        run.start_nodes(3)
        topics = run.topics(p["topics"])
        run.start_subscribers(p["subs"], topics, p["per_sub"], p["procs"])
        run.start_publisher(p["rate"], topics)
        time.sleep(p["warm"])
        victim = run.nodes[1]
        victim.proc.signal(signal.SIGKILL)
        victim.proc.wait(5)
        run.note(f"{victim.name}: SIGKILL")
        run.await_open(30)
        run.note("every subscriber streams again")
        time.sleep(p["settle"])
        victim.proc.kill()
        victim.start()
        run.note(f"{victim.name}: restarted")
        time.sleep(p["settle"])
        res = run.finish()
        return _close(res, _goals(res, reconnect_p99_ms=5000))
    finally:
        run.close()


def _cluster_state(run):
    return [n.readyz()[1].get("cluster") for n in run.nodes]


def _wait_connected(run, timeout=30):
    wait_until("every replica connected to Redis",
               lambda: all(c == "connected" for c in _cluster_state(run)), timeout,
               every=0.1)


def _window(acks, t_from, t_to):
    """The answers to publishes sent in [t_from, t_to) ms, by status. A 202
    among them is no failure by itself: every 202 is checked as delivered."""
    out = {}
    for a in acks:
        if a.t_sent is not None and t_from <= a.t_sent < t_to:
            k = str(a.status) + (f"/{a.outcome}" if a.status == 503 else "")
            out[k] = out.get(k, 0) + 1
    return out


def redis_outage(binary, work, p):
    """3. Redis frozen (SIGSTOP) then killed for the outage and restarted with
    its append-only file, then killed and restarted empty (a data loss)."""
    run = Run(binary, work, "3-redis")
    try:
        run.start_redis()
        run.start_nodes(3)
        topics = run.topics(p["topics"])
        run.start_subscribers(p["subs"], topics, p["per_sub"], p["procs"])
        run.start_publisher(p["rate"], topics)
        time.sleep(p["warm"])
        windows = {}
        # a: frozen
        t = run.now()
        run.redis.proc.signal(signal.SIGSTOP)
        run.note(f"redis: SIGSTOP for {p['outage']}s")
        time.sleep(p["outage"])
        run.redis.proc.signal(signal.SIGCONT)
        t_end = run.now()
        run.note("redis: SIGCONT")
        _wait_connected(run)
        windows["frozen"] = (t, t_end)
        time.sleep(p["settle"])
        # b: killed, restarted with its data
        t = run.now()
        run.redis.proc.signal(signal.SIGKILL)
        run.redis.proc.wait(5)
        run.note(f"redis: SIGKILL, down for {p['outage']}s")
        time.sleep(p["outage"])
        run.redis.proc.kill()
        run.redis.start()
        t_end = run.now()
        run.note("redis: restarted with its append-only file")
        _wait_connected(run)
        run.note("every replica connected again")
        windows["killed"] = (t, t_end)
        time.sleep(p["settle"])
        # c: killed, restarted empty, while one replica lags behind the log
        # (paused: a stall, CPU starvation), so that events acknowledged
        # through the others are ones it has not read when the data goes
        lagging = run.nodes[2]
        lagging.proc.signal(signal.SIGSTOP)
        run.note(f"{lagging.name}: SIGSTOP (lags behind the log)")
        time.sleep(1)
        run.redis.proc.signal(signal.SIGKILL)
        run.redis.proc.wait(5)
        run.redis.proc.kill()
        run.redis.wipe()
        run.mark("data_loss")
        run.redis.start()
        run.note("redis: SIGKILL, data removed, restarted empty")
        lagging.proc.signal(signal.SIGCONT)
        run.note(f"{lagging.name}: SIGCONT")
        _wait_connected(run)
        run.note("every replica connected again")
        time.sleep(p["settle"] * 2)
        res = run.finish()
        res["outages"] = {k: _window(run.pub.acks, a, b) for k, (a, b) in windows.items()}
        checks = _goals(res, reconnect_p99_ms=None)
        # a 202 sent while Redis was down is checked as delivered by "0 lost"
        down = res["outages"]["killed"]
        odd = {k: v for k, v in down.items() if k != "202" and not k.startswith("503")}
        checks.append(("while Redis is down, publishes are refused with 503",
                       not odd and any(k.startswith("503") for k in down),
                       ", ".join(f"{v}x {k}" for k, v in sorted(down.items())) or "none sent"))
        told = res["told_after"].get("data_loss", 0)
        checks.append(("after the data loss every subscriber gets sidecast.reset into the "
                       "new epoch", told >= res["subscribers"],
                       f"{told} of {res['subscribers']} subscribers told"))
        return _close(res, checks)
    finally:
        run.close()


def single_kill(binary, work, p):
    """4. One sidecast without Redis is SIGKILLed and restarted: history was
    memory, so subscribers must be told with a reset."""
    run = Run(binary, work, "4-single")
    try:
        run.start_nodes(1, cluster=False)
        topics = run.topics(p["topics"])
        run.start_subscribers(p["subs"], topics, p["per_sub"], p["procs"])
        run.start_publisher(p["rate"], topics)
        time.sleep(p["warm"])
        node = run.nodes[0]
        node.proc.signal(signal.SIGKILL)
        node.proc.wait(5)
        run.mark("restart")
        node.proc.kill()
        node.start()
        run.note(f"{node.name}: SIGKILL, restarted on the same ports")
        run.await_open(30)
        time.sleep(p["settle"])
        res = run.finish()
        checks = _goals(res, reconnect_p99_ms=None)
        told = res["told_after"].get("restart", 0)
        checks.append(("after the restart every subscriber gets sidecast.reset",
                       told >= res["subscribers"],
                       f"{told} of {res['subscribers']} subscribers told"))
        return _close(res, checks)
    finally:
        run.close()


def _slope(points):
    """Least-squares slope of (minute, value) points, per minute."""
    pts = [(x, y) for x, y in points if y is not None]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def soak(binary, work, p):
    """5. Many streams for a long time, 1% of them reconnecting each
    minute, sidecast's RSS and open files sampled every 10 s."""
    run = Run(binary, work, "5-soak")
    try:
        run.start_redis()
        # history is meant to grow until history_ttl (1h by default) or its
        # bounds: with the default, 30 minutes at 10 events/s is RSS rising
        # by design. A short ttl makes history steady within the first
        # minutes, so what still grows after them is a leak.
        run.start_nodes(3, history_ttl=p["soak_history_ttl"])
        topics = run.topics(p["soak_topics"])
        procs = max(2, -(-p["soak_streams"] // 2500))
        run.start_subscribers(p["soak_streams"], topics, 2, procs, batch=200)
        run.start_publisher(p["soak_rate"], topics)
        t_start = time.monotonic()
        total_s = p["soak_minutes"] * 60
        samples = []
        loads = []  # the 1-minute load average at each sample: the machine is shared
        churned = 0
        per_tick = p["soak_streams"] / 100 / 6  # 1% a minute, every 10 s
        owed = 0.0
        tick = 0
        while time.monotonic() - t_start < total_s:
            tick += 1
            target = t_start + tick * 10
            time.sleep(max(0, min(target, t_start + total_s) - time.monotonic()))
            minute = (time.monotonic() - t_start) / 60
            samples.append((round(minute, 2), run.sample()))
            with open("/proc/loadavg") as f:
                loads.append(float(f.read().split()[0]))
            owed += per_tick
            k = int(owed)
            owed -= k
            # spread exactly k over the subscriber processes (rounding up
            # in each of them made it 1.1% a minute instead of 1%)
            nw = len(run.workers)
            for j, w in enumerate(run.workers):
                share = k // nw + (j < k % nw)
                if share:
                    churned += w.ask({"cmd": "churn", "count": share})["churned"]
            if tick % 6 == 0:
                st = run.status()
                log(f"  soak {minute:.1f} min: {st['open']}/{st['subs']} open, "
                    f"{churned} reconnected, load {loads[-1]:.2f}, " + ", ".join(
                        f"{k} {v[0] // 1024} MiB {v[1]} fds" for k, v in samples[-1][1].items()))
        res = run.finish(settle_timeout=60)
        names = sorted({k for _, s in samples for k in s})
        # the slope leaves out the first two minutes (streams settling,
        # history filling up to its ttl)
        later = [(m, s) for m, s in samples if m >= 2] or samples
        res["soak"] = {
            "minutes": p["soak_minutes"], "streams": p["soak_streams"], "churned": churned,
            "samples": len(samples),
            "load": {"min": min(loads), "mean": round(sum(loads) / len(loads), 2),
                     "max": max(loads)} if loads else None,
            "by_process": {n: {
                "rss_first_kib": next((s[n][0] for _, s in samples if n in s), None),
                "rss_last_kib": next((s[n][0] for _, s in reversed(samples) if n in s), None),
                "rss_slope_kib_per_min": _slope([(m, s[n][0]) for m, s in later if n in s]),
                "fds_first": next((s[n][1] for _, s in samples if n in s), None),
                "fds_last": next((s[n][1] for _, s in reversed(samples) if n in s), None),
                "fds_slope_per_min": _slope([(m, s[n][1]) for m, s in later if n in s]),
            } for n in names},
            "series": samples,
        }
        checks = _goals(res, reconnect_p99_ms=None)
        checks.append(_up(samples))
        checks.append(_flat(res["soak"]["by_process"], later))
        return _close(res, checks)
    finally:
        run.close()


def _up(samples):
    """Every process sampled at the start is still there at every later
    sample: a soak whose Redis or replica died half-way measured something
    else for the rest of it."""
    gone = {}
    names = set(samples[0][1]) if samples else set()
    for m, s in samples:
        for n in names - set(s):
            gone.setdefault(n, m)
    return ("every sidecast and Redis stays up", not gone,
            "; ".join(f"{n} gone at minute {m:.1f}" for n, m in sorted(gone.items()))
            or "all up")


def _flat(by_process, later):
    """RSS and open files flat after the first two minutes: what each process
    would grow over the measured span at its slope stays under 10% of its
    RSS and 2% (+ 10) of its open files. A leak of one stream's state per
    reconnect shows as open files growing with the reconnects."""
    span = (later[-1][0] - later[0][0]) if len(later) > 1 else 0
    bad = []
    for n, v in by_process.items():
        rss = [s[n][0] for _, s in later if n in s]
        fds = [s[n][1] for _, s in later if n in s]
        if not rss:
            continue
        rss_growth = (v["rss_slope_kib_per_min"] or 0) * span
        fds_growth = (v["fds_slope_per_min"] or 0) * span
        if rss_growth > 0.10 * (sum(rss) / len(rss)):
            bad.append(f"{n} RSS +{rss_growth / 1024:.1f} MiB over {span:.1f} min")
        if fds_growth > 0.02 * (sum(fds) / len(fds)) + 10:
            bad.append(f"{n} open files +{fds_growth:.0f} over {span:.1f} min")
    return ("RSS and open files flat", not bad, "; ".join(bad) or "flat")


def _goals(res, reconnect_p99_ms):
    """The goals every scenario shares, one check each: (goal, met, what
    was found). A scenario adds its own; `goal_fail` lists the missed ones."""
    wrong = res["wrong"] + res["wrong_topic"] + res["refused_but_delivered"] \
        + res.get("reset_behind", 0)
    checks = [
        ("0 lost", res["lost"] == 0,
         f"{res['lost']} lost ({res['lost_events']} events, {res['lost_subs']} subscribers)"),
        ("0 reordered", res["reordered"] == 0, f"{res['reordered']} reordered"),
        ("0 duplicated after deduplication by id", res["dup_after_dedup"] == 0,
         f"{res['dup_after_dedup']} duplicated after deduplication by id"),
        ("0 wrong events", wrong == 0,
         f"{res['wrong']} wrong ids, {res['wrong_topic']} events of another topic, "
         f"{res['refused_but_delivered']} delivered although refused with outcome "
         f"not_published, {res.get('reset_behind', 0)} resets behind the stream"),
        ("no stream goes on into a new epoch without a reset",
         res["epoch_switch_no_reset"] == 0,
         f"{res['epoch_switch_no_reset']} streams went on into a new epoch untold"),
        ("every subscriber connected and caught up",
         res["never_connected"] == 0 and res.get("caught_up", 0) >= res["subscribers"],
         f"{res['never_connected']} never connected; {res.get('caught_up', 0)} of "
         f"{res['subscribers']} reached the newest acknowledged id"),
    ]
    if reconnect_p99_ms is not None:
        p99 = res["reconnect_ms"]["p99"]
        checks.append((f"reconnect p99 <= {reconnect_p99_ms / 1000:g} s",
                       p99 is None or p99 <= reconnect_p99_ms, f"reconnect p99 {p99} ms"))
    return checks


def _close(res, checks):
    res["goals"] = [{"goal": g, "met": bool(ok), "found": found} for g, ok, found in checks]
    res["goal_fail"] = [f"{g}: {found}" for g, ok, found in checks if not ok]
    return res


SCENARIOS = {"1": ("rolling restart (SIGTERM drain, 3 replicas)", rolling),
             "2": ("SIGKILL of one replica of 3", sigkill),
             "3": ("Redis frozen, killed, then emptied", redis_outage),
             "4": ("single node SIGKILLed and restarted", single_kill),
             "5": ("soak", soak)}

__all__ = ["SCENARIOS", "FULL", "QUICK", "log"]
