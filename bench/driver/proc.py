"""Processes the harness starts, and what /proc says about them.

Every process is started in its own session, so that stopping a system
means signalling that one process group, and nothing else on the machine.
"""

import os
import signal
import socket
import subprocess
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_map():
    """ppid -> [pid] for every process visible now."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(pid):
    """`pid` and all its descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    """user + system CPU seconds of the live processes in `pids`."""
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is state (field 3); utime, stime are fields 14, 15
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def memory_kib(pids):
    """(RSS, PSS) in KiB summed over `pids`. PSS splits shared pages (nginx
    workers' shared memory) between the processes that map them."""
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def by_name(pids):
    """{process name: [RSS KiB, CPU seconds, how many]} over the live
    processes in `pids`, so that a system of several processes (Pushpin's
    runner, condure, zurl, proxy and handler) shows which of them holds the
    memory and uses the CPU."""
    out = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        rss, _ = memory_kib([p])
        row = out.setdefault(name, [0, 0.0, 0])
        row[0] += rss
        row[1] += cpu_seconds([p])
        row[2] += 1
    return out


class Proc:
    """One started process (and its descendants), logging to a file."""

    def __init__(self, name, argv, log_path, cwd=None, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.p.pid

    def pids(self):
        return tree(self.p.pid) if self.p.poll() is None else []

    def alive(self):
        return self.p.poll() is None

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def stop(self, grace=10.0):
        """SIGTERM to the process group, SIGKILL after `grace` seconds to
        whatever of it is left."""
        members = self.pids()
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        left = [p for p in members if os.path.exists(f"/proc/{p}")]
        if self.p.poll() is None or left:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


def wait_http(url, what, timeout=30.0, proc=None, ok=lambda status: status < 500):
    """Polls `url` until it answers with a status `ok` accepts."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what} exited:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if ok(r.status):
                    return
                last = r.status
        except urllib.error.HTTPError as e:
            if ok(e.code):
                return
            last = e.code
        except OSError as e:
            last = e
        time.sleep(0.1)
    tail = proc.log_tail() if proc else ""
    raise RuntimeError(f"{what} not ready at {url} within {timeout}s (last: {last})\n{tail}")


def wait_port(port, what, timeout=30.0, proc=None):
    """Waits until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what} exited:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {port} within {timeout}s")
