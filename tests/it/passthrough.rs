//! Pass-through: what the client sends reaches the app as sent, streamed
//! both ways; upgrades and `Expect: 100-continue` work; upstream failures
//! are sidecast's own short answers, marked with `Sidecast-Error`.
use crate::support;
use crate::support::conn;

use std::time::{Duration, Instant};

use conn::{closed_port, Conn};
use futures_util::{SinkExt, StreamExt};
use sha2::Digest;
use support::http::request;
use support::sse::Sse;
use support::upstream::{echoed_header, RawApp, Upstream};
use support::{Opts, Sidecast, WAIT};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// No answer sidecast sends may name the proxy library inside it.
fn assert_no_library_name(raw_head: &str) {
    assert!(
        !raw_head.to_ascii_lowercase().contains("pingora"),
        "the response head reveals the proxy library: {raw_head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reaches_the_app_as_sent() {
    let (_up, sc) = support::start().await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let body: &[u8] = if method == "GET" {
            b""
        } else {
            b"{\"k\": \"v\"}\nline two"
        };
        let r = request(
            &sc.public,
            method,
            "/api/items/42?b=2&a=1&sp=%20x&u=%C3%A9",
            &[
                ("X-Custom", "one"),
                ("X-Custom", "two"),
                ("Accept", "application/json"),
                ("Cookie", "s=abc"),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert_no_library_name(&format!("{:?}", r.headers));
        let echo = r.json();
        assert_eq!(echo["method"], method);
        assert_eq!(echo["uri"], "/api/items/42?b=2&a=1&sp=%20x&u=%C3%A9");
        assert_eq!(echoed_header(&echo, "host"), vec!["localhost"]);
        assert_eq!(echoed_header(&echo, "x-custom"), vec!["one", "two"]);
        assert_eq!(echoed_header(&echo, "cookie"), vec!["s=abc"]);
        assert_eq!(echo["body"].as_str().unwrap().as_bytes(), body);
        assert_eq!(r.header("x-upstream"), Some("app"));
    }
    // Host is the client's, not the upstream's address.
    let r = request(&sc.public, "GET", "/h", &[], b"").await;
    assert_eq!(echoed_header(&r.json(), "host"), vec!["localhost"]);
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"GET /h HTTP/1.1\r\nHost: api.example.com:8443\r\n\r\n")
        .await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(
        echoed_header(&r.json(), "host"),
        vec!["api.example.com:8443"]
    );
    // The app's own status and body pass unchanged, and are not marked.
    let r = request(&sc.public, "GET", "/status/502", &[], b"").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "app says 502\n");
    assert_eq!(r.header("sidecast-error"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_arrives_as_it_is_sent() {
    let (up, sc) = support::start().await;
    // The app sends each chunk only after the client has read the one
    // before: a proxy that held chunks back (until the end, or until some
    // amount gathered) would never deliver the first. No clock involved.
    let mut c = Conn::connect(&sc.public).await;
    c.get("/gated?n=5", &[]).await;
    let head = c.head(WAIT).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let mut text = String::new();
    for i in 0..5 {
        let want = format!("chunk {i}\n");
        while !text.contains(&want) {
            let chunk = c.chunk(WAIT).await.unwrap_or_else(|| {
                panic!("chunk {i} never arrived while the app held the next: {text:?}")
            });
            text.push_str(&String::from_utf8(chunk).unwrap());
        }
        assert!(
            !text.contains(&format!("chunk {}", i + 1)),
            "sent before it was released: {text:?}"
        );
        up.release();
    }
    assert_eq!(c.chunk(WAIT).await, None, "the body ends after five");
    assert_eq!(text, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_intact_both_ways() {
    let (_up, sc) = support::start().await;
    const N: usize = 5 * 1024 * 1024;
    let expected: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
    let r = request(&sc.public, "GET", &format!("/download?bytes={N}"), &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), N);
    assert_eq!(
        hex(&sha2::Sha256::digest(&r.body)),
        hex(&sha2::Sha256::digest(&expected))
    );

    let upload: Vec<u8> = (0..N).map(|_| fastrand_byte()).collect();
    let want = hex(&sha2::Sha256::digest(&upload));
    let r = request(&sc.public, "POST", "/upload", &[], &upload).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["len"], N);
    assert_eq!(r.json()["sha256"], want);

    // A chunked upload streams up too.
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for part in upload.chunks(256 * 1024) {
        c.send(format!("{:x}\r\n", part.len()).as_bytes()).await;
        c.send(part).await;
        c.send(b"\r\n").await;
    }
    c.send(b"0\r\n\r\n").await;
    let r = c.response("POST", WAIT).await;
    assert_eq!(r.head.status, 200);
    assert_eq!(r.json()["len"], N);
    assert_eq!(r.json()["sha256"], want);
}

fn fastrand_byte() -> u8 {
    use std::cell::Cell;
    thread_local!(static S: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) });
    S.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 24) as u8
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let (_up, sc) = support::start_with(|o| {
        // A quiet WebSocket is not a late response.
        o.upstream_extra = "timeout = \"1s\"".into();
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(&sc.public).await.unwrap();
    let url = format!("ws://{}/ws", sc.public);
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    use tokio_tungstenite::tungstenite::Message;
    for i in 0..3 {
        if i == 2 {
            // Create the condition: silence longer than the timeout.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let got = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("no error");
        assert_eq!(got, Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_honoured() {
    let (_up, sc) = support::start().await;
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        .await;
    // The body is sent only once the interim answer came.
    let interim = c.head(WAIT).await;
    assert_eq!(interim.status, 100, "{}", interim.raw);
    c.send(b"hello world").await;
    let r = c.response("POST", WAIT).await;
    assert_eq!(r.head.status, 200);
    assert_eq!(r.json()["body"], "hello world");
    assert_eq!(r.json()["method"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_events_keep_working() {
    let down = format!("http://{}", closed_port());
    let sc = Sidecast::start(&Opts::new(&down));
    let mut c = Conn::connect(&sc.public).await;
    c.get("/api/x", &[]).await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 502, "{}", r.head.raw);
    assert_eq!(
        r.head.header("sidecast-error"),
        Some("upstream-unreachable")
    );
    assert_eq!(r.head.header("connection"), Some("close"), "{}", r.head.raw);
    assert!(c.closes_within(WAIT).await);
    assert!(!r.body.is_empty() && r.body.len() < 200, "{:?}", r.text());
    assert_no_library_name(&r.head.raw);

    let token = sc.token("alice", &["news"]);
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    assert_eq!(s.status(), 200);
    s.next_block(WAIT).await.expect("retry block");
    let id = sc.publish_one("news", "still here").await;
    let ev = s.next_event().await.unwrap();
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_eq!(ev.data.as_deref(), Some("still here"));
}

/// sidecast with `[upstream] timeout = "1s"`.
async fn with_timeout() -> (Upstream, Sidecast) {
    let (up, sc) = support::start_with(|o| o.upstream_extra = "timeout = \"1s\"".into()).await;
    (up, sc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_response_headers_are_504() {
    let (_up, sc) = with_timeout().await;
    let started = Instant::now();
    let mut c = Conn::connect(&sc.public).await;
    c.get("/slow?ms=4000", &[]).await;
    let r = c.response("GET", WAIT).await;
    let took = started.elapsed();
    assert_eq!(r.head.status, 504, "{}", r.head.raw);
    assert_eq!(r.head.header("sidecast-error"), Some("upstream-timeout"));
    assert_eq!(r.head.header("connection"), Some("close"), "{}", r.head.raw);
    assert!(c.closes_within(WAIT).await);
    assert!(!r.body.is_empty() && r.body.len() < 200, "{:?}", r.text());
    assert_no_library_name(&r.head.raw);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "504 after {took:?}"
    );
    // The 504 is counted and logged like any proxied answer.
    sc.log_with(&["upstream-timeout"]).await;

    // With a body (Content-Length or chunked), the clock starts at its end.
    for framing in [
        "Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut c = Conn::connect(&sc.public).await;
        c.send(format!("POST /slow?ms=4000 HTTP/1.1\r\nHost: x\r\n{framing}").as_bytes())
            .await;
        let r = c.response("POST", WAIT).await;
        assert_eq!(r.head.status, 504, "{framing}: {}", r.head.raw);
        assert_eq!(r.head.header("sidecast-error"), Some("upstream-timeout"));
    }

    // An answer just inside the timeout passes.
    let r = request(&sc.public, "GET", "/slow?ms=300", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_is_not_cut() {
    let (_up, sc) = with_timeout().await;
    // Headers at once, then chunks 1.5 s apart: longer than the timeout
    // between reads, yet the stream must reach its end.
    let mut c = Conn::connect(&sc.public).await;
    c.get("/chunks?n=3&ms=1500", &[]).await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 200, "{}", r.head.raw);
    assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_a_slow_upstream() {
    let (_up, sc) = with_timeout().await;
    // The clock starts once the request was read whole.
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n")
        .await;
    for part in ["aaaaa", "bbbbb", "ccccc", "ddddd", "eeeee"] {
        // Create the condition: the body takes 2.5 s, longer than the timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(part.as_bytes()).await;
    }
    let r = c.response("POST", WAIT).await;
    assert_eq!(r.head.status, 200, "{}", r.head.raw);
    assert_eq!(r.json()["len"], 25);
}

/// An upload streams to the app: the app has the first part of a body
/// while the client still holds the rest back. A proxy that gathered the
/// body first would never pass it on. No clock involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_reaches_the_app_as_it_is_sent() {
    let (up, sc) = support::start().await;
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"POST /stream-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\naaaaa")
        .await;
    support::eventually("the first half reaches the app", || async {
        up.hits("bytes:/stream-upload") == 5
    })
    .await;
    c.send(b"bbbbb").await;
    let r = c.response("POST", WAIT).await;
    assert_eq!(r.head.status, 200, "{}", r.head.raw);
    assert_eq!(r.json()["len"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_upstream_failures_are_502_upstream_error() {
    for reply in [
        &b""[..],
        &b"this is not HTTP at all\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"[..],
    ] {
        let app = RawApp::start(reply, false).await;
        let sc = Sidecast::start(&Opts::new(&app.url));
        let mut c = Conn::connect(&sc.public).await;
        c.get("/x", &[]).await;
        let head = c.head(WAIT).await;
        if reply.starts_with(b"HTTP/1.1 200") {
            // Headers already went to the client: the body is cut short and
            // the connection closed, never a second status.
            assert_eq!(head.status, 200);
            assert!(c.closes_within(WAIT).await);
            continue;
        }
        assert_eq!(head.status, 502, "{:?}: {}", reply, head.raw);
        assert_eq!(
            head.header("sidecast-error"),
            Some("upstream-error"),
            "{:?}",
            String::from_utf8_lossy(reply)
        );
        assert_eq!(head.header("connection"), Some("close"), "{}", head.raw);
        assert_no_library_name(&head.raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_peer() {
    let (_up, sc) = support::start().await;
    let r = request(
        &sc.public,
        "GET",
        "/fwd",
        &[
            ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
            ("X-Forwarded-For", "192.0.2.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example.com"),
            ("X-Real-IP", "203.0.113.7"),
        ],
        b"",
    )
    .await;
    let echo = r.json();
    assert_eq!(
        echoed_header(&echo, "x-forwarded-for"),
        vec!["203.0.113.7, 198.51.100.2, 192.0.2.9, 127.0.0.1"]
    );
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        echoed_header(&echo, "x-forwarded-host"),
        vec!["app.example.com"]
    );
    assert_eq!(echoed_header(&echo, "x-real-ip"), vec!["203.0.113.7"]);

    // Without any: what sidecast saw.
    let r = request(&sc.public, "GET", "/fwd", &[], b"").await;
    let echo = r.json();
    assert_eq!(echoed_header(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-host"), vec!["localhost"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_cannot_be_forged() {
    let (_up, sc) = support::start_with(|o| o.upstream_extra = "trusted_proxies = []".into()).await;
    let r = request(
        &sc.public,
        "GET",
        "/fwd",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example.com"),
            ("Forwarded", "for=203.0.113.7;proto=https"),
            ("X-Real-IP", "203.0.113.7"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Prefix", "/admin"),
            ("X-Other", "kept"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echoed_header(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-host"), vec!["localhost"]);
    for gone in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        assert!(
            echoed_header(&echo, gone).is_empty(),
            "{gone} reached the app: {echo}"
        );
    }
    assert_eq!(echoed_header(&echo, "x-other"), vec!["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stay_here() {
    let (_up, sc) = support::start().await;
    let mut c = Conn::connect(&sc.public).await;
    c.send(
        b"GET /hop HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop-Secret\r\n\
          X-Hop-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          TE: trailers\r\nX-End-To-End: yes\r\n\r\n",
    )
    .await;
    let r = c.response("GET", WAIT).await;
    assert_eq!(r.head.status, 200);
    let echo = r.json();
    for gone in [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "connection",
    ] {
        assert!(
            echoed_header(&echo, gone)
                .iter()
                .all(|v| gone == "connection" && v.eq_ignore_ascii_case("keep-alive")),
            "{gone} reached the app: {echo}"
        );
    }
    assert_eq!(echoed_header(&echo, "x-end-to-end"), vec!["yes"]);
    // The connection stays usable.
    c.get("/again", &[]).await;
    assert_eq!(c.response("GET", WAIT).await.head.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_are_never_logged() {
    let (_up, sc) = support::start().await;
    let r = request(
        &sc.public,
        "GET",
        "/api/x?a=1&token=secret-value&access_token=other-secret",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    // The app still gets the query as sent.
    assert_eq!(
        r.json()["uri"],
        "/api/x?a=1&token=secret-value&access_token=other-secret"
    );
    let log = sc.log_with(&["/api/x?a=1"]).await;
    assert!(!log.contains("secret-value"), "{log}");
    assert!(!log.contains("other-secret"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_unchunked_answers() {
    let (_up, sc) = support::start().await;
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"GET /chunks?n=3&ms=100 HTTP/1.0\r\n\r\n").await;
    let head = c.head(WAIT).await;
    assert_eq!(head.status, 200, "{}", head.raw);
    assert_eq!(head.header("transfer-encoding"), None, "{}", head.raw);
    let body = c.until_closed(WAIT).await;
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "chunk 0\nchunk 1\nchunk 2\n"
    );
    // Kept alive when asked, with a length-delimited answer.
    let mut c = Conn::connect(&sc.public).await;
    for _ in 0..2 {
        c.send(b"GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = c.response("GET", WAIT).await;
        assert_eq!(r.head.status, 200, "{}", r.head.raw);
        assert_eq!(r.json()["uri"], "/ten");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_body_is_sidecasts_400() {
    let (_up, sc) = support::start().await;
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .await;
    let head = c.head(WAIT).await;
    assert_eq!(head.status, 400, "{}", head.raw);
    assert_eq!(
        head.header("sidecast-error"),
        Some("bad-request"),
        "{}",
        head.raw
    );
    assert_eq!(head.header("connection"), Some("close"), "{}", head.raw);
    assert_no_library_name(&head.raw);
    assert!(c.closes_within(WAIT).await);
}
