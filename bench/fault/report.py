"""The results as a Markdown table (what docs/reliability.md shows)."""

from scenarios import SCENARIOS


def _ms(v):
    return "–" if v is None else f"{v / 1000:.2f} s"


def markdown(meta, results):
    lines = [f"`{meta['command']}` — {meta['started']}, {meta['nproc']} cores, "
             f"load average {meta['loadavg_start']} at the start, {meta['loadavg_end']} "
             f"at the end, {meta.get('minutes', '?')} min", ""]
    lines.append("| scenario | published | 202 | other answers | subscribers | delivered "
                 "(per subscriber min / median / max) | lost | dup. after dedup (dup. ids "
                 "dropped) | reordered | wrong | resets (subscribers) | reconnects | "
                 "reconnect p50 / p99 / max | goal |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, r in results.items():
        title = SCENARIOS[k][0]
        if "error" in r:
            lines.append(f"| {k}. {title} | harness failed: {r['error'].splitlines()[0]} "
                         + "| " * 12 + "|")
            continue
        st = dict(r["publish_status"])
        st.pop("202", None)
        other = ", ".join(f"{v}× {_status(s)}" for s, v in sorted(st.items())) or "–"
        d = r["delivered_per_sub"]
        wrong = r["wrong"] + r["wrong_topic"] + r["refused_but_delivered"]
        rc = r["reconnect_ms"]
        goal = "met" if not r["goal_fail"] else "**missed**: " + "; ".join(r["goal_fail"])
        lines.append(
            f"| {k}. {title} | {r['published']} | {r['acked']} | {other} | "
            f"{r['subscribers']} | {r['delivered']} ({d['min']} / {d['p50']} / {d['max']}) | "
            f"{r['lost']} | {r['dup_after_dedup']} ({r['dup_ids']}) | {r['reordered']} | "
            f"{wrong} | {r['resets']} ({r['reset_subs']}) | {rc['n']} | "
            f"{_ms(rc['p50'])} / {_ms(rc['p99'])} / {_ms(rc['max'])} | {goal} |")
    lines.append("")
    for k, r in results.items():
        if "error" in r:
            continue
        notes = []
        if r.get("exits"):
            notes.append("drains: " + ", ".join(
                f"{e['node']} exit {e['exit']} in {e['drain_s']} s" for e in r["exits"]))
        if r.get("outages"):
            notes.append("answers during the outages: " + "; ".join(
                f"{w}: " + (", ".join(f"{v}× {_status(s)}" for s, v in sorted(st.items()))
                            or "none")
                for w, st in r["outages"].items()))
        if r.get("resets_after"):
            told = r.get("told_after", {})
            notes.append("after " + ", ".join(
                f"{m}: {v} resets, {told.get(m, '?')} subscribers told into a new epoch"
                for m, v in r["resets_after"].items()))
        if r.get("missed_told"):
            notes.append(f"{r['missed_told']} (subscriber, acknowledged event) pairs not "
                         "delivered and covered by a sidecast.reset")
        if r.get("epoch_switch_no_reset"):
            notes.append(f"{r['epoch_switch_no_reset']} streams went on into a new epoch "
                         "without a reset")
        if r.get("unknown_delivered"):
            notes.append(f"{r['unknown_delivered']} deliveries of events whose publish "
                         "got no 202 (timeout or outcome unknown)")
        if r.get("unavailable"):
            notes.append(f"{r['unavailable']} sidecast.unavailable answers")
        if r.get("non200"):
            notes.append(f"{r['non200']} non-200 answers to a subscribe")
        if r.get("soak"):
            s = r["soak"]
            ld = s.get("load")
            load = (f"1-minute load average over the soak {ld['min']:.2f} / {ld['mean']:.2f} / "
                    f"{ld['max']:.2f} (min / mean / max); " if ld else "")
            notes.append(f"soak: {s['streams']} streams, {s['minutes']} min, {s['churned']} "
                         f"reconnects forced, {s['samples']} samples; {load}" + "; ".join(
                             f"{n}: RSS {v['rss_first_kib'] / 1024:.1f} → "
                             f"{v['rss_last_kib'] / 1024:.1f} MiB (slope "
                             f"{_num(v['rss_slope_kib_per_min'])} KiB/min), open files "
                             f"{v['fds_first']} → {v['fds_last']} (slope "
                             f"{_num(v['fds_slope_per_min'])}/min)"
                             for n, v in s["by_process"].items()))
        notes.append(f"{r['seconds']} s, load average {r['loadavg_start']} → "
                     f"{r['loadavg_end']}, connect p99 {_ms(r['connect_ms']['p99'])}")
        lines.append(f"- {k}: " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def _status(s):
    """The publisher's answer codes in words where they are not HTTP's: 0
    is a request sent that got no answer (it may have been published), -1
    one that no replica accepted a connection for (it reached no one)."""
    return {"0": "no answer", "-1": "no connection"}.get(s, s)


def _num(v):
    return "–" if v is None else f"{v:+.1f}"
