"""(g) cluster: the same fan-out against one sidecast and against three
sidecast replicas joined through a real Redis, in one run.

Both setups get the same subscribers (the same number of generator
processes, one per replica's share) and the same events, published at the
same rate; in the cluster every event is published to replica A, so two
thirds of the deliveries cross Redis to replicas B and C. The question is
what joining replicas costs: delivered events/s, latency, and CPU.
"""

import os
import shutil
import subprocess
import time

from . import proc
from .load import Sub, Subs, run_phase
from .proc import Proc, free_port, wait_port
from .report import f, run_lines, table
from .systems import Sidecast

REPLICAS = ("a", "b", "c")


def ensure_redis(log):
    """Installs Debian's redis-server when missing (the harness runs its
    own instance; the packaged service is stopped)."""
    if shutil.which("redis-server"):
        return
    log("installing redis-server")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                           "redis-server"], check=True, env=env)
    subprocess.run(sudo + ["systemctl", "stop", "redis-server"], capture_output=True)


class Redis:
    """A throw-away redis-server on a free loopback port, nothing persisted."""

    def __init__(self, work):
        self.dir = os.path.join(work, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.port = None

    def start(self):
        self.port = free_port()
        self.proc = Proc("redis", ["redis-server", "--port", str(self.port),
                                   "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                   "--dir", self.dir, "--loglevel", "warning"],
                         os.path.join(self.dir, "redis.log"))
        wait_port(self.port, "redis-server", proc=self.proc)

    def pids(self):
        return self.proc.pids() if self.proc else []

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    @staticmethod
    def version():
        out = subprocess.run(["redis-server", "--version"], capture_output=True,
                             text=True).stdout
        return out.split()[2].removeprefix("v=") if len(out.split()) > 2 else "?"


class Cluster:
    """What `run_phase` needs of a system: where to publish (replica A) and
    whose CPU to count (every replica and Redis)."""

    name = "cluster"
    pub_kind = Sidecast.pub_kind
    pub_path = Sidecast.pub_path

    def __init__(self, replicas, redis):
        self.replicas = replicas
        self.redis = redis

    @property
    def pub_port(self):
        return self.replicas[0].pub_port

    def pids(self):
        return [p for r in self.replicas for p in r.pids()] + self.redis.pids()


class Spread(Subs):
    """Streams spread over several targets: `per_target` streams on each,
    one generator process per target, each with its own source addresses."""

    def __init__(self, loadgen, targets, per_target, log_dir, connect_timeout):
        self.subs = [Sub(loadgen, t, per_target, i, log_dir) for i, t in enumerate(targets)]
        self._wait_ready(per_target * len(targets), connect_timeout)

    def _wait_ready(self, streams, connect_timeout):
        t0 = time.monotonic()
        ready = [s.expect("ready", connect_timeout) for s in self.subs]
        self.connect_s = time.monotonic() - t0
        self.asked = streams
        self.established = sum(r["established"] for r in ready)
        self.errors = {}
        for r in ready:
            for k, v in r["connect_errors"].items():
                self.errors[k] = self.errors.get(k, 0) + v


def _measure(ctx, target, subs, redis):
    """One fan-out phase; Redis's CPU is reported apart from sidecast's."""
    g = ctx.plan.g
    r0 = proc.cpu_seconds(redis.pids()) if redis else 0.0
    r = run_phase(ctx.loadgen, target, subs, ctx.next_phase(), g["count"], g["rate"],
                  ctx.plan.wait_s)
    redis_cpu = proc.cpu_seconds(redis.pids()) - r0 if redis else None
    r["redis_cpu_s"] = redis_cpu
    r["sidecast_cpu_s"] = r["sut_cpu_s"] - (redis_cpu or 0.0)
    r["connect_s"] = subs.connect_s
    r["established"] = subs.established
    r["asked"] = subs.asked
    r["connect_errors"] = subs.errors
    ctx.log(f"  {target.name}: {r['delivered']}/{r['expected']} delivered, p50 {r['p50_ms']} "
            f"p99 {r['p99_ms']} ms, {r['delivered_per_s']:.0f} ev/s, sidecast cpu "
            f"{r['sidecast_cpu_s']:.1f}s redis cpu {redis_cpu} gen cpu {r['gen_cpu_s']:.1f}s")
    return r


def _single(ctx, work, origin, binary, per):
    node = Sidecast(work, origin, binary, max_streams=per * len(REPLICAS) + 200,
                    name="sidecast-single")
    node.start()
    try:
        time.sleep(0.5)
        subs = Spread(ctx.loadgen, [node] * len(REPLICAS), per, node.dir,
                      ctx.plan.connect_timeout)
        try:
            return _measure(ctx, node, subs, None)
        finally:
            subs.close()
    finally:
        node.stop()


def _cluster(ctx, work, origin, binary, per):
    redis = Redis(work)
    replicas = [Sidecast(work, origin, binary, max_streams=per + 200,
                         name=f"sidecast-replica-{x}")
                for x in REPLICAS]
    redis.start()
    try:
        for r in replicas:
            r.extra = f'\n[cluster]\nredis = "{redis.url()}"\n'
            r.start()
        time.sleep(0.5)
        subs = Spread(ctx.loadgen, replicas, per, work, ctx.plan.connect_timeout)
        try:
            return _measure(ctx, Cluster(replicas, redis), subs, redis)
        finally:
            subs.close()
    finally:
        for r in replicas:
            r.stop()
        redis.stop()


def run_cluster(ctx, origin, binary, results):
    """Single node, then three replicas with Redis, with the same load."""
    g = ctx.plan.g
    per = g["streams"] // len(REPLICAS)
    ensure_redis(ctx.log)
    work = os.path.join(ctx.work, "cluster")
    os.makedirs(work, exist_ok=True)
    out = results["g"]
    out["redis_version"] = Redis.version()
    ctx.log(f"(g) single node: {per * len(REPLICAS)} streams, {g['count']} events "
            f"at {g['rate']}/s")
    try:
        out["single"] = _single(ctx, work, origin, binary, per)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        ctx.log(f"  single node failed: {e}")
        out["single"] = {"error": str(e)}
    ctx.log(f"(g) cluster: {len(REPLICAS)} replicas + Redis, {per} streams on each, "
            "published to replica A")
    try:
        out["cluster"] = _cluster(ctx, work, origin, binary, per)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        ctx.log(f"  cluster failed: {e}")
        out["cluster"] = {"error": str(e)}


def _row(label, r):
    if "error" in r:
        return [f"**{label}**", f"failed: {r['error'][:200]}"] + [""] * 13
    return [f"**{label}**", f"{f(r['established'])} / {f(r['asked'])}", f(r["expected"]),
            f"{f(r['delivered'])} ({r['delivered_pct']:.2f}%)", f(r["duplicates"]),
            f(r["out_of_order"]) + (f" (+{f(r['reordered_concurrent'])} concurrent)"
                                    if r.get("reordered_concurrent") else ""),
            f(r["p50_ms"], 2), f(r["p99_ms"], 2), f(r["max_ms"], 1),
            f(r["delivered_per_s"], 0),
            f"{f(r['publish_rate'], 1)} ({f(r['publish_p99_ms'], 1)})",
            f(r["sidecast_cpu_s"], 2), f(r["redis_cpu_s"], 2), f(r["gen_cpu_s"], 2),
            f(r["wall_s"], 1)]


def markdown(res, meta, plan):
    """The (g) section of BENCHMARKS.md: one row per setup."""
    g = plan["g"]
    per = g["streams"] // len(REPLICAS)
    head = ["setup", "streams open / asked", "events expected", "delivered", "dup",
            "out of order", "p50 ms", "p99 ms", "max ms", "delivered ev/s",
            "publish /s (p99 ms)", "sidecast CPU s", "Redis CPU s", "gen CPU s", "wall s"]
    rows = [_row("single node: 1 sidecast", res.get("single", {"error": "not run"})),
            _row(f"cluster: {len(REPLICAS)} replicas + Redis", res.get("cluster",
                                                                       {"error": "not run"}))]
    return "\n".join(run_lines(meta) + [
        f"Versions: {meta['versions'].get('sidecast', '?')}; Redis {res.get('redis_version')} "
        "(`--save \"\" --appendonly no`).",
        "",
        f"### (g) {f(g['streams'])} streams × {g['count']} events at {g['rate']}/s: "
        f"one sidecast vs {len(REPLICAS)} replicas with {f(per)} streams each, "
        "published to replica A",
        "",
        table(head, rows),
        ""])
