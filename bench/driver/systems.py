"""The systems under test, each started on loopback from a generated config.

A system knows where its subscribers connect, how the load generator
publishes to it (`pub_kind`, `pub_port`, `pub_path`), its pass-through
address for wrk, and which processes are its own (for RSS and CPU).
"""

import os
import shutil
import subprocess

from .proc import Proc, free_port, wait_http, wait_port

TOPIC = "bench"
# The GRIP app's held path (scenario h): the origin answers it with a stream
# hold on TOPIC and this initial body, an SSE comment the readers skip.
GRIP_PATH = "/stream"
GRIP_INITIAL = ": held\\n\\n"


def nproc():
    return os.cpu_count() or 1


def write_nginx_conf(path, run_dir, connections, http_body, modules=""):
    """An nginx.conf for a foreground nginx that keeps every file under
    `run_dir`, with `http_body` (servers, upstreams) inside `http {}`."""
    with open(path, "w") as f:
        f.write(f"""{modules}
worker_processes {nproc()};
worker_rlimit_nofile 20000;
daemon off;
user root;
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {run_dir}/body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;{http_body}
}}
""")


class Origin:
    """The app behind the proxies: nginx answering `GET /` with a small
    static body (the fast origin of the pass-through scenario), `/events`
    with a GRIP hold for Pushpin, and GRIP_PATH with a GRIP hold and a short
    initial body: the GRIP app of scenario (h), the same for sidecast and
    Pushpin (nginx answers from its config, so the app's own cost stays
    small and out of the measured processes)."""

    name = "origin"

    def __init__(self, work):
        self.dir = os.path.join(work, "origin")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        conf = os.path.join(self.dir, "nginx.conf")
        write_nginx_conf(conf, self.dir, 8192, f"""
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location = /events {{
            add_header Grip-Hold stream;
            add_header Grip-Channel {TOPIC};
            add_header Cache-Control no-cache;
            default_type text/event-stream;
            return 200 "";
        }}
        location = {GRIP_PATH} {{
            add_header Grip-Hold stream;
            add_header Grip-Channel {TOPIC};
            default_type text/event-stream;
            return 200 "{GRIP_INITIAL}";
        }}
        location / {{
            default_type text/plain;
            return 200 "hello from the origin\\n";
        }}
    }}""")
        self.proc = Proc("origin", ["nginx", "-c", conf, "-p", self.dir],
                         os.path.join(self.dir, "stdout.log"))
        wait_http(f"http://127.0.0.1:{self.port}/", "origin nginx", proc=self.proc)

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


class System:
    name = "?"
    sub_path = "/"
    pub_kind = "?"
    pub_path = "/"
    notes = ""

    def __init__(self, work, origin):
        self.dir = os.path.join(work, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.origin = origin
        self.proc = None
        self.starts = 0

    def pids(self):
        return self.proc.pids() if self.proc else []

    def log_tail(self):
        return self.proc.log_tail() if self.proc else ""

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def version(self):
        return ""


class Sidecast(System):
    name = "sidecast"
    pub_kind = "sidecast"
    pub_path = "/publish"
    sub_path = f"/events?topic={TOPIC}"

    def __init__(self, work, origin, binary, max_streams, name=None, extra="", grip=False):
        # a replica of a cluster gets its own name, hence its own directory
        if name:
            self.name = name
        super().__init__(work, origin)
        self.binary = binary
        self.max_streams = max_streams
        self.extra = extra
        # `[upstream] grip = true`: the app's Grip-Hold is honoured (scenario h)
        self.grip = grip
        # a command that runs sidecast as its child (`perf record ... --`):
        # perf cannot attach to a running process in every VM, but it can
        # always start one
        self.wrap = []
        self.notes = (f"`max_streams = {max_streams}`, `[auth] required = false`, "
                      "`queue = 256`, `heartbeat = \"15s\"`, `history = 1000` (defaults)"
                      + (", `[upstream] grip = true`" if grip else ""))

    def start(self):
        self.starts += 1
        self.port, self.pub_port, admin = free_port(), free_port(), free_port()
        self.proxy_port = self.port
        conf = os.path.join(self.dir, "sidecar.toml")
        grip = "\ngrip = true" if self.grip else ""
        with open(conf, "w") as f:
            f.write(f"""
[listen]
public = "127.0.0.1:{self.port}"
publish = "127.0.0.1:{self.pub_port}"
admin = "127.0.0.1:{admin}"

[upstream]
url = "http://127.0.0.1:{self.origin.port}"{grip}

[events]
heartbeat = "15s"
queue = 256
history = 1000
max_streams = {self.max_streams}

[auth]
required = false

[log]
level = "warn"

[shutdown]
grace = "2s"
{self.extra}""")
        self.proc = Proc("sidecast", self.wrap + [self.binary, "--config", conf],
                         os.path.join(self.dir, f"run{self.starts}.log"))
        wait_http(f"http://127.0.0.1:{admin}/readyz", "sidecast", proc=self.proc,
                  ok=lambda s: s == 200)

    def version(self):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=os.path.dirname(self.binary)).stdout.strip()
        return f"sidecast {rev}"


class Nchan(System):
    """nginx + nchan; the same nginx also serves `proxy_pass` to the origin
    for the pass-through scenario."""

    name = "nchan"
    pub_kind = "nchan"
    pub_path = "/pub"
    sub_path = "/sub"

    def __init__(self, work, origin):
        super().__init__(work, origin)
        self.notes = (f"`worker_processes {nproc()}`, `worker_connections 20000`, "
                      "`nchan_message_buffer_length 1000`, `nchan_message_timeout 1h`; "
                      "`proxy_pass` with upstream `keepalive 64`")

    def start(self):
        self.starts += 1
        self.port = self.pub_port = self.proxy_port = free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        write_nginx_conf(conf, self.dir, 20000, f"""
    upstream origin {{
        server 127.0.0.1:{self.origin.port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id {TOPIC};
        }}
        location = /pub {{
            nchan_publisher;
            nchan_channel_id {TOPIC};
            nchan_message_buffer_length 1000;
            nchan_message_timeout 1h;
        }}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""", modules="load_module /usr/lib/nginx/modules/ngx_nchan_module.so;")
        self.proc = Proc("nchan", ["nginx", "-c", conf, "-p", self.dir],
                         os.path.join(self.dir, f"run{self.starts}.log"))
        wait_http(f"http://127.0.0.1:{self.port}/", "nginx + nchan", proc=self.proc)

    def version(self):
        v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        n = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"],
                           capture_output=True, text=True).stdout.strip()
        return f"{v.replace('nginx version: ', '')}, nchan {n}"


PUSHPIN_MESSAGE_RATE = 1_000_000
PUSHPIN_MESSAGE_HWM = 1_000_000


class Pushpin(System):
    """Pushpin in front of the origin, which holds `/events` as a GRIP
    stream on the channel. zurl (Pushpin's HTTP client, through which it
    reaches the origin) runs as one of Pushpin's own services."""

    name = "pushpin"
    pub_kind = "pushpin"
    pub_path = "/publish/"
    sub_path = "/events"

    def __init__(self, work, origin):
        super().__init__(work, origin)
        self.notes = (f"`message_rate = {PUSHPIN_MESSAGE_RATE}` and "
                      f"`message_hwm = {PUSHPIN_MESSAGE_HWM}` (packaged: 2500 and 25000, "
                      "which throttle fan-out to 2,500 deliveries/s); zurl added to "
                      "`services`; other settings as packaged")

    def start(self):
        self.starts += 1
        d = self.dir
        run = os.path.join(d, "run")
        logs = os.path.join(d, "log")
        for p in (run, logs):
            shutil.rmtree(p, ignore_errors=True)
            os.makedirs(p)
        self.port = self.proxy_port = free_port()
        self.pub_port = free_port()
        ports = [free_port() for _ in range(3)]
        with open("/usr/lib/pushpin/internal.conf") as f:
            internal = f.read()
        for spec in ("zurl-in-stream", "zurl-in", "zurl-out"):
            internal = internal.replace(f"ipc:///var/run/zurl/{spec}\n",
                                        f"ipc://{{rundir}}/{{ipc_prefix}}{spec}\n")
        with open(os.path.join(d, "internal.conf"), "w") as f:
            f.write(internal)
        with open(os.path.join(d, "routes"), "w") as f:
            f.write(f"* 127.0.0.1:{self.origin.port}\n")
        conf = os.path.join(d, "pushpin.conf")
        with open(conf, "w") as f:
            f.write(f"""[global]
include={d}/internal.conf
rundir={run}
ipc_prefix=pp-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port={self.port}
logdir={logs}
log_level=1
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl

[proxy]
routesfile={d}/routes
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss=pushpin
sig_key=changeme
upstream_key=
updates_check=off

[handler]
push_in_spec=tcp://127.0.0.1:{ports[0]}
push_in_sub_specs=tcp://127.0.0.1:{ports[1]}
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port={self.pub_port}
push_in_http_max_headers_size=10000
push_in_http_max_body_size=1000000
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=tcp://127.0.0.1:{ports[2]}
message_rate={PUSHPIN_MESSAGE_RATE}
message_hwm={PUSHPIN_MESSAGE_HWM}
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
""")
        self.proc = Proc("pushpin", ["pushpin", "--config", conf, "--port", f"127.0.0.1:{self.port}"],
                         os.path.join(d, f"run{self.starts}.log"), cwd=d)
        wait_port(self.pub_port, "pushpin publish API", proc=self.proc)
        wait_http(f"http://127.0.0.1:{self.port}/", "pushpin (through to the origin)",
                  proc=self.proc, ok=lambda s: s == 200)

    def version(self):
        return subprocess.run(["pushpin", "--version"], capture_output=True,
                              text=True).stdout.strip()


class PingoraReference(System):
    """Stock pingora (its own server, the smallest proxy) in front of the
    origin: only for the pass-through scenario, to show what pingora's
    proxy path costs on this machine apart from sidecast."""

    name = "pingora"
    notes = "pingora's own server, `threads` = cores, a proxy with `upstream_peer` only"

    def __init__(self, work, origin, binary):
        super().__init__(work, origin)
        self.binary = binary
        self.proxy_port = free_port()

    def start(self):
        self.proc = Proc(self.name, [self.binary, f"127.0.0.1:{self.proxy_port}",
                                     f"127.0.0.1:{self.origin.port}", str(nproc())],
                         os.path.join(self.dir, "stdout.log"))
        wait_http(f"http://127.0.0.1:{self.proxy_port}/", "stock pingora", proc=self.proc)

    def version(self):
        return "pingora 0.9 (bench/reference/pingora.rs)"
