//! The GRIP tests' two real parties beside sidecast: the app on the
//! `gripcontrol` library (tests/it/apps/grip_app.py, run by the suite's
//! Python), and Pushpin, the GRIP proxy sidecast is compared with, run from
//! Debian's package with a config of its own on free loopback ports.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{self, Response};
use super::{free_port, require, temp_dir, WAIT};

/// The key both proxies sign `Grip-Sig` with and the app checks it with
/// (32 bytes: PyJWT warns about shorter HS256 keys).
pub const SIG_KEY: &str = "grip-sig-key-0123456789abcdef012";

/// The environment the app's publisher must not take a proxy from: its
/// HTTP client (requests) honours these, and the proxies are on loopback.
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// The GRIP app, a child process; stopped when dropped (and by itself when
/// the test goes away: it ends when its stdin closes).
pub struct GripApp {
    child: Child,
    _stdin: ChildStdin,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for GripApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GripApp {
    /// Starts the app; `None` when the suite's Python is missing and
    /// skipping is allowed (otherwise a missing one fails the test).
    pub fn start() -> Option<GripApp> {
        let python = super::python()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/apps/grip_app.py");
        let mut cmd = Command::new(&python);
        cmd.arg("-u")
            .arg(&script)
            .arg("--sig-key")
            .arg(SIG_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("run {} {}: {e}", python.display(), script.display()));
        let stdin = child.stdin.take().expect("stdin");
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let log = log.clone();
            let stderr = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    log.lock().unwrap().push(line);
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        let Some(port) = line.trim().strip_prefix("port ") else {
            let _ = child.kill();
            let _ = child.wait();
            // All of stderr, which ends with the process: an import error
            // says which package is missing.
            let _ = reader.join();
            panic!(
                "the GRIP app did not start (is gripcontrol in the venv of \
                 SIDECAST_TEST_PYTHON? scripts/test installs tests/requirements.txt); \
                 stdout {line:?}, stderr:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Some(GripApp {
            child,
            _stdin: stdin,
            addr: format!("127.0.0.1:{port}"),
            log,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the app wrote on stderr (one line per request).
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Points the app's `GripPubControl` at a proxy's publish API
    /// (`addr` = host:port; the library posts to `/publish/` under it),
    /// with `token` sent as a bearer token.
    pub async fn control(&self, addr: &str, token: Option<&str>) {
        let mut cfg = serde_json::json!({ "control_uri": format!("http://{addr}") });
        if let Some(t) = token {
            cfg["key"] = t.into();
        }
        let r = self
            .request("POST", "/control", cfg.to_string().as_bytes())
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// One request to the app. Its publishes give up within about 11 s
    /// (two attempts of 5 s), so one that takes 15 s shows the app's log,
    /// which says what the library's calls to the proxy did.
    pub async fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let call = Box::pin(http::request(&self.addr, method, path, &[], body));
        match tokio::time::timeout(Duration::from_secs(15), call).await {
            Ok(r) => r,
            Err(_) => panic!(
                "the app did not answer {method} {path} within 15 s\napp log:\n{}",
                self.log_text()
            ),
        }
    }

    /// Has the app publish through its library; the app's answer (`200
    /// published`, or `502` with the library's error).
    pub async fn try_publish(&self, query: &str, body: &[u8]) -> Response {
        self.request("POST", &format!("/publish?{query}"), body)
            .await
    }

    /// Publishes `content` as an `http-stream` item to `channel`.
    pub async fn publish(&self, channel: &str, content: &str) {
        self.publish_query(&format!("channel={}", enc(channel)), content)
            .await;
    }

    /// Publishes with the `/publish` query as given.
    pub async fn publish_query(&self, query: &str, body: &str) {
        let r = self.try_publish(query, body.as_bytes()).await;
        assert_eq!(
            r.status,
            200,
            "the app's publish ({query}) failed: {}\napp log:\n{}",
            r.text(),
            self.log_text()
        );
    }

    /// Publishes the `close` action to `channel`.
    pub async fn publish_close(&self, channel: &str) {
        self.publish_query(&format!("channel={}&kind=close", enc(channel)), "")
            .await;
    }
}

/// `POST /publish/` on `sc`'s publish listener, with no token (a
/// sidecast without `require_token`).
pub async fn publish_items(sc: &super::Sidecast, body: serde_json::Value) -> Response {
    http::request(
        sc.publish.as_deref().expect("a publish listener"),
        "POST",
        "/publish/",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Pushpin (its runner and the services it starts: condure, zurl,
/// pushpin-proxy, pushpin-handler) in front of `app`, with every file in a
/// directory of its own and every port a free loopback one. Stopped when
/// dropped; [`Pushpin::stop`] also says what of it was left running.
pub struct Pushpin {
    child: Option<Child>,
    /// Where clients connect (host:port).
    pub public: String,
    /// Its HTTP publish API (host:port; `POST /publish/`).
    pub publish: String,
    pub dir: PathBuf,
}

/// A process's parent and start time, from `/proc/PID/stat` (the start
/// time tells a process from a later one with the same pid).
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state, ppid, ... starttime is field 22 of the line.
    Some((rest.get(1)?.parse().ok()?, rest.get(19)?.parse().ok()?))
}

/// Every live descendant of `root`, with its start time.
fn descendants(root: u32) -> Vec<(u32, u64)> {
    let all: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| stat_of(pid).map(|(ppid, start)| (pid, ppid, start)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &(pid, ppid, start) in &all {
            if ppid == p {
                out.push((pid, start));
                todo.push(pid);
            }
        }
    }
    out
}

fn alive(pid: u32, start: u64) -> bool {
    // A zombie has exited: only its parent's wait is missing.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        });
    stat_of(pid).is_some_and(|(_, s)| s == start) && state == Some(false)
}

/// Whether `GET /stream` on the GRIP app through the proxy at `addr` is
/// held within a second: `200` and the initial content, chunked.
async fn holds_a_stream(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut io = tokio::net::TcpStream::connect(addr).await.ok()?;
        io.write_all(b"GET /stream?channel=ready-probe HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(10).any(|w| w == b"initial\n\r\n") {
            let n = io.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Some(got.starts_with(b"HTTP/1.1 200 "))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl Pushpin {
    /// Starts Pushpin routing every request to `app` (host:port) and waits
    /// until a request through it reaches the app. `None` when Pushpin is
    /// not installed and skipping is allowed (otherwise that fails the
    /// test: scripts/deps installs it).
    pub async fn start(app: &str) -> Option<Pushpin> {
        if !["pushpin", "condure", "zurl", "setpriv"]
            .iter()
            .all(|p| require(p))
        {
            return None;
        }
        let dir = temp_dir("pushpin");
        let (run, logs) = (dir.join("run"), dir.join("log"));
        std::fs::create_dir_all(&run).expect("pushpin run dir");
        std::fs::create_dir_all(&logs).expect("pushpin log dir");
        // The packaged internal.conf, with zurl's sockets moved from
        // /var/run/zurl into this instance's own run dir.
        let mut internal = std::fs::read_to_string("/usr/lib/pushpin/internal.conf")
            .expect("/usr/lib/pushpin/internal.conf (Debian's pushpin package)");
        for spec in ["zurl-in-stream", "zurl-in", "zurl-out"] {
            internal = internal.replace(
                &format!("ipc:///var/run/zurl/{spec}\n"),
                &format!("ipc://{{rundir}}/{{ipc_prefix}}{spec}\n"),
            );
        }
        std::fs::write(dir.join("internal.conf"), internal).expect("write internal.conf");
        std::fs::write(dir.join("routes"), format!("* {app}\n")).expect("write routes");
        let (port, pub_port) = (free_port(), free_port());
        let [push_in, push_sub, command] = [free_port(), free_port(), free_port()];
        let conf = dir.join("pushpin.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "[global]\ninclude={d}/internal.conf\nrundir={d}/run\nipc_prefix=pp-\n\
                 port_offset=0\nstats_connection_ttl=120\n\
                 [runner]\nservices=condure,zurl,pushpin-proxy,pushpin-handler\n\
                 http_port={port}\nlogdir={d}/log\nlog_level=2\nclient_buffer_size=8192\n\
                 client_maxconn=1000\ncondure_bin=condure\nzurl_bin=zurl\n\
                 [proxy]\nroutesfile={d}/routes\ndebug=false\nauto_cross_origin=false\n\
                 accept_x_forwarded_protocol=false\nset_x_forwarded_protocol=proto-only\n\
                 x_forwarded_for=\nx_forwarded_for_trusted=\norig_headers_need_mark=\n\
                 accept_pushpin_route=false\nlog_from=false\nlog_user_agent=false\n\
                 sig_iss=pushpin\nsig_key={SIG_KEY}\nupstream_key=\nupdates_check=off\n\
                 [handler]\npush_in_spec=tcp://127.0.0.1:{push_in}\n\
                 push_in_sub_specs=tcp://127.0.0.1:{push_sub}\npush_in_sub_connect=false\n\
                 push_in_http_addr=127.0.0.1\npush_in_http_port={pub_port}\n\
                 push_in_http_max_headers_size=10000\npush_in_http_max_body_size=1000000\n\
                 stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats\n\
                 command_spec=tcp://127.0.0.1:{command}\nmessage_rate=2500\n\
                 message_hwm=25000\nmessage_wait=5000\nid_cache_ttl=60\n\
                 connection_subscription_max=20\nsubscription_linger=60\n\
                 stats_subscription_ttl=60\nstats_report_interval=10\n\
                 stats_format=tnetstring\n"
            ),
        )
        .expect("write pushpin.conf");
        let out = std::fs::File::create(dir.join("runner.log")).expect("runner.log");
        let child = {
            use std::os::unix::process::CommandExt;
            // setpriv (util-linux) becomes Pushpin's runner with a parent-death
            // signal: a test process that dies without dropping this (an
            // abort) still stops it.
            Command::new("setpriv")
                .arg("--pdeathsig")
                .arg("TERM")
                .arg("--")
                .arg("pushpin")
                .arg("--config")
                .arg(&conf)
                .arg("--port")
                .arg(format!("127.0.0.1:{port}"))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log file"))
                .stderr(out)
                // A group of its own: no signal meant for the test's group
                // reaches it, and none of its reaches the test.
                .process_group(0)
                .spawn()
                .expect("spawn pushpin")
        };
        let mut pp = Pushpin {
            child: Some(child),
            public: format!("127.0.0.1:{port}"),
            publish: format!("127.0.0.1:{pub_port}"),
            dir,
        };
        pp.ready().await;
        Some(pp)
    }

    /// Waits until the publish API accepts connections and a stream hold
    /// through Pushpin works: its services connect to each other after the
    /// listening port is open, and a hold needs them all (a request that
    /// comes too early gets a `500` from Pushpin).
    async fn ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let up =
                super::ops::connects(&self.publish).await && holds_a_stream(&self.public).await;
            if up {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            assert!(
                !exited && Instant::now() < deadline,
                "Pushpin did not come up (exited: {exited}); its logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its runner's and services' logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files = vec![self.dir.join("runner.log")];
        if let Ok(d) = std::fs::read_dir(self.dir.join("log")) {
            files.extend(d.filter_map(Result::ok).map(|e| e.path()));
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("== {}\n", f.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Stops the runner (SIGTERM: it stops the services it started, each
    /// in a process group of its own) and then kills whatever of it is
    /// still there. Returns the processes that outlived the runner's own
    /// stop and had to be killed (empty when it stopped them all).
    pub fn stop(&mut self) -> Vec<String> {
        let Some(mut child) = self.child.take() else {
            return Vec::new();
        };
        let members = descendants(child.id());
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + WAIT;
        let mut runner_exited = false;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                runner_exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !runner_exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut left = Vec::new();
        // The runner waits for its services before it exits; give any
        // straggler the rest of the deadline, then kill it.
        for (pid, start) in members {
            while alive(pid, start) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid, start) {
                let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ");
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                left.push(format!("{pid} {cmd}"));
            }
        }
        if !runner_exited {
            left.push(format!("{} pushpin (the runner)", child.id()));
        }
        left
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        self.stop();
    }
}
