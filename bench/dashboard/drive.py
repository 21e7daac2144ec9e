#!/usr/bin/env python3
"""A real sidecast run for the dashboard's screenshot (bench/dashboard/run).

Starts, on loopback only: Redis, an upstream app (a small HTTP server in this
process), two sidecast pods joined through Redis (`orders-a` verifies JWTs
from a secret file, `orders-b` asks the app: forward auth) and Prometheus
scraping both, labelled as a Kubernetes pod monitor would label them
(`namespace`, `pod`). Then it drives, for --seconds, what an operator would
want to see on the dashboard: subscribers that come and go (replays, a few
resets), a publisher, pass-through traffic of every status class, and the
incidents the dashboard is there for, each at a fixed share of the run:

  slow subscribers closed as `slow`          from 10 %, every 15-30 s each
  tokens that expire during their stream     at 15 %
  a refused reload (a key file too short)    at 28 %
  a key rotated: streams `revoked`           at 36 %
  users logged out in the app: `revoked`     at 44 % (orders-b's recheck)
  Redis down for 7 % of the run              at 52 %
  the app ends a topic's streams             at 68 %
  orders-b out of file descriptors briefly   at 78 %
  upstream timeouts, body stalls, 502s,
  refused subscribers and publishers         throughout

Every loop stops at the deadline; every process started here is stopped
here. Writes OUT/run.json (Prometheus' data directory, the run's start and
end, the scrape interval); bench/dashboard/render.py draws from it.

    bench/dashboard/drive.py --out target/dashboard [--seconds 360]
"""

import argparse
import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRAPE = 5  # seconds between scrapes
PUBLISH_TOKEN = "dashboard-run-publish-token-0123456789"
SECRETS = ["orders-secret-one-0123456789abcdefghijklmnop", "orders-secret-two-0123456789abcdefghijklmnop"]
TOPICS = [f"orders/{n}" for n in range(1, 21)]
rng = random.Random(7)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- the upstream app --------------------------------------------------------

LOGGED_OUT = set()  # users the app no longer knows (forward auth answers 401)


class App(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (the handler's name)
        path = urllib.parse.urlsplit(self.path).path
        if path == "/api/me":
            return self.me()
        if path.startswith("/api/orders/"):
            time.sleep(min(0.12, rng.lognormvariate(-4.6, 0.7)))  # ~10 ms, a long tail
            return self.reply(200, b'{"status":"paid"}', [("Content-Type", "application/json")])
        if path.startswith("/reports/"):
            time.sleep(rng.uniform(0.15, 0.8))
            return self.reply(200, b"report", [("Content-Type", "text/plain")])
        if path == "/api/missing":
            return self.reply(404, b"no such order")
        if path == "/api/old":
            return self.reply(302, b"", [("Location", "/api/orders/1")])
        if path == "/api/broken":
            return self.reply(500, b"the app failed")
        if path == "/api/hang":  # no response head before [upstream] timeout: 504
            time.sleep(3)
            return self.reply(200, b"late")
        if path == "/api/stall":  # a body silent past body_idle_timeout
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            time.sleep(4)
            self.close_connection = True
            return
        self.reply(404, b"")

    def me(self):
        cookie = self.headers.get("Cookie", "")
        user = next((c.split("=", 1)[1] for c in cookie.split("; ") if c.startswith("session=")), "")
        if not user or user.startswith("bad") or user in LOGGED_OUT:
            return self.reply(401, b"")
        if user.startswith("flaky"):
            return self.reply(503, b"")
        self.reply(200, b"{}", [("Sidecast-User", user)])


class AppServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that left early (sidecast cut a stalled body, a 504):
        # expected here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def start_app():
    srv = AppServer(("127.0.0.1", 0), App)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# ---- processes ---------------------------------------------------------------


class Procs:
    """What this run started, each in its own session, stopped by pid."""

    def __init__(self, out):
        self.out = out
        self.running = {}

    def start(self, name, argv, env=None, nofile=None):
        logf = open(self.out / f"{name}.log", "ab")

        def limits():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True, preexec_fn=limits)
        self.running[name] = p
        return p

    def stop(self, name, timeout=15):
        p = self.running.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def stop_all(self):
        for name in list(self.running):
            self.stop(name)


def wait_for(what, check, within=30):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {within}s")


def listening(logfile):
    """The addresses of sidecast's start-up line in its log."""
    for line in logfile.read_text(errors="replace").splitlines():
        if "sidecast listening" in line:
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            return fields
    return None


def sidecast_config(name, app_port, dead_port, redis_port, auth):
    return f"""
[listen]
public = "127.0.0.1:0"
publish = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:{app_port}"
timeout = "2s"
body_idle_timeout = "2s"

[events]
retry = "1s"
heartbeat = "5s"
history = 1000
queue = 32

[auth]
{auth}

[publish]
require_token = true
max_body_bytes = 65536

[log]
access = false

[cluster]
redis = "redis://127.0.0.1:{redis_port}"
startup_timeout = "2s"

# The bulk topic's large events: little history.
[[history]]
pattern = "bulk"
size = 10

[[routes]]
prefix = "/reports"
upstream = "http://127.0.0.1:{app_port}"

[[routes]]
prefix = "/legacy"
upstream = "http://127.0.0.1:{dead_port}"
"""


# ---- JWTs ---------------------------------------------------------------------


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(secret, sub, topics, ttl=3600, exp=None):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": sub, "topics": topics, "exp": int(exp if exp is not None else time.time() + ttl)}
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


# ---- the run -----------------------------------------------------------------


class Run:
    def __init__(self, seconds, pods):
        self.seconds = seconds
        self.t0 = time.monotonic()
        self.deadline = self.t0 + seconds
        self.pods = pods  # name -> {"public": (host, port), "publish": ..., "kind": "jwt"|"forward"}
        self.secret = SECRETS[0]
        self.stats = {}

    def at(self, share):
        return self.t0 + share * self.seconds

    def over(self):
        return time.monotonic() >= self.deadline

    def count(self, what):
        self.stats[what] = self.stats.get(what, 0) + 1

    async def sleep_until(self, t):
        delay = t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(min(delay, self.deadline - time.monotonic() + 0.01))

    # -- subscribers

    async def open_stream(self, pod, topics, token=None, cookie=None, last_id=None, rcvbuf=None):
        host, port = self.pods[pod]["public"]
        query = "&".join(f"topic={t}" for t in topics)
        lines = [f"GET /events?{query} HTTP/1.0", f"Host: {host}:{port}", "Accept: text/event-stream"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if cookie:
            lines.append(f"Cookie: {cookie}")
        if last_id:
            lines.append(f"Last-Event-ID: {last_id}")
        if rcvbuf:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        else:
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        code = int(status.split()[1]) if status.startswith(b"HTTP/") else 0
        while True:
            h = await asyncio.wait_for(reader.readline(), 10)
            if h in (b"\r\n", b"\n", b""):
                break
        return code, reader, writer

    async def subscriber(self, pod, user, topic, credential, lifetime_mean=60.0, start=0.0, until=None):
        """Holds a stream; now and then closes it itself and comes back with
        Last-Event-ID (a replay), rarely with an unknown id (a reset); comes
        back too when sidecast ends it. `credential()` gives (token, cookie)
        or None when this user should stop."""
        await asyncio.sleep(start)
        last_id = None
        until = until or self.deadline
        while not self.over() and time.monotonic() < until:
            cred = credential()
            if cred is None:
                return
            token, cookie = cred
            sent_id = last_id
            if last_id and rng.random() < 0.04:
                sent_id = "0-0-unknown"
            try:
                code, reader, writer = await self.open_stream(pod, [topic], token, cookie, sent_id)
            except (OSError, asyncio.TimeoutError, ValueError):
                self.count("subscribe failed")
                await asyncio.sleep(1 + rng.random())
                continue
            if code != 200:
                self.count(f"subscribe {code}")
                writer.close()
                await asyncio.sleep(2 + 2 * rng.random())
                continue
            self.count("streams opened")
            leave = time.monotonic() + rng.expovariate(1 / lifetime_mean)
            try:
                while not self.over() and time.monotonic() < min(leave, until):
                    line = await asyncio.wait_for(reader.readline(), max(0.05, min(leave, until, self.deadline) - time.monotonic()))
                    if not line:
                        self.count("streams ended by sidecast")
                        break
                    if line.startswith(b"id: "):
                        last_id = line[4:].strip().decode()
            except (asyncio.TimeoutError, OSError):
                pass
            writer.close()
            await asyncio.sleep(1 + rng.random())  # the stream's retry: 1s

    async def slow_subscriber(self, pod, token):
        """Opens a stream on the bulk topic with a tiny receive buffer and
        reads nothing: once the kernel's buffers and the stream's queue are
        full, sidecast closes it as slow. Then reads what is left, to see
        the end, and comes back."""
        while not self.over():
            try:
                code, reader, writer = await self.open_stream(pod, ["bulk"], token(), None, None, rcvbuf=2048)
            except (OSError, asyncio.TimeoutError, ValueError):
                await asyncio.sleep(2)
                continue
            await asyncio.sleep(min(25, max(0, self.deadline - time.monotonic())))
            until = time.monotonic() + 3
            try:
                while time.monotonic() < until:
                    if not await asyncio.wait_for(reader.read(1 << 16), until - time.monotonic()):
                        self.count("slow stream closed by sidecast")
                        break
            except (asyncio.TimeoutError, OSError):
                pass
            writer.close()
            await asyncio.sleep(rng.uniform(1, 6))

    async def refused_subscribers(self):
        """Credentials sidecast refuses, a few a minute: every reason."""
        bad = [
            ("orders-a", None, None),                                               # missing
            ("orders-a", "not-a-jwt", None),                                        # malformed
            ("orders-a", jwt("some-other-secret-0123456789abcdefghij", "eve", ["orders/*"]), None),  # bad_signature
            ("orders-a", "EXPIRED", None),                                          # expired
            ("orders-a", "FORBIDDEN", None),                                        # forbidden
            ("orders-b", None, "session=bad-cookie"),                               # forward: denied
            ("orders-b", None, "session=flaky-1"),                                  # forward: unavailable
        ]
        while not self.over():
            pod, token, cookie = rng.choice(bad)
            kind = cookie or (token if token in ("EXPIRED", "FORBIDDEN", "not-a-jwt", None) else "other key")
            if token == "EXPIRED":
                token = jwt(self.secret, "eve", ["orders/*"], exp=time.time() - 120)
            elif token == "FORBIDDEN":
                token = jwt(self.secret, "eve", ["invoices/*"])
            try:
                code, _, writer = await self.open_stream(pod, ["orders/1"], token, cookie)
                writer.close()
                self.count(f"refused {kind}: {code}")
            except (OSError, asyncio.TimeoutError, ValueError):
                pass
            await asyncio.sleep(rng.uniform(0.5, 3))

    # -- incidents

    async def incidents(self, procs, redis_argv, secret_file):
        await self.sleep_until(self.at(0.28))
        if self.over():
            return
        log("a refused reload: the key file rewritten too short")
        replace(secret_file, "too-short")
        await self.sleep_until(self.at(0.36))
        log("a rotated key: streams verified by the old one are revoked")
        replace(secret_file, SECRETS[1])
        self.secret = SECRETS[1]
        await self.sleep_until(self.at(0.44))
        log("the app logs out 12 users of orders-b: revoked at the next recheck")
        LOGGED_OUT.update(f"user-b{n}" for n in range(12))
        await self.sleep_until(self.at(0.52))
        log("Redis goes down")
        await asyncio.to_thread(procs.stop, "redis")
        await self.sleep_until(self.at(0.59))
        log("Redis is back (a new data set: a new epoch)")
        await asyncio.to_thread(procs.start, "redis", redis_argv)
        await self.sleep_until(self.at(0.68))
        log("the app ends the streams of orders/3 (POST /disconnect)")
        await asyncio.to_thread(self.post, "orders-a", "/disconnect", {"topic": "orders/3", "reason": "moved"})
        await self.sleep_until(self.at(0.78))
        log("orders-b runs out of file descriptors for a few seconds")
        await self.exhaust("orders-b", 700, 4)

    async def exhaust(self, pod, n, hold):
        host, port = self.pods[pod]["public"]
        socks = []
        try:
            for _ in range(n):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect((host, port))
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    break
                socks.append(s)
            await asyncio.sleep(hold)
        finally:
            for s in socks:
                s.close()

    # -- publishing and pass-through (threads: blocking http.client)

    def post(self, pod, path, body, content_type="application/json", token=PUBLISH_TOKEN, conn=None):
        host, port = self.pods[pod]["publish"]
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        c = conn or http.client.HTTPConnection(host, port, timeout=10)
        c.request("POST", path, data, {"Content-Type": content_type, "Authorization": f"Bearer {token}"})
        r = c.getresponse()
        r.read()
        if conn is None:
            c.close()
        return r.status

    def publisher(self, rate):
        """`rate` events a second over the order topics, half to each pod;
        one in ten is a 48 KiB event to `bulk` (what the slow subscribers
        fall behind on: a few MiB fill the kernel's buffers and the queue)."""
        conns = {}
        n = 0
        next_t = time.monotonic()
        while not self.over():
            pod = "orders-a" if n % 2 == 0 else "orders-b"
            if n % 10 == 0:
                body = {"topic": "bulk", "event": "snapshot", "data": "x" * 49152}
            else:
                body = {"topic": rng.choice(TOPICS), "event": "status", "data": {"n": n, "status": "paid"}}
            try:
                if pod not in conns:
                    conns[pod] = http.client.HTTPConnection(*self.pods[pod]["publish"], timeout=10)
                self.count(f"publish {self.post(pod, '/publish', body, conn=conns[pod])}")
            except (OSError, http.client.HTTPException):
                conns.pop(pod, None)
                self.count("publish failed")
            n += 1
            next_t += 1 / rate
            time.sleep(max(0, next_t - time.monotonic()))

    def bad_publisher(self):
        """Requests the publish listener refuses: 400, 401, 413, 415."""
        while not self.over():
            pod = rng.choice(["orders-a", "orders-b"])
            kind = rng.choice(["json", "token", "big", "type"])
            try:
                if kind == "json":
                    self.post(pod, "/publish", b"{not json")
                elif kind == "token":
                    self.post(pod, "/publish", {"topic": "orders/1", "data": "x"}, token="wrong")
                elif kind == "big":
                    self.post(pod, "/publish", {"topic": "orders/1", "data": "x" * 70000})
                else:
                    self.post(pod, "/publish", b"x", content_type="text/plain")
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(rng.uniform(1, 5))

    def passthrough(self, rate):
        """Plain API traffic through both pods: mostly fast answers, slow
        reports, some 3xx/4xx/5xx and a route whose upstream is down (502)."""
        paths = ([f"/api/orders/{n}" for n in range(1, 30)] * 3 + ["/reports/weekly", "/reports/daily"] * 4
                 + ["/api/missing"] * 6 + ["/api/old"] * 4 + ["/api/broken"] * 2 + ["/legacy/orders"] * 3)
        conns = {}
        next_t = time.monotonic()
        while not self.over():
            pod = rng.choice(["orders-a", "orders-b"])
            path = rng.choice(paths)
            try:
                if pod not in conns:
                    conns[pod] = http.client.HTTPConnection(*self.pods[pod]["public"], timeout=10)
                c = conns[pod]
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                self.count(f"pass-through {r.status}")
                if r.getheader("Connection", "").lower() == "close":
                    conns.pop(pod).close()
            except (OSError, http.client.HTTPException):
                conns.pop(pod, None)
                self.count("pass-through failed")
            next_t += 1 / rate
            time.sleep(max(0, next_t - time.monotonic()))

    def troubles(self):
        """Now and then an upstream that answers too late (504) or whose body
        stalls (cut off: an upstream body timeout)."""
        while not self.over():
            time.sleep(max(0, min(rng.uniform(6, 14), self.deadline - time.monotonic())))
            if self.over():
                break
            pod = rng.choice(["orders-a", "orders-b"])
            path = rng.choice(["/api/hang", "/api/stall"])
            try:
                c = http.client.HTTPConnection(*self.pods[pod]["public"], timeout=10)
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                self.count(f"trouble {path} {r.status}")
                c.close()
            except (OSError, http.client.HTTPException) as e:
                self.count(f"trouble {path} {type(e).__name__}")


def replace(path, text):
    """Replaces a file in one step, as a ConfigMap's symlink swap does."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


async def drive(run, procs, redis_argv, secret_file):
    # The blocking loops below hold a thread each for the whole run: room
    # for them and for the incidents' one-off requests.
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=16))
    tasks = []
    # orders-a: JWT subscribers, 160 of them, one topic each.
    for n in range(160):
        topic = TOPICS[n % len(TOPICS)]
        tasks.append(run.subscriber("orders-a", f"user-a{n}", topic,
                                    lambda n=n, topic=topic: (jwt(run.secret, f"user-a{n}", [topic]), None),
                                    start=n * 0.05))
    # orders-b: the app's sessions (forward auth), 100 of them.
    for n in range(100):
        topic = TOPICS[n % len(TOPICS)]

        def cred(n=n):
            if f"user-b{n}" in LOGGED_OUT:
                return None
            return None, f"session=user-b{n}"

        tasks.append(run.subscriber("orders-b", f"user-b{n}", topic, cred, start=n * 0.05))

    # Tokens that expire during their stream, at 15 %; they come back with a fresh one.
    async def expiring(n):
        await run.sleep_until(run.at(0.15))
        exp = time.time() + 20 + n
        first = [True]

        def cred():
            if first[0]:
                first[0] = False
                return jwt(run.secret, f"user-x{n}", ["orders/*"], exp=exp), None
            return jwt(run.secret, f"user-x{n}", ["orders/*"]), None

        await run.subscriber("orders-a", f"user-x{n}", TOPICS[n], cred, lifetime_mean=10_000)

    tasks += [expiring(n) for n in range(20)]

    async def slow(n):
        await run.sleep_until(run.at(0.10) + n * 4)
        await run.slow_subscriber("orders-a", lambda: jwt(run.secret, f"slow-{n}", ["bulk"]))

    tasks += [slow(n) for n in range(3)]
    tasks.append(run.refused_subscribers())
    tasks.append(run.incidents(procs, redis_argv, secret_file))
    tasks.append(asyncio.to_thread(run.publisher, 40))
    tasks.append(asyncio.to_thread(run.bad_publisher))
    for _ in range(3):
        tasks.append(asyncio.to_thread(run.passthrough, 12))
    tasks.append(asyncio.to_thread(run.troubles))
    await asyncio.gather(*tasks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "target" / "dashboard"))
    ap.add_argument("--seconds", type=int, default=360)
    ap.add_argument("--sidecast", default=str(ROOT / "target" / "debug" / "sidecast"))
    args = ap.parse_args()
    if not 60 <= args.seconds <= 3600:
        sys.exit("--seconds: between 60 and 3600")
    for tool in ("redis-server", "prometheus"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (bench/dashboard/run installs it)")
    if not Path(args.sidecast).exists():
        sys.exit(f"{args.sidecast}: build it first (cargo build --bin sidecast)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))

    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    procs = Procs(out)
    try:
        app = start_app()
        app_port = app.server_address[1]
        dead_port = free_port()  # nothing listens there: the /legacy route's 502s
        redis_port = free_port()
        redis_argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no"]
        procs.start("redis", redis_argv)
        wait_for("redis", lambda: socket.create_connection(("127.0.0.1", redis_port), 1).close() or True)

        secret_file = out / "jwt-secret"
        secret_file.write_text(SECRETS[0] + "\n")
        auth = {
            "orders-a": f'secret_file = "{secret_file}"',
            "orders-b": 'mode = "forward"\nforward = "/api/me"\nforward_user = "header:Sidecast-User"\n'
                        'forward_grants = ["orders/*"]\nforward_cache = "10s"\nforward_recheck = "15s"',
        }
        pods = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAST_")}
        env.update({"SIDECAST_PUBLISH_TOKEN": PUBLISH_TOKEN, "RUST_LOG": "warn,sidecast::app=info"})
        for name in ("orders-a", "orders-b"):
            cfg = out / f"{name}.toml"
            cfg.write_text(sidecast_config(name, app_port, dead_port, redis_port, auth[name]))
            # orders-b with few file descriptors: a burst of connections
            # exhausts them (sidecast_accept_errors_total).
            procs.start(name, [args.sidecast, "--config", str(cfg)], env=env,
                        nofile=512 if name == "orders-b" else None)
            addrs = wait_for(name, lambda name=name: listening(out / f"{name}.log"))
            hp = lambda a: (a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1]))  # noqa: E731
            pods[name] = {k: hp(addrs[k]) for k in ("public", "publish", "admin")}
            log(f"{name}: public {addrs['public']}, admin {addrs['admin']}")

        prom_port = free_port()
        prom_cfg = out / "prometheus.yml"
        targets = [
            {"targets": [f"{pods[n]['admin'][0]}:{pods[n]['admin'][1]}"],
             "labels": {"namespace": "shop", "pod": f"{n}-7d9f8c"}}
            for n in pods
        ]
        prom_cfg.write_text(json.dumps({
            "global": {"scrape_interval": f"{SCRAPE}s", "scrape_timeout": f"{SCRAPE - 1}s"},
            "scrape_configs": [{"job_name": "sidecast", "static_configs": targets}],
        }, indent=2))
        procs.start("prometheus", ["prometheus", f"--config.file={prom_cfg}",
                                   f"--storage.tsdb.path={out / 'prometheus'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"])
        wait_for("prometheus", lambda: urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2)
                 .status == 200)
        start = time.time()
        time.sleep(2 * SCRAPE)  # a baseline before the load
        log(f"driving for {args.seconds}s")
        run = Run(args.seconds, pods)
        # The dashboard's range ends a scrape before the load stops, so that
        # its last values are the load's, not the stop's.
        end = time.time() + args.seconds - SCRAPE
        asyncio.run(drive(run, procs, redis_argv, secret_file))
        time.sleep(2 * SCRAPE)
        for k in sorted(run.stats):
            log(f"  {k}: {run.stats[k]}")
        (out / "run.json").write_text(json.dumps({
            "start": start, "end": end, "scrape_interval": SCRAPE,
            "prometheus_data": str(out / "prometheus"), "stats": run.stats,
        }, indent=2))
        log(f"wrote {out / 'run.json'}")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
