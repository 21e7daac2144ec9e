"""(h) GRIP holds: sidecast and Pushpin, each in front of the same GRIP app.

The app is the origin nginx's GRIP_PATH (`GET /stream`): `Grip-Hold:
stream`, `Grip-Channel: bench` and a short initial body. For each stream
count, each system is started afresh with nothing held (sidecast with
`[upstream] grip = true`, Pushpin with the harness's usual config), the
streams are opened through it, and once they have settled its memory is read
(RSS and PSS over all its processes, by process name too). Then `count`
items are published at `rate`/s to its GRIP publish endpoint (sidecast:
`POST /publish/` on its publish listener; Pushpin: `POST /publish/` on its
HTTP control port), each an `http-stream` item whose content is SSE-shaped,
`data: p=PHASE s=SEQ f=FLOOR t=SEND_US\\n\\n`, so that the load generator's
SSE reader finds the sequence number and publish time in the raw chunk.
The stream counts alternate between the systems (2,000: sidecast, Pushpin;
10,000: sidecast, Pushpin), so drift in the machine's load falls on both.

Beside them, as a reference measured in the same run, sidecast's own events
streams (`GET /events?topic=bench`, the same items published to `POST
/publish`): what a held GRIP stream costs sidecast over one of its own.
"""

import math
import os
import subprocess

from . import proc
from .load import run_phase
from .report import f, run_lines, table
from .scenarios import group, held_memory
from .systems import GRIP_PATH, Pushpin, Sidecast

SYSTEMS = ("sidecast", "pushpin")
# the reference row: sidecast's own events streams under the same load
REFERENCE = "sidecast-events"
ROWS = ("sidecast", "pushpin", REFERENCE)
LABELS = {"sidecast": "sidecast", "pushpin": "pushpin",
          REFERENCE: "sidecast, own events stream (reference)"}
# streams per `loadgen sub` process: well under the 20,000 open files a
# process may have here, and the same split for both systems
PER_SUB = 2500


def _as_grip(system):
    """The same system, its streams opened on the app's held path and its
    items published in GRIP's format to its `POST /publish/`."""
    system.sub_path = GRIP_PATH
    system.pub_kind = "grip"
    system.pub_path = "/publish/"
    return system


def _measure(ctx, system, subs, base, opening):
    """Memory of the held streams, then the items, delivered and timed."""
    h = ctx.plan.h
    mem = held_memory(ctx, system, subs, base)
    held = proc.by_name(system.pids())
    r = run_phase(ctx.loadgen, system, subs, ctx.next_phase(), h["count"], h["rate"],
                  h["wait_s"])
    after = proc.by_name(system.pids())
    phase_cpu = {k: after[k][1] - v[1] for k, v in held.items() if k in after}
    ctx.log(f"  {system.name}: RSS/stream {f(mem['rss_per_stream_kib'], 2)} KiB; "
            f"{r['delivered']}/{r['expected']} delivered, {r['complete_streams']} streams "
            f"complete, ooo {r['out_of_order']}, p50 {r['p50_ms']} p99 {r['p99_ms']} "
            f"max {r['max_ms']} ms, {f(r['sut_cpu_us_per_delivery'])} µs CPU/delivery")
    return dict(opening, **mem, by_name_held=held, phase_cpu_by_name=phase_cpu, items=r)


def run_grip(ctx, origin, sidecast_binary, names, results):
    """Every stream count of the plan against each of the systems named."""
    h = ctx.plan.h
    work = os.path.join(ctx.work, "grip")
    os.makedirs(work, exist_ok=True)
    out = results["h"]
    most = max(h["streams"]) + 200
    systems = []
    if "sidecast" in names:
        systems.append(_as_grip(Sidecast(work, origin, sidecast_binary, most, grip=True)))
    if "pushpin" in names:
        systems.append(_as_grip(Pushpin(work, origin)))
    if "sidecast" in names:
        systems.append(Sidecast(work, origin, sidecast_binary, most, name=REFERENCE))
    out["versions"] = {s.name: s.version() for s in systems if s.name != REFERENCE}
    out["notes"] = {s.name: s.notes for s in systems}
    for n in h["streams"]:
        for s in systems:
            ctx.log(f"(h) {s.name}: {n} held streams, {h['count']} items at {h['rate']}/s")
            try:
                r = group(ctx, s, n, max(2, math.ceil(n / PER_SUB)),
                          lambda subs, base, o, s=s: _measure(ctx, s, subs, base, o))
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
                ctx.log(f"  {s.name} failed: {e}")
                r = {"error": str(e)}
            out.setdefault(s.name, {})[str(n)] = r


def _row(name, r):
    label = f"**{LABELS[name]}**"
    if "error" in r:
        return [label, f"failed: {r['error'][:200]}"] + [""] * 16
    p = r["items"]
    ooo = f(p["out_of_order"]) + (f" (+{f(p['reordered_concurrent'])} concurrent)"
                                  if p["reordered_concurrent"] else "")
    return [label, f"{f(r['established'])} / {f(r['asked'])}", f(r["connect_s"]), f(r["open"]),
            f"{r['rss_base_kib'] / 1024:.1f} → {r['rss_kib'] / 1024:.1f}",
            f(r["rss_per_stream_kib"], 2), f(r["pss_per_stream_kib"], 2),
            f"{f(p['delivered'])} / {f(p['expected'])}",
            f"{f(p['complete_streams'])} / {f(p['streams'])}", f(p["duplicates"]), ooo,
            f(p["p50_ms"], 2), f(p["p99_ms"], 2), f(p["max_ms"], 1), f(p["sut_cpu_s"], 2),
            f(p["sut_cpu_us_per_delivery"], 1),
            f"{f(p['publish_rate'], 1)} ({f(p['publish_p99_ms'], 1)})", f(p["gen_cpu_s"], 2)]


def _processes(name, r):
    """One system's processes at its largest stream count: name (how many),
    RSS before → held, CPU seconds during the items."""
    before, held, cpu = r["by_name_before"], r["by_name_held"], r["phase_cpu_by_name"]
    parts = []
    for k in sorted(held, key=lambda k: -held[k][0]):
        b = before.get(k, [0, 0.0, 0])[0] / 1024
        parts.append(f"`{k}`{f' ×{held[k][2]}' if held[k][2] > 1 else ''} "
                     f"{b:.1f} → {held[k][0] / 1024:.1f} MiB, {cpu.get(k, 0.0):.2f} CPU s")
    return f"**{name}**: " + "; ".join(parts)


def markdown(res, meta, plan):
    """The (h) section of BENCHMARKS.md: one row per stream count and system."""
    h = plan["h"]
    head = ["system", "streams opened / asked", "opened in s", "open at the items",
            "RSS before → held (MiB)",
            "RSS / held stream (KiB)", "PSS / held stream (KiB)", "items delivered",
            "streams with every item", "dup", "out of order", "p50 ms", "p99 ms", "max ms",
            "CPU s (items)", "CPU µs / delivery", "publish /s (p99 ms)", "gen CPU s"]
    names = [n for n in ROWS if n in res]
    out = run_lines(meta) + [
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in res.get("versions", {}).items())
        + ".",
        "",
        "Configuration: " + "; ".join(f"**{k}**: {v}" for k, v in res.get("notes", {}).items())
        + ".",
        ""]
    for n in h["streams"]:
        rows = [_row(name, res[name].get(str(n), {"error": "not run"})) for name in names]
        out += [f"### (h) {f(n)} GRIP-held streams, {h['count']} items at {h['rate']}/s "
                "through each system's `POST /publish/`", "", table(head, rows), ""]
    top = str(max(h["streams"]))
    lines = [_processes(name, res[name][top]) for name in names
             if name != REFERENCE and "error" not in res[name].get(top, {"error": ""})]
    if lines:
        out += [f"Processes measured, at {f(int(top))} streams (RSS before → held; CPU "
                "during the items):", ""] + [f"- {line}" for line in lines] + [""]
    measured = [(name, int(n), r) for name in names
                for n, r in sorted(res[name].items(), key=lambda x: int(x[0]))
                if "error" not in r]
    counts = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items())
    early = [f"{LABELS[name]} at {f(n)}: {f(r['established'] - r['open'])} "
             f"({counts(r['closed_early'])})"
             for name, n, r in measured if r["established"] > r["open"]]
    errors = [f"{LABELS[name]} at {f(n)}: {counts(r['connect_errors'])}"
              for name, n, r in measured if r["connect_errors"]]
    if early:
        out += ["Streams that ended after opening and before the items were published: "
                + "; ".join(early) + ".", ""]
    if errors:
        out += ["Attempts to open a stream that failed (the generator tries each stream "
                "up to 3 times; a stream whose 3 attempts failed is not opened): "
                + "; ".join(errors) + ".", ""]
    return "\n".join(out)
