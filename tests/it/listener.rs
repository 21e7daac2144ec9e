//! The public listener protects itself (head timeout, head size, ambiguous
//! heads, idle keep-alive) and reads every request head, so that an events
//! request on a kept-alive connection takes the lean SSE path.
use crate::support;
use crate::support::conn;

use std::time::{Duration, Instant};

use conn::Conn;
use support::upstream::Upstream;
use support::{Sidecast, WAIT};

async fn start(listen: &str) -> (Upstream, Sidecast) {
    support::start_with(|o| o.listen = listen.to_owned()).await
}

/// Reads the refusal that ends a connection: its head, then the close.
async fn refused(c: &mut Conn) -> conn::Head {
    let r = c.response("GET", WAIT).await;
    assert!(
        c.closes_within(WAIT).await,
        "the connection stays open after {}",
        r.head.line
    );
    assert_eq!(r.head.header("connection"), Some("close"), "{}", r.head.raw);
    r.head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_gets_408() {
    let (_up, sc) = start("head_timeout = \"1s\"\nkeepalive = \"30s\"").await;

    // First request: counted from the accept, even with no byte sent.
    let t0 = Instant::now();
    let mut c = Conn::connect(&sc.public).await;
    let h = refused(&mut c).await;
    assert_eq!(h.status, 408, "{}", h.raw);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // A head that trickles in and never completes.
    let t0 = Instant::now();
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"GET /x HTTP/1.1\r\nHost: x\r\n").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.send(b"X-A: 1\r\n").await;
    let h = refused(&mut c).await;
    assert_eq!(h.status, 408);
    assert!(t0.elapsed() < Duration::from_secs(4));

    // A later request: idle time between requests is keep-alive, not head
    // time; the head timeout runs from its first byte.
    let mut c = Conn::connect(&sc.public).await;
    c.get("/one", &[]).await;
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
    // Create the condition: idle longer than head_timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.get("/two", &[]).await;
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    c.send(b"GET /three HTTP/1.1\r\n").await;
    let h = refused(&mut c).await;
    assert_eq!(h.status, 408);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "408 {took:?} after the first byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_head_gets_431() {
    let (up, sc) = start("max_head_bytes = 2048").await;
    let mut c = Conn::connect(&sc.public).await;
    let big = "a".repeat(3000);
    c.send(format!("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let h = refused(&mut c).await;
    assert_eq!(h.status, 431, "{}", h.raw);
    // Many small headers: the bytes count, not the fields. 200 that fit
    // in 2048 bytes pass; 300 do not fit and are refused for their size.
    let many = |n: usize| {
        let mut req = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
        for i in 0..n {
            req.push_str(&format!("X-{i}: v\r\n"));
        }
        req.push_str("\r\n");
        req
    };
    let mut c = Conn::connect(&sc.public).await;
    assert!(many(200).len() < 2048);
    c.send(many(200).as_bytes()).await;
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
    assert_eq!(up.hits("/many"), 1);
    let mut c = Conn::connect(&sc.public).await;
    c.send(many(300).as_bytes()).await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 431);
    assert!(r.text().contains("larger than 2048 bytes"), "{}", r.text());
    // Just under the limit passes.
    let mut c = Conn::connect(&sc.public).await;
    let fits = "a".repeat(1800);
    c.send(format!("GET /fits HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\n\r\n").as_bytes())
        .await;
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
    assert_eq!(up.hits("/big"), 0);
    assert_eq!(up.hits("/many"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_too_long_for_http_gets_414() {
    let (up, sc) = start("max_head_bytes = 262144").await;
    let mut c = Conn::connect(&sc.public).await;
    let long = "a".repeat(70_000);
    c.send(format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    let h = refused(&mut c).await;
    assert_eq!(h.status, 414, "{}", h.raw);
    assert!(!h.raw.to_ascii_lowercase().contains("pingora"), "{}", h.raw);
    // A long header value within max_head_bytes is fine.
    let mut c = Conn::connect(&sc.public).await;
    c.send(format!("GET /fine HTTP/1.1\r\nHost: x\r\nX-Long: {long}\r\n\r\n").as_bytes())
        .await;
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
    assert_eq!(up.hits("/fine"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_malformed_heads_get_400_and_close() {
    let (up, sc) = start("").await;
    for (what, raw) in [
        (
            "both Content-Length and Transfer-Encoding",
            &b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        ),
        (
            "bare CR",
            &b"GET /cr HTTP/1.1\r\nHost: x\rX-Evil: 1\r\n\r\n"[..],
        ),
        ("invalid method", &b"G(T /m HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
        ("no method", &b" /m HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
        (
            "two Content-Lengths",
            &b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"[..],
        ),
        (
            "an unknown Transfer-Encoding",
            &b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
        ),
        ("no Host", &b"GET /nohost HTTP/1.1\r\n\r\n"[..]),
        ("userinfo in Host", &b"GET /ui HTTP/1.1\r\nHost: user@x\r\n\r\n"[..]),
        (
            "an absolute target naming another host",
            &b"GET http://other.example/abs HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
        (
            "a Content-Length past 2^64",
            &b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n"[..],
        ),
        ("not HTTP", &b"hello there\r\n\r\n"[..]),
    ] {
        let mut c = Conn::connect(&sc.public).await;
        c.send(raw).await;
        let h = refused(&mut c).await;
        assert_eq!(h.status, 400, "{what}: {}", h.raw);
        assert!(
            !h.raw.to_ascii_lowercase().contains("pingora"),
            "{what}: {}",
            h.raw
        );
    }
    for p in [
        "/smuggle", "/cr", "/m", "/cl", "/te", "/nohost", "/ui", "/abs", "/big",
    ] {
        assert_eq!(up.hits(p), 0, "{p} reached the app");
    }
    // An absolute target naming the Host is fine, and routed by its path.
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"GET http://x/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 200, "{}", r.head.raw);
    assert_eq!(up.hits("/abs"), 1);
    let token = sc.token("alice", &["a"]);
    c.send(
        format!("GET http://x/events?topic=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let h = c.head(WAIT).await;
    assert_eq!(h.status, 200, "{}", h.raw);
    assert_eq!(h.header("content-type"), Some("text/event-stream"));
    assert_eq!(up.hits("/events"), 0);

    // CONNECT is not pass-through: refused by sidecast itself.
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await;
    let h = refused(&mut c).await;
    assert_eq!(h.status, 405, "{}", h.raw);
    assert!(!h.raw.to_ascii_lowercase().contains("pingora"), "{}", h.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let (_up, sc) = start("keepalive = \"1s\"\nhead_timeout = \"5s\"").await;
    let mut c = Conn::connect(&sc.public).await;
    c.get("/a", &[]).await;
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
    let t0 = Instant::now();
    assert!(c.closes_within(WAIT).await, "still open after {WAIT:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert!(
        c.pending().is_empty(),
        "an idle close sends nothing: {:?}",
        String::from_utf8_lossy(c.pending())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_a_proxied_request_on_one_connection() {
    let (up, sc) = start("").await;
    let token = sc.token("alice", &["a"]);
    let auth = format!("Bearer {token}");
    let mut c = Conn::connect(&sc.public).await;
    for _ in 0..2 {
        c.get("/api/before", &[]).await;
        let r = c.response("GET", WAIT).await;
        assert_eq!(r.head.status, 200);
        assert_eq!(r.json()["upstream"], "app");
    }
    c.get(
        "/events?topic=a",
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
    )
    .await;
    let h = c.head(WAIT).await;
    assert_eq!(h.status, 200, "{}", h.raw);
    assert_eq!(h.header("content-type"), Some("text/event-stream"));
    assert_eq!(h.header("transfer-encoding"), Some("chunked"));
    let first = String::from_utf8(c.chunk(WAIT).await.unwrap()).unwrap();
    assert!(first.starts_with("retry: "), "{first:?}");
    // The cursor: a block with only `id:`.
    let cursor = String::from_utf8(c.chunk(WAIT).await.unwrap()).unwrap();
    let id_only = cursor
        .strip_prefix("id: ")
        .and_then(|c| c.strip_suffix("\n\n"))
        .is_some_and(|id| !id.is_empty() && !id.contains('\n'));
    assert!(id_only, "{cursor:?}");
    let id = sc.publish_one("a", "on the same connection").await;
    let ev = String::from_utf8(c.chunk(WAIT).await.unwrap()).unwrap();
    assert_eq!(
        ev,
        format!("id: {id}\ndata: on the same connection\n\n"),
        "{ev:?}"
    );
    assert_eq!(up.hits("/events"), 0, "the events request reached the app");
    assert_eq!(up.hits("/api/before"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_events_gets_the_head_only() {
    let (_up, sc) = start("").await;
    let token = sc.token("alice", &["a"]);
    let auth = format!("Bearer {token}");
    let hdrs = [
        ("Authorization", auth.as_str()),
        ("Accept", "text/event-stream"),
    ];

    let mut g = Conn::connect(&sc.public).await;
    g.get("/events?topic=a", &hdrs).await;
    let get = g.head(WAIT).await;

    let mut c = Conn::connect(&sc.public).await;
    let mut req = String::from("HEAD /events?topic=a HTTP/1.1\r\nHost: localhost\r\n");
    for (n, v) in hdrs {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.send(req.as_bytes()).await;
    let head = c.head(WAIT).await;
    assert_eq!(head.status, get.status);
    assert_eq!(head.status, 200);
    assert_eq!(head.header_names(), get.header_names());
    for n in get.header_names() {
        assert_eq!(head.header(&n), get.header(&n), "{n}");
    }
    // No stream follows: the next request on the connection is answered.
    sc.publish_one("a", "not for HEAD").await;
    c.get("/after-head", &[]).await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 200, "{}", r.head.raw);
    assert_eq!(r.json()["uri"], "/after-head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_events_stream_without_chunks_and_end_by_closing() {
    let (_up, sc) = start("").await;
    let token = sc.token("alice", &["a"]);
    let mut c = Conn::connect(&sc.public).await;
    c.send(
        format!(
            "GET /events?topic=a HTTP/1.0\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let h = c.head(WAIT).await;
    assert_eq!(h.status, 200, "{}", h.raw);
    assert!(h.line.starts_with("HTTP/1.0 "), "{}", h.line);
    assert_eq!(h.header("transfer-encoding"), None);
    assert_eq!(h.header("content-length"), None);
    let id = sc.publish_one("a", "plain\nlines").await;
    let r = support::http::request(
        &sc.publish_url(),
        "POST",
        "/disconnect",
        &[("Content-Type", "application/json")],
        br#"{"topic": "a"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rest = String::from_utf8(c.until_closed(WAIT).await).unwrap();
    // SSE text as is: no chunk-size lines, no last chunk.
    assert!(rest.starts_with("retry: "), "{rest:?}");
    assert!(
        rest.contains(&format!("id: {id}\ndata: plain\ndata: lines\n\n")),
        "{rest:?}"
    );
    let mut text = rest.clone();
    let blocks = support::sse::parse_blocks(&mut text);
    assert!(
        blocks
            .iter()
            .all(|b| b.id.is_some() || b.retry.is_some() || b.event.is_some()),
        "{rest:?}"
    );
    assert!(!rest.contains("\r\n"), "chunk framing in {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_to_events_is_400() {
    let (up, sc) = start("").await;
    let token = sc.token("alice", &["a"]);
    for framing in ["Content-Length: 5", "Transfer-Encoding: chunked"] {
        let mut c = Conn::connect(&sc.public).await;
        let body = if framing.starts_with("Content") {
            "hello"
        } else {
            "5\r\nhello\r\n0\r\n\r\n"
        };
        c.send(
            format!(
                "GET /events?topic=a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{framing}\r\n\r\n{body}"
            )
            .as_bytes(),
        )
        .await;
        let h = refused(&mut c).await;
        assert_eq!(h.status, 400, "{framing}: {}", h.raw);
    }
    assert_eq!(up.hits("/events"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_queries_stay_out_of_the_log() {
    let (_up, sc) = start("").await;
    let token = sc.token("alice", &["a"]);
    // A stream opened with its token in the query, and a proxied request.
    let mut s =
        support::sse::Sse::open(&sc.public, &format!("/events?topic=a&token={token}"), &[]).await;
    assert_eq!(s.status(), 200);
    s.next_block(WAIT).await.unwrap();
    let r = support::http::request(&sc.public, "GET", "/p?token=secret-value&x=1", &[], b"").await;
    assert_eq!(r.status, 200);
    drop(s);
    let log = sc
        .log_with(&["/p?", "stream opened", "stream closed"])
        .await;
    assert!(!log.contains("secret-value"), "{log}");
    assert!(!log.contains(&token), "{log}");
    let sig = token.rsplit('.').next().unwrap();
    assert!(!log.contains(sig), "{log}");
}

/// Pipelining is pingora's default: a proxied request with the next one
/// pipelined behind it is answered, then the connection closes (the client
/// sends the next request again); it never hangs or mixes answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_or_closed() {
    let (up, sc) = start("").await;
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 200);
    assert_eq!(r.json()["uri"], "/p1");
    if c.closes_within(Duration::from_secs(2)).await && c.pending().is_empty() {
        assert_eq!(up.hits("/p2"), 0, "answered but not sent");
    } else {
        let r = c.response("GET", WAIT).await;
        assert_eq!(r.json()["uri"], "/p2");
    }
    // After an events answer, a pipelined request is kept and answered.
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"OPTIONS /events HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(c.response("OPTIONS", WAIT).await.head.status, 204);
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.json()["uri"], "/p3");
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_pauses_accepting() {
    let (_up, mut sc) = support::start_with(|o| {
        o.listen = "head_timeout = \"30s\"".into();
        o.nofile = Some(64);
    })
    .await;
    // Hold more idle connections than the process may have files.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(&sc.public).await.unwrap());
    }
    sc.log_with(&["accept failed"]).await;
    // Let the condition last, and watch that nothing spins meanwhile.
    let pid = sc.pid();
    let before = cpu_ticks(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = cpu_ticks(pid) - before;
    let secs = t0.elapsed().as_secs_f64();
    // Clock ticks are 1/100 s: well under a quarter of one core.
    assert!(
        (ticks as f64) < secs * 100.0 * 0.25,
        "{ticks} ticks of CPU in {secs:.1}s while out of files"
    );
    let failures = sc
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    eprintln!("out of files for {secs:.1}s: {ticks} CPU ticks, {failures} log lines");
    assert!(
        failures as f64 <= secs + 3.0,
        "{failures} accept-failure lines in about {secs:.1}s"
    );
    // Files come back: sidecast serves again, and has counted.
    drop(held);
    let mut c = None;
    for _ in 0..50 {
        let mut conn = Conn::connect(&sc.public).await;
        conn.get("/after", &[]).await;
        if tokio::time::timeout(Duration::from_secs(1), conn.head(WAIT))
            .await
            .is_ok()
        {
            c = Some(conn);
            break;
        }
    }
    assert!(c.is_some(), "sidecast does not serve again");
    let m = support::http::request(&sc.admin, "GET", "/metrics", &[], b"").await;
    let count: f64 = m
        .text()
        .lines()
        .find(|l| l.starts_with("sidecast_accept_errors") && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(count >= 1.0, "{}", m.text());
    assert!(
        !sc.has_exited(),
        "sidecast exited: {:?}",
        sc.log.lock().unwrap()
    );
}
