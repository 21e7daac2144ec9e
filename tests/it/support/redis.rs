//! A real `redis-server` on a free loopback port, and the cluster set-up
//! the tests share: replicas on it, and waiting until they are connected.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::upstream::Upstream;
use super::{eventually, http, Opts, Sidecast};

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    persistent: bool,
}

impl Redis {
    /// Starts Redis for a test that needs it: `None` when `redis-server` is
    /// not installed and skipping is allowed ([`super::require`]); the test
    /// then returns.
    pub fn required(persistent: bool) -> Option<Redis> {
        super::require("redis-server").then(|| Redis::start(persistent))
    }

    /// Starts Redis; `persistent` turns on `appendonly yes` with
    /// `appendfsync always` in its own directory (data survives a restart).
    pub fn start(persistent: bool) -> Redis {
        let dir = super::temp_dir("redis");
        let mut r = Redis {
            child: None,
            port: super::free_port(),
            dir,
            persistent,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("");
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server"));
        let deadline = Instant::now() + super::WAIT;
        loop {
            if self.ping() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Sends one command (RESP) and returns the raw reply, for checks.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("redis");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Starts a replica of this server (`--replicaof`).
    pub fn replica_of(primary: &Redis) -> Redis {
        let mut r = Redis::start(false);
        let _ = r.command(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]);
        r.persistent = false;
        r
    }

    /// The server's process id (for `SIGSTOP`/`SIGCONT`: a Redis that
    /// hangs rather than refuses).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The `[cluster]` section naming this server, with `keys` (whole
    /// lines) after its URL.
    pub fn cluster_toml(&self, keys: &str) -> String {
        format!("[cluster]\nredis = \"{}\"\n{keys}", self.url())
    }

    /// Kills the server (SIGKILL: no goodbye, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Options of a replica in front of `up`, in cluster mode on `redis`, that
/// waits for Redis at most 5 s at start-up; `keys`, more lines of
/// `[cluster]`.
pub fn replica_opts(up: &Upstream, redis: &Redis, keys: &str) -> Opts {
    let mut o = Opts::new(&up.url());
    o.extra = redis.cluster_toml(&format!("startup_timeout = \"5s\"\n{keys}"));
    o
}

/// A replica with [`replica_opts`].
pub fn replica(up: &Upstream, redis: &Redis) -> Sidecast {
    Sidecast::start(&replica_opts(up, redis, ""))
}

/// Redis (`persistent` as in [`Redis::start`]), the app, and `N` replicas
/// on them, each connected: how a cluster test begins. `None` when Redis is
/// missing and the test may skip ([`Redis::required`]).
pub async fn cluster<const N: usize>(persistent: bool) -> Option<(Redis, Upstream, [Sidecast; N])> {
    let redis = Redis::required(persistent)?;
    let up = Upstream::start("app").await;
    let replicas = [(); N].map(|_| replica(&up, &redis));
    all_connected(&replicas.iter().collect::<Vec<_>>()).await;
    Some((redis, up, replicas))
}

/// Waits until every replica says on `/readyz` that it is connected to
/// Redis.
pub async fn all_connected(replicas: &[&Sidecast]) {
    for sc in replicas {
        eventually("replica connected to Redis", || async {
            http::request(&sc.admin, "GET", "/readyz", &[], b"")
                .await
                .json()["cluster"]
                == "connected"
        })
        .await;
    }
}
