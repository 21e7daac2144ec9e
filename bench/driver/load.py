"""Driving the load generator: subscriber processes that hold the streams,
and a publisher run per measured phase."""

import json
import math
import os
import queue
import subprocess
import threading
import time

from . import proc

SRC_PER_PROC = 8


class Sub:
    """One `loadgen sub` process and its JSON lines."""

    def __init__(self, loadgen, system, streams, index, log_dir):
        first = 10 + index * SRC_PER_PROC
        self.stderr = open(os.path.join(log_dir, f"sub{index}.err"), "ab")
        self.p = subprocess.Popen(
            [loadgen, "sub", "--addr", f"127.0.0.1:{system.port}", "--path", system.sub_path,
             "--streams", str(streams), "--src-first", str(first),
             "--src-count", str(SRC_PER_PROC), "--max-life-s", "1800"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, bufsize=1, start_new_session=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def expect(self, kind, timeout):
        """The next JSON line of type `kind`, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"load generator: no {kind!r} line within {timeout}s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"load generator exited (rc {self.p.wait()}) before {kind!r}")
            msg = json.loads(line)
            if msg.get("type") == kind:
                return msg
            if msg.get("type") == "error":
                raise RuntimeError(f"load generator: {msg['message']}")

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("quit")
                self.p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()
        self.stderr.close()


class Subs:
    """N streams held over several generator processes."""

    def __init__(self, loadgen, system, streams, procs, log_dir, connect_timeout):
        per = [streams // procs + (1 if i < streams % procs else 0) for i in range(procs)]
        self.subs = [Sub(loadgen, system, n, i, log_dir) for i, n in enumerate(per) if n > 0]
        t0 = time.monotonic()
        ready = [s.expect("ready", connect_timeout) for s in self.subs]
        self.connect_s = time.monotonic() - t0
        self.asked = streams
        self.established = sum(r["established"] for r in ready)
        self.errors = {}
        for r in ready:
            for k, v in r["connect_errors"].items():
                self.errors[k] = self.errors.get(k, 0) + v

    def pids(self):
        return [s.p.pid for s in self.subs if s.p.poll() is None]

    def stats(self):
        """Streams open now, and why the others ended so far (summed over
        the generator processes)."""
        total, reasons = 0, {}
        for s in self.subs:
            s.send("stats")
            st = s.expect("stats", 30)
            total += st["open"]
            for k, v in st["close_reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
        return total, reasons

    def close(self):
        for s in self.subs:
            s.close()


def merge_hists(reports):
    merged = {}
    for r in reports:
        for lb, c in r["hist"]:
            merged[lb] = merged.get(lb, 0) + c
    return sorted(merged.items())


def quantile(buckets, q, vmax):
    n = sum(c for _, c in buckets)
    if n == 0:
        return None
    want = max(1, math.ceil(round(n * q, 6)))
    seen = 0
    for lb, c in buckets:
        seen += c
        if seen >= want:
            return min(lb, vmax)
    return vmax


def publish(loadgen, system, phase, count, rate, timeout):
    argv = [loadgen, "pub", "--kind", system.pub_kind, "--addr", f"127.0.0.1:{system.pub_port}",
            "--path", system.pub_path, "--phase", str(phase), "--count", str(count),
            "--rate", str(rate)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"publisher failed: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_phase(loadgen, system, subs, phase, count, rate, wait_s):
    """Publishes `count` events at `rate`/s to every held stream and merges
    what all generator processes counted."""
    sys_pids = system.pids()
    cpu_sys0 = proc.cpu_seconds(sys_pids)
    t0 = time.monotonic()
    for s in subs.subs:
        s.send(f"begin {phase} {count}")
    for s in subs.subs:
        s.expect("begun", 30)
    pub = publish(loadgen, system, phase, count, rate, timeout=count / rate + 120)
    for s in subs.subs:
        s.send(f"report {phase} {int(wait_s * 1000)}")
    reports = [s.expect("report", wait_s + 60) for s in subs.subs]
    wall = time.monotonic() - t0
    cpu_sys = proc.cpu_seconds(system.pids()) - cpu_sys0
    hist = merge_hists(reports)
    vmax = max((r["max_us"] for r in reports), default=0)
    streams = sum(r["streams"] for r in reports)
    expected = count * streams
    delivered = sum(r["delivered"] for r in reports)
    last = max((r["last_recv_us"] for r in reports), default=0)
    span = (last - pub["start_us"]) / 1e6 if last else 0
    closes = {}
    for r in reports:
        for k, v in r["close_reasons"].items():
            closes[k] = closes.get(k, 0) + v
    ms = lambda us: None if us is None else us / 1000
    return {
        "phase": phase,
        "count": count,
        "rate": rate,
        "streams": streams,
        "expected": expected,
        "delivered": delivered,
        "delivered_pct": 100.0 * delivered / expected if expected else 0.0,
        "complete_streams": sum(r["complete_streams"] for r in reports),
        "duplicates": sum(r["duplicates"] for r in reports),
        "out_of_order": sum(r["out_of_order"] for r in reports),
        "reordered_concurrent": sum(r["reordered_concurrent"] for r in reports),
        "stale": sum(r["stale"] + r["beyond"] for r in reports),
        "streams_closed": sum(r["closed_incomplete"] for r in reports),
        "close_reasons": closes,
        "p50_ms": ms(quantile(hist, 0.50, vmax)),
        "p90_ms": ms(quantile(hist, 0.90, vmax)),
        "p99_ms": ms(quantile(hist, 0.99, vmax)),
        "p999_ms": ms(quantile(hist, 0.999, vmax)),
        "max_ms": ms(vmax),
        "delivered_per_s": delivered / span if span > 0 else 0.0,
        "published": pub["published"],
        "publish_errors": pub["errors"],
        "publish_last_error": pub["last_error"],
        "publish_rate": pub["achieved_rate"],
        "publish_p99_ms": pub["publish_p99_us"] / 1000,
        "publish_in_flight_max": pub["max_in_flight"],
        "wall_s": wall,
        "sut_cpu_s": cpu_sys,
        "gen_cpu_s": sum(r["cpu_s"] for r in reports) + pub["cpu_s"],
        "sut_cpu_us_per_delivery": 1e6 * cpu_sys / delivered if delivered else None,
        "hist": hist,
    }
