#!/usr/bin/env python3
"""Draws k8s/grafana-dashboard.json over a real run, as Grafana would.

Reads the dashboard, starts Prometheus on the data directory a run of
bench/dashboard/drive.py left, runs every panel's exact `expr` through
Prometheus' HTTP API (query_range over the run; Grafana's variables replaced
as Grafana replaces them: `$namespace`/`$pod` by their values, All by the
variable's allValue, `$__rate_interval` by max(step + scrape interval,
4 x scrape interval)), and draws each panel at its gridPos: stat panels as
their last value over a sparkline, time series with their legend format,
units, stacking, bars, right axis overrides and value mappings. The image
says it is a rendering, not a Grafana screenshot.

    bench/dashboard/render.py --run target/dashboard --out docs/img/dashboard.png
        [--dashboard k8s/grafana-dashboard.json] [--var namespace=shop ...]

Needs matplotlib (bench/dashboard/run makes a venv with it).
"""

import argparse
import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# Grafana's dark theme and its classic palette.
BG, PANEL, BORDER, TEXT, DIM, GRID = "#111217", "#181b1f", "#2a2e33", "#ccccdc", "#8e8e99", "#24272c"
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#705DA0",
           "#37872D", "#FADE2A", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477"]
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A", "blue": "#5794F2"}

COL_PX, ROW_PX, HEADER_PX, PAD = 75, 34, 64, 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Prometheus on a stored data directory, scraping nothing."""

    def __init__(self, data, workdir):
        self.port = free_port()
        cfg = Path(workdir) / "prometheus-render.yml"
        cfg.write_text("scrape_configs: []\n")
        self.log = open(Path(workdir) / "prometheus-render.log", "ab")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("Prometheus did not start on the run's data (see prometheus-render.log)")

    def query_range(self, expr, start, end, step):
        q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/query_range?{q}", timeout=60) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{expr}: {e.read().decode(errors='replace')}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"{expr}: {body}")
        return body["data"]["result"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---- Grafana's variables ---------------------------------------------------


def interpolate(expr, variables, step, scrape):
    """Replaces variables as Grafana does for a Prometheus query."""
    rate_interval = max(step + scrape, 4 * scrape)
    builtins = {"__rate_interval": f"{rate_interval}s", "__interval": f"{step}s", "__interval_ms": str(step * 1000)}

    def value(name):
        if name in builtins:
            return builtins[name]
        if name not in variables:
            raise KeyError(f"variable ${name} has no value")
        return variables[name]

    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}", lambda m: value(m[1]), expr)
    return re.sub(r"\$(\w+)", lambda m: value(m[1]), expr)


def regex_escape(value):
    """A value made literal in a PromQL regex inside a double-quoted string,
    as Grafana's Prometheus data source does it: each regex metacharacter
    behind a backslash, itself escaped for the string."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def variable_values(dashboard, chosen):
    """Each query variable's value: what --var chose (a regex of the
    escaped values when several), else its allValue (All)."""
    out = {}
    for v in dashboard.get("templating", {}).get("list", []):
        if v["type"] != "query":
            continue
        if v["name"] in chosen:
            vals = [regex_escape(x) for x in chosen[v["name"]].split(",")]
            out[v["name"]] = vals[0] if len(vals) == 1 else "(" + "|".join(vals) + ")"
        else:
            out[v["name"]] = v.get("allValue") or ".*"
    return out


def legend(fmt, metric):
    if not fmt or fmt == "__auto":
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}" if metric else "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m[1], ""), fmt).strip()


# ---- units -------------------------------------------------------------------

SUFFIX = {"ops": " ops/s", "reqps": " req/s", "opm": " ops/min", "short": "", "none": ""}


def si(v, decimals=None):
    a = abs(v)
    for div, s in ((1e9, " G"), (1e6, " M"), (1e3, " K")):
        if a >= div:
            return f"{v / div:.{1 if decimals is None else decimals}f}".rstrip("0").rstrip(".") + s
    if decimals is not None:
        return f"{v:.{decimals}f}"
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


def fmt_unit(v, unit, decimals=None):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "No data"
    if unit == "percentunit":
        return f"{v * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "s":
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 1e-3:
            return f"{v * 1e6:.0f} µs"
        if a < 1:
            return f"{v * 1e3:.0f} ms" if a >= 0.01 else f"{v * 1e3:.1f} ms"
        return f"{v:.2f} s".replace(".00 s", " s")
    return si(v, decimals) + SUFFIX.get(unit, "")


# ---- drawing -------------------------------------------------------------------


def threshold_color(defaults, v):
    steps = defaults.get("thresholds", {}).get("steps", [])
    color = "green"
    for s in steps:
        if s.get("value") is None or (v is not None and not math.isnan(v) and v >= s["value"]):
            color = s["color"]
    return NAMED.get(color, color)


class Box(NamedTuple):
    """A panel's place: x, y, w, h in figure coordinates (0-1, from the
    bottom left), its size in pixels, and the figure's."""

    x: float
    y: float
    w: float
    h: float
    wpx: float
    hpx: float
    W: float
    H: float


def panel_box(gp, fig_h):
    """The Box of a gridPos, inside its margin."""
    x0 = gp["x"] * COL_PX + PAD
    y0 = HEADER_PX + gp["y"] * ROW_PX + PAD
    w = gp["w"] * COL_PX - 2 * PAD
    h = gp["h"] * ROW_PX - 2 * PAD
    W = 24 * COL_PX
    return Box(x0 / W, 1 - (y0 + h) / fig_h, w / W, h / fig_h, w, h, W, fig_h)


def frame(fig, box, title):
    x, y, w, h = box[:4]
    fig.patches.append(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.002",
                                      transform=fig.transFigure, facecolor=PANEL, edgecolor=BORDER, lw=0.8,
                                      zorder=-1))
    fig.text(x + 0.006, y + h - 0.0045, title, color=TEXT, fontsize=10.5, fontweight="bold", va="top", ha="left")


def series_of(results):
    out = []
    for r in results:
        ts = [datetime.fromtimestamp(float(t), tz=timezone.utc) for t, _ in r["values"]]
        vs = [float(v) for _, v in r["values"]]
        out.append((r["metric"], ts, vs))
    return out


def draw_stat(fig, panel, box, data, start, end):
    x, y, w, h = box[:4]
    d = panel["fieldConfig"]["defaults"]
    frame(fig, box, panel["title"])
    ser = data[0][1] if data and data[0][1] else []
    last = None
    if ser:
        _, ts, vs = ser[0]
        finite = [v for v in vs if not math.isnan(v)]
        last = finite[-1] if finite else None
        ax = fig.add_axes([x + 0.002, y + 0.002, w - 0.004, h * 0.45])
        ax.set_axis_off()
        ax.fill_between(ts, vs, color=threshold_color(d, last), alpha=0.18, lw=0)
        ax.plot(ts, vs, color=threshold_color(d, last), lw=1, alpha=0.7)
        ax.set_xlim(datetime.fromtimestamp(start, tz=timezone.utc), datetime.fromtimestamp(end, tz=timezone.utc))
        ax.set_ylim(bottom=min(0, min(finite, default=0)))
    text = fmt_unit(last, d.get("unit", "short"), d.get("decimals"))
    fig.text(x + w / 2, y + h * 0.5, text, color=threshold_color(d, last) if last is not None else DIM,
             fontsize=26, fontweight="bold", ha="center", va="center")


def override_for(panel, name):
    props = {}
    for o in panel["fieldConfig"].get("overrides", []):
        m = o["matcher"]
        if (m["id"] == "byRegexp" and re.fullmatch(m["options"], name)) or (m["id"] == "byName" and m["options"] == name):
            for p in o["properties"]:
                props[p["id"]] = p["value"]
    return props


def legend_width(name, right):
    """Pixels a legend entry takes: its mark, its text, a gap."""
    return 30 + 7.0 * len(name) + (48 if right else 0)


def draw_timeseries(fig, panel, box, data, start, end, step):
    x, y, w, h, wpx, _, W, H = box
    d = panel["fieldConfig"]["defaults"]
    custom = d.get("custom", {})
    unit = d.get("unit", "short")
    frame(fig, box, panel["title"])
    lines = []  # (name, ts, vs, right)
    for target, results in data:
        for metric, ts, vs in results:
            name = legend(target.get("legendFormat"), metric)
            lines.append((name, ts, vs, override_for(panel, name).get("custom.axisPlacement") == "right"))
    lines.sort(key=lambda l: l[0])
    # The legend's rows, below the plot (a list legend, as Grafana's).
    per_row, rows, used = [], 1, 0
    for name, _, _, right in lines:
        need = legend_width(name, right)
        if used + need > wpx - 16 and used:
            rows += 1
            used = 0
        used += need
        per_row.append(rows)
    legend_px = 18 * rows + 4
    title_px, axis_px, left_px = 26, 20, 80
    right_px = 52 if any(l[3] for l in lines) else 12
    ax = fig.add_axes([x + left_px / W, y + (legend_px + axis_px) / H,
                       w - (left_px + right_px) / W, h - (legend_px + axis_px + title_px) / H])
    ax2 = ax.twinx() if any(l[3] for l in lines) else None
    for a in (ax, ax2):
        if a is None:
            continue
        a.set_facecolor(PANEL)
        for s in a.spines.values():
            s.set_visible(False)
        a.tick_params(colors=DIM, labelsize=8, length=0)
    ax.grid(True, color=GRID, lw=0.8)
    ax.set_axisbelow(True)
    x0 = datetime.fromtimestamp(start, tz=timezone.utc)
    x1 = datetime.fromtimestamp(end, tz=timezone.utc)
    ax.set_xlim(x0, x1)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
    ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=range(0, 60, 1 if (end - start) <= 900 else 5)))
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    draw = custom.get("drawStyle", "line")
    fill = custom.get("fillOpacity", 0) / 100
    base = None
    handles = []
    for i, (name, ts, vs, right) in enumerate(lines):
        a = ax2 if right else ax
        color = PALETTE[i % len(PALETTE)]
        if stacked:
            base = base or {t: 0.0 for t in ts}
            lows = [base.get(t, 0.0) for t in ts]
            highs = [lo + (0 if math.isnan(v) else v) for lo, v in zip(lows, vs)]
            for t, hv in zip(ts, highs):
                base[t] = hv
            a.fill_between(ts, lows, highs, color=color, alpha=fill, lw=0)
            a.plot(ts, highs, color=color, lw=1.1)
        elif draw == "bars":
            width = step / 86400 * 0.8
            a.bar(ts, [0 if math.isnan(v) else v for v in vs], width=width, color=color, alpha=0.85,
                  bottom=None, align="center")
        else:
            step_kw = {"drawstyle": "steps-post"} if custom.get("lineInterpolation") == "stepAfter" else {}
            a.plot(ts, vs, color=color, lw=1.2, **step_kw)
            if fill:
                a.fill_between(ts, vs, color=color, alpha=fill, lw=0, step="post" if step_kw else None)
        handles.append((name, color, right))
    maxv = d.get("max")
    for a in (ax, ax2):
        if a is None:
            continue
        a.set_ylim(bottom=d.get("min", 0) if d.get("min") is not None else None)
        if maxv is not None:
            a.set_ylim(top=maxv * 1.08)
        lo, hi = a.get_ylim()
        if hi - lo < 1e-9:
            a.set_ylim(0, 1)
        mappings = value_mapping(d)
        if mappings:
            a.set_yticks(sorted(mappings))
            a.set_yticklabels([mappings[k][0] for k in sorted(mappings)])
        else:
            a.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt_unit(v, unit, d.get("decimals"))))
            a.yaxis.set_major_locator(plt.MaxNLocator(4, min_n_ticks=2))
    if ax2 is not None:
        ax2.grid(False)
    # The legend, left to right, wrapping.
    row, used = 1, 0
    for (name, color, right), r in zip(handles, per_row):
        if r != row:
            row, used = r, 0
        px = 10 + used
        ly = y + (legend_px - 18 * r + 6) / H
        fig.add_artist(plt.Line2D([x + px / W, x + (px + 12) / W], [ly + 5 / H] * 2, color=color, lw=2.5,
                                  transform=fig.transFigure))
        fig.text(x + (px + 17) / W, ly + 5 / H, name + (" (right)" if right else ""), color=TEXT, fontsize=8.5,
                 va="center", ha="left")
        used += legend_width(name, right)
    if not lines:
        fig.text(x + w / 2, y + h / 2, "No data", color=DIM, fontsize=12, ha="center", va="center")


def value_mapping(defaults):
    """value -> (text, colour) of a panel's value mappings."""
    out = {}
    for m in defaults.get("mappings", []):
        if m.get("type") == "value":
            for k, v in m["options"].items():
                out[float(k)] = (v.get("text", k), NAMED.get(v.get("color"), v.get("color")))
    return out


def draw_state_timeline(fig, panel, box, data, start, end):
    """One lane per series; runs of one value merged, coloured by the
    value mappings (else the thresholds), labelled when wide enough."""
    x, y, w, h, wpx, _, W, H = box
    d = panel["fieldConfig"]["defaults"]
    frame(fig, box, panel["title"])
    lanes = sorted(((legend(t.get("legendFormat"), m), ts, vs) for t, res in data for m, ts, vs in res),
                   key=lambda l: l[0])
    left_px = 20 + 7.0 * max((len(n) for n, _, _ in lanes), default=4)
    ax = fig.add_axes([x + left_px / W, y + 22 / H, w - (left_px + 12) / W, h - 50 / H])
    ax.set_facecolor(PANEL)
    for s_ in ax.spines.values():
        s_.set_visible(False)
    ax.tick_params(colors=DIM, labelsize=8, length=0)
    x0 = datetime.fromtimestamp(start, tz=timezone.utc)
    x1 = datetime.fromtimestamp(end, tz=timezone.utc)
    ax.set_xlim(x0, x1)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
    ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=range(0, 60, 1 if (end - start) <= 900 else 5)))
    mapping = value_mapping(d)
    row_h = panel.get("options", {}).get("rowHeight", 0.8)
    alpha = d.get("custom", {}).get("fillOpacity", 70) / 100
    span_s = end - start
    for i, (name, ts, vs) in enumerate(reversed(lanes)):
        runs = []  # (from, to, value)
        for t, v in zip(ts, vs):
            if runs and (runs[-1][2] == v or (math.isnan(v) and math.isnan(runs[-1][2]))):
                runs[-1][1] = t
            else:
                if runs:
                    runs[-1][1] = t
                runs.append([t, t, v])
        if runs:
            runs[-1][1] = min(x1, runs[-1][1] + (ts[1] - ts[0] if len(ts) > 1 else x1 - runs[-1][1]))
        for a, b, v in runs:
            if math.isnan(v):
                continue
            text, color = mapping.get(v, (fmt_unit(v, d.get("unit", "short")), threshold_color(d, v)))
            ax.barh(i, b - a, left=a, height=row_h, color=color, alpha=alpha, lw=0, align="center")
            if (b - a).total_seconds() / span_s * (wpx - left_px) > 7.5 * len(text) + 8:
                ax.text(a + (b - a) / 2, i, text, color="#ffffff", fontsize=8.5, ha="center", va="center")
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([n for n, _, _ in reversed(lanes)], color=TEXT, fontsize=8.5)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    if not lanes:
        fig.text(x + w / 2, y + h / 2, "No data", color=DIM, fontsize=12, ha="center", va="center")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(ROOT / "target" / "dashboard"))
    ap.add_argument("--dashboard", default=str(ROOT / "k8s" / "grafana-dashboard.json"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "dashboard.png"))
    ap.add_argument("--var", action="append", default=[], help="NAME=VALUE[,VALUE]")
    args = ap.parse_args()
    run = json.loads((Path(args.run) / "run.json").read_text())
    dashboard = json.loads(Path(args.dashboard).read_text())
    chosen = dict(v.split("=", 1) for v in args.var)
    variables = variable_values(dashboard, chosen)
    start, end, scrape = int(run["start"]), int(run["end"]), int(run["scrape_interval"])
    # Grafana's step: the range over the panel's width in points, never
    # under the scrape interval.
    step = max(scrape, math.ceil((end - start) / 600))

    panels = dashboard["panels"]
    rows_h = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig_h = HEADER_PX + rows_h * ROW_PX + PAD
    fig = plt.figure(figsize=(24 * COL_PX / 100, fig_h / 100), dpi=100, facecolor=BG)
    when = (f"{datetime.fromtimestamp(start, tz=timezone.utc):%Y-%m-%d %H:%M}–"
            f"{datetime.fromtimestamp(end, tz=timezone.utc):%H:%M} UTC")
    shown = "   ".join(f"{v['label'] or v['name']}: {chosen.get(v['name'], 'All')}"
                       for v in dashboard["templating"]["list"] if v["type"] == "query")
    fig.text(PAD / (24 * COL_PX), 1 - 14 / fig_h, dashboard["title"], color=TEXT, fontsize=17, fontweight="bold",
             va="top")
    fig.text(PAD / (24 * COL_PX), 1 - 42 / fig_h,
             f"{shown}   ·   {when}   ·   every panel's query from k8s/grafana-dashboard.json, run against Prometheus "
             f"over a real run (bench/dashboard/); drawn as Grafana would, not a Grafana screenshot",
             color=DIM, fontsize=9.5, va="top")

    prom = Prometheus(run["prometheus_data"], args.run)
    empty = []
    try:
        for p in panels:
            box = panel_box(p["gridPos"], fig_h)
            if p["type"] == "row":
                x, y, w, h = box[:4]
                fig.text(x + 0.002, y + h / 2, p["title"], color=TEXT, fontsize=12, fontweight="bold", va="center")
                continue
            data = []
            for t in p["targets"]:
                expr = interpolate(t["expr"], variables, step, scrape)
                data.append((t, series_of(prom.query_range(expr, start, end, step))))
            finite = any(not math.isnan(v) and v != 0 for _, res in data for _, _, vs in res for v in vs)
            if not finite:
                empty.append(p["title"])
            if p["type"] == "stat":
                draw_stat(fig, p, box, data, start, end)
            elif p["type"] == "state-timeline":
                draw_state_timeline(fig, p, box, data, start, end)
            else:
                draw_timeseries(fig, p, box, data, start, end, step)
    finally:
        prom.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, facecolor=BG, dpi=100)
    print(f"wrote {args.out} ({len(panels)} panels)")
    if empty:
        print("panels with nothing but zeros or no data (the run did not exercise them): " + ", ".join(empty))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
