"""The processes a fault scenario starts: redis-server and sidecast, each on
free loopback ports, in the scenario's own temporary directory, each in its
own session so that a signal reaches that one process and nothing else."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port():
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout, proc=None, every=0.05):
    """Polls `check()` until it returns something truthy; a bounded wait
    that fails naming what it waited for (and the process's log tail)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: {proc.name} exited ({proc.p.returncode})\n"
                               f"{proc.log_tail()}")
        try:
            got = check()
            if got:
                return got
        except OSError as e:
            last = e
        time.sleep(every)
    tail = f"\n{proc.log_tail()}" if proc is not None else ""
    raise RuntimeError(f"{what}: not within {timeout}s (last: {last}){tail}")


class Proc:
    def __init__(self, name, argv, log_path):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self):
        """Whatever is left of it, at once (the end of a scenario)."""
        if self.alive():
            try:
                os.kill(self.p.pid, signal.SIGCONT)
                os.kill(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait(5)
        self.log.close()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def open_files(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Redis:
    """redis-server on a free port with an append-only file fsynced on every
    write, in `dir`: a restart with the same directory keeps the data, a
    restart after `wipe()` is a data loss."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.starts = 0

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.starts += 1
        self.proc = Proc("redis", ["redis-server", "--port", str(self.port), "--bind",
                                   "127.0.0.1", "--save", "", "--appendonly", "yes",
                                   "--appendfsync", "always", "--dir", self.dir,
                                   "--loglevel", "warning"],
                         os.path.join(self.dir, f"redis{self.starts}.log"))

        def ping():
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        wait_until("redis-server answering PING", ping, 20, self.proc)

    def wipe(self):
        """Removes the data set (the append-only files) of a stopped Redis."""
        assert self.proc is None or not self.proc.alive()
        for name in os.listdir(self.dir):
            p = os.path.join(self.dir, name)
            if name.startswith("appendonly") or name.endswith(".rdb"):
                if os.path.isdir(p):
                    for f in os.listdir(p):
                        os.remove(os.path.join(p, f))
                    os.rmdir(p)
                else:
                    os.remove(p)

    def stop_hard(self):
        if self.proc:
            self.proc.kill()
            self.proc = None


class Sidecast:
    """One sidecast on fixed free ports (kept across restarts, so that a
    restarted replica comes back where its clients and publishers expect
    it)."""

    def __init__(self, binary, dir, name, redis_url=None, max_streams=20000, retry="1s",
                 grace="5s", history_ttl=None):
        self.binary = binary
        self.name = name
        self.dir = os.path.join(dir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port, self.pub_port, self.admin_port = free_port(), free_port(), free_port()
        self.conf = os.path.join(self.dir, "sidecar.toml")
        cluster = f'\n[cluster]\nredis = "{redis_url}"\n' if redis_url else ""
        ttl = f'\nhistory_ttl = "{history_ttl}"' if history_ttl else ""
        with open(self.conf, "w") as f:
            # the upstream is never used: every request is to /events or publish
            f.write(f"""[listen]
public = "127.0.0.1:{self.port}"
publish = "127.0.0.1:{self.pub_port}"
admin = "127.0.0.1:{self.admin_port}"

[upstream]
url = "http://127.0.0.1:{free_port()}"

[events]
retry = "{retry}"
max_streams = {max_streams}{ttl}

[auth]
required = false

[log]
level = "info,sidecast::stream=warn,sidecast::access=warn"
access = false

[shutdown]
delay = "0s"
grace = "{grace}"
{cluster}""")
        self.proc = None
        self.starts = 0

    def start(self, wait_ready=True):
        self.starts += 1
        self.proc = Proc(self.name, [self.binary, "--config", self.conf],
                         os.path.join(self.dir, f"run{self.starts}.log"))
        if wait_ready:
            self.wait_ready()

    def readyz(self):
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.admin_port}/readyz", timeout=2) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {}

    def wait_ready(self, timeout=30):
        wait_until(f"{self.name} /readyz 200", lambda: self.readyz()[0] == 200, timeout,
                   self.proc)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def pid(self):
        return self.proc.pid if self.alive() else None

    def metrics(self):
        """The counters of /metrics as {name{labels}: value}."""
        out = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                    timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    k, _, v = line.rpartition(" ")
                    try:
                        out[k] = float(v)
                    except ValueError:
                        pass
        return out

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc = None
