"""What every scenario shares: a temporary directory, the subscriber
processes, the publisher, the wait for delivery, and the analysis."""

import json
import os
import queue
import subprocess
import sys
import threading
import time

from analyse import analyse
from procs import Redis, Sidecast, open_files, rss_kib, wait_until
from publish import Publisher

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Worker:
    """One subscriber process (sub.py) and a thread that reads its answers."""

    def __init__(self, spec, log_path):
        self.err = open(log_path, "ab")
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "sub.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, bufsize=1,
                                  start_new_session=True)
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.p.stdin.write(json.dumps(spec) + "\n")
        self.p.stdin.flush()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def answer(self, timeout):
        try:
            got = self.q.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"subscriber process {self.p.pid} silent for {timeout}s")
        if got is None:
            raise RuntimeError(f"subscriber process {self.p.pid} exited "
                               f"({self.p.poll()}); see {self.err.name}")
        return got

    def ask(self, cmd, timeout=30):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.answer(timeout)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(5)
        self.err.close()


class Run:
    """One scenario's world: its directory, its processes, its clock."""

    def __init__(self, binary, work, name):
        self.binary = binary
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.t0 = time.monotonic()
        self.redis = None
        self.nodes = []
        self.workers = []
        self.pub = None
        self.marks = {}
        self.events = []  # (t_ms, what) for the report

    def now(self):
        return round((time.monotonic() - self.t0) * 1000)

    def note(self, what):
        self.events.append((self.now(), what))
        log(f"  {what}")

    def mark(self, name):
        self.marks[name] = self.now()

    def start_redis(self):
        self.redis = Redis(os.path.join(self.dir, "redis"))
        self.redis.start()
        return self.redis

    def start_nodes(self, n, cluster=True, retry="1s", grace="5s", max_streams=20000,
                    history_ttl=None):
        for i in range(n):
            node = Sidecast(self.binary, self.dir, f"sidecast-{'abcdefgh'[i]}",
                            redis_url=self.redis.url() if cluster else None,
                            max_streams=max_streams, retry=retry, grace=grace,
                            history_ttl=history_ttl)
            node.start(wait_ready=False)
            self.nodes.append(node)
        for node in self.nodes:
            node.wait_ready()
        return self.nodes

    def topics(self, count):
        return [f"fault/{i}" for i in range(count)]

    def start_subscribers(self, count, topics, per_sub, procs, ports=None, batch=100):
        """`count` subscribers, subscriber i on `per_sub` consecutive topics
        from i, first connected to replica i % replicas; spread over `procs`
        processes (each may hold 20,000 open files)."""
        ports = ports or [n.port for n in self.nodes]
        specs = [[] for _ in range(procs)]
        for i in range(count):
            ts = [topics[(i + k) % len(topics)] for k in range(per_sub)]
            specs[i % procs].append({"idx": i, "topics": ts, "ports": ports,
                                     "first": i % len(ports)})
        # The run's own start on the one monotonic clock of this machine
        # (CLOCK_MONOTONIC, shared by every process): an offset taken here
        # would lag in the worker by however long it took to start, and
        # put what the workers see that long before the faults' marks.
        for k, subs in enumerate(specs):
            w = Worker({"subs": subs, "t0": self.t0, "batch": batch},
                       os.path.join(self.dir, f"sub{k}.log"))
            self.workers.append(w)
        opened = 0
        for w in self.workers:
            opened += w.answer(120)["ready"]["open"]
        log(f"  {opened}/{count} streams open")
        return opened

    def start_publisher(self, rate, topics, ports=None):
        ports = ports or [n.pub_port for n in self.nodes]
        self.pub = Publisher(ports, topics, rate, self.t0)
        self.pub.start()
        return self.pub

    def status(self, final=None):
        tot = {"open": 0, "caught_up": 0, "subs": 0}
        for w in self.workers:
            got = w.ask({"cmd": "status", "final": final or {}})
            for k in tot:
                tot[k] += got[k]
        return tot

    def await_open(self, timeout):
        """Until every subscriber holds an open stream again."""
        return wait_until("every subscriber's stream open",
                          lambda: (lambda s: s["open"] == s["subs"])(self.status()),
                          timeout, every=0.5)

    def finish(self, settle_timeout=30):
        """Stops publishing, waits until every subscriber has received the
        newest acknowledged id of its topics (or the timeout), stops the
        subscribers and analyses their records."""
        self.pub.stop()
        final = self.pub.final_ids()
        t = time.monotonic()
        st = self.status(final)
        while st["caught_up"] < st["subs"] and time.monotonic() - t < settle_timeout:
            time.sleep(0.5)
            st = self.status(final)
        caught = st
        log(f"  {caught['caught_up']}/{caught['subs']} subscribers caught up "
            f"after {time.monotonic() - t:.1f}s")
        dumps = []
        for k, w in enumerate(self.workers):
            out = os.path.join(self.dir, f"sub{k}.json")
            w.ask({"cmd": "stop", "out": out}, timeout=60)
            with open(out) as f:
                dumps.append(json.load(f))
        acks = [a.as_dict() for a in self.pub.acks]
        with open(os.path.join(self.dir, "acks.json"), "w") as f:
            json.dump(acks, f)
        # with the records and the answers, enough to analyse a kept run again
        with open(os.path.join(self.dir, "marks.json"), "w") as f:
            json.dump(self.marks, f)
        res = analyse(acks, dumps, self.marks)
        res["caught_up"] = caught["caught_up"]
        res["timeline"] = self.events
        return res

    def sample(self):
        """RSS (KiB) and open files of every live sidecast and Redis."""
        out = {}
        for n in self.nodes:
            pid = n.pid()
            if pid:
                out[n.name] = (rss_kib(pid), open_files(pid))
        if self.redis and self.redis.proc and self.redis.proc.alive():
            out["redis"] = (rss_kib(self.redis.proc.pid), open_files(self.redis.proc.pid))
        return out

    def close(self):
        if self.pub:
            self.pub.stop_ev.set()
        for w in self.workers:
            w.kill()
        for n in self.nodes:
            n.kill()
        if self.redis:
            self.redis.stop_hard()
