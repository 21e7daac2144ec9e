//! Forward auth against a real app that keeps sessions.
use crate::support;
use crate::support::ops;
use crate::support::scrape;

use std::time::{Duration, Instant};

use serde_json::json;
use support::session_app::SessionApp;
use support::sse::Sse;
use support::{http, Opts, Sidecast};

fn forward_opts(app: &SessionApp, auth: &str) -> Opts {
    let mut o = Opts::new(&app.url());
    o.env.clear(); // no JWT key at all: forward mode needs none
    o.auth = format!("mode = \"forward\"\nforward = \"/api/me\"\nforward_grants = [\"user/{{sub}}\", \"public/**\"]\n{auth}");
    o
}

/// A plain GET of `path` with a session cookie (not an EventSource).
async fn get_with_cookie(sc: &Sidecast, path: &str, cookie: &str) -> http::Response {
    http::request(&sc.public, "GET", path, &[("Cookie", cookie)], b"").await
}

async fn open(sc: &Sidecast, path: &str, cookie: Option<&str>) -> Sse {
    match cookie {
        Some(c) => Sse::open(&sc.public, path, &[("Cookie", c)]).await,
        None => Sse::open(&sc.public, path, &[]).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_opens_a_stream_of_that_users_events() {
    let app = SessionApp::start().await;
    let sc = Sidecast::start(&forward_opts(&app, ""));
    let alice = app.login("alice");
    let bob = app.login("bob");
    let mut a = open(
        &sc,
        "/events?topic=user/alice&topic=public/news",
        Some(&alice),
    )
    .await;
    assert_eq!(a.status(), 200);
    a.next_block(support::WAIT).await.unwrap();
    {
        let s = app.state.lock().unwrap();
        assert_eq!(s.last_topics.as_deref(), Some("public/news,user/alice"));
        assert_eq!(
            s.last_uri.as_deref(),
            Some("/events?topic=user/alice&topic=public/news")
        );
        assert_eq!(s.last_xff.as_deref(), Some("127.0.0.1"));
    }
    // Another user's topic is not granted by forward_grants.
    assert_eq!(
        open(&sc, "/events?topic=user/alice", Some(&bob))
            .await
            .status(),
        403
    );
    // User targeting works with forward-auth users.
    let mut b = open(&sc, "/events?topic=public/news", Some(&bob)).await;
    b.next_block(support::WAIT).await.unwrap();
    let (s, _) = sc
        .publish(json!({"topic": "public/news", "data": "only alice", "user": "alice"}))
        .await;
    assert_eq!(s, 202);
    let everyone = sc.publish_one("public/news", "everyone").await;
    assert_eq!(
        a.next_event().await.unwrap().data.as_deref(),
        Some("only alice")
    );
    assert_eq!(
        a.next_event().await.unwrap().id.as_deref(),
        Some(everyone.as_str())
    );
    assert_eq!(
        b.next_event().await.unwrap().id.as_deref(),
        Some(everyone.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_refusals_and_failures_reach_the_subscriber() {
    let app = SessionApp::start().await;
    let sc = Sidecast::start(&forward_opts(
        &app,
        "forward_timeout = \"500ms\"\nforward_cache = \"0s\"",
    ));
    // No cookie: the app's 401.
    let r = http::request(&sc.public, "GET", "/events?topic=public/a", &[], b"").await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    // The app refuses a topic: 403.
    let alice = app.login("alice");
    app.state
        .lock()
        .unwrap()
        .forbidden
        .insert("public/secret".into());
    let r = get_with_cookie(&sc, "/events?topic=public/secret", &alice).await;
    assert_eq!(r.status, 403);
    // The app answers 500: 503, never an open stream.
    app.state.lock().unwrap().fail_with = Some(500);
    let r = get_with_cookie(&sc, "/events?topic=public/a", &alice).await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    // To an EventSource the same refusal is a 200 stream with sidecast.unavailable.
    let mut es = open(&sc, "/events?topic=public/a", Some(&alice)).await;
    assert_eq!(es.status(), 200);
    let blocks = es.until_end(support::WAIT).await;
    let retry = blocks.iter().find_map(|b| b.retry).expect("a retry");
    assert!(
        (3000..=9000).contains(&retry),
        "jittered between retry and 3x retry: {retry}"
    );
    let un = blocks
        .iter()
        .find(|b| b.event.as_deref() == Some("sidecast.unavailable"))
        .expect("unavailable event");
    assert!(un.data.as_deref().unwrap().contains("reason"));
    // The app too slow: 503 within the bound.
    {
        let mut s = app.state.lock().unwrap();
        s.fail_with = None;
        s.delay = Some(Duration::from_secs(3));
    }
    let t = Instant::now();
    let r = get_with_cookie(&sc, "/events?topic=public/a", &alice).await;
    assert_eq!(r.status, 503);
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "answered within forward_timeout: {:?}",
        t.elapsed()
    );
    // The app down: 503.
    drop(app);
    let r = get_with_cookie(&sc, "/events?topic=public/a", &alice).await;
    assert_eq!(r.status, 503);
    // Nothing of the cookie is logged.
    assert!(!sc.log_text().contains(alice.trim_start_matches("sid=")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_from_a_json_pointer_and_grants_from_the_app() {
    let app = SessionApp::start().await;
    let mut o = forward_opts(&app, "forward_user = \"/user/id\"\nforward_cache = \"0s\"");
    o.auth = o
        .auth
        .replace("forward = \"/api/me\"", "forward = \"/api/me.json\"");
    let sc = Sidecast::start(&o);
    let carol = app.login("carol");
    let mut s = open(&sc, "/events?topic=user/carol", Some(&carol)).await;
    assert_eq!(s.status(), 200);
    s.next_block(support::WAIT).await.unwrap();
    let (st, _) = sc
        .publish(json!({"topic": "user/carol", "data": "hi carol", "user": "carol"}))
        .await;
    assert_eq!(st, 202);
    assert_eq!(
        s.next_event().await.unwrap().data.as_deref(),
        Some("hi carol")
    );
    // Sidecast-Grants narrows what forward_grants would allow.
    app.state.lock().unwrap().grants = Some("public/news".into());
    let r = get_with_cookie(&sc, "/events?topic=user/carol", &carol).await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_per_cookie_and_topics() {
    let app = SessionApp::start().await;
    let sc = Sidecast::start(&forward_opts(&app, "forward_cache = \"30s\""));
    let alice = app.login("alice");
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = open(&sc, "/events?topic=public/a", Some(&alice)).await;
        assert_eq!(s.status(), 200);
        s.next_block(support::WAIT).await.unwrap();
        streams.push(s);
    }
    assert_eq!(
        app.hits("/api/me"),
        1,
        "five subscribes within forward_cache: one call"
    );
    let bob = app.login("bob");
    let mut s = open(&sc, "/events?topic=public/a", Some(&bob)).await;
    s.next_block(support::WAIT).await.unwrap();
    assert_eq!(
        app.hits("/api/me"),
        2,
        "a different cookie makes its own call"
    );
    let mut s2 = open(&sc, "/events?topic=public/b", Some(&bob)).await;
    s2.next_block(support::WAIT).await.unwrap();
    assert_eq!(app.hits("/api/me"), 3, "other topics: another call");
    // The key holds the topics sorted: the same set in another order is
    // the same entry.
    let mut s3 = open(&sc, "/events?topic=public/b&topic=public/a", Some(&bob)).await;
    s3.next_block(support::WAIT).await.unwrap();
    assert_eq!(app.hits("/api/me"), 4, "a new set of topics: another call");
    let mut s4 = open(&sc, "/events?topic=public/a&topic=public/b", Some(&bob)).await;
    s4.next_block(support::WAIT).await.unwrap();
    assert_eq!(
        app.hits("/api/me"),
        4,
        "the same topics in another order: cached"
    );
    // Concurrent identical requests make one call.
    let carol = app.login("carol");
    let before = app.hits("/api/me");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let public = sc.public.clone();
            let c = carol.clone();
            tokio::spawn(async move {
                Sse::open(&public, "/events?topic=public/c", &[("Cookie", &c)])
                    .await
                    .status()
            })
        })
        .collect();
    for o in opens {
        assert_eq!(o.await.unwrap(), 200);
    }
    assert_eq!(
        app.hits("/api/me") - before,
        1,
        "concurrent identical subscribes: one call"
    );
}

/// An answer is kept `forward_cache` long, not longer: past it, the same
/// subscribe asks the app again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_expires_after_forward_cache() {
    let app = SessionApp::start().await;
    let sc = Sidecast::start(&forward_opts(&app, "forward_cache = \"1s\""));
    let alice = app.login("alice");
    let mut s = open(&sc, "/events?topic=public/a", Some(&alice)).await;
    s.next_block(support::WAIT).await.unwrap();
    assert_eq!(app.hits("/api/me"), 1);
    // Create the condition: the cached answer grows older than 1 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut s = open(&sc, "/events?topic=public/a", Some(&alice)).await;
    s.next_block(support::WAIT).await.unwrap();
    assert_eq!(app.hits("/api/me"), 2, "asked again after forward_cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_open_stream_on_recheck() {
    let app = SessionApp::start().await;
    let sc = Sidecast::start(&forward_opts(
        &app,
        "forward_recheck = \"1s\"\nforward_cache = \"0s\"",
    ));
    let alice = app.login("alice");
    let mut s = open(&sc, "/events?topic=user/alice", Some(&alice)).await;
    s.next_block(support::WAIT).await.unwrap();
    // An app that is down during a recheck ends nothing. Two rechecks fail
    // (the app counts a call before it answers it): sidecast has acted on
    // the first by the time it makes the second.
    let before = app.hits("/api/me");
    app.state.lock().unwrap().fail_with = Some(502);
    support::eventually("two rechecks while the app fails", || async {
        app.hits("/api/me") >= before + 2
    })
    .await;
    app.state.lock().unwrap().fail_with = None;
    let id = sc.publish_one("user/alice", "still here").await;
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(id.as_str())
    );
    app.logout(&alice);
    let t = Instant::now();
    let _ = s.until_end(support::WAIT).await;
    // On the next recheck (1 s), not at some later end: an order of
    // magnitude below the token-free stream's lifetime, with room for load.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "ended on the next recheck: {:?}",
        t.elapsed()
    );
    // Counted when the stream's task ends, which may be just after the
    // client read the end.
    scrape::metric_becomes(&sc.admin, scrape::REVOKED, 1.0).await;
    // Reconnects are refused now.
    assert_eq!(
        get_with_cookie(&sc, "/events?topic=user/alice", &alice)
            .await
            .status,
        401
    );
    // A 403 on a recheck ends the stream too (the user lost the topic).
    let bob = app.login("bob");
    let mut s = open(&sc, "/events?topic=user/bob", Some(&bob)).await;
    s.next_block(support::WAIT).await.unwrap();
    app.state
        .lock()
        .unwrap()
        .forbidden
        .insert("user/bob".to_owned());
    let t = Instant::now();
    let _ = s.until_end(support::WAIT).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "ended on the 403 of the next recheck: {:?}",
        t.elapsed()
    );
    // Counted when the stream's task ends, which may be just after the
    // client read the end.
    scrape::metric_becomes(&sc.admin, scrape::REVOKED, 2.0).await;
}

#[test]
fn check_refuses_bad_forward_settings_naming_each_key() {
    let dir = support::temp_dir("fwdcheck");
    let cfg = dir.join("sidecar.toml");
    std::fs::write(
        &cfg,
        "[auth]\nmode = \"forward\"\nforward_user = \"user/id\"\nforward_grants = [\"a/**/b\"]\nforward_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = ops::check(&cfg, &[]);
    assert!(!out.success());
    let err = &out.stderr;
    let file = cfg.display().to_string();
    for (line, key) in [
        (3, "auth.forward_user"),
        (4, "auth.forward_grants"),
        (5, "auth.forward_timeout"),
    ] {
        assert!(
            err.contains(&format!("{file}:{line}:")) && err.contains(key),
            "{key} at line {line}: {err}"
        );
    }
    assert!(
        err.contains("auth.forward:") || err.contains("auth.forward "),
        "mode = forward without forward: {err}"
    );
    assert!(err.contains("JSON pointer"), "{err}");

    // header: with a bad header name is refused too; a good file passes with no JWT key.
    std::fs::write(
        &cfg,
        "[auth]\nmode = \"forward\"\nforward = \"/api/me\"\nforward_user = \"header:bad name\"\n",
    )
    .unwrap();
    let out = ops::check(&cfg, &[]);
    assert!(!out.success());
    assert!(out.stderr.contains("auth.forward_user"));
    std::fs::write(
        &cfg,
        "[auth]\nmode = \"forward\"\nforward = \"/api/me\"\nforward_user = \"/user/id\"\n",
    )
    .unwrap();
    let out = ops::check(&cfg, &[]);
    assert!(out.success(), "{}", out.stderr);
}
