"""Profiles of scenario (f): sidecast started under `perf record` for a wrk
run of its own (so perf's cost is in none of the measured figures),
rendered as flame graphs with inferno (inferno-collapse-perf,
inferno-flamegraph; a differential graph with inferno-diff-folded when two
sidecast builds were profiled).

perf starts the process rather than attaching with -p: in some VMs (this
one included) a per-process event attached to a running process counts
nothing, while one inherited from perf's own child does."""

import os
import shutil
import subprocess
import time

from .passthrough import parse_wrk, wrk_argv


class Profiler:
    """perf record on one system during a wrk run, rendered as a flame graph
    with inferno. Hardware events are used when this machine
    has them; in a VM without a PMU, perf samples on the cpu-clock
    software event instead (recorded in the output)."""

    def __init__(self, out_dir, work, log):
        self.out_dir = out_dir
        self.work = work
        self.log = log
        self.event = self.pick_event()
        self.collapse = tool("inferno-collapse-perf")
        self.flamegraph = tool("inferno-flamegraph")
        self.diff_folded = tool("inferno-diff-folded")

    @staticmethod
    def pick_event():
        r = subprocess.run(["perf", "stat", "-x,", "-e", "cycles", "true"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0 or "not supported" in r.stderr or "not counted" in r.stderr:
            return "cpu-clock"
        return "cycles"

    def profile(self, ctx, system, conns, secs):
        """Starts `system` afresh under `perf record` and runs wrk at `conns`
        for `secs` against it; perf writes its data when the system stops.
        perf samples from the start, but an idle sidecast takes no samples
        (cpu-clock counts only time on a CPU), so the profile is the wrk
        run's, with a few milliseconds of start-up and shutdown."""
        name = system.name
        data = os.path.join(self.work, f"perf-{name}.data")
        ctx.log(f"  profiling {name} at -c{conns} for {secs} s (perf record -e {self.event}, "
                "DWARF call graphs)")
        # DWARF unwinding: release builds of sidecast and its dependencies
        # keep no frame pointers, so -g's default would cut every stack at
        # the first frame without one
        system.wrap = ["perf", "record", "-e", self.event, "-F", "199",
                       "--call-graph", "dwarf,16384", "-o", data, "--"]
        try:
            system.start()
            time.sleep(0.5)
            out = subprocess.run(wrk_argv(system.proxy_port, conns, secs), capture_output=True,
                                 text=True, timeout=secs + 60).stdout
        finally:
            system.stop()
            system.wrap = []
        under = parse_wrk(out).get("req_per_s")
        if not os.path.exists(data):
            raise RuntimeError(f"perf record wrote no data for {name} "
                               f"(see {system.dir}/run{system.starts}.log)")
        folded = os.path.join(self.out_dir, f"passthrough-c{conns}-{name}.folded")
        svg = os.path.join(self.out_dir, f"passthrough-c{conns}-{name}.svg")
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True,
                                timeout=600)
        if script.returncode != 0:
            raise RuntimeError(f"perf script failed: {script.stderr.decode()[-500:]}")
        coll = subprocess.run([self.collapse], input=script.stdout, capture_output=True,
                              timeout=300, check=True)
        with open(folded, "wb") as fh:
            fh.write(coll.stdout)
        title = (f"{name}, pass-through at wrk -c{conns}, {secs} s, "
                 f"perf -e {self.event} ({under or 0:,.0f} req/s while sampled)")
        self._render(folded, svg, title)
        # inferno weighs each stack by the sample's period: nanoseconds on
        # cpu-clock, cycles on cycles
        weight = sum(int(line.rsplit(b" ", 1)[1]) for line in coll.stdout.splitlines()
                     if line.strip())
        sampled = (f"{weight / 1e6:,.0f} ms of CPU sampled" if self.event == "cpu-clock"
                   else f"{weight:,} cycles sampled")
        os.remove(data)
        self.log(f"  wrote {svg} ({sampled})")
        return {"svg": svg, "folded": folded, "event": self.event, "sampled": sampled,
                "seconds": secs, "conns": conns, "req_per_s_while_sampled": under}

    def _render(self, folded, svg, title, extra=()):
        with open(folded, "rb") as src, open(svg, "wb") as dst:
            subprocess.run([self.flamegraph, "--title", title, *extra], stdin=src, stdout=dst,
                           timeout=300, check=True)

    def diff(self, ctx, before, after, before_name):
        """A differential flame graph: the shape is sidecast's, red where
        sidecast spends more (in share of samples) than `before_name`,
        blue where less."""
        folded = os.path.join(self.out_dir, f"passthrough-c{after['conns']}-diff.folded")
        svg = os.path.join(self.out_dir, f"passthrough-c{after['conns']}-diff.svg")
        with open(folded, "wb") as dst:
            subprocess.run([self.diff_folded, "--normalize", before["folded"], after["folded"]],
                           stdout=dst, timeout=300, check=True)
        self._render(folded, svg, f"{before_name} → sidecast, pass-through at "
                                  f"-c{after['conns']} (red: more in sidecast, normalized)")
        ctx.log(f"  wrote {svg}")
        return {"svg": svg, "folded": folded}


def tool(name):
    """An inferno tool from PATH or cargo's bin directory."""
    found = shutil.which(name) or shutil.which(
        name, path=os.path.expanduser("~/.cargo/bin"))
    if not found:
        raise RuntimeError(f"{name} not found (cargo install --locked inferno)")
    return found
