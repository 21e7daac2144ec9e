//! The HTTP/1.1 rules a proxy owes, on both pass-through paths (the lean
//! relay for plain requests, and pingora's general path with
//! `fast_path = false`): pipelined requests are all answered in order,
//! headers named by the app's `Connection` never reach the client, the
//! app's own `Date` does, and a body that stalls past `body_idle_timeout`
//! closes the client's connection and is counted.
use crate::support;
use crate::support::conn;

use conn::Conn;
use support::upstream::{echoed_header, RawApp, Upstream};
use support::{http, Opts, Sidecast, WAIT};

/// Both pass-through paths: `(name, [upstream] keys)`.
const PATHS: [(&str, &str); 2] = [
    ("fast", "fast_path = true"),
    ("pingora", "fast_path = false"),
];

fn start(url: &str, upstream_keys: &str) -> Sidecast {
    let mut o = Opts::new(url);
    o.upstream_extra = upstream_keys.to_owned();
    Sidecast::start(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let up = Upstream::start("app").await;
    for (path, keys) in PATHS {
        let sc = start(&up.url(), keys);
        let mut c = Conn::connect(&sc.public).await;
        // Three GETs and a POST with a body, in one write, then one more.
        c.send(
            b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /p3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              GET /p4 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        for (n, method) in [(1, "GET"), (2, "GET"), (3, "POST"), (4, "GET")] {
            let r = c.response(method, WAIT).await;
            assert_eq!(r.head.status, 200, "{path}: /p{n}: {}", r.text());
            let echo = r.json();
            assert_eq!(echo["uri"], format!("/p{n}"), "{path}: answers in order");
            assert_eq!(echo["method"], method, "{path}");
        }
        // A chunked upload pipelined with a GET (pingora's path on both).
        c.send(
            b"POST /p5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /p6 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        for (n, method) in [(5, "POST"), (6, "GET")] {
            let r = c.response(method, WAIT).await;
            assert_eq!(r.head.status, 200, "{path}: /p{n}: {}", r.text());
            assert_eq!(r.json()["uri"], format!("/p{n}"), "{path}");
        }
        assert_eq!(up.hits("/p1") + up.hits("/p4") + up.hits("/p6"), 3);
        drop(sc);
        up.hits.lock().unwrap().clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_app_names_in_connection_never_reach_the_client() {
    let app = RawApp::start(
        b"HTTP/1.1 200 OK\r\nConnection: x-foo\r\nX-Foo: secret\r\nKeep-Alive: timeout=5\r\n\
          X-Bar: kept\r\nContent-Length: 2\r\n\r\nok",
        true,
    )
    .await;
    for (path, keys) in PATHS {
        let sc = start(&app.url, keys);
        for (method, target) in [("GET", "/a"), ("POST", "/b")] {
            let body: &[u8] = if method == "POST" { b"x" } else { b"" };
            let r = http::request(&sc.public, method, target, &[], body).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("x-foo"), None, "{path}: {:?}", r.headers);
            assert_eq!(r.header("keep-alive"), None, "{path}: {:?}", r.headers);
            assert_eq!(r.header("x-bar"), Some("kept"), "{path}");
            assert_eq!(r.text(), "ok");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_date_and_server_reach_the_client_unchanged() {
    let app = RawApp::start(
        b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: legacy-app/1.0\r\n\
          Content-Length: 2\r\n\r\nok",
        true,
    )
    .await;
    for (path, keys) in PATHS {
        let sc = start(&app.url, keys);
        let r = http::request(&sc.public, "GET", "/d", &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("date"),
            Some("Mon, 01 Jan 2024 00:00:00 GMT"),
            "{path}: {:?}",
            r.headers
        );
        assert_eq!(r.header("server"), Some("legacy-app/1.0"), "{path}");
    }
}

/// The value of an unlabelled counter in a `/metrics` text.
fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalled_past_the_idle_timeout_closes_the_client_connection() {
    // The head promises 100 bytes; 10 come, then silence.
    let app = RawApp::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        true,
    )
    .await;
    for (path, keys) in PATHS {
        let sc = start(&app.url, &format!("{keys}\nbody_idle_timeout = \"1s\""));
        let mut c = Conn::connect(&sc.public).await;
        c.get("/stall", &[]).await;
        let head = c.head(WAIT).await;
        assert_eq!(head.status, 200, "{path}");
        let rest = c.until_closed(WAIT).await;
        assert_eq!(
            rest, b"0123456789",
            "{path}: the client's connection closes"
        );
        support::eventually("the stall counted", || async {
            let m = http::request(&sc.admin, "GET", "/metrics", &[], b"").await;
            counter(&m.text(), "sidecast_upstream_body_timeouts_total") == Some(1.0)
        })
        .await;
        // The access line names it.
        support::eventually("the access line", || async {
            sc.log_text().contains("BodyIdleTimeout") || sc.log_text().contains("ReadTimedout")
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_alive_body_is_not_cut() {
    // /chunks streams a chunk every so often: well within the idle timeout.
    let up = Upstream::start("app").await;
    for (path, keys) in PATHS {
        let sc = start(&up.url(), &format!("{keys}\nbody_idle_timeout = \"2s\""));
        let r = http::request(&sc.public, "GET", "/chunks?n=3&ms=300", &[], b"").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_the_same_on_both_paths() {
    let up = Upstream::start("app").await;
    let mut seen = Vec::new();
    for (_, keys) in PATHS {
        let sc = start(&up.url(), keys);
        let r = http::request(
            &sc.public,
            "GET",
            "/fwd",
            &[
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Real-IP", "6.6.6.6"),
                ("Connection", "x-hop"),
                ("X-Hop", "1"),
                ("X-Case-Kept", "v"),
            ],
            b"",
        )
        .await;
        let echo = r.json();
        let get = |n: &str| echoed_header(&echo, n).join("|");
        seen.push((
            get("x-forwarded-for"),
            get("x-forwarded-proto"),
            get("x-forwarded-host"),
            get("x-real-ip"),
            get("x-hop"),
            get("x-case-kept"),
        ));
    }
    assert_eq!(seen[0], seen[1]);
    // Loopback is a trusted proxy by default: the chain is extended, and
    // what the client named in Connection is gone.
    let want = (
        "6.6.6.6, 127.0.0.1".to_owned(),
        "http".to_owned(),
        "localhost".to_owned(),
        "6.6.6.6".to_owned(),
        String::new(),
        "v".to_owned(),
    );
    assert_eq!(seen[0], want);
}
