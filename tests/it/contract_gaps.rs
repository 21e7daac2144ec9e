//! Promises of the README that no other test file shows on their own: the
//! head and first bytes of an event stream, its heartbeat, the framing of
//! a named event with a retry and a multi-line payload as it goes out on
//! the wire, the naming rules of `?topic=` and its single percent-decoding.
//! Each test starts the real binary against the real upstream app.
use crate::support;

use std::time::Duration;

use support::http::{request, Response};
use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A GET on the events path with a bearer token.
async fn events_get(sc: &Sidecast, path: &str, token: &str) -> Response {
    let auth = format!("Bearer {token}");
    request(&sc.public, "GET", path, &[("Authorization", &auth)], b"").await
}

/// "Response: 200, Content-Type: text/event-stream, Cache-Control: no-cache,
/// no-transform, X-Accel-Buffering: no; the first bytes (retry: <ms> and,
/// with nothing to replay, a cursor: a block with only id:) are flushed at
/// once; a comment line every heartbeat. HTTP/1.1: chunked."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_has_its_head_first_bytes_at_once_and_heartbeats() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    // A heartbeat far longer than any wait below: the first bytes cannot be
    // pushed out by it.
    opts.events = "heartbeat = \"60s\"\nretry = \"4s\"".into();
    let sc = Sidecast::start(&opts);
    let token = sc.token("alice", &["news"]);

    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    assert_eq!(s.status(), 200);
    let h = |name: &str| s.head.header(name).map(str::to_owned);
    assert_eq!(h("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(
        h("cache-control").as_deref(),
        Some("no-cache, no-transform")
    );
    assert_eq!(h("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(h("transfer-encoding").as_deref(), Some("chunked"));
    assert!(h("content-length").is_none());

    // The retry block comes at once: an order of magnitude before the
    // first heartbeat (60 s) would push anything out, with nothing else.
    let first = s
        .next_block(Duration::from_secs(6))
        .await
        .expect("the first bytes, before any heartbeat");
    assert_eq!(first.retry, Some(4000));
    assert_eq!((first.comments, first.data.as_deref()), (0, None));
    let cursor = s
        .next_block(Duration::from_secs(6))
        .await
        .expect("the cursor");
    assert!(cursor.id.is_some(), "{cursor:?}");
    assert_eq!(
        (cursor.data, cursor.event, cursor.retry, cursor.comments),
        (None, None, None, 0),
        "a block with only id:"
    );
    drop(s);
    drop(sc);

    // Then comment lines only, one per heartbeat: with a heartbeat of
    // 300 ms, three come within 6 s (the default of 15 s would take 45 s),
    // and no event.
    opts.events = "heartbeat = \"300ms\"\nretry = \"4s\"".into();
    let sc = Sidecast::start(&opts);
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    let first = s.next_block(support::WAIT).await.expect("the first bytes");
    assert_eq!(first.retry, Some(4000));
    let cursor = s.next_block(support::WAIT).await.expect("the cursor");
    assert!(cursor.id.is_some() && cursor.data.is_none(), "{cursor:?}");
    let started = std::time::Instant::now();
    let mut comments = 0;
    while comments < 3 {
        let b = s.next_block(Duration::from_secs(6)).await.expect("open");
        assert!(b.data.is_none() && b.id.is_none(), "{b:?}");
        comments += b.comments;
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "three heartbeats took {:?}",
        started.elapsed()
    );
}

/// "Each event: id:, then event: when named, then retry: when given, then
/// one data: line per line of the payload (\n, \r\n or \r), then a blank
/// line." Read as raw bytes, so the order of the fields is what is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_event_with_retry_is_framed_in_order_on_the_wire() {
    let (_up, sc) = support::start().await;
    let token = sc.token("alice", &["news"]);

    let mut io = TcpStream::connect(&sc.public).await.unwrap();
    let req = format!(
        "GET /events?topic=news HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // Wait for the stream's first bytes so the publish below is live.
    let first = tokio::time::Instant::now() + support::WAIT;
    read_until(&mut io, &mut raw, "retry: ", first).await;

    let (status, answer) = sc
        .publish(serde_json::json!({
            "topic": "news",
            "event": "price.update",
            "retry": 5000,
            "data": "one\r\ntwo\rthree\nfour",
        }))
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["ids"][0].as_str().unwrap().to_owned();

    let want = format!(
        "id: {id}\nevent: price.update\nretry: 5000\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
    );
    let deadline = tokio::time::Instant::now() + support::WAIT;
    read_until(&mut io, &mut raw, &want, deadline).await;

    // A payload given as JSON (not a string) goes out as compact JSON.
    let (status, answer) = sc
        .publish(serde_json::json!({"topic": "news", "data": {"a": [1, 2], "b": "x y"}}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["ids"][0].as_str().unwrap().to_owned();
    let want = format!("id: {id}\ndata: {{\"a\":[1,2],\"b\":\"x y\"}}\n\n");
    read_until(&mut io, &mut raw, &want, deadline).await;
}

/// Reads `io` onto `raw` until `raw` holds `want`; fails at `deadline` or
/// when the stream closes first.
async fn read_until(
    io: &mut TcpStream,
    raw: &mut Vec<u8>,
    want: &str,
    deadline: tokio::time::Instant,
) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(raw).contains(want) {
        let n = tokio::time::timeout_at(deadline, io.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {:?}", String::from_utf8_lossy(raw)))
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

/// "No topic and no route: 400 with a JSON error that says how to name one.
/// A topic name is 1–256 characters of non-empty segments separated by /,
/// each made of letters, digits, -_.:@ and %XX escapes; anything else is a
/// 400 (wildcards are for grants only)."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_must_be_named_and_well_formed() {
    let (_up, sc) = support::start().await;
    let token = sc.token("alice", &["*", "*/*", "*/*/*"]);

    let r = events_get(&sc, "/events", &token).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("/events?topic=NAME"), "{msg}");

    let long_ok = "a".repeat(256);
    let too_long = "a".repeat(257);
    let bad = [
        too_long.as_str(),
        "a//b",
        "/a",
        "a/",
        "a/*",
        "a/**",
        "a%20b",      // a space, once decoded
        "a%2Fx%25zz", // "%zz" is not an escape
        "a%3Fb",      // "?" once decoded
        "",
    ];
    for t in bad {
        let r = events_get(&sc, &format!("/events?topic={t}"), &token).await;
        assert_eq!(r.status, 400, "{t:?}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_topic", "{t:?}: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{t:?}"
        );
    }

    // The edges that are good open a stream.
    for t in [
        long_ok.as_str(),
        "A-z_0.9:x@y",
        "user/auth0%257C42",
        "a/b/c",
    ] {
        let s = Sse::open_token(&sc.public, &format!("/events?topic={t}"), &token).await;
        assert_eq!(s.status(), 200, "{t:?}");
    }
}

/// "A ?topic= value is percent-decoded once, like any query parameter (the
/// topic user/auth0%7C42 is asked for as ?topic=user/auth0%257C42)."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_topic_is_percent_decoded_once() {
    let (_up, sc) = support::start().await;
    let token = sc.token("auth0|42", &["user/*"]);

    let mut s = Sse::open_token(&sc.public, "/events?topic=user/auth0%257C42", &token).await;
    assert_eq!(s.status(), 200);
    s.next_block(support::WAIT).await.expect("retry block");
    // Another topic that differs only in the escape does not reach it.
    let other = sc.publish_one("user/auth0%7C43", "not this").await;
    let id = sc.publish_one("user/auth0%7C42", "for 42").await;
    let ev = s.next_event().await.expect("the event");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()), "not {other}");
    assert_eq!(ev.data.as_deref(), Some("for 42"));

    // Escapes compare upper-cased: a lower-case escape names the same topic.
    let mut lower = Sse::open_token(&sc.public, "/events?topic=user/auth0%257c42", &token).await;
    assert_eq!(lower.status(), 200);
    lower.next_block(support::WAIT).await.expect("retry block");
    let id = sc.publish_one("user/auth0%7C42", "again").await;
    let ev = lower.next_event().await.expect("the event");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(id.as_str())
    );
}

/// "Where that matters, publish over the socket only (publish = \"\")": no
/// TCP publish listener, and the socket still carries the whole API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_over_the_socket_only_leaves_no_tcp_listener() {
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("sockonly");
    let sock = dir.join("publish.sock");
    let text = Opts::new(&up.url()).toml().replace(
        "publish = \"127.0.0.1:0\"\n",
        &format!("publish = \"\"\npublish_socket = \"{}\"\n", sock.display()),
    );
    let cfg = dir.join("sidecar.toml");
    std::fs::write(&cfg, text).unwrap();
    let sc = Sidecast::start_file(
        &cfg,
        &[("SIDECAST_JWT_SECRET".into(), support::SECRET.into())],
    );
    assert_eq!(
        sc.publish,
        None,
        "a TCP publish listener:\n{}",
        sc.log_text()
    );

    let token = sc.token("alice", &["news"]);
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    assert_eq!(s.status(), 200);
    s.next_block(support::WAIT).await.expect("retry block");
    let r = support::http::request_unix(
        &sock,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        br#"{"topic": "news", "data": "over the socket"}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["ids"][0].as_str().unwrap().to_owned();
    let ev = s.next_event().await.expect("the event");
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_eq!(ev.data.as_deref(), Some("over the socket"));
}
