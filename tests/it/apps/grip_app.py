"""A GRIP app on the `gripcontrol` library, for the GRIP tests (tests/it/grip.rs).

The same app runs behind sidecast and behind Pushpin: everything GRIP goes
through the library (the `Grip-Channel` header, publishing with its own
`GripPubControl`, checking `Grip-Sig` with its own `validate_sig`), so the
tests show what an app written for a GRIP proxy gets from sidecast. What it
writes depends on its requests alone (no clock, no randomness), so two
proxies in front of it can be compared byte for byte.

    grip_app.py [--sig-key KEY]

Listens on a free loopback port and prints `port N` on stdout. Endpoints:

    POST /control          body {"control_uri": URL, "key": TOKEN?}: where
                           `/publish` publishes (the proxy's publish API);
                           `key` without an issuer is sent as a bearer token
    GET  /stream           a stream hold: `channel` (comma-separated), `prev`
                           (the first channel's prev-id), `keepalive`
                           (content), `ka_timeout`, `ka_mode`, `ka_format`;
                           the body (`initial`, default "initial\\n") is the
                           initial content
    GET  /poll             a response hold: `channel`, `timeout`; the body
                           (`body`, default "original\\n") answers at the timeout
    POST /publish          publishes the request body to `channel` through
                           GripPubControl: `kind=stream` (default, content),
                           `kind=close`, or `kind=response` (the body is the
                           response body; `code`, `reason`, `header` = Name:Value)
    GET  /raw              answers with the `h` parameters (Name:Value) as
                           headers, for instructions the library would not
                           write (bad ones, GRIP off)
    GET  /sig              JSON: whether the request's Grip-Sig validated with
                           the library's validator (`iss` checked when given),
                           and the Grip-Sig value seen
    *    anything else     JSON echo of method, path and request headers
"""

import argparse
import json
import logging
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


from gripcontrol import (
    Channel,
    GripPubControl,
    HttpResponseFormat,
    HttpStreamFormat,
    create_grip_channel_header,
    validate_sig,
)

SIG_KEY = None
PUB = None
PUB_LOCK = threading.Lock()
# Every item the app publishes carries an id of its own, so an attempt
# retried after a timeout is published once (both proxies drop an item
# whose id they have just seen on its channel). Ids never reach a client.
NEXT_ID = iter(range(1, 1 << 62))
# How long one publish attempt may take before it is tried once more.
ATTEMPT_TIMEOUT = 5


def bounded(client):
    """Gives each attempt of `client` (the library's PubControlClient) a
    timeout. The library's session has none, so a proxy that never
    answered would hang the app's request for ever; with it, the library
    retries once (its own urllib3 Retry, logged on stderr by urllib3) and
    then raises, which the app answers as 502 with the library's error."""
    session = client.requests_session
    post = session.post

    def post_bounded(*args, **kwargs):
        kwargs.setdefault("timeout", ATTEMPT_TIMEOUT)
        return post(*args, **kwargs)

    session.post = post_bounded


def channels_of(params):
    """The `channel` parameter as the library's Channel list; the first
    channel carries `prev` as its prev-id."""
    names = [c.strip() for c in params.get("channel", [""])[0].split(",")]
    prev = params.get("prev", [None])[0]
    return [Channel(name, prev if i == 0 else None) for i, name in enumerate(names)]


def hold_headers(mode, params):
    """The headers of a hold: the app's own, and the hold instruction with
    the channels as the library writes them."""
    return [
        ("Content-Type", "text/plain"),
        ("X-App", "grip"),
        ("Grip-Hold", mode),
        ("Grip-Channel", create_grip_channel_header(channels_of(params))),
    ]


class Handler(BaseHTTPRequestHandler):
    # Keep-alive connections with Content-Length, as the proxies expect.
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the test reads stdout
        sys.stderr.write("grip_app: " + (fmt % args) + "\n")

    def params(self):
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def answer(self, status, headers, body):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        path = urlsplit(self.path).path
        p = self.params()
        one = lambda k, d=None: p.get(k, [d])[0]
        if path == "/stream":
            headers = hold_headers("stream", p)
            if one("keepalive") is not None:
                ka = one("keepalive")
                for k, name in (("ka_format", "format"), ("ka_timeout", "timeout"), ("ka_mode", "mode")):
                    if one(k) is not None:
                        ka += "; %s=%s" % (name, one(k))
                headers.append(("Grip-Keep-Alive", ka))
            self.answer(200, headers, one("initial", "initial\n"))
        elif path == "/poll":
            headers = hold_headers("response", p)
            if one("timeout") is not None:
                headers.append(("Grip-Timeout", one("timeout")))
            self.answer(200, headers, one("body", "original\n"))
        elif path == "/raw":
            headers = [tuple(h.split(":", 1)) for h in p.get("h", [])]
            self.answer(200, [("Content-Type", "text/plain")] + headers, "raw body\n")
        elif path == "/sig":
            token = self.headers.get("Grip-Sig")
            iss = one("iss")
            valid = token is not None and SIG_KEY is not None and validate_sig(token, SIG_KEY, iss)
            out = {"valid": bool(valid), "grip_sig": token}
            if one("show") is None:
                del out["grip_sig"]
            self.answer(200, [("Content-Type", "application/json")], json.dumps(out) + "\n")
        else:
            self.echo()

    def do_POST(self):
        path = urlsplit(self.path).path
        if path == "/control":
            self.control()
        elif path == "/publish":
            self.publish()
        else:
            self.body()
            self.echo()

    def control(self):
        global PUB
        cfg = json.loads(self.body())
        entry = {"control_uri": cfg["control_uri"]}
        if cfg.get("key"):
            entry["key"] = cfg["key"]
        pub = GripPubControl(entry)
        for client in pub.clients:
            bounded(client)
        with PUB_LOCK:
            PUB = pub
        self.answer(204, [], b"")

    def publish(self):
        p = self.params()
        one = lambda k, d=None: p.get(k, [d])[0]
        content = self.body().decode("utf-8")
        channel = one("channel")
        kind = one("kind", "stream")
        with PUB_LOCK:
            pub = PUB
            item_id = "app-%d" % next(NEXT_ID)
        if pub is None:
            self.answer(409, [("Content-Type", "text/plain")], "POST /control first\n")
            return
        try:
            if kind == "stream":
                pub.publish_http_stream(channel, HttpStreamFormat(content), id=item_id, blocking=True)
            elif kind == "close":
                pub.publish_http_stream(channel, HttpStreamFormat(close=True), id=item_id, blocking=True)
            elif kind == "response":
                headers = dict(h.split(":", 1) for h in p.get("header", []))
                code = one("code")
                fmt = HttpResponseFormat(
                    code=int(code) if code else None,
                    reason=one("reason"),
                    headers=headers or None,
                    body=content,
                )
                pub.publish_http_response(channel, fmt, id=item_id, blocking=True)
            else:
                self.answer(400, [("Content-Type", "text/plain")], "kind: stream, close or response\n")
                return
        except ValueError as e:
            # The library's own error: the proxy's status and answer.
            self.answer(502, [("Content-Type", "text/plain")], "publish failed: %s\n" % e)
            return
        self.answer(200, [("Content-Type", "text/plain")], "published\n")

    def echo(self):
        out = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
        }
        self.answer(200, [("Content-Type", "application/json")], json.dumps(out) + "\n")


def exit_with_stdin():
    """Ends the process when its stdin closes: the test that started it
    holds the other end, so the app never outlives it."""
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    global SIG_KEY
    ap = argparse.ArgumentParser()
    ap.add_argument("--sig-key", help="the key Grip-Sig is checked with")
    args = ap.parse_args()
    SIG_KEY = args.sig_key
    # urllib3 says when the library retries a publish (a warning).
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="grip_app: %(name)s: %(message)s")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=exit_with_stdin, daemon=True).start()
    print("port %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
