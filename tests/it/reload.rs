//! Reload: on SIGHUP, on a change of the file, and on a Kubernetes-style
//! ConfigMap symlink swap. A valid file applies to new requests while open
//! streams go on with what they opened with; an invalid one is refused,
//! logged and counted, and the old one stays; `[listen]` needs a restart.
use crate::support;
use crate::support::ops;

use std::path::Path;
use std::time::Duration;

use ops::Scrape;
use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast, WAIT};

async fn reloads(sc: &Sidecast, result: &str) -> f64 {
    Scrape::get(&sc.admin)
        .await
        .value("sidecast_config_reloads_total", &[("result", result)])
}

/// Waits until `n` reloads at least have had `result` (the file watcher
/// may see a rewrite before the signal comes: both count).
async fn wait_reloads(sc: &Sidecast, result: &str, n: f64) {
    support::eventually(&format!("{n} reload(s) {result}"), || async {
        reloads(sc, result).await >= n
    })
    .await;
}

/// Waits for the log line of a reload that SIGHUP triggered.
async fn wait_sighup_reload(sc: &Sidecast, outcome: &str) {
    let want = "trigger=\"SIGHUP\"";
    support::eventually(&format!("a reload on SIGHUP: {outcome}"), || async {
        sc.log_text()
            .lines()
            .any(|l| l.contains(want) && l.contains(outcome))
    })
    .await;
}

/// The `retry:` a new stream opens with, in ms.
async fn new_stream_retry(sc: &Sidecast) -> u64 {
    let token = sc.token("alice", &["news"]);
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    assert_eq!(s.status(), 200);
    s.next_block(WAIT)
        .await
        .and_then(|b| b.retry)
        .expect("retry first")
}

fn rewrite(sc: &Sidecast, text: &str) {
    let path = sc.dir.join("sidecar.toml");
    let tmp = sc.dir.join("sidecar.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_change_while_an_open_stream_goes_on() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    opts.events = "heartbeat = \"30s\"\nretry = \"1s\"".into();
    let sc = Sidecast::start(&opts);
    let token = sc.token("alice", &["news", "orders/*"]);
    let mut old = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    old.cursor().await;
    // Before: no such events route, the path goes to the app.
    let r = support::http::get(&sc.public, "/orders/42/events", Some(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits("/orders/42/events"), 1);

    opts.events = "heartbeat = \"200ms\"\nretry = \"20s\"".into();
    opts.extra = "[[routes]]\npath = \"/orders/{id}/events\"\ntopics = [\"orders/{id}\"]\n".into();
    rewrite(&sc, &opts.toml());
    sc.signal("HUP");
    wait_sighup_reload(&sc, "configuration reloaded").await;
    wait_reloads(&sc, "ok", 1.0).await;

    // New requests: the new route, with the new heartbeat.
    let mut new = Sse::open_token(&sc.public, "/orders/42/events", &token).await;
    assert_eq!(new.status(), 200);
    assert_eq!(new.head.header("content-type"), Some("text/event-stream"));
    let first = new.next_block(WAIT).await.expect("open");
    assert_eq!(first.retry, Some(20_000), "the new retry");
    let mut beats = 0;
    let started = std::time::Instant::now();
    while beats < 3 {
        beats += new.next_block(WAIT).await.expect("open").comments;
    }
    // Three beats of 200 ms; the old heartbeat (30 s) would take 90 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "heartbeat 200ms: three took {:?}",
        started.elapsed()
    );
    assert_eq!(up.hits("/orders/42/events"), 1, "no longer proxied");
    let id = sc.publish_one("orders/42", "shipped").await;
    let ev = new.next_event().await.unwrap();
    assert_eq!(
        (ev.id.as_deref(), ev.data.as_deref()),
        (Some(id.as_str()), Some("shipped"))
    );

    // The open stream keeps receiving, with the heartbeat it opened with.
    let id = sc.publish_one("news", "still here").await;
    let b = old.next_block(WAIT).await.unwrap();
    assert_eq!(b.comments, 0, "no 200ms heartbeat on the old stream");
    assert_eq!(
        (b.id.as_deref(), b.data.as_deref()),
        (Some(id.as_str()), Some("still here"))
    );
    // And with the retry it opened with: the drain ends it with a retry
    // jittered from 1 s (1 to 3 s), not from the 20 s now in force.
    sc.signal("TERM");
    let last = old.until_end(WAIT).await;
    let retry = last
        .iter()
        .rev()
        .find_map(|b| b.retry)
        .unwrap_or_else(|| panic!("no retry at the end: {last:?}"));
    assert!((1000..=3000).contains(&retry), "{retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_logged_and_counted_and_the_old_one_stays() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    let sc = Sidecast::start(&opts);
    let token = sc.token("alice", &["news"]);
    let mut open = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    open.next_block(WAIT).await.unwrap();

    opts.events = "retry = \"9s\"\nheartbeat = \"soon\"\nhistroy = 5".into();
    let text = opts.toml();
    rewrite(&sc, &text);
    sc.signal("HUP");
    wait_sighup_reload(&sc, "the previous configuration stays in force").await;
    wait_reloads(&sc, "failed", 1.0).await;
    assert_eq!(reloads(&sc, "ok").await, 0.0);
    let file = sc.dir.join("sidecar.toml").display().to_string();
    let lines = text.lines().collect::<Vec<_>>();
    let hb = lines
        .iter()
        .position(|l| l.starts_with("heartbeat"))
        .unwrap()
        + 1;
    let typo = lines.iter().position(|l| l.starts_with("histroy")).unwrap() + 1;
    sc.log_with(&[
        &format!("config reload refused: {file}:{hb}:13: events.heartbeat: expected a duration"),
        &format!("config reload refused: {file}:{typo}:1: events.histroy: unknown key"),
        "the previous configuration stays in force",
    ])
    .await;
    // The old configuration is in force, and the open stream goes on.
    assert_eq!(new_stream_retry(&sc).await, 3000);
    let id = sc.publish_one("news", "after").await;
    assert_eq!(
        open.next_event().await.unwrap().id.as_deref(),
        Some(id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_reloads_without_a_signal() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    let sc = Sidecast::start(&opts);
    assert_eq!(new_stream_retry(&sc).await, 3000);
    opts.events = "retry = \"5s\"".into();
    // Written in place, as an editor does.
    std::fs::write(sc.dir.join("sidecar.toml"), opts.toml()).unwrap();
    wait_reloads(&sc, "ok", 1.0).await;
    sc.log_with(&["trigger=\"file change\""]).await;
    assert_eq!(new_stream_retry(&sc).await, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_reloads() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    let dir = support::temp_dir("configmap");
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    let version = |name: &str, text: &str| {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("sidecar.toml"), text).unwrap();
    };
    version("..2026_01_01_00_00_00.1", &opts.toml());
    link("..2026_01_01_00_00_00.1", "..data");
    link("..data/sidecar.toml", "sidecar.toml");
    let sc = Sidecast::start_file(&dir.join("sidecar.toml"), &opts.env);
    assert_eq!(new_stream_retry(&sc).await, 3000);

    // What the kubelet does: a new timestamped directory, a new `..data`
    // link beside the old, renamed over it in one step.
    opts.events = "retry = \"4s\"".into();
    version("..2026_01_01_00_01_00.2", &opts.toml());
    link("..2026_01_01_00_01_00.2", "..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_01_01_00_00_00.1")).unwrap();
    wait_reloads(&sc, "ok", 1.0).await;
    assert_eq!(new_stream_retry(&sc).await, 4000);
    assert!(Path::new(&dir.join("sidecar.toml")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_changes_are_logged_as_needing_a_restart_and_ignored() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    let sc = Sidecast::start(&opts);
    let port = support::free_port();
    opts.listen = "head_timeout = \"3s\"".into();
    opts.events = "retry = \"6s\"".into();
    let text = opts.toml().replace(
        "public = \"127.0.0.1:0\"",
        &format!("public = \"127.0.0.1:{port}\""),
    );
    rewrite(&sc, &text);
    sc.signal("HUP");
    wait_reloads(&sc, "ok", 1.0).await;
    let log = sc.log_with(&["[listen] changed"]).await;
    let warning = log
        .lines()
        .find(|l| l.contains("[listen] changed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        warning.contains("need a restart") && warning.contains("public, head_timeout"),
        "{warning}"
    );
    // Still on the old address, and nothing on the new one; the rest applies.
    assert_eq!(new_stream_retry(&sc).await, 6000);
    assert!(!ops::connects(&format!("127.0.0.1:{port}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_log_format_changes_are_logged_as_needing_a_restart() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    let sc = Sidecast::start(&opts);
    opts.events = "retry = \"6s\"".into();
    opts.extra = "[cluster]\nwait_replicas = 1\n\n[log]\nformat = \"json\"\n".into();
    rewrite(&sc, &opts.toml());
    sc.signal("HUP");
    wait_reloads(&sc, "ok", 1.0).await;
    let log = sc.log_with(&["[cluster] or [log] format changed"]).await;
    let warning = log
        .lines()
        .find(|l| l.contains("[cluster] or [log] format changed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        warning.contains("need a restart") && warning.contains("cluster.wait_replicas, log.format"),
        "{warning}"
    );
    // Still text lines, and no cluster; the rest applies.
    assert!(!warning.trim_start().starts_with('{'), "{warning}");
    assert_eq!(new_stream_retry(&sc).await, 6000);
    let (_, ready) = ops::readyz(&sc.admin).await;
    assert!(ready.get("cluster").is_none(), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_reloads() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    // The start-up line stays visible (the test reads its addresses there).
    opts.extra = "[log]\nlevel = \"warn,sidecast::app=info\"\n".into();
    let sc = Sidecast::start(&opts);
    let r = support::http::request(&sc.public, "GET", "/api/quiet", &[], b"").await;
    assert_eq!(r.status, 200);
    opts.extra = "[log]\nlevel = \"info\"\n".into();
    rewrite(&sc, &opts.toml());
    sc.signal("HUP");
    wait_reloads(&sc, "ok", 1.0).await;
    let r = support::http::request(&sc.public, "GET", "/api/loud", &[], b"").await;
    assert_eq!(r.status, 200);
    sc.log_with(&["/api/loud"]).await;
    assert!(!sc.log_text().contains("/api/quiet"), "logged at warn");
}
