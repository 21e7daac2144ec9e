"""bench/run: builds sidecast and the load generator, starts sidecast, nchan
and Pushpin on loopback one after the other, runs the scenarios against
each, and writes JSON, Markdown tables and an SVG plot."""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import cluster, grip, passthrough, profile, report
from .scenarios import OPTIONAL, SCENARIOS, Ctx, Plan, run_streams
from .systems import Nchan, Origin, PingoraReference, Pushpin, Sidecast

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
MARK_BEGIN = "<!-- results:begin (written by bench/run) -->"
MARK_END = "<!-- results:end -->"
CLUSTER_BEGIN = "<!-- cluster:begin (written by bench/run --scenarios g) -->"
CLUSTER_END = "<!-- cluster:end -->"
GRIP_BEGIN = "<!-- grip:begin (written by bench/run --scenarios h) -->"
GRIP_END = "<!-- grip:end -->"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_packages(names, scenarios, profiling):
    """Installs from Debian what this run needs and is missing: nginx (the
    origin), nchan (also (f)'s yardstick), Pushpin and zurl when Pushpin
    runs, wrk for (f), perf for its profiles; and inferno from crates.io
    to render them."""
    want = {"nginx": shutil.which("nginx"),
            "libnginx-mod-nchan": os.path.exists("/usr/lib/nginx/modules/ngx_nchan_module.so")}
    if "pushpin" in names:
        want.update({"pushpin": shutil.which("pushpin"), "zurl": shutil.which("zurl")})
    if "f" in scenarios:
        want["wrk"] = shutil.which("wrk")
    if profiling:
        want["linux-perf"] = shutil.which("perf")
    missing = [k for k, have in want.items() if not have]
    if profiling and not (shutil.which("inferno-flamegraph") or shutil.which(
            "inferno-flamegraph", path=os.path.expanduser("~/.cargo/bin"))):
        log("installing inferno (flame graphs) with cargo install")
        subprocess.run(["cargo", "install", "--locked", "inferno"], check=True)
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing,
                   check=True, env=env)
    # the packages' own services are not used: the harness runs its own instances
    for svc in ("nginx", "pushpin"):
        subprocess.run(sudo + ["systemctl", "stop", svc], capture_output=True)


def build(sidecast=True):
    """Release builds of sidecast (unless a binary was named) and of the
    load generator and stock pingora."""
    log(f"building {'sidecast and ' if sidecast else ''}the load generator (release)")
    subprocess.run([os.path.join(ROOT, "scripts", "deps"), "build"], check=True, cwd=ROOT)
    if sidecast:
        subprocess.run(["cargo", "build", "--release", "--locked"], check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "--locked"], check=True, cwd=BENCH)


# Stock pingora, built with the load generator, for pass-through's reference row.
PINGORA_REF = os.path.join(BENCH, "target", "release", "pingora-ref")


def machine():
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "mem_gib": mem, "kernel": platform.release(), "cpu": cpu}


def loadavg():
    with open("/proc/loadavg") as fh:
        return fh.read().split()[0]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def replace_marked(begin, end, md):
    """Rewrites the part of BENCHMARKS.md between two markers."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as fh:
        text = fh.read()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        with open(path, "w") as fh:
            fh.write(f"{head}{begin}\n\n{md}\n{end}{tail}")
        log(f"updated {path}")


def write_section(out_dir, name, results, meta, md, markers, update_md):
    """(g) and (h) have their own files and their own parts of
    BENCHMARKS.md (between `markers`), so running one alone leaves the
    other results as they are."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as fh:
        json.dump({"meta": meta, "results": results}, fh, indent=1)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as fh:
        fh.write(md)
    if update_md:
        replace_marked(*markers, md)
    log(f"wrote {out_dir}/{name}.json, .md")
    return md


def write_outputs(out_dir, name, results, meta, update_md):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as fh:
        json.dump({"meta": meta, "results": results}, fh, indent=1)
    md = report.markdown(results, meta)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as fh:
        fh.write(md)
    title = (f"sidecast vs nchan vs Pushpin, {meta['nproc']} cores, "
             f"{meta['started'][:10]} ({'quick' if meta['quick'] else 'full'} run, "
             f"1-min load average {meta['loadavg']} at the start)")
    # the plot shows the stream scenarios only: none, no plot
    plot = any(results.get(k) for k in "abcde")
    if plot:
        with open(os.path.join(out_dir, f"{name}.svg"), "w") as fh:
            fh.write(report.svg(results, meta["plan"], title))
    if update_md:
        replace_marked(MARK_BEGIN, MARK_END, md)
    log(f"wrote {out_dir}/{name}.json, .md{', .svg' if plot else ''}")


def _describe(path):
    """Which binary was measured: its path, modification time, and the
    commit of the tree it was built in (when that tree is a git checkout)."""
    if not os.path.exists(path):
        return {"path": path}
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=os.path.dirname(path)).stdout.strip()
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return {"path": path, "built": mtime.strftime("%Y-%m-%d %H:%M UTC"), "commit": rev or None}


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    ap.add_argument("--systems", default="sidecast,nchan,pushpin")
    ap.add_argument("--scenarios", default=SCENARIOS,
                    help=f"any of {SCENARIOS}{OPTIONAL} (g: cluster vs single node; h: GRIP "
                         "holds, sidecast beside Pushpin; run only when named)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (configs and logs of every system)")
    ap.add_argument("--sidecast", metavar="PATH",
                    help="measure this sidecast binary (not built); default: this tree's "
                         "release build")
    pt = ap.add_argument_group("pass-through (f)")
    pt.add_argument("--before", metavar="PATH",
                    help="an older sidecast binary, measured in (f) as the row "
                         "`sidecast-before` beside `sidecast`")
    pt.add_argument("--pt-conns", default="64,256", metavar="N,N",
                    help="wrk connections, one measured run each (default 64,256)")
    pt.add_argument("--pt-seconds", type=int, metavar="S",
                    help="seconds per wrk run (default 3 with --quick, else 10)")
    pt.add_argument("--pt-rounds", type=int, default=1, metavar="N",
                    help="repeat every row N times, one system after the other, and "
                         "report medians (default 1)")
    pt.add_argument("--profile-passthrough", action="store_true",
                    help="perf record sidecast (and sidecast-before) at the lowest "
                         "concurrency in a wrk run of its own, flame graphs into --out")
    pt.add_argument("--profile-seconds", type=int, default=5, metavar="S")
    gr = ap.add_argument_group("GRIP holds (h)")
    gr.add_argument("--grip-streams", metavar="N,N",
                    help="held stream counts, one measured group each (default 2000,10000; "
                         "--quick: 300,1000)")
    gr.add_argument("--grip-items", type=int, metavar="M",
                    help="items published to the held streams (default 60; --quick: 10)")
    gr.add_argument("--grip-rate", type=float, metavar="R",
                    help="items per second (default 2)")
    args = ap.parse_args(argv)
    names = [s for s in args.systems.split(",") if s]
    bad = [s for s in names if s not in report.SYSTEMS] + \
          [c for c in args.scenarios if c not in SCENARIOS + OPTIONAL]
    if bad:
        ap.error(f"unknown system or scenario: {bad}")
    for opt, path in (("--sidecast", args.sidecast), ("--before", args.before)):
        if path and not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error(f"{opt}: {path} is not an executable file")
    try:
        conns = sorted({int(c) for c in args.pt_conns.split(",") if c.strip()})
    except ValueError:
        conns = []
    if not conns or min(conns) < 2 or max(conns) > 10_000:
        ap.error(f"--pt-conns: expected connection counts between 2 and 10000 "
                 f"separated by commas, got {args.pt_conns!r}")
    for opt, v, top in (("--pt-seconds", args.pt_seconds, 600),
                        ("--pt-rounds", args.pt_rounds, 20),
                        ("--profile-seconds", args.profile_seconds, 60)):
        if v is not None and not 1 <= v <= top:
            ap.error(f"{opt}: expected 1 to {top}, got {v}")
    if (args.before or args.profile_passthrough) and "f" not in args.scenarios:
        ap.error("--before and --profile-passthrough apply to scenario f, "
                 "which --scenarios leaves out")
    if args.before and "sidecast" not in names:
        ap.error("--before compares with sidecast, which --systems leaves out")
    if "h" in args.scenarios and not set(grip.SYSTEMS) & set(names):
        ap.error("scenario h measures sidecast and Pushpin, which --systems leaves out")
    grip_streams = None
    if args.grip_streams:
        try:
            grip_streams = [int(c) for c in args.grip_streams.split(",") if c.strip()]
        except ValueError:
            grip_streams = []
        if not grip_streams or min(grip_streams) < 1 or max(grip_streams) > 19_000:
            ap.error(f"--grip-streams: expected stream counts between 1 and 19000 separated "
                     f"by commas, got {args.grip_streams!r}")
    if args.grip_items is not None and not 1 <= args.grip_items <= 10_000:
        ap.error(f"--grip-items: expected 1 to 10000, got {args.grip_items}")
    if args.grip_rate is not None and not 0.1 <= args.grip_rate <= 1000:
        ap.error(f"--grip-rate: expected 0.1 to 1000 items per second, got {args.grip_rate}")
    if (args.grip_streams or args.grip_items or args.grip_rate) and "h" not in args.scenarios:
        ap.error("--grip-* apply to scenario h, which --scenarios leaves out")

    # a SIGTERM unwinds like Ctrl-C, so every process started is stopped
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = dict(machine(), loadavg=loadavg(), quick=args.quick,
                command="bench/run" + "".join(f" {a}" for a in argv),
                started=started.strftime("%Y-%m-%d %H:%M UTC"))
    ensure_packages(names, args.scenarios, args.profile_passthrough)
    if not args.no_build:
        build(sidecast=not args.sidecast)
    sidecast = os.path.abspath(args.sidecast or os.path.join(ROOT, "target", "release",
                                                              "sidecast"))
    loadgen = os.path.join(BENCH, "target", "release", "loadgen")
    meta["binaries"] = {"sidecast": _describe(sidecast)} if "sidecast" in names else {}
    if args.before:
        meta["binaries"]["sidecast-before"] = _describe(os.path.abspath(args.before))
    limit = raise_nofile()
    log(f"open-file limit {limit}; load average {meta['loadavg']}")
    plan = Plan(args.quick)
    for key, v in (("streams", grip_streams), ("count", args.grip_items),
                   ("rate", args.grip_rate)):
        if v:
            plan.h[key] = v
    if plan.d["streams"] + 200 > limit:
        plan.d["streams"] = max(limit - 500, 1000)
    work = tempfile.mkdtemp(prefix="scb-", dir="/tmp")
    profiler = None
    if args.profile_passthrough:
        os.makedirs(args.out, exist_ok=True)
        profiler = profile.Profiler(os.path.abspath(args.out), work, log)
        if profiler.event != "cycles":
            log("perf: no hardware cycle counter here (a VM without a PMU); "
                f"sampling on the {profiler.event} software event instead")
    ctx = Ctx(plan, loadgen, work, log)
    results = {k: {} for k in SCENARIOS + OPTIONAL}
    origin = Origin(work)
    systems = []
    try:
        origin.start()
        by_name = {"sidecast": lambda: Sidecast(work, origin, sidecast,
                                                max_streams=plan.d["streams"] + 200),
                   "nchan": lambda: Nchan(work, origin), "pushpin": lambda: Pushpin(work, origin)}
        systems = [by_name[n]() for n in names]
        meta["versions"] = {s.name: s.version() for s in systems}
        meta["notes"] = {s.name: s.notes for s in systems}
        for s in systems:
            try:
                run_streams(ctx, s, args.scenarios, results)
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
                log(f"{s.name} failed: {e}")
                for k in "abcde":
                    if k in args.scenarios:
                        results[k].setdefault(s.name, {"error": str(e)})
                s.stop()
        if "f" in args.scenarios:
            pt_systems = list(systems)
            extra = []
            if args.before:
                extra.append(Sidecast(work, origin, os.path.abspath(args.before),
                                      max_streams=plan.d["streams"] + 200,
                                      name="sidecast-before"))
                pt_systems.insert(names.index("sidecast") + 1, extra[-1])
            if passthrough.YARDSTICK not in names:
                # nginx `proxy_pass` is what the other rows are divided by:
                # always measured in the same run
                extra.append(Nchan(work, origin))
                pt_systems.append(extra[-1])
            if "sidecast" in names and os.path.exists(PINGORA_REF):
                extra.append(PingoraReference(work, origin, PINGORA_REF))
                pt_systems.append(extra[-1])
            systems += extra
            for s in extra:
                meta["versions"][s.name] = s.version()
                meta["notes"][s.name] = s.notes
            pt = passthrough.PtPlan(
                conns, args.pt_seconds or plan.wrk_s, args.pt_rounds,
                profile=("sidecast", "sidecast-before") if args.profile_passthrough else (),
                profile_s=args.profile_seconds)
            meta["passthrough"] = {"conns": pt.conns, "seconds": pt.secs, "rounds": pt.rounds,
                                   "warmup_s": pt.warmup_s}
            meta["profiles"] = passthrough.run_passthrough(ctx, origin, pt_systems, results,
                                                           pt, profiler)
        if "g" in args.scenarios:
            cluster.run_cluster(ctx, origin, sidecast, results)
        if "h" in args.scenarios:
            grip.run_grip(ctx, origin, sidecast, names, results)
    finally:
        for s in systems:
            s.stop()
        origin.stop()
    meta["duration_min"] = (datetime.datetime.now(datetime.timezone.utc) - started).seconds / 60
    meta["loadavg_end"] = loadavg()
    meta["plan"] = {k: v for k, v in vars(plan).items()}
    if args.keep:
        log(f"configs and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    others = "".join(c for c in args.scenarios if c in SCENARIOS)
    if others:
        # a pass-through-only run has files of its own, so that it leaves
        # the full run's results as they are
        stem = "passthrough" if others == "f" else "full"
        write_outputs(args.out, f"{stem}-quick" if args.quick and stem != "full" else
                      "quick" if args.quick else stem, results, meta,
                      update_md=not args.quick and names == report.SYSTEMS
                      and others == SCENARIOS and not args.before and not args.sidecast)
        print(report.markdown(results, meta))
    for line in passthrough.guard_lines(results):
        print(line)
    if "g" in args.scenarios:
        print(write_section(args.out, "cluster-quick" if args.quick else "cluster",
                            results["g"], meta, cluster.markdown(results["g"], meta, meta["plan"]),
                            (CLUSTER_BEGIN, CLUSTER_END), update_md=not args.quick))
    if "h" in args.scenarios:
        print(write_section(args.out, "grip-quick" if args.quick else "grip",
                            results["h"], meta, grip.markdown(results["h"], meta, meta["plan"]),
                            (GRIP_BEGIN, GRIP_END),
                            update_md=not args.quick and set(grip.SYSTEMS) <= set(names)))
    return 0
