"""Results as Markdown tables, the targets met or missed, and an SVG plot."""

import math

from .passthrough import MAX_CPU_RATIO, MAX_P99_EXTRA_MS, MIN_RPS_RATIO

SYSTEMS = ["sidecast", "nchan", "pushpin"]
COLORS = {"sidecast": "#1f6fb4", "nchan": "#2c9f2c", "pushpin": "#d0452f"}


def f(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        if digits == 0 or abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _each(res, key):
    for name in SYSTEMS:
        r = res.get(key, {}).get(name)
        if r is not None:
            yield name, r


def _err(name, r, width):
    return [f"**{name}**", f"failed: {r['error'][:200]}"] + [""] * (width - 2)


def idle_table(res, key):
    head = ["system", "streams open / asked", "opened in s", "RSS before → held (MiB)",
            "RSS / stream (KiB)", "PSS / stream (KiB)", "one publish: delivered",
            "p50 ms", "p99 ms", "max ms", "SUT CPU s", "gen CPU s"]
    rows = []
    for name, r in _each(res, key):
        if "error" in r:
            rows.append(_err(name, r, len(head)))
            continue
        p = r["publish"]
        rows.append([f"**{name}**", f"{f(r['open'])} / {f(r['asked'])}", f(r["connect_s"]),
                     f"{r['rss_base_kib'] / 1024:.1f} → {r['rss_kib'] / 1024:.1f}",
                     f(r["rss_per_stream_kib"], 2), f(r["pss_per_stream_kib"], 2),
                     f"{f(p['delivered'])} / {f(p['expected'])}", f(p["p50_ms"], 2),
                     f(p["p99_ms"], 2), f(p["max_ms"], 2), f(p["sut_cpu_s"], 2),
                     f(p["gen_cpu_s"], 2)])
    return table(head, rows)


def fanout_table(res, key):
    head = ["system", "streams", "events expected", "delivered", "dup", "out of order",
            "p50 ms", "p99 ms", "max ms", "delivered ev/s", "publish /s (p99 ms)", "SUT CPU s",
            "SUT CPU µs / delivery", "gen CPU s", "wall s"]
    rows = []
    for name, r in _each(res, key):
        if "error" in r:
            rows.append(_err(name, r, len(head)))
            continue
        rows.append([f"**{name}**", f(r["streams"]), f(r["expected"]),
                     f"{f(r['delivered'])} ({r['delivered_pct']:.2f}%)", f(r["duplicates"]),
                     f(r["out_of_order"]) + (f" (+{f(r['reordered_concurrent'])} concurrent)"
                                             if r.get("reordered_concurrent") else ""),
                     f(r["p50_ms"], 2), f(r["p99_ms"], 2),
                     f(r["max_ms"], 1), f(r["delivered_per_s"], 0),
                     f"{f(r['publish_rate'], 1)} ({f(r['publish_p99_ms'], 1)})",
                     f(r["sut_cpu_s"], 2), f(r["sut_cpu_us_per_delivery"], 1),
                     f(r["gen_cpu_s"], 2), f(r["wall_s"], 1)])
    return table(head, rows)


def _why(step, p99_ms=100):
    why = []
    if step["delivered"] < step["expected"]:
        why.append(f"delivered {step['delivered_pct']:.2f}%")
        if step["streams_closed"]:
            why.append(f"{step['streams_closed']} streams closed")
    if step["p99_ms"] is not None and step["p99_ms"] > p99_ms:
        why.append(f"p99 {f(step['p99_ms'], 0)} ms")
    if step["publish_errors"]:
        why.append(f"{step['publish_errors']} publish errors ({step['publish_last_error']})")
    if step["publish_rate"] < 0.9 * step["rate"]:
        why.append(f"publish reached {step['publish_rate']:.0f}/s")
    return ", ".join(why) or "–"


def saturation_table(res):
    head = ["system", "highest rate held (ev/s)", "deliveries/s there", "p99 ms there",
            "next rate: why not held", "highest rate with p99 ≤ 1 s (ev/s)",
            "next rate: why not", "SUT / gen CPU s (last step)",
            "steps (rate: delivered %, p99 ms)"]
    rows = []
    for name, r in _each(res, "e"):
        if "error" in r:
            rows.append(_err(name, r, len(head)))
            continue
        steps = r["steps"]
        best = next((s for s in steps if s["rate"] == r["held_rate"]), None)
        failed = next((s for s in steps if not s["held"]), None)
        last = steps[-1] if steps else None
        failed_loose = last if last and not last.get("held_loose", last["held"]) else None
        trail = "; ".join(f"{s['rate']}: {s['delivered_pct']:.1f}%, {f(s['p99_ms'], 1)}"
                          for s in steps)
        rows.append([f"**{name}**", f(r["held_rate"]),
                     f(best["delivered_per_s"], 0) if best else "–",
                     f(best["p99_ms"], 1) if best else "–",
                     f"{f(failed['rate'])}: {_why(failed)}" if failed else "(top of the ladder)",
                     f(r.get("held_rate_loose")),
                     f"{f(failed_loose['rate'])}: {_why(failed_loose, 1000)}"
                     if failed_loose else "(top of the ladder)",
                     f"{f(last['sut_cpu_s'], 1)} / {f(last['gen_cpu_s'], 1)}" if last else "–",
                     trail])
    return table(head, rows)


# (f)'s rows, in this order; `sidecast-before` is an older build of
# sidecast measured in the same run (bench/run --before)
PASSTHROUGH_ROWS = ["direct", "sidecast", "sidecast-before", "nchan", "pushpin", "pingora"]
PASSTHROUGH_LABELS = {"direct": "direct to the origin", "nchan": "nginx `proxy_pass`",
                      "pingora": "stock pingora (reference)"}


def _x(v):
    return "–" if v is None else f"{v:.2f}×"


def passthrough_table(rows):
    """One concurrency's rows of (f), each divided by nginx's."""
    head = ["target", "req/s", "p50 ms", "p99 ms", "proxy CPU µs / request",
            "CPU / request ÷ nginx's", "req/s ÷ nginx's", "p99 − nginx's (ms)",
            "ratio to direct", "non-2xx", "proxy CPU s", "origin CPU s", "wrk CPU s"]
    out = []
    for name in PASSTHROUGH_ROWS:
        r = rows.get(name)
        if r is None:
            continue
        label = PASSTHROUGH_LABELS.get(name, name)
        if "error" in r:
            out.append(_err(label, r, len(head)))
            continue
        proxy = name != "direct"
        d99 = r.get("p99_minus_nginx_ms")
        out.append([f"**{label}**", f(r["req_per_s"], 0), f(r["p50_ms"], 2), f(r["p99_ms"], 2),
                    f(r.get("proxy_cpu_us_per_request"), 0) if proxy else "–",
                    _x(r.get("cpu_vs_nginx")) if proxy else "–",
                    _x(r.get("rps_vs_nginx")) if proxy else "–",
                    ("–" if d99 is None else f"{d99:+.2f}") if proxy else "–",
                    f(r.get("ratio"), 2), f(r["non_2xx"]) + (f" ({r['socket_errors']})"
                                                            if r.get("socket_errors") else ""),
                    f(r["sut_cpu_s"], 1) if proxy else "–",
                    f(r["origin_cpu_s"], 1), f(r["gen_cpu_s"], 1)])
    return table(head, out)


def passthrough_sections(res, meta):
    """(f) at each concurrency, then the flame graphs taken, if any."""
    pt = meta.get("passthrough") or {}
    rounds = pt.get("rounds", 1)
    out = []
    for key, rows in sorted(res.get("f", {}).items(), key=lambda kv: int(kv[0][1:])):
        out += [f"### (f) pass-through: `wrk -t2 -{key} -d{pt.get('seconds', '?')}s` GET / "
                "(a small static answer from the origin nginx)"
                + (f", median of {rounds} rounds" if rounds > 1 else ""), "",
                passthrough_table(rows), ""]
    bins = meta.get("binaries") or {}
    if bins:
        out += ["Binaries: " + "; ".join(
            f"**{k}**: `{b['path']}`" + (f" (commit {b['commit']}" if b.get("commit") else " (")
            + (f", built {b['built']})" if b.get("built") else ")") for k, b in bins.items())
                + ".", ""]
    profs = meta.get("profiles") or {}
    if profs:
        out += ["Profiles (flame graphs, `perf record` in a wrk run of their own): "
                + "; ".join(f"**{k}**: " + (f"failed ({p['error'][:200]})" if "error" in p else
                                             f"`{p['svg']}`")
                            + (f" ({p['sampled']} on `{p['event']}` in {p['seconds']} s "
                               f"at -c{p['conns']})" if "sampled" in p else "")
                            for k, p in profs.items()) + ".", ""]
    return out


def _get(res, key, name, *path):
    r = res.get(key, {}).get(name)
    for p in path:
        if r is None or "error" in r:
            return None
        r = r.get(p)
    return r


def targets(res):
    """(target, measured, met) rows for sidecast."""
    out = []
    c = res.get("c", {}).get("sidecast")
    if c and "error" not in c:
        ok = (c["delivered"] == c["expected"] and c["out_of_order"] == 0
              and c["duplicates"] == 0 and c["p99_ms"] is not None and c["p99_ms"] <= 50)
        out.append(("fan-out 10k: 100% delivered, 0 out of order, 0 duplicates, p99 ≤ 50 ms",
                    f"{c['delivered_pct']:.2f}%, {c['out_of_order']} out of order, "
                    f"{c['duplicates']} dup, p99 {f(c['p99_ms'], 2)} ms", ok))
    b = res.get("b", {}).get("sidecast")
    if b and "error" not in b:
        out.append(("fan-out 1k: p99 ≤ 5 ms", f"p99 {f(b['p99_ms'], 2)} ms",
                    b["p99_ms"] is not None and b["p99_ms"] <= 5))
    a = res.get("a", {}).get("sidecast")
    if a and "error" not in a:
        out.append(("10k idle: ≤ 8 KiB RSS per stream (foundation issue)",
                    f"{f(a['rss_per_stream_kib'], 2)} KiB",
                    a["rss_per_stream_kib"] is not None and a["rss_per_stream_kib"] <= 8))
    d = res.get("d", {}).get("sidecast")
    if d and "error" not in d:
        p = d["publish"]
        ok = (d["rss_per_stream_kib"] is not None and d["rss_per_stream_kib"] <= 4
              and d["open"] >= 19_000 and p["delivered"] == p["expected"])
        out.append(("idle: ≤ 4 KiB RSS per stream with ≥ 19,000 streams, one publish reaching all",
                    f"{f(d['rss_per_stream_kib'], 2)} KiB at {f(d['open'])} streams; "
                    f"publish reached {f(p['delivered'])} / {f(p['expected'])}, "
                    f"p99 {f(p['p99_ms'], 1)} ms", ok))
    sc = _get(res, "e", "sidecast", "held_rate")
    peers = [_get(res, "e", n, "held_rate") for n in ("nchan", "pushpin")]
    if _get(res, "e", "sidecast", "steps") is not None:
        best_peer = max([p or 0 for p in peers], default=0)
        loose = _get(res, "e", "sidecast", "held_rate_loose")
        loose_peer = max([_get(res, "e", n, "held_rate_loose") or 0
                          for n in ("nchan", "pushpin")], default=0)
        context = (f"; with p99 ≤ 1 s instead: {f(loose)} ev/s vs best peer "
                   f"{f(loose_peer)} ev/s")
        if sc is None and best_peer == 0:
            out.append(("saturation at 10k streams ≥ 2× the best peer",
                        "no system held even the lowest rate at p99 ≤ 100 ms" + context, None))
        else:
            out.append(("saturation at 10k streams ≥ 2× the best peer",
                        f"{f(sc)} ev/s vs best peer {f(best_peer)} ev/s" + context,
                        sc is not None and sc >= 2 * best_peer))
    for key, rows in sorted(res.get("f", {}).items(), key=lambda kv: int(kv[0][1:])):
        r, ng = rows.get("sidecast"), rows.get("nchan")
        if not r or "error" in r or not ng or "error" in ng:
            continue
        cpu, rps, d99 = r.get("cpu_vs_nginx"), r.get("rps_vs_nginx"), r.get("p99_minus_nginx_ms")
        ok = (cpu is not None and cpu <= MAX_CPU_RATIO and rps is not None
              and rps >= MIN_RPS_RATIO and d99 is not None and d99 <= MAX_P99_EXTRA_MS)
        out.append((f"pass-through at -{key}: CPU / request ≤ {MAX_CPU_RATIO}× nginx "
                    f"`proxy_pass`'s, req/s ≥ {MIN_RPS_RATIO}× nginx's, p99 ≤ nginx's + "
                    f"{MAX_P99_EXTRA_MS} ms",
                    f"CPU {_x(cpu)} ({f(r.get('proxy_cpu_us_per_request'), 0)} vs "
                    f"{f(ng.get('proxy_cpu_us_per_request'), 0)} µs), req/s {_x(rps)} "
                    f"({f(r['req_per_s'], 0)} vs {f(ng['req_per_s'], 0)}), p99 "
                    f"{'–' if d99 is None else f'{d99:+.2f}'} ms", ok))
    return out


def targets_table(res, quick=False):
    word = {True: "**met**", False: "**missed**", None: "not shown"}
    # A smoke run's counts are not the targets' (1,000 streams stand in for
    # 10,000): its figures are shown, never judged.
    rows = [[t, m, "not judged (smoke run)" if quick else word[ok]]
            for t, m, ok in targets(res)]
    return table(["target (sidecast)", "measured", ""], rows)


# --- SVG -------------------------------------------------------------------

def _bars(x0, y0, w, h, title, groups, value_fmt, log=False, vmax=None, ylabel=""):
    """A grouped bar chart: groups = [(label, [(series, system, value), ...])]."""
    s = [f'<text x="{x0 + w / 2}" y="{y0 - 14}" text-anchor="middle" font-size="14" '
         f'font-weight="bold">{title}</text>']
    vals = [v for _, items in groups for _, _, v in items if v]
    top = vmax or (max(vals) * 1.15 if vals else 1)
    lo = 0.1
    if log:
        top = 10 ** math.ceil(math.log10(max(vals))) if vals else 10

    def y(v):
        if log:
            v = max(v, lo)
            return y0 + h - h * (math.log10(v) - math.log10(lo)) / (math.log10(top) - math.log10(lo))
        return y0 + h - h * v / top

    ticks = []
    if log:
        t = lo
        while t <= top * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        step = 10 ** math.floor(math.log10(top / 2)) if top > 0 else 1
        ticks = [i * step for i in range(int(top / step) + 1)]
    for t in ticks:
        s.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                 f'stroke="#ddd"/>')
        s.append(f'<text x="{x0 - 6}" y="{y(t) + 4:.1f}" text-anchor="end" '
                 f'font-size="11">{value_fmt(t)}</text>')
    s.append(f'<text x="{x0 - 44}" y="{y0 + h / 2}" font-size="11" text-anchor="middle" '
             f'transform="rotate(-90 {x0 - 44} {y0 + h / 2})">{ylabel}</text>')
    gw = w / max(len(groups), 1)
    for gi, (label, items) in enumerate(groups):
        bw = gw * 0.8 / max(len(items), 1)
        for ii, (series, system, v) in enumerate(items):
            if v is None:
                continue
            bx = x0 + gi * gw + gw * 0.1 + ii * bw
            by = y(v)
            op = "1" if series != "p99" else "0.55"
            if series == "rss":
                s.append(f'<text x="{bx + bw / 2:.1f}" y="{by - 4:.1f}" font-size="10" '
                         f'text-anchor="middle">{v:.1f}</text>')
            s.append(f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bw - 1:.1f}" '
                     f'height="{max(y0 + h - by, 0.5):.1f}" fill="{COLORS[system]}" '
                     f'fill-opacity="{op}"><title>{system} {series} {label}: '
                     f'{v:.3g}</title></rect>')
        s.append(f'<text x="{x0 + gi * gw + gw / 2:.1f}" y="{y0 + h + 16}" '
                 f'text-anchor="middle" font-size="11">{label}</text>')
    s.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y0 + h}" y2="{y0 + h}" stroke="#333"/>')
    return s


def _k(n):
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def svg(res, plan, title):
    ten, one, big = _k(plan["ten_k"]["streams"]), _k(plan["b"]["streams"]), _k(plan["d"]["streams"])
    lat_groups = []
    for key, label, path in [("a", f"(a) 1 publish → {ten}", ("publish",)),
                             ("b", f"(b) {one} × {plan['b']['count']}", ()),
                             ("c", f"(c) {ten} × {plan['c']['count']}", ()),
                             ("d", f"(d) 1 publish → {big}", ("publish",))]:
        items = []
        for series in ("p50", "p99"):
            for name in SYSTEMS:
                v = _get(res, key, name, *path, f"{series}_ms")
                items.append((series, name, v))
        lat_groups.append((label, items))
    mem_groups = []
    for key, label in [("a", f"(a) {ten} idle"), ("d", f"(d) {big} idle")]:
        mem_groups.append((label, [("rss", n, _get(res, key, n, "rss_per_stream_kib"))
                                   for n in SYSTEMS]))
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="430" '
             'font-family="sans-serif">',
             '<rect width="1000" height="430" fill="white"/>',
             f'<text x="500" y="22" text-anchor="middle" font-size="15">{title}</text>']
    fmt_ms = lambda t: f"{t:g}"
    parts += _bars(80, 70, 560, 280, "publish → receive latency (ms, log scale): "
                   "p50 solid, p99 pale", lat_groups, fmt_ms, log=True, ylabel="ms")
    parts += _bars(740, 70, 220, 280, "RSS per idle stream (KiB)", mem_groups,
                   lambda t: f"{t:g}", ylabel="KiB")
    lx = 80
    for name in SYSTEMS:
        parts.append(f'<rect x="{lx}" y="395" width="14" height="14" fill="{COLORS[name]}"/>')
        parts.append(f'<text x="{lx + 20}" y="407" font-size="13">{name}</text>')
        lx += 130
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def run_lines(meta):
    """The command, when and how long, and the machine with its load
    average at the start and end: the head of every results section."""
    return [f"Run: `{meta['command']}` ({'quick' if meta['quick'] else 'full'} mode), "
            f"{meta['started']}, {meta['duration_min']:.1f} min.",
            "",
            f"Machine: {meta['nproc']} cores ({meta['cpu']}), {meta['mem_gib']:.1f} GiB memory, "
            f"kernel {meta['kernel']}; 1-minute load average at the start: "
            f"**{meta['loadavg']}** (at the end: {meta['loadavg_end']}).",
            ""]


def markdown(res, meta):
    p = meta["plan"]
    out = run_lines(meta) + [
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "Configuration: " + "; ".join(f"**{k}**: {v}" for k, v in meta["notes"].items()) + ".",
        ""]
    sections = [
        ("a", f"(a) {f(p['ten_k']['streams'])} idle streams, then one publish to all",
         lambda: idle_table(res, "a")),
        ("b", f"(b) fan-out {f(p['b']['streams'])} streams × {p['b']['count']} events at "
              f"{p['b']['rate']}/s", lambda: fanout_table(res, "b")),
        ("c", f"(c) fan-out {f(p['ten_k']['streams'])} streams × {p['c']['count']} events at "
              f"{p['c']['rate']}/s", lambda: fanout_table(res, "c")),
        ("d", f"(d) {f(p['d']['streams'])} idle streams, then one publish to all",
         lambda: idle_table(res, "d")),
        ("e", f"(e) saturation at {f(p['ten_k']['streams'])} streams: publish rate raised "
              f"({p['sat_step_s']} s per step) until delivery < 100% or p99 > 100 ms "
              "(and on, to report the highest rate held with p99 ≤ 1 s)",
         lambda: saturation_table(res)),
    ]
    for key, title, render in sections:
        if res.get(key):
            out += [f"### {title}", "", render(), ""]
    out += passthrough_sections(res, meta)
    out += ["### Targets", ""]
    if meta.get("quick"):
        out += ["A smoke run (`--quick`) uses smaller counts than the targets name; "
                "they are judged on the full run only.", ""]
    out += [targets_table(res, meta.get("quick", False)), ""]
    return "\n".join(out)
