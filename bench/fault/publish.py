"""The publisher: numbered events at a steady rate, round-robin over the
replicas, one request per event, and a record of every answer.

Event number n goes to topic n % topics with data "<n> <topic>", so that a
subscriber can tell which publish an event came from and whether it belongs
to its topics. Publishing is never retried after an answer (a 503 is
recorded as it is); only a connection that cannot be made is tried on the
next replica, as a load balancer would, since such a request never reached
anyone.
"""

import http.client
import json
import threading
import time

TIMEOUT = 10.0


class Ack:
    __slots__ = ("n", "topic", "status", "id", "outcome", "port", "t_sent", "t_done", "error")

    def __init__(self, n, topic):
        self.n = n
        self.topic = topic
        self.status = None
        self.id = None
        self.outcome = None
        self.port = None
        self.t_sent = None
        self.t_done = None
        self.error = None

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Publisher:
    def __init__(self, ports, topics, rate, t0, lanes=None):
        """`ports`: the replicas' publish ports; `topics`: topic names;
        `rate`: events per second in all. One thread per replica (a lane)
        publishes the numbers that round-robin gives it."""
        self.ports = ports
        self.topics = topics
        self.rate = rate
        self.t0 = t0
        self.lanes = lanes or len(ports)
        self.acks = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = []

    def now(self):
        return round((time.monotonic() - self.t0) * 1000)

    def start(self):
        self.start_t = time.monotonic()
        for lane in range(self.lanes):
            t = threading.Thread(target=self._lane, args=(lane,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(TIMEOUT + 5)

    def _lane(self, lane):
        k = 0
        while not self.stop_ev.is_set():
            n = k * self.lanes + lane
            due = self.start_t + n / self.rate
            wait = due - time.monotonic()
            if wait > 0 and self.stop_ev.wait(wait):
                break
            ack = Ack(n, self.topics[n % len(self.topics)])
            with self.lock:
                self.acks.append(ack)
            self._publish(ack, n % len(self.ports))
            k += 1

    def _publish(self, ack, first):
        """One connection per request: a connection that cannot be made
        means the request reached no one, so the next replica may take it;
        one that was sent and got no answer may have been published and is
        not sent again."""
        body = json.dumps({"topic": ack.topic, "event": "f",
                           "data": f"{ack.n} {ack.topic}"}).encode()
        for attempt in range(len(self.ports)):
            port = self.ports[(first + attempt) % len(self.ports)]
            ack.port = port
            ack.t_sent = self.now()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            try:
                c.connect()
            except OSError as e:
                c.close()
                ack.error = f"connect:{type(e).__name__}"
                continue
            try:
                c.request("POST", "/publish", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                text = r.read()
            except (http.client.HTTPException, OSError) as e:
                ack.status = 0
                ack.error = f"no-answer:{type(e).__name__}"
                ack.t_done = self.now()
                return
            finally:
                c.close()
            ack.status = r.status
            ack.t_done = self.now()
            try:
                js = json.loads(text)
            except ValueError:
                js = {}
            if r.status == 202:
                ack.id = js.get("ids", [None])[0]
            else:
                ack.outcome = js.get("outcome")
                ack.error = js.get("error")
            return
        ack.status = -1  # no replica could be reached
        ack.t_done = self.now()

    def final_ids(self):
        """topic -> [epoch, seq] of the acknowledged event with the highest
        id in the newest epoch seen (what every subscriber should reach)."""
        with self.lock:
            acked = [a for a in self.acks if a.status == 202 and a.id]
        if not acked:
            return {}
        last_epoch = max(acked, key=lambda a: a.t_done).id.rpartition("-")[0]
        out = {}
        for a in acked:
            ep, _, seq = a.id.rpartition("-")
            if ep != last_epoch:
                continue
            seq = int(seq)
            if a.topic not in out or out[a.topic][1] < seq:
                out[a.topic] = [ep, seq]
        return out

    def summary(self):
        with self.lock:
            acks = list(self.acks)
        by = {}
        for a in acks:
            key = str(a.status)
            if a.status == 503:
                key += f"/{a.outcome}"
            by[key] = by.get(key, 0) + 1
        return by
