//! What the public listener and the publish API refuse, black-box against
//! the binary, with raw sockets where the bytes matter: no body is ever
//! read as a request, an answer never lies about an outcome, a reused
//! idempotency key is refused, tokens never reach the log, HTTP/1.0 gets
//! neither a 1xx nor a request without `Host`, many small headers are
//! accepted, and the publish socket never replaces what is not a socket.
use crate::support;
use crate::support::conn;
use crate::support::ops;

use std::time::Duration;

use conn::Conn;
use serde_json::json;
use support::redis::{all_connected, cluster, replica_opts, Redis};
use support::sse::Sse;
use support::upstream::{echoed_header, RawApp, Upstream};
use support::{eventually, http, Opts, Sidecast, WAIT};

/// The request smuggled in a body: the app must never see `/SMUGGLED`.
const SMUGGLED: &str = "GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n";

/// How many response status lines a raw exchange carries.
fn answers(raw: &[u8]) -> usize {
    String::from_utf8_lossy(raw).matches("HTTP/1.1 ").count()
}

/// Sends `req` on a fresh connection and reads until sidecast closes it.
async fn exchange_until_closed(addr: &str, req: &[u8]) -> Vec<u8> {
    let mut c = Conn::connect(addr).await;
    c.send(req).await;
    c.until_closed(WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_on_an_events_path_is_refused_and_never_read_as_a_request() {
    let (up, sc) = support::start_with(|o| {
        o.extra = "[[routes]]\npath = \"/orders/{id}/events\"\ntopics = [\"orders/{id}\"]\n".into()
    })
    .await;
    let token = sc.token("alice", &["a", "orders/*"]);
    let auth = format!("Authorization: Bearer {token}\r\n");
    let framings = [
        format!("Content-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
        format!(
            "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
            SMUGGLED.len()
        ),
    ];
    let requests = [
        ("OPTIONS", "/events?topic=a"),
        ("GET", "/events?topic=a"),
        ("HEAD", "/events?topic=a"),
        ("GET", "/events?topic=a&mode=poll"),
        ("OPTIONS", "/orders/7/events"),
        ("GET", "/orders/7/events"),
    ];
    for (method, target) in requests {
        for framing in &framings {
            let req = format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n{auth}{framing}"
            );
            let raw = exchange_until_closed(&sc.public, req.as_bytes()).await;
            let text = String::from_utf8_lossy(&raw);
            assert_eq!(
                answers(&raw),
                1,
                "{method} {target}: one answer, got {text}"
            );
            assert!(
                text.starts_with("HTTP/1.1 400 "),
                "{method} {target}: {text}"
            );
            if method != "HEAD" {
                assert!(text.contains("has no body"), "{method} {target}: {text}");
            }
        }
    }
    // A CONNECT with a body: refused and closed, its body never parsed.
    let req = format!(
        "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let raw = exchange_until_closed(&sc.public, req.as_bytes()).await;
    assert_eq!(answers(&raw), 1, "{}", String::from_utf8_lossy(&raw));
    // The connection is gone: nothing can follow. The app saw nothing, and
    // a request that is not smuggled still reaches it (the count is real).
    assert_eq!(up.hits("/SMUGGLED"), 0, "a body was read as a request");
    let r = http::request(&sc.public, "GET", "/SMUGGLED", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits("/SMUGGLED"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bodyless_preflight_keeps_the_connection_for_the_next_request() {
    let (up, sc) = support::start().await;
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"OPTIONS /events HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(c.response("OPTIONS", WAIT).await.head.status, 204);
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
    assert_eq!(up.hits("/next"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_headers_are_accepted_and_too_many_are_named() {
    let (_up, sc) = support::start().await;
    let head = |n: usize| {
        let mut req = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
        for i in 0..n {
            req.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        req
    };
    let req = head(150);
    assert!(req.len() < 4096, "a small head: {} bytes", req.len());
    let mut c = Conn::connect(&sc.public).await;
    c.send(req.as_bytes()).await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-h149"), vec!["149"]);
    // More fields than the proxy reads: a 431 that says what was exceeded.
    let mut c = Conn::connect(&sc.public).await;
    c.send(head(300).as_bytes()).await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 431);
    assert!(
        r.text().contains("more than 256 header fields"),
        "{}",
        r.text()
    );
    // A head over max_head_bytes says bytes.
    let mut c = Conn::connect(&sc.public).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    c.send(big.as_bytes()).await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 431);
    assert!(r.text().contains("larger than 16384 bytes"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_without_host_reaches_the_app_with_one() {
    let (up, sc) = support::start().await;
    let raw = exchange_until_closed(&sc.public, b"GET /nohost HTTP/1.0\r\n\r\n").await;
    let r = http::parse_response(&raw);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "host"), vec![up.addr.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interim_answer_reaches_an_http10_client() {
    // Interim `103` and `100` heads before the `200`: an HTTP library would
    // not send them unasked.
    let app = RawApp::start(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
          HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        false,
    )
    .await;
    let sc = Sidecast::start(&Opts::new(&app.url));
    // HTTP/1.1 clients get the interim heads: the upstream really sends them.
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.head(WAIT).await.status, 103);
    // HTTP/1.0 clients, with and without an expectation, get only the 200.
    for req in [
        &b"GET /a HTTP/1.0\r\nHost: x\r\n\r\n"[..],
        &b"POST /a HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"[..],
    ] {
        let raw = exchange_until_closed(&sc.public, req).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.0 200 ") || text.starts_with("HTTP/1.1 200 "),
            "{text}"
        );
        assert_eq!(text.matches("HTTP/1.").count(), 1, "{text}");
        assert!(text.ends_with("ok"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_targets_never_reach_the_log() {
    let (_up, sc) = support::start().await;
    let jwt = sc.token("alice", &["a"]);
    let secret = "s3cr3tvalue";
    let targets = [
        format!("/p?Token={secret}"),
        format!("/p?a=1;token={secret}"),
        format!("/p?token+={secret}"),
        format!("/p?a=1&amp;token={secret}"),
        format!("/p?ACCESS_TOKEN={secret}"),
        format!("/p?id_token={secret}"),
        format!("/p?%74oken={secret}"),
        format!("/p?auth={jwt}"),
        format!("/p/{jwt}/x"),
    ];
    for t in &targets {
        let r = http::request(&sc.public, "GET", t, &[], b"").await;
        assert_eq!(r.status, 200, "{t}");
    }
    // Each access line is written after its answer: wait for all of them.
    eventually("an access line per request", || async {
        sc.log_text().matches("proxied").count() >= targets.len()
    })
    .await;
    let log = sc.log_text();
    assert!(
        !log.contains(secret),
        "a token value reached the log:\n{log}"
    );
    let signature = jwt.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a JWT reached the log:\n{log}");
    assert!(log.contains("REDACTED"), "{log}");
}

/// Subscribes to `topic` and returns the stream, past its opening.
async fn subscribe(sc: &Sidecast, topic: &str) -> Sse {
    let t = sc.token("alice", &[topic]);
    Sse::open_token(&sc.public, &format!("/events?topic={topic}"), &t).await
}

/// Publishes `body` with extra headers; (status, json).
async fn publish_with(
    sc: &Sidecast,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    let r = http::request(
        &sc.publish_url(),
        "POST",
        "/publish",
        &h,
        body.to_string().as_bytes(),
    )
    .await;
    (r.status, r.json())
}

/// The checks of a reused key, on a sidecast alone or in a cluster: a key
/// reused with another event or body is a `422` naming it, and nothing of
/// that request reaches a stream (the marker published after shows that
/// everything before it was seen).
async fn reused_keys_are_refused(sc: &Sidecast) {
    let mut s = subscribe(sc, "k").await;
    let (st, first) = publish_with(
        sc,
        &[],
        json!({"topic": "k", "data": "one", "idempotency_key": "e1"}),
    )
    .await;
    assert_eq!(st, 202, "{first}");
    // The same event again: a retry, the first id.
    let (st, again) = publish_with(
        sc,
        &[],
        json!({"topic": "k", "data": "one", "idempotency_key": "e1"}),
    )
    .await;
    assert_eq!((st, &again["ids"]), (202, &first["ids"]));
    // Another event under the same key, beside a fresh one: refused whole.
    let (st, body) = publish_with(
        sc,
        &[],
        json!([{"topic": "k", "data": "fresh"}, {"topic": "k", "data": "two", "idempotency_key": "e1"}]),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"], "idempotency_key_reused");
    assert_eq!(body["field"], "[1].idempotency_key");
    assert!(
        body["message"].as_str().unwrap().contains("\"e1\""),
        "{body}"
    );
    // A request key reused with another body, here with three events.
    let one = json!({"topic": "k", "data": "r1"});
    let (st, body) = publish_with(sc, &[("Idempotency-Key", "req-1")], one.clone()).await;
    assert_eq!(st, 202, "{body}");
    let (st, same) = publish_with(sc, &[("Idempotency-Key", "req-1")], one).await;
    assert_eq!((st, &same["ids"]), (202, &body["ids"]));
    let three = json!([{"topic": "k", "data": "x1"}, {"topic": "k", "data": "x2"}, {"topic": "k", "data": "x3"}]);
    let (st, body) = publish_with(sc, &[("Idempotency-Key", "req-1")], three).await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["field"], "Idempotency-Key");
    sc.publish_one("k", "marker").await;
    let got: Vec<String> = s
        .events(3)
        .await
        .into_iter()
        .map(|b| b.data.unwrap_or_default())
        .collect();
    assert_eq!(got, ["one", "r1", "marker"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_is_refused_and_publishes_nothing() {
    let (_up, sc) = support::start().await;
    reused_keys_are_refused(&sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_is_refused_in_a_cluster() {
    let Some((_redis, _up, [sc])) = cluster(false).await else {
        return;
    };
    reused_keys_are_refused(&sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_gives_an_unknown_outcome_and_a_keyed_retry_publishes_once() {
    let Some((redis, _up, [sc])) = cluster(false).await else {
        return;
    };
    let mut s = subscribe(&sc, "h").await;
    sc.publish_one("h", "before").await;
    assert_eq!(
        s.next_event().await.unwrap().data.as_deref(),
        Some("before")
    );
    // Redis hangs: the publish is sent and no answer comes.
    support::signal(redis.pid(), "STOP");
    let event = json!({"topic": "h", "data": "during", "idempotency_key": "hang-1"});
    let (st, body) = publish_with(&sc, &[], event.clone()).await;
    support::signal(redis.pid(), "CONT");
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["outcome"], "unknown", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(!message.contains("nothing was published"), "{message}");
    assert!(message.contains("same idempotency keys"), "{message}");
    // The publisher retries as told, once Redis answers again.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (st, body) = publish_with(&sc, &[], event.clone()).await;
        if st == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retry accepted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sc.publish_one("h", "marker").await;
    let got: Vec<String> = s
        .events(2)
        .await
        .into_iter()
        .map(|b| b.data.unwrap_or_default())
        .collect();
    assert_eq!(got, ["during", "marker"], "published once, then the marker");
    let xlen = redis.command(&["XLEN", "{sidecast}:log"]);
    assert!(
        xlen.starts_with(":3"),
        "the log holds before, during, marker: {xlen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refusing_connections_says_nothing_was_published() {
    let Some((mut redis, _up, [sc])) = cluster(false).await else {
        return;
    };
    redis.kill();
    eventually("disconnected from Redis", || async {
        http::request(&sc.admin, "GET", "/readyz", &[], b"")
            .await
            .json()["cluster"]
            == "disconnected"
    })
    .await;
    let (st, body) = publish_with(&sc, &[], json!({"topic": "h", "data": "x"})).await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["outcome"], "not_published", "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("nothing was published"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmet_wait_replicas_is_an_unknown_outcome() {
    let Some(redis) = Redis::required(false) else {
        return;
    };
    let up = Upstream::start("app").await;
    let sc = Sidecast::start(&replica_opts(&up, &redis, "wait_replicas = 1\n"));
    all_connected(&[&sc]).await;
    let (st, body) = publish_with(
        &sc,
        &[],
        json!({"topic": "w", "data": "x", "idempotency_key": "w1"}),
    )
    .await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["outcome"], "unknown", "{body}");
    assert!(!body["message"]
        .as_str()
        .unwrap()
        .contains("nothing was published"));
}

/// Starts sidecast with a publish socket at `path`; its exit code and log
/// (it is expected to refuse to start).
fn start_refused(path: &std::path::Path) -> (Option<i32>, String) {
    let dir = support::temp_dir("sock");
    let cfg = dir.join("sidecar.toml");
    let mut o = Opts::new("http://127.0.0.1:9");
    o.listen = format!("publish_socket = \"{}\"\n", path.display());
    std::fs::write(&cfg, o.toml()).unwrap();
    let out = ops::run(
        &["--config", cfg.to_str().unwrap()],
        &[("SIDECAST_JWT_SECRET", support::SECRET)],
        None,
    );
    (out.code, out.stderr)
}

#[test]
fn anything_but_a_socket_at_the_socket_path_is_left_as_it_was() {
    let dir = support::temp_dir("notsock");
    let file = dir.join("publish.sock");
    std::fs::write(&file, "precious data").unwrap();
    let (code, log) = start_refused(&file);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("is not a socket"), "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious data");
    let sub = dir.join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    let (code, log) = start_refused(&sub);
    assert_ne!(code, Some(0), "{log}");
    assert!(sub.is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_socket_has_its_mode_and_serves() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("sockmode");
    let path = dir.join("publish.sock");
    let mut o = Opts::new(&up.url());
    o.listen = format!(
        "publish_socket = \"{}\"\npublish_socket_mode = \"0600\"\n",
        path.display()
    );
    let _sc = Sidecast::start(&o);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let r = http::request_unix(
        &path,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        br#"{"topic": "s", "data": "x"}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
}
