//! Reading one series of `/metrics`, and running the `sidecast` command
//! line (`check`, `token`, a start-up expected to fail) on a config file.
#![allow(dead_code)]

use std::path::Path;

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

/// `sidecast ARGS --config CFG` run to its end with exactly `env` of the
/// variables sidecast reads ([`super::ops::run`]).
pub fn sidecast(args: &[&str], cfg: &Path, env: &[(&str, &str)]) -> super::ops::Out {
    let cfg = cfg.to_str().expect("utf-8 path");
    let args: Vec<&str> = args.iter().copied().chain(["--config", cfg]).collect();
    super::ops::run(&args, env, None)
}

/// Replaces a file's content in one step (write a sibling, rename it over),
/// so that a watcher never sees it half written.
pub fn replace_file(path: &Path, content: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-replace");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
