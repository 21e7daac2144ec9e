//! Reading one series of `/metrics`, and running the `sidecast` command
//! line (`check`, `token`, a start-up expected to fail) to its exit.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// Streams closed because what let them open no longer does (a key no
/// longer configured, a forward-auth recheck refused).
pub const REVOKED: &str = "sidecast_streams_closed_total{reason=\"revoked\"}";

/// The value of one exact series (`name{label="v"}`) on the admin
/// listener's `/metrics`, `None` when absent.
pub async fn metric(admin: &str, series: &str) -> Option<f64> {
    let r = super::http::request(admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200);
    r.text().lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Waits until a series has at least `at_least`.
pub async fn metric_reaches(admin: &str, series: &str, at_least: f64) {
    let what = format!("{series} >= {at_least}");
    super::eventually(&what, || async {
        metric(admin, series).await.unwrap_or(0.0) >= at_least
    })
    .await;
}

/// Waits until a series has `want`, and checks that it did not pass it:
/// for a counter that moves a moment after what the test saw (a stream
/// counted closed when its task ends, after the client read the end).
pub async fn metric_becomes(admin: &str, series: &str, want: f64) {
    metric_reaches(admin, series, want).await;
    assert_eq!(metric(admin, series).await, Some(want), "{series}");
}

/// What a finished command printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sidecast ARGS --config CFG` with exactly `env` set of the
/// variables sidecast reads, to its exit (killed after 10 s).
pub fn sidecast(args: &[&str], cfg: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidecast"));
    cmd.args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("RUST_LOG")
        .env_remove("SIDECAST_CONFIG")
        .env_remove("SIDECAST_JWT_SECRET")
        .env_remove("SIDECAST_PUBLISH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn sidecast");
    let pid = child.id();
    // Read both pipes to the end while waiting, so that a chatty child
    // never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(super::WAIT) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("sidecast {args:?} did not exit within {:?}", super::WAIT);
        }
    };
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Replaces a file's content in one step (write a sibling, rename it over),
/// so that a watcher never sees it half written.
pub fn replace_file(path: &Path, content: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-replace");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
