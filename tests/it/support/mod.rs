//! Test support: the real `sidecast` binary on free loopback ports, a real
//! upstream app, a raw HTTP client, an independent SSE parser, and an
//! eventually-assert. Every wait is bounded.
#![allow(dead_code)]

pub mod conn;
pub mod delivery;
pub mod grip;
pub mod http;
pub mod jwt;
pub mod ops;
pub mod redis;
pub mod rsa;
pub mod scrape;
pub mod session_app;
pub mod signers;
pub mod sse;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The development secret tests sign HS256 tokens with.
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running sidecast with its addresses and its log.
pub struct Sidecast {
    child: Option<Child>,
    pub dir: PathBuf,
    pub public: String,
    pub publish: Option<String>,
    pub admin: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A fresh temporary directory for this test process. Tests share files
/// with the processes they start (configs, sockets, logs read after a
/// failure), so a directory outlives its test; the first call of a run
/// removes the directories of runs whose process is gone.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_dirs_of_ended_runs);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sidecast-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Removes every `sidecast-test-PID-*` directory whose PID is no running
/// process: what earlier runs of the suite left.
fn remove_dirs_of_ended_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("sidecast-test-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A config whose listeners bind port 0 on loopback, auth on with
/// [`SECRET`], the upstream at `upstream`, and `extra` TOML appended to the
/// sections (give whole `[section]`s; keys of `[listen]`, `[events]`,
/// `[auth]` and `[upstream]` can be added through `Opts`).
pub struct Opts {
    pub upstream: String,
    pub listen: String,
    pub events: String,
    pub auth: String,
    pub upstream_extra: String,
    pub extra: String,
    pub env: Vec<(String, String)>,
    /// The open-file limit sidecast runs under (`ulimit -n`), for a test
    /// that runs it out of files; `None` leaves it the suite's.
    pub nofile: Option<u32>,
}

impl Opts {
    pub fn new(upstream: &str) -> Opts {
        Opts {
            upstream: upstream.to_owned(),
            listen: String::new(),
            events: String::new(),
            auth: String::new(),
            upstream_extra: String::new(),
            extra: String::new(),
            env: vec![("SIDECAST_JWT_SECRET".into(), SECRET.into())],
            nofile: None,
        }
    }

    /// Publishing needs a token (`[publish] require_token = true`); the
    /// static one is `token`, given in `SIDECAST_PUBLISH_TOKEN`.
    pub fn require_publish_token(&mut self, token: &str) {
        self.extra.push_str("[publish]\nrequire_token = true\n");
        self.env
            .push(("SIDECAST_PUBLISH_TOKEN".into(), token.into()));
    }

    pub fn toml(&self) -> String {
        // The suite runs the pass-through tests a second time with
        // SIDECAST_TEST_FAST_PATH=false: every request through pingora's
        // general path instead of the lean relay.
        let path_choice = match std::env::var("SIDECAST_TEST_FAST_PATH").as_deref() {
            Ok("false") if !self.upstream_extra.contains("fast_path") => "fast_path = false\n",
            _ => "",
        };
        let upstream_extra = format!("{path_choice}{}", self.upstream_extra);
        format!(
            "[listen]\npublic = \"127.0.0.1:0\"\npublish = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{}\n\
             [upstream]\nurl = \"{}\"\n{}\n\
             [events]\n{}\n\
             [auth]\n{}\n\
             [shutdown]\ngrace = \"5s\"\n\
             {}\n",
            self.listen, self.upstream, upstream_extra, self.events, self.auth, self.extra
        )
    }
}

/// The test app (`Upstream` "app") and a sidecast in front of it with the
/// default [`Opts`]: how most tests begin. Keep the app (`_up`): it stops
/// when dropped.
pub async fn start() -> (upstream::Upstream, Sidecast) {
    start_with(|_| {}).await
}

/// [`start`], with `f` changing the options first (the keys of the test's
/// config that matter to it).
pub async fn start_with(f: impl FnOnce(&mut Opts)) -> (upstream::Upstream, Sidecast) {
    let up = upstream::Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    f(&mut opts);
    let sc = Sidecast::start(&opts);
    (up, sc)
}

impl Sidecast {
    /// Starts sidecast with `opts` and waits until it listens.
    pub fn start(opts: &Opts) -> Sidecast {
        let dir = temp_dir("sc");
        let cfg = dir.join("sidecar.toml");
        std::fs::write(&cfg, opts.toml()).expect("write config");
        Sidecast::launch(&cfg, &opts.env, opts.nofile)
    }

    /// Starts sidecast on an existing config file.
    pub fn start_file(cfg: &Path, env: &[(String, String)]) -> Sidecast {
        Sidecast::launch(cfg, env, None)
    }

    fn launch(cfg: &Path, env: &[(String, String)], nofile: Option<u32>) -> Sidecast {
        let bin = env!("CARGO_BIN_EXE_sidecast");
        let mut cmd = match nofile {
            None => Command::new(bin),
            Some(n) => {
                // The shell lowers the limit, then becomes sidecast (exec):
                // the child's pid is sidecast's own.
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        cmd.arg("--config")
            .arg(cfg)
            .env_remove("RUST_LOG")
            .env_remove("SIDECAST_JWT_SECRET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn sidecast");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    // Into the log first: a test that reads the log once
                    // start() returned finds the start-up line there.
                    let listening = line.contains("sidecast listening");
                    log.lock().unwrap().push(line.clone());
                    if listening {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let line = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "sidecast did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let field = |name: &str| -> Option<String> {
            // `[log] format = "json"`: one object per line.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                return v.get(name)?.as_str().map(str::to_owned);
            }
            let key = format!("{name}=");
            let start = line.find(&key)? + key.len();
            let rest = &line[start..];
            let end = rest.find(' ').unwrap_or(rest.len());
            Some(rest[..end].trim_matches('"').to_owned())
        };
        let publish = field("publish").filter(|p| p != "off");
        Sidecast {
            public: field("public").expect("public addr"),
            publish,
            admin: field("admin").expect("admin addr"),
            child: Some(child),
            dir: cfg.parent().map(Path::to_path_buf).unwrap_or_default(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process has ended, without waiting for it.
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().expect("try_wait").is_some())
    }

    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until each of `needles` is in the log, and returns the whole
    /// log. sidecast writes a line when it gets there, which may be after
    /// the reply the test has read (an access line follows the answer): a
    /// test that checks a line, or checks that the log holds nothing it
    /// must not, first waits for every line it expects.
    pub async fn log_with(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log_text();
            let missing: Vec<&&str> = needles.iter().filter(|n| !log.contains(**n)).collect();
            if missing.is_empty() {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never had {missing:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `needle` is in at least `n` lines of the log; the log.
    pub async fn log_lines(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log_text();
            let have = log.lines().filter(|l| l.contains(needle)).count();
            if have >= n {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log has {have} of {n} lines with {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`eventually`], with this sidecast's log in the failure message:
    /// for a wait on something the process does by itself (a reload, a
    /// revocation), where the log says how far it got.
    pub async fn eventually<F, Fut>(&self, what: &str, f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        poll_until(what, f, || {
            format!("; sidecast's log:\n{}", self.log_text())
        })
        .await;
    }

    pub fn publish_url(&self) -> String {
        self.publish.clone().expect("publish listener")
    }

    /// Publishes a JSON body; (status, parsed body).
    pub async fn publish(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = http::request(
            &self.publish_url(),
            "POST",
            "/publish",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
        (r.status, r.json())
    }

    /// Publishes one event to `topic`; its id.
    pub async fn publish_one(&self, topic: &str, data: &str) -> String {
        let (status, body) = self
            .publish(serde_json::json!({"topic": topic, "data": data}))
            .await;
        assert_eq!(status, 202, "{body}");
        body["ids"][0].as_str().expect("id").to_owned()
    }

    /// An HS256 token for `sub` granting `topics`, valid for an hour.
    pub fn token(&self, sub: &str, topics: &[&str]) -> String {
        jwt::hs256(
            SECRET.as_bytes(),
            &serde_json::json!({"sub": sub, "topics": topics, "exp": jwt::now() + 3600}),
        )
    }
}

impl Drop for Sidecast {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port that nothing listens on now (bound, then released): for
/// a listener a test must name before it starts, or a connection that
/// must be refused.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Sends `sig` (`TERM`, `STOP`, ...) to the process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Polls `f` until it returns true, or panics after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_until(what, f, String::new).await;
}

/// [`eventually`], the failure message followed by `context()`.
async fn poll_until<F, Fut>(what: &str, mut f: F, context: impl Fn() -> String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `cmd` to its end with its output captured, like
/// [`Command::output`], but bounded: a child still running after `within`
/// is killed and the test fails, naming `what`. Both pipes are read while
/// it runs, so a chatty child never blocks on a full one.
pub fn output_within(cmd: &mut Command, within: Duration, what: &str) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{what} did not end within {within:?}");
        }
    }
}

/// Whether a program is installed. A missing one fails the test, unless
/// [`skip`] allows skipping it.
pub fn require(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip(&format!("{program} is not installed"));
    }
    found
}

/// A component this test needs is missing: fails the test, unless
/// `SIDECAST_TEST_ALLOW_SKIP=1` (and not `CI=true`) allows a local run to
/// skip it. A skip is said on stderr and recorded in the file
/// `SIDECAST_TEST_SKIP_LOG` names (scripts/test counts it as a skip, not as
/// a pass); the caller then returns early.
pub fn skip(why: &str) {
    let allowed = std::env::var("SIDECAST_TEST_ALLOW_SKIP").as_deref() == Ok("1")
        && std::env::var("CI").as_deref() != Ok("true");
    if !allowed {
        panic!(
            "{why}: run the README's test command (scripts/test installs it), \
             or set SIDECAST_TEST_ALLOW_SKIP=1 to skip this test in a local run"
        );
    }
    let test = format!(
        "{}::{}",
        env!("CARGO_CRATE_NAME"),
        std::thread::current().name().unwrap_or("?")
    );
    eprintln!("skipping {test}: {why}");
    if let Ok(path) = std::env::var("SIDECAST_TEST_SKIP_LOG") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .expect("open SIDECAST_TEST_SKIP_LOG");
        writeln!(f, "{test}\t{why}").expect("write SIDECAST_TEST_SKIP_LOG");
    }
}

/// The proptest configuration of the property tests: `cases` cases, and
/// the failures proptest has found kept beside the test's source file
/// (`prop_auth.rs` → `prop_auth.proptest-regressions`) and replayed first.
/// Said here because proptest's default puts them under a
/// `proptest-regressions/` directory beside the folder that holds this
/// crate's `main.rs`, away from the test they belong to.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// The Python interpreter the suite runs its Python parts with: the one of
/// scripts/test's own venv, which exports `SIDECAST_TEST_PYTHON` (never
/// whatever `python3` comes first, whose packages are not the suite's).
/// `None` when unset and skipping is allowed; otherwise a missing one
/// fails the test.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("SIDECAST_TEST_PYTHON") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        Some(p) => {
            skip(&format!(
                "SIDECAST_TEST_PYTHON={} is not a file",
                Path::new(&p).display()
            ));
            None
        }
        None => {
            skip(
                "SIDECAST_TEST_PYTHON is not set (the venv python with \
                 tests/requirements.txt that scripts/test makes)",
            );
            None
        }
    }
}
