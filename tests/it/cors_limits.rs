//! CORS on events paths (exact origins, credentials, `Vary`, preflight) and
//! the limits: `max_streams` (a refusal that passes for an EventSource, a
//! `503` for others), `max_streams = "auto"`, `max_topics`.
use crate::support;
use crate::support::ops;

use ops::RawStream;
use support::http::request;
use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast};

const ORIGIN: &str = "https://app.example.com";

fn cors_headers(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-"))
        .map(|(n, v)| format!("{n}: {v}"))
        .collect()
}

fn varies_on_origin(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("vary")
            && v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("origin"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_origin_is_echoed_with_credentials_and_vary() {
    let (up, sc) = support::start_with(|o| {
        o.events = format!("cors_origins = [\"{ORIGIN}\", \"http://localhost:5173\"]")
    })
    .await;
    let token = sc.token("alice", &["news"]);
    let auth = format!("Bearer {token}");

    // The stream itself.
    let s = Sse::open(
        &sc.public,
        "/events?topic=news",
        &[("Authorization", &auth), ("Origin", ORIGIN)],
    )
    .await;
    assert_eq!(s.status(), 200);
    assert_eq!(s.head.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(
        s.head.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(varies_on_origin(&s.head.headers), "{:?}", s.head.headers);

    // A refusal carries them too, so that the page can read it.
    let r = request(
        &sc.public,
        "GET",
        "/events?topic=news",
        &[("Origin", ORIGIN)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    assert!(varies_on_origin(&r.headers));

    // The preflight.
    let r = request(
        &sc.public,
        "OPTIONS",
        "/events?topic=news",
        &[
            ("Origin", ORIGIN),
            ("Access-Control-Request-Method", "GET"),
            (
                "Access-Control-Request-Headers",
                "authorization, last-event-id",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(varies_on_origin(&r.headers), "{:?}", r.headers);
    let methods = r.header("access-control-allow-methods").unwrap_or("");
    assert!(methods.split(',').any(|m| m.trim() == "GET"), "{methods}");
    let allowed: Vec<String> = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in ["authorization", "last-event-id"] {
        assert!(allowed.contains(&h.to_owned()), "{allowed:?}");
    }
    assert_eq!(up.hits("/events"), 0, "events paths never reach the app");
}

/// `cors_origins` defaults to `[]`: with nothing configured, no origin at
/// all gets CORS headers on a stream or a preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_origin_gets_cors_headers() {
    let (_up, sc) = support::start().await;
    let token = sc.token("alice", &["news"]);
    let auth = format!("Bearer {token}");
    for origin in [ORIGIN, "http://localhost:3000", "null"] {
        let s = Sse::open(
            &sc.public,
            "/events?topic=news",
            &[("Authorization", &auth), ("Origin", origin)],
        )
        .await;
        assert_eq!(s.status(), 200);
        assert!(
            cors_headers(&s.head.headers).is_empty(),
            "{origin}: {:?}",
            s.head.headers
        );
        let r = request(
            &sc.public,
            "OPTIONS",
            "/events?topic=news",
            &[("Origin", origin), ("Access-Control-Request-Method", "GET")],
            b"",
        )
        .await;
        assert!(
            cors_headers(&r.headers).is_empty(),
            "{origin}: {} {:?}",
            r.status,
            r.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_origin_gets_no_cors_headers() {
    let (_up, sc) =
        support::start_with(|o| o.events = format!("cors_origins = [\"{ORIGIN}\"]")).await;
    let token = sc.token("alice", &["news"]);
    let auth = format!("Bearer {token}");
    for other in [
        "https://APP.example.com",
        "https://app.example.com/",
        "https://app.example.com:443",
        "http://app.example.com",
        "https://evil.example",
        "null",
    ] {
        let s = Sse::open(
            &sc.public,
            "/events?topic=news",
            &[("Authorization", &auth), ("Origin", other)],
        )
        .await;
        assert_eq!(s.status(), 200);
        assert!(
            cors_headers(&s.head.headers).is_empty(),
            "{other}: {:?}",
            s.head.headers
        );
        let r = request(
            &sc.public,
            "OPTIONS",
            "/events?topic=news",
            &[("Origin", other), ("Access-Control-Request-Method", "GET")],
            b"",
        )
        .await;
        assert_eq!(r.status, 204, "{other}");
        assert!(
            cors_headers(&r.headers).is_empty(),
            "{other}: {:?}",
            r.headers
        );
    }
    // Off events paths sidecast adds nothing: the app answers for itself.
    let r = request(&sc.public, "GET", "/api/x", &[("Origin", ORIGIN)], b"").await;
    assert_eq!(r.status, 200);
    assert!(cors_headers(&r.headers).is_empty(), "{:?}", r.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_streams_an_event_source_is_told_to_come_back_and_others_get_503() {
    let (_up, sc) =
        support::start_with(|o| o.events = "max_streams = 2\nretry = \"2s\"".into()).await;
    let token = sc.token("alice", &["news"]);
    let auth = format!("Bearer {token}");
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
        assert_eq!(s.status(), 200);
        s.next_block(support::WAIT).await.expect("retry block");
        open.push(s);
    }

    // An EventSource-like request: 200, a jittered retry, one
    // sidecast.unavailable event, then the end of the chunked body.
    let mut third = RawStream::open(
        &sc.public,
        "/events?topic=news",
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
    )
    .await;
    third.read_to_end(support::WAIT).await;
    let head = support::http::parse_response(&third.bytes);
    assert_eq!(head.status, 200, "{}", third.text());
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert!(
        third.bytes.ends_with(b"\r\n0\r\n\r\n"),
        "{:?}",
        third.text()
    );
    let retries = third.retries();
    assert_eq!(retries.len(), 1, "{}", third.body());
    assert!((2000..=6000).contains(&retries[0]), "{retries:?}");
    let mut body = third.body();
    let blocks = support::sse::parse_blocks(&mut body);
    let events: Vec<_> = blocks.iter().filter(|b| b.data.is_some()).collect();
    assert_eq!(events.len(), 1, "{blocks:?}");
    assert_eq!(events[0].event.as_deref(), Some("sidecast.unavailable"));
    let data: serde_json::Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
    assert!(
        data["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{data}"
    );

    // Without text/event-stream in Accept (*/* does not count): 503.
    for accept in [None, Some("*/*")] {
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(a) = accept {
            h.push(("Accept", a));
        }
        let r = request(&sc.public, "GET", "/events?topic=news", &h, b"").await;
        assert_eq!(r.status, 503, "{accept:?}: {}", r.text());
        let after: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((2..=6).contains(&after), "{after}");
        assert!(r.json()["message"].is_string(), "{}", r.text());
    }

    // HEAD gets what its GET would get, without a body: the refusal that
    // passes for an EventSource, a 503 for others.
    let r = request(
        &sc.public,
        "HEAD",
        "/events?topic=news",
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.body.is_empty(), "{}", r.text());
    let r = request(
        &sc.public,
        "HEAD",
        "/events?topic=news",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "{}", r.text());
    assert!(r.body.is_empty(), "{}", r.text());

    // A closed stream frees its place.
    drop(open.pop());
    support::eventually("a place frees up", || async {
        let mut s = RawStream::open(
            &sc.public,
            "/events?topic=news",
            &[("Authorization", &auth), ("Accept", "text/event-stream")],
        )
        .await;
        s.read_until("the first retry", |b| b.windows(7).any(|w| w == b"retry: "))
            .await;
        !s.text().contains("sidecast.unavailable")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_auto_is_resolved_and_logged() {
    let (_up, sc) = support::start().await;
    let log = sc.log_with(&["max_streams = \"auto\" resolved"]).await;
    let line = log
        .lines()
        .find(|l| l.contains("max_streams = \"auto\" resolved"))
        .unwrap_or_else(|| panic!("not logged:\n{log}"));
    let field = |name: &str| -> u64 {
        let key = format!(" {name}=");
        let start = line
            .find(&key)
            .unwrap_or_else(|| panic!("{name} in {line}"))
            + key.len();
        line[start..].split(' ').next().unwrap().parse().unwrap()
    };
    let (n, files, memory) = (
        field("max_streams"),
        field("open_file_limit"),
        field("memory_bytes"),
    );
    // The open-file limit it saw is the one the process has (raised to the
    // hard limit), and the memory no more than the machine's.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", sc.pid())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("soft limit");
    assert_eq!(files, soft);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(memory <= total_kb * 1024);
    assert_eq!(n, (files - 256).min(memory / 10 * 7 / 16384), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_topics_than_max_topics_is_400() {
    let (_up, sc) = support::start_with(|o| o.events = "max_topics = 2".into()).await;
    let token = sc.token("alice", &["t/*"]);
    let ok = request(
        &sc.public,
        "HEAD",
        "/events?topic=t/a&topic=t/b",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200);
    let r = support::http::get(
        &sc.public,
        "/events?topic=t/a&topic=t/b&topic=t/c",
        Some(&token),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_topics", "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains('2'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_reloads() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    opts.events = "max_streams = 1".into();
    let sc = Sidecast::start(&opts);
    let token = sc.token("alice", &["news"]);
    let mut first = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    first.next_block(support::WAIT).await.unwrap();
    let r = support::http::get(&sc.public, "/events?topic=news", Some(&token)).await;
    assert_eq!(r.status, 503);

    opts.events = "max_streams = 2".into();
    std::fs::write(sc.dir.join("sidecar.toml"), opts.toml()).unwrap();
    sc.signal("HUP");
    support::eventually("the new limit", || async {
        let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
        let b = s.next_block(support::WAIT).await;
        let cursor = s.next_block(support::WAIT).await;
        s.status() == 200
            && b.is_some_and(|b| b.retry.is_some())
            && cursor.is_some_and(|c| c.id.is_some() && c.data.is_none())
            && {
                let next = tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    s.next_block(support::WAIT),
                )
                .await;
                // An open stream sends nothing more here; a refusal would end.
                next.is_err()
            }
    })
    .await;
}
