//! GRIP with a real GRIP library as the app: tests/it/apps/grip_app.py,
//! written on `gripcontrol`, holds streams and responses with the headers
//! the library builds, publishes through the library's own `GripPubControl`
//! to sidecast's `POST /publish/`, and checks `Grip-Sig` with the library's
//! `validate_sig`. The same app behind Pushpin gives the client the same
//! bytes as behind sidecast for the same publishes.
//!
//! A stream hold is in place once sidecast counts it in
//! `sidecast_streams_open{route="grip"}`: the tests publish after that, so
//! no item can race the subscription. A response hold shows nothing to the
//! client until it is answered, so its tests publish again (a bounded
//! number of times) until the answer comes: an answered hold takes no more
//! items, and every publish carries the same answer.
use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::conn::{Conn, Head, Reply};
use support::delivery::publish_with;
use support::grip::{enc, GripApp, Pushpin, SIG_KEY};
use support::http::{self, Response};
use support::scrape::metric_becomes;
use support::sse::Sse;
use support::{Opts, Sidecast, WAIT};

/// The publish token: sidecast requires it, and the app's publisher sends
/// it as its bearer token (the library's `key` without an issuer).
const PUB_TOKEN: &str = "grip-publish-token";
const GRIP_STREAMS: &str = "sidecast_streams_open{route=\"grip\"}";
/// The keep-alive the stream tests ask for: `ka\n` written as a C string
/// (a header value cannot hold the newline itself), every second.
const KEEP_ALIVE: &str = "keepalive=ka%5Cn&ka_format=cstring&ka_timeout=1";

/// sidecast in front of `app` with GRIP on, `Grip-Sig` signed with
/// [`SIG_KEY`] and the publish token required, `f` changing the options
/// first; the app's publisher pointed at its publish listener.
async fn sidecast_for(app: &GripApp, f: impl FnOnce(&mut Opts)) -> Sidecast {
    let mut opts = Opts::new(&app.url());
    opts.upstream_extra = "grip = true\ngrip_sig_key_env = \"SIDECAST_GRIP_KEY\"\n".into();
    opts.env.push(("SIDECAST_GRIP_KEY".into(), SIG_KEY.into()));
    opts.require_publish_token(PUB_TOKEN);
    f(&mut opts);
    let sc = Sidecast::start(&opts);
    app.control(&sc.publish_url(), Some(PUB_TOKEN)).await;
    sc
}

/// The app, and sidecast in front of it ([`sidecast_for`]); `None` when
/// the suite's Python is missing and skipping is allowed.
async fn start(f: impl FnOnce(&mut Opts)) -> Option<(GripApp, Sidecast)> {
    let app = GripApp::start()?;
    let sc = sidecast_for(&app, f).await;
    Some((app, sc))
}

/// Waits until sidecast holds `n` GRIP streams.
async fn holds(sc: &Sidecast, n: f64) {
    metric_becomes(&sc.admin, GRIP_STREAMS, n).await;
}

/// `POST /publish/` on sidecast's publish listener with the token.
async fn grip_publish(sc: &Sidecast, body: &serde_json::Value) -> Response {
    let auth = format!("Bearer {PUB_TOKEN}");
    publish_with(
        sc,
        "POST",
        "/publish/",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// The ids of a `202` answer to a publish.
fn ids(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids: {}", r.text()))
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect()
}

/// A held stream read on a raw connection, chunk by chunk as it arrives.
struct Held {
    conn: Conn,
    head: Head,
}

impl Held {
    async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Held {
        let mut conn = Conn::connect(addr).await;
        conn.get(path, headers).await;
        let head = Box::pin(conn.head(WAIT)).await;
        Held { conn, head }
    }

    /// The next chunk; `None` for the terminating one. (Boxed: a read
    /// holds a 64 KiB buffer, and a test that awaits many of them inline
    /// would carry each in its own future, past a test thread's stack.)
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        Box::pin(self.conn.chunk(WAIT)).await
    }

    /// The next chunk as text; the stream must not end here.
    async fn text(&mut self) -> String {
        let c = self.chunk().await.expect("a chunk, not the end");
        String::from_utf8(c).expect("UTF-8 chunk")
    }

    /// Reads up to the chunk `item`; how many keep-alive chunks (`ka`)
    /// came first (nothing else may).
    async fn until(&mut self, item: &str, ka: &str) -> usize {
        let mut kas = 0;
        loop {
            let c = self.text().await;
            if c == item {
                return kas;
            }
            assert_eq!(c, ka, "a keep-alive or {item:?}");
            kas += 1;
        }
    }

    /// Every chunk up to the terminating one.
    async fn rest(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await {
            out.push(c);
            assert!(out.len() < 1000, "a stream that does not end");
        }
        out
    }
}

/// Opens a stream hold at `path`; its head and initial content checked.
async fn stream(sc: &Sidecast, path: &str) -> Held {
    let mut s = Held::open(&sc.public, path, &[]).await;
    assert_stream_head(&s.head);
    assert_eq!(s.text().await, "initial\n", "the initial content");
    s
}

/// What a held stream's head must be: the app's status and headers, none
/// of its `Grip-*` ones, chunked.
fn assert_stream_head(h: &Head) {
    assert_eq!(h.line, "HTTP/1.1 200 OK", "{}", h.raw);
    assert_eq!(h.header("transfer-encoding"), Some("chunked"), "{}", h.raw);
    assert_eq!(h.header("content-length"), None, "{}", h.raw);
    assert_eq!(h.header("content-type"), Some("text/plain"), "{}", h.raw);
    assert_eq!(h.header("x-app"), Some("grip"), "{}", h.raw);
    assert_no_grip_headers(h);
}

fn assert_no_grip_headers(h: &Head) {
    let grip: Vec<&(String, String)> = h
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("grip-"))
        .collect();
    assert!(
        grip.is_empty(),
        "Grip-* headers reached the client: {grip:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_hold_gets_the_initial_content_then_each_item_in_order() {
    let Some((app, sc)) = start(|_| {}).await else {
        return;
    };
    let mut news = stream(&sc, "/stream?channel=news").await;
    // Two channels in one Grip-Channel, as the library writes them.
    let mut both = stream(&sc, "/stream?channel=news,alerts").await;
    holds(&sc, 2.0).await;

    let items: Vec<String> = (0..5).map(|i| format!("item {i}\n")).collect();
    for item in &items {
        app.publish("news", item).await;
    }
    app.publish("alerts", "alert\n").await;
    app.publish("elsewhere", "not for these streams\n").await;
    app.publish("news", "é ✓ data: {\"x\": 1}\n\n").await;
    for item in &items {
        assert_eq!(news.text().await, *item);
        assert_eq!(both.text().await, *item);
    }
    assert_eq!(both.text().await, "alert\n");
    assert_eq!(news.text().await, "é ✓ data: {\"x\": 1}\n\n");
    assert_eq!(both.text().await, "é ✓ data: {\"x\": 1}\n\n");

    // `close` ends the streams after the items before it.
    app.publish("alerts", "last\n").await;
    app.publish_close("alerts").await;
    assert_eq!(both.text().await, "last\n");
    assert_eq!(both.chunk().await, None);
    app.publish_close("news").await;
    assert_eq!(news.chunk().await, None);
    holds(&sc, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_arrive_on_schedule() {
    let Some((app, sc)) = start(|_| {}).await else {
        return;
    };

    // idle (the default mode): after each second with nothing written.
    let asked = Instant::now();
    let mut idle = stream(&sc, &format!("/stream?channel=quiet&{KEEP_ALIVE}")).await;
    for _ in 0..3 {
        assert_eq!(idle.text().await, "ka\n");
    }
    // The app answered after the request was sent, and the third
    // keep-alive is three idle seconds after that (a lower bound only: a
    // loaded machine makes it later, never sooner).
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "three keep-alives in {took:?}"
    );
    holds(&sc, 1.0).await;
    app.publish("quiet", "news\n").await;
    idle.until("news\n", "ka\n").await;
    assert_eq!(idle.text().await, "ka\n");

    // interval, base64: every second even while items keep coming (one
    // every 250 ms, a pace, not a wait for anything).
    let path = format!(
        "/stream?channel=busy&keepalive={}&ka_format=base64&ka_timeout=1&ka_mode=interval",
        enc("OnBpbmcK")
    );
    let mut busy = stream(&sc, &path).await;
    holds(&sc, 2.0).await;
    let mut pings = 0;
    for i in 0..40 {
        if pings >= 2 {
            break;
        }
        let item = format!("tick {i}\n");
        app.publish("busy", &item).await;
        pings += busy.until(&item, ":ping\n").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        pings >= 2,
        "interval keep-alives while items flowed: {pings}"
    );
}

/// Sends `GET path` on `conn` in a task of its own, and has the app publish
/// `query` + `body` every 200 ms (at most 50 times) until the response
/// arrives: the hold may not be in place when the first publish lands.
async fn publish_until_answered(
    app: &GripApp,
    mut conn: Conn,
    path: &str,
    query: &str,
    body: &str,
) -> (Reply, Conn) {
    conn.get(path, &[]).await;
    let task = tokio::spawn(async move {
        let r = conn.response("GET", Duration::from_secs(30)).await;
        (r, conn)
    });
    for _ in 0..50 {
        if task.is_finished() {
            break;
        }
        app.publish_query(query, body).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.await.expect("the held request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_hold_answers_with_a_published_response_and_the_connection_goes_on() {
    let Some((app, sc)) = start(|_| {}).await else {
        return;
    };
    let conn = Conn::connect(&sc.public).await;
    let (r, mut conn) = publish_until_answered(
        &app,
        conn,
        "/poll?channel=answer&timeout=30",
        "channel=answer&kind=response&code=201&reason=Made&header=X-Pub:yes",
        "answered\n",
    )
    .await;
    assert_eq!(r.head.line, "HTTP/1.1 201 Made", "{}", r.head.raw);
    assert_eq!(r.head.header("x-pub"), Some("yes"), "{}", r.head.raw);
    assert_eq!(r.head.header("content-length"), Some("9"), "{}", r.head.raw);
    assert_no_grip_headers(&r.head);
    assert_eq!(r.text(), "answered\n");

    // The same connection serves the next request.
    conn.get("/after", &[]).await;
    let next = conn.response("GET", WAIT).await;
    assert_eq!(next.head.status, 200, "{}", next.head.raw);
    assert_eq!(next.json()["path"], "/after");

    // With no code or reason: 200 OK.
    let (r, _) = publish_until_answered(
        &app,
        conn,
        "/poll?channel=plain&timeout=30",
        "channel=plain&kind=response",
        "plain answer\n",
    )
    .await;
    assert_eq!(r.head.line, "HTTP/1.1 200 OK", "{}", r.head.raw);
    assert_eq!(r.text(), "plain answer\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_hold_times_out_with_the_original_response() {
    let Some((app, sc)) = start(|_| {}).await else {
        return;
    };
    let asked = Instant::now();
    let r = http::request(&sc.public, "GET", "/poll?channel=idle&timeout=1", &[], b"").await;
    let took = asked.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "original\n");
    assert_eq!(r.header("x-app"), Some("grip"));
    assert_eq!(r.header("content-length"), Some("9"));
    assert!(
        !r.headers
            .iter()
            .any(|(n, _)| n.to_ascii_lowercase().starts_with("grip-")),
        "{:?}",
        r.headers
    );
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );

    // Items without an http-response format do not answer it: stream
    // items published all through a 2-second hold leave the original.
    let mut conn = Conn::connect(&sc.public).await;
    conn.get("/poll?channel=streamy&timeout=2", &[]).await;
    let task = tokio::spawn(async move { conn.response("GET", WAIT).await });
    for i in 0..50 {
        if task.is_finished() {
            break;
        }
        app.publish("streamy", &format!("stream item {i}\n")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = task.await.expect("the held request");
    assert_eq!(r.head.status, 200, "{}", r.head.raw);
    assert_eq!(r.text(), "original\n");
}

/// `GET /sig` on the app: (whether the Grip-Sig it saw validated with the
/// library, the value it saw).
async fn sig(addr: &str, path: &str, client_sig: Option<&str>) -> (bool, Option<String>) {
    let mut h = Vec::new();
    if let Some(s) = client_sig {
        h.push(("Grip-Sig", s));
    }
    let r = http::request(addr, "GET", path, &h, b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (
        v["valid"].as_bool().expect("valid"),
        v["grip_sig"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_validates_sidecasts_grip_sig_and_never_sees_the_clients() {
    let Some(app) = GripApp::start() else { return };
    let sc = sidecast_for(&app, |o| {
        o.extra.push_str(&format!(
            "[[routes]]\nprefix = \"/plain\"\nupstream = \"{}\"\nstrip_prefix = true\ngrip = false\n",
            app.url()
        ));
    })
    .await;
    // A client's own Grip-Sig, even one signed with the right key.
    let forged = support::jwt::hs256(
        SIG_KEY.as_bytes(),
        &json!({"iss": "sidecast", "exp": support::jwt::now() + 3600}),
    );
    for path in ["/sig?iss=sidecast&show=1", "/plain/sig?iss=sidecast&show=1"] {
        for client in [None, Some(forged.as_str()), Some("not-a-jwt")] {
            let (valid, seen) = sig(&sc.public, path, client).await;
            let seen = seen.unwrap_or_else(|| panic!("{path}: no Grip-Sig reached the app"));
            assert!(
                valid,
                "{path}: the library rejects sidecast's Grip-Sig {seen}"
            );
            assert_ne!(Some(seen.as_str()), client, "{path}: the client's Grip-Sig");
        }
    }
    // The validator is a real check: another issuer fails it.
    let (valid, _) = sig(&sc.public, "/sig?iss=pushpin", None).await;
    assert!(!valid);

    // Without a key, a client's Grip-Sig is still removed on a grip route.
    let Some(app2) = GripApp::start() else { return };
    let mut opts = Opts::new(&app2.url());
    opts.upstream_extra = "grip = true\n".into();
    let sc2 = Sidecast::start(&opts);
    let (valid, seen) = sig(&sc2.public, "/sig?show=1", Some(&forged)).await;
    assert_eq!((valid, seen), (false, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grip_request_headers_from_a_client_pass_through_as_ordinary_ones() {
    let Some((_app, sc)) = start(|_| {}).await else {
        return;
    };
    let asked = Instant::now();
    let r = http::request(
        &sc.public,
        "GET",
        "/echo",
        &[("Grip-Hold", "stream"), ("Grip-Channel", "news")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-length").is_some(), "{:?}", r.headers);
    assert!(asked.elapsed() < WAIT, "not held");
    let echo = r.json();
    let seen = |name: &str| -> Vec<String> {
        echo["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|h| h[1].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(seen("grip-hold"), ["stream"], "{echo}");
    assert_eq!(seen("grip-channel"), ["news"], "{echo}");
    assert_eq!(
        support::delivery::metric(&sc, GRIP_STREAMS).await,
        0.0,
        "nothing is held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_grip_off_the_apps_grip_headers_pass_through_untouched() {
    let Some(app) = GripApp::start() else { return };
    let mut opts = Opts::new(&app.url());
    opts.upstream_extra = "grip = false\n".into();
    opts.require_publish_token(PUB_TOKEN);
    // One route with GRIP on under an upstream with it off.
    opts.extra.push_str(&format!(
        "[[routes]]\nprefix = \"/g\"\nupstream = \"{}\"\nstrip_prefix = true\ngrip = true\n",
        app.url()
    ));
    let sc = Sidecast::start(&opts);
    app.control(&sc.publish_url(), Some(PUB_TOKEN)).await;

    let path = format!("/stream?channel=news%2Calerts&prev=abc&{KEEP_ALIVE}");
    let r = http::request(&sc.public, "GET", &path, &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("grip-hold"), Some("stream"), "{:?}", r.headers);
    assert_eq!(
        r.header("grip-channel"),
        Some("news; prev-id=abc, alerts"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.header("grip-keep-alive"),
        Some("ka\\n; format=cstring; timeout=1"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("content-length"), Some("8"));
    assert_eq!(r.text(), "initial\n");
    let r = http::request(&sc.public, "GET", "/poll?channel=p&timeout=5", &[], b"").await;
    assert_eq!(r.header("grip-hold"), Some("response"), "{:?}", r.headers);
    assert_eq!(r.header("grip-timeout"), Some("5"), "{:?}", r.headers);
    assert_eq!(r.text(), "original\n");

    let mut held = stream(&sc, "/g/stream?channel=news").await;
    holds(&sc, 1.0).await;
    app.publish("news", "routed\n").await;
    assert_eq!(held.text().await, "routed\n");
}

/// Counts the log lines that name `what` (in any case).
fn lines_naming(sc: &Sidecast, what: &str) -> usize {
    let what = what.to_ascii_lowercase();
    sc.log_text()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains(&what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_hold_instructions_from_the_app_give_502_and_a_log_line_naming_the_header() {
    let Some((_app, sc)) = start(|_| {}).await else {
        return;
    };
    let cases: [(&[&str], &str); 7] = [
        (&["Grip-Hold:bogus", "Grip-Channel:news"], "Grip-Hold"),
        (&["Grip-Hold:stream"], "Grip-Channel"),
        (
            &["Grip-Hold:stream", "Grip-Channel:bad name"],
            "Grip-Channel",
        ),
        (
            &["Grip-Hold:response", "Grip-Channel:ok, bad name"],
            "Grip-Channel",
        ),
        (
            &[
                "Grip-Hold:stream",
                "Grip-Channel:news",
                "Grip-Keep-Alive:x; format=rot13",
            ],
            "Grip-Keep-Alive",
        ),
        (
            &[
                "Grip-Hold:stream",
                "Grip-Channel:news",
                "Grip-Keep-Alive:x; timeout=soon",
            ],
            "Grip-Keep-Alive",
        ),
        (
            &[
                "Grip-Hold:response",
                "Grip-Channel:news",
                "Grip-Timeout:soon",
            ],
            "Grip-Timeout",
        ),
    ];
    for (headers, named) in cases {
        let before = lines_naming(&sc, named);
        let q: Vec<String> = headers.iter().map(|h| format!("h={}", enc(h))).collect();
        let r = http::request(
            &sc.public,
            "GET",
            &format!("/raw?{}", q.join("&")),
            &[],
            b"",
        )
        .await;
        // sidecast's own 502, as for the app's other failures.
        assert_eq!(r.status, 502, "{headers:?}: {}", r.text());
        assert_eq!(
            r.header("sidecast-error"),
            Some("grip-error"),
            "{headers:?}"
        );
        assert_eq!(r.text(), "502 Bad Gateway\n", "{headers:?}");
        let what = format!("a log line naming {named} for {headers:?}");
        sc.eventually(&what, || async { lines_naming(&sc, named) > before })
            .await;
    }
    assert_eq!(
        support::delivery::metric(&sc, GRIP_STREAMS).await,
        0.0,
        "nothing is held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grip_publish_refuses_bad_bodies_naming_the_field_and_needs_the_token() {
    let Some((_app, sc)) = start(|_| {}).await else {
        return;
    };
    let mut s = stream(&sc, "/stream?channel=c").await;
    holds(&sc, 1.0).await;

    let ok = json!({"channel": "c", "formats": {"http-stream": {"content": "never\n"}}});
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({}), "items"),
        (json!({"items": "c"}), "items"),
        (
            json!({"items": [{"formats": {"http-stream": {"content": "x"}}}]}),
            "items[0].channel",
        ),
        (
            json!({"items": [{"channel": "bad name", "formats": {"http-stream": {"content": "x"}}}]}),
            "items[0].channel",
        ),
        (
            json!({"items": [ok, {"channel": "c", "formats": {"http-stream": {"content-bin": "*not base64*"}}}]}),
            "items[1].formats.http-stream.content-bin",
        ),
        (
            json!({"items": [ok, {"channel": "c", "formats": {"http-stream": {"content": 7}}}]}),
            "items[1].formats.http-stream.content",
        ),
    ];
    // Every case is tried; the failure lists each one that went wrong.
    let mut wrong = Vec::new();
    for (body, field) in &cases {
        let r = grip_publish(&sc, body).await;
        let v = r.json();
        let ok = r.status == 400
            && r.header("content-type") == Some("application/json")
            && v["field"] == *field
            && v["message"].is_string();
        if !ok {
            wrong.push(format!(
                "{body}: wanted 400 naming {field}, got {} {}",
                r.status,
                r.text()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // An item with neither http-stream nor http-response.
    let r = grip_publish(
        &sc,
        &json!({"items": [{"channel": "c", "formats": {"ws-message": {"content": "x"}}}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let field = r.json()["field"].as_str().unwrap_or_default().to_owned();
    assert!(field.starts_with("items[0]"), "{}", r.text());

    // Without the token, or with another: 401.
    let body = json!({"items": [ok]}).to_string();
    for auth in [None, Some("Bearer not-the-token")] {
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        let r = publish_with(&sc, "POST", "/publish/", &h, body.as_bytes()).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
    }

    // None of that published anything: the next item is the stream's next
    // chunk. Binary content, and a ws-message beside http-stream ignored.
    let r = grip_publish(
        &sc,
        &json!({"items": [{"channel": "c", "formats": {
            "http-stream": {"content-bin": "AAEC/w=="},
            "ws-message": {"content": "ignored"}}}]}),
    )
    .await;
    assert_eq!(ids(&r).len(), 1);
    assert_eq!(s.chunk().await.expect("the binary item"), [0u8, 1, 2, 255]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_stream_is_counted_and_ended_by_a_drain_with_a_terminating_chunk() {
    let Some((_app, mut sc)) = start(|_| {}).await else {
        return;
    };
    let mut s = stream(&sc, &format!("/stream?channel=d&{KEEP_ALIVE}")).await;
    holds(&sc, 1.0).await;
    sc.signal("TERM");
    // Keep-alives may still come until the drain reaches the stream; then
    // the terminating chunk and nothing else.
    while let Some(c) = s.chunk().await {
        assert_eq!(c, b"ka\n", "only keep-alives before the end");
    }
    assert!(s.conn.pending().is_empty(), "{:?}", s.conn.pending());
    let code = tokio::task::block_in_place(|| sc.wait_exit(WAIT));
    assert_eq!(code, Some(0), "{}", sc.log_text());
    assert!(s.conn.closes_within(WAIT).await, "the connection closes");
    assert!(s.conn.pending().is_empty(), "{:?}", s.conn.pending());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_hold_over_max_streams_gets_503() {
    let Some((app, sc)) = start(|o| o.events = "max_streams = 1".into()).await else {
        return;
    };
    let mut first = stream(&sc, "/stream?channel=m").await;
    holds(&sc, 1.0).await;
    let r = http::request(&sc.public, "GET", "/stream?channel=m", &[], b"").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert!(r.json()["message"].is_string(), "{}", r.text());
    // The held one goes on.
    app.publish("m", "still here\n").await;
    assert_eq!(first.text().await, "still here\n");
    holds(&sc, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecast_event_reaches_a_held_stream_framed_as_sse() {
    let Some((app, sc)) = start(|_| {}).await else {
        return;
    };
    let mut s = stream(&sc, "/stream?channel=news").await;
    holds(&sc, 1.0).await;
    // sidecast's own events stream on the same topic.
    let token = sc.token("alice", &["news"]);
    let mut events = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    support::delivery::opening(&mut events).await;

    let auth = format!("Bearer {PUB_TOKEN}");
    let publish = |body: serde_json::Value| {
        let auth = auth.clone();
        let sc = &sc;
        async move {
            let r = publish_with(
                sc,
                "POST",
                "/publish",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.to_string().as_bytes(),
            )
            .await;
            ids(&r).remove(0)
        }
    };
    // A GRIP item first: it reaches the held stream, not /events.
    app.publish("news", "grip item\n").await;
    assert_eq!(s.text().await, "grip item\n");
    // An event for one user does not reach a held stream (it has none).
    publish(json!({"topic": "news", "data": "for alice", "user": "alice"})).await;
    let id = publish(json!({"topic": "news", "event": "update", "data": "hello"})).await;
    assert_eq!(
        s.text().await,
        format!("id: {id}\nevent: update\ndata: hello\n\n")
    );

    let seen = events.next_event().await.expect("an event");
    assert_eq!(seen.data.as_deref(), Some("for alice"), "{seen:?}");
    let seen = events.next_event().await.expect("an event");
    assert_eq!(
        (seen.id.as_deref(), seen.data.as_deref()),
        (Some(id.as_str()), Some("hello")),
        "GRIP items stay off /events: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prev_id_first_replays_the_items_published_after_it() {
    let Some((app, sc)) = start(|_| {}).await else {
        return;
    };
    let r = grip_publish(
        &sc,
        &json!({"items": [{"channel": "ch", "formats": {"http-stream": {"content": "one\n"}}}]}),
    )
    .await;
    let first = ids(&r).remove(0);
    app.publish("ch", "two\n").await;
    app.publish("ch", "three\n").await;

    // The library writes `ch; prev-id=<id>`.
    let mut s = stream(&sc, &format!("/stream?channel=ch&prev={}", enc(&first))).await;
    assert_eq!(s.text().await, "two\n");
    assert_eq!(s.text().await, "three\n");
    holds(&sc, 1.0).await;
    app.publish("ch", "four\n").await;
    assert_eq!(s.text().await, "four\n");

    // An id sidecast never gave: live items only.
    let mut live = stream(&sc, "/stream?channel=ch&prev=no-such-id").await;
    holds(&sc, 2.0).await;
    app.publish("ch", "five\n").await;
    assert_eq!(live.text().await, "five\n");
    assert_eq!(s.text().await, "five\n");

    // A close published after the prev-id ends the stream that resumes
    // there, after the items before it: it was published for that client.
    let r = grip_publish(
        &sc,
        &json!({"items": [{"channel": "cl", "formats": {"http-stream": {"content": "seen\n"}}}]}),
    )
    .await;
    let seen = ids(&r).remove(0);
    app.publish("cl", "missed\n").await;
    app.publish_close("cl").await;
    let mut resumed = stream(&sc, &format!("/stream?channel=cl&prev={}", enc(&seen))).await;
    assert_eq!(resumed.text().await, "missed\n");
    assert_eq!(resumed.chunk().await, None, "the last chunk, at once");
}

/// One of the two GRIP proxies in front of its own copy of the app.
struct Side {
    name: &'static str,
    app: GripApp,
    public: String,
    /// The issuer its Grip-Sig carries.
    iss: &'static str,
    sc: Option<Sidecast>,
}

impl Side {
    /// Waits until the proxy holds `n` streams: sidecast says so in its
    /// metrics; Pushpin's handler subscribes before it answers, so the
    /// client's initial content is the sign there.
    async fn holds(&self, n: f64) {
        if let Some(sc) = &self.sc {
            holds(sc, n).await;
        }
    }
}

/// The same scenario on both sides; what the client got on each.
async fn on_both<T: std::fmt::Debug + PartialEq>(
    sides: &[Side; 2],
    what: &str,
    mut f: impl FnMut(&Side) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + '_>>,
) {
    let a = f(&sides[0]).await;
    let b = f(&sides[1]).await;
    assert_eq!(
        a, b,
        "{what}: {} and {} gave the client different bytes",
        sides[0].name, sides[1].name
    );
}

/// A stream: initial content, items, the close; every chunk.
async fn stream_scenario(side: &Side) -> Vec<Vec<u8>> {
    let mut s = Held::open(&side.public, "/stream?channel=cmp", &[]).await;
    assert_eq!(s.head.status, 200, "{}: {}", side.name, s.head.raw);
    let mut got = vec![s.chunk().await.expect("initial content")];
    side.holds(1.0).await;
    let big = "0123456789abcdef".repeat(256) + "\n";
    for item in [
        "one\n",
        "two words\n",
        "data: {\"x\": [1, 2]}\n\n",
        "é ✓ ☃\n",
        &big,
    ] {
        side.app.publish("cmp", item).await;
    }
    side.app.publish("elsewhere", "not for this stream\n").await;
    side.app.publish("cmp", "last\n").await;
    side.app.publish_close("cmp").await;
    got.extend(s.rest().await);
    side.holds(0.0).await;
    // The body de-chunked, in lines: a difference shows where it is.
    got.concat()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A stream with keep-alives: initial, a keep-alive, an item, a
/// keep-alive, the close; every chunk, a run of keep-alives as one (how
/// many come in a run is a matter of time).
async fn keep_alive_scenario(side: &Side) -> Vec<Vec<u8>> {
    let mut s = Held::open(
        &side.public,
        &format!("/stream?channel=cmpka&{KEEP_ALIVE}"),
        &[],
    )
    .await;
    assert_eq!(s.head.status, 200, "{}: {}", side.name, s.head.raw);
    let mut got = vec![s.chunk().await.expect("initial content")];
    side.holds(1.0).await;
    got.push(s.chunk().await.expect("a keep-alive"));
    side.app.publish("cmpka", "between\n").await;
    loop {
        let c = s.chunk().await.expect("the item");
        let item = c == b"between\n";
        got.push(c);
        if item {
            break;
        }
    }
    got.push(s.chunk().await.expect("a keep-alive"));
    side.app.publish_close("cmpka").await;
    got.extend(s.rest().await);
    side.holds(0.0).await;
    got.dedup_by(|a, b| a == b && a.as_slice() == b"ka\n");
    got
}

/// A response hold answered by a publish, and one that times out: status
/// and body of each.
async fn response_scenario(side: &Side) -> Vec<(u16, String)> {
    let conn = Conn::connect(&side.public).await;
    let (answered, _) = publish_until_answered(
        &side.app,
        conn,
        "/poll?channel=cmpr&timeout=30",
        "channel=cmpr&kind=response&code=201&header=X-Pub:yes",
        "answered\n",
    )
    .await;
    // Pushpin rounds a hold's timeout up to its own timer's tick (seconds
    // more): a wait of its own.
    let mut conn = Conn::connect(&side.public).await;
    conn.get("/poll?channel=cmpt&timeout=1", &[]).await;
    let timed_out = conn.response("GET", Duration::from_secs(30)).await;
    // The answer keeps the app's own headers beside the published ones.
    let headers = |r: &support::conn::Reply| {
        format!(
            "X-App: {:?}, X-Pub: {:?}",
            r.head.header("x-app"),
            r.head.header("x-pub")
        )
    };
    vec![
        (answered.head.status, answered.text()),
        (answered.head.status, headers(&answered)),
        (timed_out.head.status, timed_out.text()),
        (timed_out.head.status, headers(&timed_out)),
    ]
}

/// What the app's validator says of each proxy's Grip-Sig.
async fn sig_scenario(side: &Side) -> String {
    let r = http::request(
        &side.public,
        "GET",
        &format!("/sig?iss={}", side.iss),
        &[],
        b"",
    )
    .await;
    format!("{} {}", r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_app_gives_the_client_the_same_bytes_behind_pushpin_and_sidecast() {
    let Some(pp_app) = GripApp::start() else {
        return;
    };
    let Some(mut pushpin) = Pushpin::start(&pp_app.addr).await else {
        return;
    };
    pp_app.control(&pushpin.publish, None).await;
    let Some(sc_app) = GripApp::start() else {
        return;
    };
    let sc = sidecast_for(&sc_app, |_| {}).await;
    let pp_public = pushpin.public.clone();
    let sides = [
        Side {
            name: "Pushpin",
            app: pp_app,
            public: pp_public,
            iss: "pushpin",
            sc: None,
        },
        Side {
            name: "sidecast",
            public: sc.public.clone(),
            app: sc_app,
            iss: "sidecast",
            sc: Some(sc),
        },
    ];
    on_both(&sides, "a stream", |s| Box::pin(stream_scenario(s))).await;
    on_both(&sides, "a stream with keep-alives", |s| {
        Box::pin(keep_alive_scenario(s))
    })
    .await;
    on_both(&sides, "response holds", |s| Box::pin(response_scenario(s))).await;
    on_both(&sides, "Grip-Sig", |s| Box::pin(sig_scenario(s))).await;

    // Every process of Pushpin's is gone at the end.
    let left = pushpin.stop();
    assert!(left.is_empty(), "Pushpin left running: {left:?}");
}
