"""Scenario (f), pass-through: wrk against the origin directly and through
each proxy, at each concurrency, with the CPU of every side, and nginx
`proxy_pass` as the yardstick that the other rows are divided by.

The issue this answers asks that a proxied request cost sidecast no more
CPU than nginx's (at most 1.25x, measured in the same run), with req/s at
least 0.9x nginx's and p99 within nginx's + 0.5 ms, at -c64 and -c256. A
ratio taken from two different runs on a shared machine says little, so
every row of a run is measured in that run, one system after the other,
and `rounds` > 1 repeats the whole sequence and keeps each row's median.
"""

import re
import resource
import statistics
import subprocess
import time

from . import proc

# the yardstick row: the nchan system's nginx, whose `location /` is a plain
# `proxy_pass` with an upstream keepalive pool
YARDSTICK = "nchan"
# the bounds, shown beside the ratios (judged on a full run only)
MAX_CPU_RATIO = 1.25
MIN_RPS_RATIO = 0.9
MAX_P99_EXTRA_MS = 0.5

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(out):
    """The figures of one `wrk --latency` report."""
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["req_per_s"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    r["requests"] = int(m.group(1)) if m else None
    r["wrk_s"] = _ms(m.group(2) + m.group(3)) / 1e3 if m else None
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", out, re.M)
        r[f"p{q}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    r["socket_errors"] = m.group(1).strip() if m else ""
    return r


def wrk_argv(port, conns, secs):
    # -t2: one wrk thread per core, as before; a 2 s request timeout so a
    # stalled proxy shows as timeouts instead of stretching the run
    return ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--timeout", "2s", "--latency",
            f"http://127.0.0.1:{port}/"]


def wrk(ctx, name, port, conns, secs, pids, origin_pids):
    """One bounded wrk run with the CPU used meanwhile by the system under
    test (from /proc), the origin, and wrk itself (getrusage)."""
    cpu0 = proc.cpu_seconds(pids())
    ocpu0 = proc.cpu_seconds(origin_pids())
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(wrk_argv(port, conns, secs), capture_output=True, text=True,
                         timeout=secs + 60).stdout
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = dict(parse_wrk(out), system=name, conns=conns, duration_s=secs,
             sut_cpu_s=proc.cpu_seconds(pids()) - cpu0,
             origin_cpu_s=proc.cpu_seconds(origin_pids()) - ocpu0,
             gen_cpu_s=(ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime))
    if r["req_per_s"] is None:
        raise RuntimeError(f"wrk printed no result against {name}:\n{out[-2000:]}")
    # wrk's own count of completed requests, not req/s x the nominal duration
    done = r["requests"] or r["req_per_s"] * secs
    r["proxy_cpu_us_per_request"] = 1e6 * r["sut_cpu_s"] / done if done else None
    cpu = "" if name == "direct" else f"{r['proxy_cpu_us_per_request'] or 0:.0f} µs CPU/request, "
    ctx.log(f"  {name} -c{conns}: {r['req_per_s']:,.0f} req/s, {cpu}"
            f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms"
            f"{' non-2xx ' + str(r['non_2xx']) if r['non_2xx'] else ''} {r['socket_errors']}")
    return r


MEDIAN_KEYS = ("req_per_s", "requests", "p50_ms", "p99_ms", "sut_cpu_s", "origin_cpu_s",
               "gen_cpu_s", "proxy_cpu_us_per_request")


def _median(runs):
    """One row from the rounds of a (system, concurrency): each figure's
    median, errors and non-2xx summed, the rounds kept beside."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"], "rounds": runs}
    row = {k: statistics.median([r[k] for r in ok if r.get(k) is not None])
           if any(r.get(k) is not None for r in ok) else None for k in MEDIAN_KEYS}
    row.update(system=ok[0]["system"], conns=ok[0]["conns"], duration_s=ok[0]["duration_s"],
               non_2xx=sum(r["non_2xx"] for r in ok),
               socket_errors="; ".join(sorted({r["socket_errors"] for r in ok
                                               if r["socket_errors"]})),
               rounds=runs if len(runs) > 1 else [])
    return row


def add_ratios(rows):
    """Divides each row of one concurrency by the direct row and by nginx's."""
    direct = (rows.get("direct") or {}).get("req_per_s")
    ng = rows.get(YARDSTICK)
    ng = ng if ng and "error" not in ng else None
    for name, r in rows.items():
        if "error" in r:
            continue
        r["ratio"] = r["req_per_s"] / direct if direct and r["req_per_s"] else None
        if ng is None or name == "direct":
            continue
        cpu, ng_cpu = r.get("proxy_cpu_us_per_request"), ng.get("proxy_cpu_us_per_request")
        r["cpu_vs_nginx"] = cpu / ng_cpu if cpu and ng_cpu else None
        r["rps_vs_nginx"] = (r["req_per_s"] / ng["req_per_s"]
                             if r["req_per_s"] and ng["req_per_s"] else None)
        r["p99_minus_nginx_ms"] = (r["p99_ms"] - ng["p99_ms"]
                                   if r["p99_ms"] is not None and ng["p99_ms"] is not None
                                   else None)


class PtPlan:
    """What (f) runs: concurrencies, seconds per wrk run, rounds, and which
    systems get a profile."""

    def __init__(self, conns, secs, rounds, profile=(), profile_s=5, warmup_s=1):
        self.conns = conns
        self.secs = secs
        self.rounds = rounds
        self.profile = set(profile)
        self.profile_s = profile_s
        self.warmup_s = warmup_s


def run_passthrough(ctx, origin, systems, results, pt, profiler=None):
    """wrk direct, then through each system (started afresh for each round,
    warmed up for `pt.warmup_s`, then measured at every concurrency in
    turn). A system named in `pt.profile` is profiled once, at the lowest
    concurrency, in a wrk run of its own after its measured ones, so that
    perf's cost is in none of the figures."""
    ctx.log(f"(f) pass-through: wrk GET / at -c{', -c'.join(map(str, pt.conns))}, "
            f"{pt.secs} s each, {pt.rounds} round(s)")
    opids = origin.proc.pids
    runs = {c: {} for c in pt.conns}
    profiles = {}
    for rnd in range(pt.rounds):
        if pt.rounds > 1:
            ctx.log(f"  round {rnd + 1}/{pt.rounds}")
        for c in pt.conns:
            runs[c].setdefault("direct", []).append(
                wrk(ctx, "direct", origin.port, c, pt.secs, lambda: [], opids))
        for s in systems:
            try:
                s.start()
                time.sleep(0.5)
                # fills upstream pools and warms caches; not measured
                subprocess.run(wrk_argv(s.proxy_port, max(pt.conns), pt.warmup_s),
                               capture_output=True, timeout=pt.warmup_s + 60)
                for c in pt.conns:
                    runs[c].setdefault(s.name, []).append(
                        wrk(ctx, s.name, s.proxy_port, c, pt.secs, s.pids, opids))
                if profiler and s.name in pt.profile and rnd == pt.rounds - 1:
                    s.stop()
                    try:
                        profiles[s.name] = profiler.profile(ctx, s, min(pt.conns),
                                                            pt.profile_s)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        ctx.log(f"  profile of {s.name} failed: {e}")
                        profiles[s.name] = {"error": str(e)}
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                ctx.log(f"  {s.name} failed: {e}")
                for c in pt.conns:
                    lst = runs[c].setdefault(s.name, [])
                    if len(lst) <= rnd:
                        lst.append({"error": str(e)})
            finally:
                s.stop()
    out = results["f"]
    for c in pt.conns:
        rows = {name: _median(rs) for name, rs in runs[c].items()}
        add_ratios(rows)
        out[f"c{c}"] = rows
    done = [n for n, p in profiles.items() if "error" not in p]
    if profiler and "sidecast" in done:
        for name in done:
            if name == "sidecast":
                continue
            try:
                profiles[f"{name} → sidecast"] = profiler.diff(ctx, profiles[name],
                                                               profiles["sidecast"], name)
            except (OSError, subprocess.SubprocessError) as e:
                ctx.log(f"  differential profile failed: {e}")
    return profiles


def guard_lines(res):
    """The ratio of each sidecast row to nginx's at each concurrency, one
    clearly labelled line each, for a smoke run to show a regression at a
    glance (it judges nothing)."""
    lines = []
    for key, rows in sorted((res.get("f") or {}).items(), key=lambda kv: int(kv[0][1:])):
        ng = rows.get(YARDSTICK)
        for name in sorted(n for n in rows if n.startswith("sidecast")):
            r = rows[name]
            head = f"PASS-THROUGH RATIO TO NGINX (-{key}) {name}:"
            if "error" in r:
                lines.append(f"{head} failed ({r['error'][:80]})")
            elif not ng or "error" in ng:
                lines.append(f"{head} nginx `proxy_pass` not measured in this run")
            else:
                def x(v):
                    return "–" if v is None else f"{v:.2f}x"
                p99 = r.get("p99_minus_nginx_ms")
                lines.append(
                    f"{head} CPU/request {x(r.get('cpu_vs_nginx'))} nginx's "
                    f"({r['proxy_cpu_us_per_request']:.0f} vs "
                    f"{ng['proxy_cpu_us_per_request']:.0f} µs), "
                    f"req/s {x(r.get('rps_vs_nginx'))} nginx's "
                    f"({r['req_per_s']:,.0f} vs {ng['req_per_s']:,.0f}), "
                    f"p99 {'–' if p99 is None else f'{p99:+.2f}'} ms vs nginx's "
                    f"(issue: ≤ {MAX_CPU_RATIO}x, ≥ {MIN_RPS_RATIO}x, ≤ +{MAX_P99_EXTRA_MS} ms)")
    return lines
