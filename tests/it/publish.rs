//! `POST /publish` on the real binary: every bad input refused with the
//! field named and nothing published, the three body shapes, the Unix
//! socket, idempotency, and the publish token.
use crate::support;
use crate::support::ops;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::delivery::{
    ids_of, metric, metric_sample, opening, publish_json, publish_with, topic_info,
};
use support::http::{request_unix, Response};
use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast, WAIT};

async fn stream(sc: &Sidecast, topics: &[&str]) -> Sse {
    let token = sc.token("alice", topics);
    let q: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    let mut s = Sse::open_token(&sc.public, &format!("/events?{}", q.join("&")), &token).await;
    opening(&mut s).await;
    s
}

fn assert_error(r: &Response, status: u16, field: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.text()
    );
    let v = r.json();
    assert_eq!(v["field"], field, "{v}");
    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_names_its_field_and_publishes_nothing() {
    let (_up, sc) =
        support::start_with(|o| o.extra = "[publish]\nmax_body_bytes = 2048\n".into()).await;
    let mut s = stream(&sc, &["ok"]).await;
    let long_name = "n".repeat(65);
    let long_key = "k".repeat(129);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("invalid JSON", b"{\"topic\": ".to_vec(), 400, "body"),
        ("not UTF-8", vec![0xff, 0xfe], 400, "body"),
        ("a number", b"42".to_vec(), 400, "body"),
        ("an empty batch", b"[]".to_vec(), 400, "body"),
        ("missing topic", br#"{"data": "x"}"#.to_vec(), 400, "topic"),
        ("missing data", br#"{"topic": "ok"}"#.to_vec(), 400, "data"),
        ("topic not a string", br#"{"topic": 5, "data": "x"}"#.to_vec(), 400, "topic"),
        ("topics not a list", br#"{"topics": "ok", "data": "x"}"#.to_vec(), 400, "topics"),
        ("topics empty", br#"{"topics": [], "data": "x"}"#.to_vec(), 400, "topics"),
        ("a topic in topics", br#"{"topics": ["ok", 1], "data": "x"}"#.to_vec(), 400, "topics[1]"),
        ("topic and topics", br#"{"topic": "ok", "topics": ["ok"], "data": "x"}"#.to_vec(), 400, "topics"),
        ("bad topic name", br#"{"topic": "a b", "data": "x"}"#.to_vec(), 400, "topic"),
        ("empty segment", br#"{"topic": "ok//x", "data": "x"}"#.to_vec(), 400, "topic"),
        ("a wildcard", br#"{"topic": "ok/*", "data": "x"}"#.to_vec(), 400, "topic"),
        ("event not a string", br#"{"topic": "ok", "data": "x", "event": 1}"#.to_vec(), 400, "event"),
        ("bad event name", br#"{"topic": "ok", "data": "x", "event": "a b"}"#.to_vec(), 400, "event"),
        ("an event name with a newline", br#"{"topic": "ok", "data": "x", "event": "a\nid: 9"}"#.to_vec(), 400, "event"),
        ("reserved event name", br#"{"topic": "ok", "data": "x", "event": "sidecast.reset"}"#.to_vec(), 400, "event"),
        ("too long event name", format!(r#"{{"topic": "ok", "data": "x", "event": "{long_name}"}}"#).into_bytes(), 400, "event"),
        ("user not a string", br#"{"topic": "ok", "data": "x", "user": 7}"#.to_vec(), 400, "user"),
        ("retry not a number", br#"{"topic": "ok", "data": "x", "retry": "5s"}"#.to_vec(), 400, "retry"),
        ("negative retry", br#"{"topic": "ok", "data": "x", "retry": -1}"#.to_vec(), 400, "retry"),
        ("key not a string", br#"{"topic": "ok", "data": "x", "idempotency_key": 1}"#.to_vec(), 400, "idempotency_key"),
        ("key over 128 bytes", format!(r#"{{"topic": "ok", "data": "x", "idempotency_key": "{long_key}"}}"#).into_bytes(), 400, "idempotency_key"),
        ("unknown field", br#"{"topic": "ok", "data": "x", "colour": "red"}"#.to_vec(), 400, "colour"),
        ("a bad item in a batch", br#"[{"topic": "ok", "data": "1"}, {"topic": "ok", "data": "2"}, {"topic": "bad name", "data": "3"}]"#.to_vec(), 400, "[2].topic"),
        ("a non-object in a batch", br#"[{"topic": "ok", "data": "1"}, "x"]"#.to_vec(), 400, "[1]"),
        ("over max_body_bytes", format!(r#"{{"topic": "ok", "data": "{}"}}"#, "x".repeat(3000)).into_bytes(), 413, "body"),
    ];
    let published = metric(&sc, "sidecast_events_published_total").await;
    for (what, body, status, field) in &cases {
        let r = publish_with(
            &sc,
            "POST",
            "/publish",
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
        assert_eq!(r.status, *status, "{what}: {}", r.text());
        assert_error(&r, *status, field);
    }
    let ndjson = publish_with(
        &sc,
        "POST",
        "/publish",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"topic\": \"ok\", \"data\": 1}\n{\"topic\": \"ok\"}\n",
    )
    .await;
    assert_error(&ndjson, 400, "line 2: data");
    let ok_body = br#"{"topic": "ok", "data": "x"}"#;
    for ct in [Some("text/plain"), Some("application/xml"), None] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let r = publish_with(&sc, "POST", "/publish", &headers, ok_body).await;
        assert_error(&r, 415, "Content-Type");
    }
    let r = publish_with(&sc, "GET", "/publish", &[], b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.json()["error"], "method_not_allowed");
    let r = publish_with(&sc, "PUT", "/disconnect", &[], b"").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let r = publish_with(
        &sc,
        "POST",
        "/topics",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    for path in ["/", "/nope", "/publish/x", "/topicsx"] {
        let r = publish_with(
            &sc,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            ok_body,
        )
        .await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"], "not_found", "{path}");
    }
    // A body over the limit without Content-Length is refused as well.
    let r = chunked_publish(&sc, &"x".repeat(3000)).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // Nothing of it was published: the stream's next event is the marker,
    // history holds nothing, and no other topic appeared.
    assert_eq!(
        metric(&sc, "sidecast_events_published_total").await,
        published
    );
    assert_eq!(
        metric(&sc, "sidecast_publish_errors_total{status=\"400\"}").await as usize,
        cases.len()
    );
    let (_, info) = topic_info(&sc, "ok").await;
    assert_eq!(info["held"], 0);
    let all = publish_with(&sc, "GET", "/topics", &[], b"").await.json();
    assert_eq!(all["topics"].as_array().unwrap().len(), 1, "{all}");
    let marker = sc.publish_one("ok", "marker").await;
    let b = s.next_event().await.unwrap();
    assert_eq!(b.id.as_deref(), Some(marker.as_str()));
}

/// A publish with a chunked body (no Content-Length); the raw answer.
async fn chunked_publish(sc: &Sidecast, data: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(r#"{{"topic": "ok", "data": "{data}"}}"#);
    let mut io = tokio::net::TcpStream::connect(sc.publish_url())
        .await
        .unwrap();
    let req = format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_arrays_and_ndjson_publish_in_order() {
    let (_up, sc) = support::start().await;
    let mut s = stream(&sc, &["t", "u"]).await;
    let one = ids_of(
        &publish_json(
            &sc,
            &json!({"topic": "t", "data": {"n": 1}, "event": "e.1", "retry": 2500}),
        )
        .await,
    );
    let arr = ids_of(
        &publish_json(
            &sc,
            &json!([
                {"topic": "t", "data": "two"},
                {"topics": ["t", "u"], "data": "three\nlines\r\nhere"},
            ]),
        )
        .await,
    );
    let nd = publish_with(
        &sc,
        "POST",
        "/publish",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"topic\": \"u\", \"data\": \"four\"}\n\n{\"topic\": \"t\", \"data\": [5]}\n",
    )
    .await;
    let nd = ids_of(&nd);
    assert_eq!((one.len(), arr.len(), nd.len()), (1, 2, 2));
    let all: Vec<String> = [one, arr, nd].concat();
    let got = s.events(5).await;
    assert_eq!(
        got.iter()
            .map(|b| b.id.clone().unwrap())
            .collect::<Vec<_>>(),
        all
    );
    assert_eq!(got[0].event.as_deref(), Some("e.1"));
    assert_eq!(got[0].retry, Some(2500));
    let data: Vec<&str> = got.iter().map(|b| b.data.as_deref().unwrap()).collect();
    assert_eq!(
        data,
        [r#"{"n":1}"#, "two", "three\nlines\nhere", "four", "[5]"]
    );
}

fn socket_opts(o: &mut Opts, path: &Path, mode: &str) {
    o.listen = format!(
        "publish_socket = \"{}\"\npublish_socket_mode = \"{mode}\"\n",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_publishes_with_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::temp_dir("sock");
    let path = dir.join("publish.sock");
    let (_up, sc) = support::start_with(|o| socket_opts(o, &path, "0600")).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let mut s = stream(&sc, &["sock"]).await;
    let r = request_unix(
        &path,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        br#"{"topic": "sock", "data": "over the socket"}"#,
    )
    .await;
    let id = ids_of(&r).remove(0);
    let b = s.next_event().await.unwrap();
    assert_eq!(
        (b.id.as_deref(), b.data.as_deref()),
        (Some(id.as_str()), Some("over the socket"))
    );
    let r = request_unix(&path, "GET", "/topics/sock", &[], b"").await;
    assert_eq!(r.json()["streams"], 1);
    drop(sc);

    // Another mode, and a stale file left by a dead process is replaced.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let (_up, sc) = support::start_with(|o| socket_opts(o, &stale, "0660")).await;
    let mode = std::fs::metadata(&stale).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "mode {mode:o}");
    let r = request_unix(
        &stale,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        br#"{"topic": "sock", "data": "x"}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    drop(sc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_socket_is_a_start_up_error() {
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("live");
    let path = dir.join("live.sock");
    let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut opts = Opts::new(&up.url());
    socket_opts(&mut opts, &path, "0660");
    let cfg = dir.join("sidecar.toml");
    std::fs::write(&cfg, opts.toml()).unwrap();
    let out = ops::run(
        &["--config", cfg.to_str().unwrap()],
        &[("SIDECAST_JWT_SECRET", support::SECRET)],
        None,
    );
    let err = &out.stderr;
    assert!(!out.success());
    assert!(
        err.contains("publish_socket") && err.contains("another process"),
        "{err}"
    );
    assert!(!err.contains("sidecast listening"), "{err}");
    assert!(path.exists(), "the other process's socket is left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_answer_the_first_ids_and_publish_once() {
    let (_up, sc) = support::start().await;
    let mut s = stream(&sc, &["i"]).await;
    let body = json!({"topic": "i", "data": "once", "idempotency_key": "order-1"});
    let first = ids_of(&publish_json(&sc, &body).await);
    let again = ids_of(&publish_json(&sc, &body).await);
    assert_eq!(first, again);
    // In a batch, the known key keeps its id and a new one is published.
    let batch = ids_of(
        &publish_json(
            &sc,
            &json!([
                {"topic": "i", "data": "once", "idempotency_key": "order-1"},
                {"topic": "i", "data": "new", "idempotency_key": "order-2"},
            ]),
        )
        .await,
    );
    assert_eq!(batch[0], first[0]);
    assert_ne!(batch[1], first[0]);
    // A request key: a repeat of the same request answers the first call's
    // ids; the same key with another body is refused (422), publishing
    // nothing.
    let keyed = |data: &'static str| {
        let sc = &sc;
        async move {
            publish_with(
                sc,
                "POST",
                "/publish",
                &[
                    ("Content-Type", "application/json"),
                    ("Idempotency-Key", "req-7"),
                ],
                json!([{"topic": "i", "data": data}, {"topic": "i", "data": data}])
                    .to_string()
                    .as_bytes(),
            )
            .await
        }
    };
    let r1 = ids_of(&keyed("req").await);
    let r2 = ids_of(&keyed("req").await);
    assert_eq!(r1, r2);
    assert_eq!(r1.len(), 2);
    let reused = keyed("retry").await;
    assert_error(&reused, 422, "Idempotency-Key");
    let bad = publish_with(
        &sc,
        "POST",
        "/publish",
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", &"k".repeat(129)),
        ],
        br#"{"topic": "i", "data": "x"}"#,
    )
    .await;
    assert_error(&bad, 400, "Idempotency-Key");
    // A key repeated inside one batch for the same event: published once,
    // both answer its id.
    let twice = ids_of(
        &publish_json(
            &sc,
            &json!([
                {"topic": "i", "data": "dup", "idempotency_key": "order-3"},
                {"topic": "i", "data": "dup", "idempotency_key": "order-3"},
            ]),
        )
        .await,
    );
    assert_eq!(twice[0], twice[1]);
    let marker = sc.publish_one("i", "marker").await;
    let got = s.events(6).await;
    let got: Vec<(String, String)> = got
        .into_iter()
        .map(|b| (b.id.unwrap(), b.data.unwrap()))
        .collect();
    let want = vec![
        (first[0].clone(), "once".to_owned()),
        (batch[1].clone(), "new".to_owned()),
        (r1[0].clone(), "req".to_owned()),
        (r1[1].clone(), "req".to_owned()),
        (twice[0].clone(), "dup".to_owned()),
        (marker, "marker".to_owned()),
    ];
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_token_guards_tcp_and_socket() {
    let dir = support::temp_dir("tok");
    let path = dir.join("publish.sock");
    let (_up, sc) = support::start_with(|o| {
        socket_opts(o, &path, "0600");
        o.require_publish_token("publish-secret-xyz");
    })
    .await;
    let body = br#"{"topic": "guarded", "data": "x"}"#;
    let ct = ("Content-Type", "application/json");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic cHVibGlzaA=="),
        Some("Bearer publish-secret-xy"),
    ] {
        let mut h = vec![ct];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        let r = publish_with(&sc, "POST", "/publish", &h, body).await;
        assert_error(&r, 401, "authorization");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = request_unix(&path, "POST", "/publish", &h, body).await;
        assert_eq!(r.status, 401, "{auth:?} over the socket");
    }
    for (m, p) in [
        ("GET", "/topics"),
        ("GET", "/topics/guarded"),
        ("POST", "/disconnect"),
    ] {
        let r = publish_with(&sc, m, p, &[ct], br#"{"user": "a"}"#).await;
        assert_eq!(r.status, 401, "{m} {p}");
    }
    // Nothing was published: the counter is there, at zero.
    assert_eq!(
        metric_sample(&sc, "sidecast_events_published_total").await,
        Some(0.0)
    );
    let good = ("Authorization", "Bearer publish-secret-xyz");
    let r = publish_with(&sc, "POST", "/publish", &[ct, good], body).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = request_unix(&path, "POST", "/publish", &[ct, good], body).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        metric_sample(&sc, "sidecast_events_published_total").await,
        Some(2.0)
    );
    let r = publish_with(&sc, "GET", "/topics/guarded", &[good], b"").await;
    assert_eq!(r.json()["held"], 2);
}

/// A refusal that comes before the body is read (401, 404) still reads
/// that body first: a connection closed with unread bytes is reset (on the
/// Unix socket the client's next write fails at once), and the client could
/// lose the answer that says what was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_reaches_a_client_that_sends_its_body_late() {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn late_body<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, path: &str) -> String {
        let body = br#"{"topic": "late", "data": "x"}"#;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        io.write_all(head.as_bytes()).await.unwrap();
        io.write_all(&body[..10]).await.unwrap();
        // The rest of the body comes late (the condition under test).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rest = io.write_all(&body[10..]).await;
        assert!(rest.is_ok(), "{path}: the connection was reset: {rest:?}");
        let mut out = Vec::new();
        let read = tokio::time::timeout(WAIT, io.read_to_end(&mut out))
            .await
            .unwrap();
        assert!(read.is_ok(), "{path}: {read:?}");
        String::from_utf8_lossy(&out).into_owned()
    }
    let dir = support::temp_dir("late");
    let sock = dir.join("publish.sock");
    let (_up, sc) = support::start_with(|o| {
        socket_opts(o, &sock, "0600");
        o.require_publish_token("publish-secret-xyz");
    })
    .await;
    for (path, status) in [("/publish", "401"), ("/nope", "404")] {
        let tcp = tokio::net::TcpStream::connect(sc.publish_url())
            .await
            .unwrap();
        let text = late_body(tcp, path).await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        let unix = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let text = late_body(unix, path).await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
    }
}
