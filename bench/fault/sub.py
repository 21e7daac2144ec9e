"""One subscriber process of the fault harness: many SSE streams that behave
as a browser's EventSource behind a load balancer, and a record of every
block each of them received.

Each subscriber opens `GET /events?topic=..` with `Accept:
text/event-stream`; when its stream ends it waits the last `retry:` it was
sent (as a browser does) and reconnects with `Last-Event-ID: <the last id
it saw>` to the next replica in its list (as a load balancer would send it
elsewhere). A connection that cannot be made is tried on the next replica
at once (a load balancer retries another backend), and only when every
replica refused does it wait `retry` again. Nothing is deduplicated or
judged here: the record is complete, and the analysis (analyse.py) decides
what was lost, duplicated or reordered.

Commands come as JSON lines on stdin, answers as JSON lines on stdout:
  {"cmd": "status", "final": {topic: [epoch, seq]}}
      -> {"open": n, "caught_up": n}: streams open, and subscribers whose
         last id has reached the newest acknowledged id of each of their
         topics (so the harness awaits delivery instead of sleeping)
  {"cmd": "churn", "count": n}   close n random streams; they reconnect
  {"cmd": "stop", "out": path}   close everything, write the record, exit
"""

import array
import asyncio
import json
import random
import sys
import time

HEAD_LIMIT = 16384
CONNECT_TIMEOUT = 5.0
# A stream silent this long (heartbeats included) is treated as dead.
STALL_S = 40.0

# kinds of what a stream received, in the record
EV, CURSOR, RESET, UNAVAILABLE, OTHER = 0, 1, 2, 3, 4


def parse_id(text, epochs):
    """`<epoch>-<seq>` as (epoch index, seq); an id of another shape keeps
    epoch index 0xFFFF, so that it can never compare equal to a real one."""
    ep, _, seq = text.rpartition("-")
    if not ep or not seq.isdigit():
        return 0xFFFF, 0
    idx = epochs.get(ep)
    if idx is None:
        idx = epochs[ep] = len(epochs)
    return idx, int(seq)


class Record:
    """What one subscriber saw, compactly: one entry per block (kind, epoch
    index, seq, publisher number or -1, arrival time in ms since start) and
    one entry per connection attempt."""

    def __init__(self):
        self.kind = array.array("b")
        self.epoch = array.array("H")
        self.seq = array.array("Q")
        self.num = array.array("q")
        self.t_ms = array.array("l")
        self.conns = []  # [port, t_attempt, t_open or None, t_end, status, first, sent_id]
        self.wrong_topic = 0
        self.retry_ms = []

    def add(self, kind, ep, seq, num, t_ms):
        self.kind.append(kind)
        self.epoch.append(ep)
        self.seq.append(seq)
        self.num.append(num)
        self.t_ms.append(t_ms)

    def dump(self):
        return {"kind": list(self.kind), "epoch": list(self.epoch), "seq": list(self.seq),
                "num": list(self.num), "t_ms": list(self.t_ms), "conns": self.conns,
                "wrong_topic": self.wrong_topic}


class Stream(asyncio.Protocol):
    """One HTTP/1.1 response: the head, the chunked body, the SSE blocks."""

    def __init__(self, sub, conn):
        self.sub = sub
        self.conn = conn
        self.buf = b""
        self.head_done = False
        self.chunk_left = 0  # bytes of the current chunk still to come
        self.text = b""  # SSE text not yet split into lines
        self.fields = {}
        self.done = asyncio.get_running_loop().create_future()
        self.transport = None
        self.last_byte = time.monotonic()
        self.opened = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.last_byte = time.monotonic()
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > HEAD_LIMIT:
                    self._finish("bad-head")
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            self.head_done = True
            status = head.split(" ", 2)
            code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
            self.conn[4] = code
            lower = head.lower()
            if code != 200 or "transfer-encoding: chunked" not in lower:
                self._finish(f"status-{code}")
                return
        self._chunks()

    def _chunks(self):
        buf = self.buf
        pos = 0
        out = []
        while True:
            if self.chunk_left > 0:
                take = min(self.chunk_left, len(buf) - pos)
                if take <= 0:
                    break
                out.append(buf[pos:pos + take])
                pos += take
                self.chunk_left -= take
                if self.chunk_left == 0:
                    self.chunk_left = -2  # the CRLF after the chunk
                continue
            if self.chunk_left == -2:
                if len(buf) - pos < 2:
                    break
                pos += 2
                self.chunk_left = 0
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            size = int(buf[pos:nl].split(b";")[0], 16)
            pos = nl + 2
            if size == 0:
                self.buf = b""
                if out:
                    self._sse(b"".join(out))
                self._finish("end")
                return
            self.chunk_left = size
        self.buf = buf[pos:]
        if out:
            self._sse(b"".join(out))

    def _sse(self, data):
        if not self.opened:
            self.opened = True
            self.conn[2] = self.sub.now()
        self.text += data
        # sidecast ends lines with \n only
        *lines, self.text = self.text.split(b"\n")
        for line in lines:
            if line == b"":
                if self.fields:
                    self.sub.block(self.fields, self.conn)
                    self.fields = {}
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            name = name.decode()
            if name == "data" and "data" in self.fields:
                self.fields["data"] += b"\n" + value
            else:
                self.fields[name] = value

    def _finish(self, why):
        if not self.done.done():
            self.done.set_result(why)
        if self.transport:
            self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result("eof" if exc is None else f"error:{type(exc).__name__}")


class Sub:
    def __init__(self, worker, idx, topics, ports, first):
        self.w = worker
        self.idx = idx
        self.topics = topics
        self.topic_set = set(topics)
        self.ports = ports
        self.cur = first % len(ports)
        self.rec = Record()
        self.last_id = None  # the browser's last event id (text)
        self.last_pos = None  # (epoch index, seq) of last_id
        self.retry_ms = 3000
        self.stream = None
        self.kick = False
        self.target = "/events?" + "&".join(f"topic={t}" for t in topics)

    def now(self):
        return round((time.monotonic() - self.w.t0) * 1000)

    def block(self, f, conn):
        if "retry" in f and len(f) == 1:
            try:
                self.retry_ms = int(f["retry"])
            except ValueError:
                pass
            return
        if "retry" in f:
            try:
                self.retry_ms = int(f["retry"])
            except ValueError:
                pass
        ev = f.get("event", b"").decode()
        idt = f.get("id")
        t = self.now()
        ep, seq = (0xFFFF, 0)
        if idt is not None:
            idt = idt.decode()
            ep, seq = parse_id(idt, self.w.epochs)
        if ev == "sidecast.reset":
            kind, num = RESET, -1
        elif ev == "sidecast.unavailable":
            kind, num = UNAVAILABLE, -1
        elif "data" not in f:
            kind, num = (CURSOR if idt is not None else OTHER), -1
        else:
            kind = EV
            data = f["data"].decode(errors="replace")
            head, _, topic = data.partition(" ")
            num = int(head) if head.isdigit() else -2
            if topic not in self.topic_set:
                self.rec.wrong_topic += 1
        if conn[5] is None:
            conn[5] = kind
        self.rec.add(kind, ep, seq, num, t)
        if idt is not None:
            # EventSource keeps every id it is given, the cursor's included
            self.last_id = idt
            self.last_pos = (ep, seq)

    async def run(self):
        failures = 0
        while not self.w.stopping:
            port = self.ports[self.cur]
            conn = [port, self.now(), None, None, 0, None, self.last_id]
            self.rec.conns.append(conn)
            why = await self.once(port, conn)
            conn[3] = self.now()
            conn.append(why)
            if self.w.stopping:
                return
            # the next stream goes to the next replica, as a load balancer
            # would send a new connection elsewhere
            self.cur = (self.cur + 1) % len(self.ports)
            if conn[2] is None:
                failures += 1
                if failures < len(self.ports):
                    continue  # the balancer tries another backend at once
            failures = 0
            if self.kick:
                self.kick = False
                delay = random.uniform(0, 0.5)
            else:
                delay = self.retry_ms / 1000
            await self.w.sleep(delay)

    async def once(self, port, conn):
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await asyncio.wait_for(
                loop.create_connection(lambda: Stream(self, conn), "127.0.0.1", port),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            return f"connect:{type(e).__name__}"
        self.stream = proto
        head = (f"GET {self.target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Accept: text/event-stream\r\nCache-Control: no-cache\r\n")
        if self.last_id is not None:
            head += f"Last-Event-ID: {self.last_id}\r\n"
        transport.write((head + "\r\n").encode())
        try:
            while True:
                done, _ = await asyncio.wait([proto.done], timeout=5.0)
                if done:
                    return proto.done.result()
                if time.monotonic() - proto.last_byte > STALL_S:
                    proto._finish("stall")
                    return "stall"
                if self.w.stopping:
                    proto._finish("stopped")
                    return "stopped"
        finally:
            self.stream = None
            transport.close()

    def churn(self):
        """Drops the stream from the client side, as a network change
        would; it reconnects with its last id."""
        if self.stream is not None:
            self.kick = True
            self.stream._finish("churn")


class Worker:
    def __init__(self, spec):
        self.t0 = spec.get("t0", time.monotonic())
        self.epochs = {}
        self.stopping = False
        self.subs = [Sub(self, s["idx"], s["topics"], s["ports"], s["first"])
                     for s in spec["subs"]]
        self.tasks = []
        self._wake = None

    async def sleep(self, s):
        try:
            await asyncio.wait_for(self._wake.wait(), s)
        except asyncio.TimeoutError:
            pass

    async def start(self, batch):
        self._wake = asyncio.Event()
        for i in range(0, len(self.subs), batch):
            for s in self.subs[i:i + batch]:
                self.tasks.append(asyncio.create_task(s.run()))
            # let a batch get its first bytes before the next one connects
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                    not (s.rec.conns and s.rec.conns[-1][2] is not None)
                    for s in self.subs[i:i + batch]):
                await asyncio.sleep(0.02)

    def status(self, final):
        """`final`: topic -> [epoch text, seq] of the newest acknowledged
        event; a subscriber has caught up when its last id is at or after
        that of each of its topics, in the same epoch."""
        fin = {}
        for t, (ep, seq) in final.items():
            idx = self.epochs.get(ep)
            fin[t] = (idx, seq)
        open_n = sum(1 for s in self.subs if s.stream is not None and s.stream.opened)
        caught = 0
        for s in self.subs:
            if s.last_pos is None:
                continue
            ok = True
            for t in s.topics:
                want = fin.get(t)
                if want is None:
                    continue
                if want[0] is None or s.last_pos[0] != want[0] or s.last_pos[1] < want[1]:
                    ok = False
                    break
            caught += ok
        return {"open": open_n, "caught_up": caught, "subs": len(self.subs)}

    def dump(self, path):
        names = {v: k for k, v in self.epochs.items()}
        out = {"epochs": [names[i] for i in range(len(names))],
               "subs": {s.idx: dict(s.rec.dump(), topics=s.topics) for s in self.subs}}
        with open(path, "w") as f:
            json.dump(out, f)


async def main():
    spec = json.loads(sys.stdin.readline())
    w = Worker(spec)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await w.start(spec.get("batch", 100))
    print(json.dumps({"ready": w.status({})}), flush=True)
    while True:
        line = await reader.readline()
        if not line:
            cmd = {"cmd": "stop", "out": None}
        else:
            cmd = json.loads(line)
        if cmd["cmd"] == "status":
            print(json.dumps(w.status(cmd.get("final", {}))), flush=True)
        elif cmd["cmd"] == "churn":
            live = [s for s in w.subs if s.stream is not None]
            for s in random.sample(live, min(cmd["count"], len(live))):
                s.churn()
            print(json.dumps({"churned": min(cmd["count"], len(live))}), flush=True)
        elif cmd["cmd"] == "stop":
            w.stopping = True
            w._wake.set()
            for s in w.subs:
                if s.stream is not None:
                    s.stream._finish("stopped")
            await asyncio.wait(w.tasks, timeout=10)
            if cmd.get("out"):
                w.dump(cmd["out"])
            print(json.dumps({"stopped": True}), flush=True)
            return


if __name__ == "__main__":
    asyncio.run(main())
