//! GRIP against a fixed raw app: the paths a library app does not take
//! (a request that cannot be held, `fast_path = false`, `POST /disconnect`
//! of a channel).
use crate::support;

use std::time::Duration;

use serde_json::json;
use support::conn::Conn;
use support::grip::publish_items;
use support::scrape::metric_becomes;
use support::upstream::RawApp;
use support::{http, Opts, Sidecast};

const STREAM: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\n\
Grip-Channel: news\r\nContent-Length: 6\r\n\r\nhello\n";
const POLL: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-App: raw\r\nGrip-Hold: response\r\n\
Grip-Channel: news\r\nGrip-Timeout: 60\r\nContent-Length: 9\r\n\r\noriginal\n";

fn grip_sidecast(app: &RawApp, upstream_extra: &str) -> Sidecast {
    let mut o = Opts::new(&app.url);
    o.upstream_extra = format!("grip = true\n{upstream_extra}");
    Sidecast::start(&o)
}

const GRIP_STREAMS: &str = "sidecast_streams_open{route=\"grip\"}";

/// Only the lean relay can hand a connection to a hold: an HTTP/1.0
/// request (pingora's path) whose answer asks for one gets a `502` that
/// says so, and the log says why; it never gets the initial content as if
/// it were the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_be_held_gets_502_and_a_log_line() {
    let app = RawApp::start(STREAM, true).await;
    let sc = grip_sidecast(&app, "");
    let mut c = Conn::connect(&sc.public).await;
    c.send(b"GET /feed HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let r = c.response("GET", support::WAIT).await;
    assert_eq!(r.head.status, 502, "{}", r.head.raw);
    assert_eq!(r.head.header("sidecast-error"), Some("grip-error"));
    assert!(!r.text().contains("hello"));
    sc.log_with(&["GRIP hold on a request that cannot be held"])
        .await;
    metric_becomes(&sc.admin, GRIP_STREAMS, 0.0).await;
}

/// A GRIP route's plain requests take the lean relay even when
/// `fast_path = false` sends the rest through pingora.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grip_route_holds_with_fast_path_off() {
    let app = RawApp::start(STREAM, true).await;
    let sc = grip_sidecast(&app, "fast_path = false\n");
    let mut c = Conn::connect(&sc.public).await;
    c.get("/feed", &[]).await;
    let head = c.head(support::WAIT).await;
    assert_eq!(
        head.header("transfer-encoding"),
        Some("chunked"),
        "{}",
        head.raw
    );
    assert_eq!(c.chunk(support::WAIT).await.unwrap(), b"hello\n");
    metric_becomes(&sc.admin, GRIP_STREAMS, 1.0).await;
}

/// `POST /disconnect` of a channel ends the streams held on it with the
/// last chunk, and answers the responses held on it with the app's
/// original response, its own headers kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_of_a_channel_ends_its_holds() {
    let streams = RawApp::start(STREAM, true).await;
    let polls = RawApp::start(POLL, true).await;
    let mut o = Opts::new(&streams.url);
    o.upstream_extra = "grip = true\n".into();
    o.extra = format!(
        "[[routes]]\nprefix = \"/poll\"\nupstream = \"{}\"\n",
        polls.url
    );
    let sc = Sidecast::start(&o);
    let mut held = Conn::connect(&sc.public).await;
    held.get("/feed", &[]).await;
    held.head(support::WAIT).await;
    assert_eq!(held.chunk(support::WAIT).await.unwrap(), b"hello\n");
    let mut poll = Conn::connect(&sc.public).await;
    poll.get("/poll", &[]).await;
    metric_becomes(&sc.admin, GRIP_STREAMS, 2.0).await;
    let r = http::request(
        sc.publish.as_deref().unwrap(),
        "POST",
        "/disconnect",
        &[("Content-Type", "application/json")],
        json!({"topic": "news"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["closed"], 2);
    assert_eq!(
        held.chunk(support::WAIT).await,
        None,
        "the last chunk, nothing else"
    );
    assert!(held.closes_within(Duration::from_secs(5)).await);
    let answer = poll.response("GET", support::WAIT).await;
    assert_eq!(answer.head.status, 200);
    assert_eq!(answer.head.header("x-app"), Some("raw"));
    assert_eq!(answer.head.header("grip-hold"), None);
    assert_eq!(answer.text(), "original\n");
    metric_becomes(&sc.admin, GRIP_STREAMS, 0.0).await;
}

/// A client cannot step around GRIP by asking for an upgrade: the app's
/// declined upgrade that asks for a hold gets `502`, and none of its
/// `Grip-*` headers (its channels) reach the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_cannot_step_around_grip() {
    let app = RawApp::start(STREAM, true).await;
    let sc = grip_sidecast(&app, "");
    let mut c = Conn::connect(&sc.public).await;
    c.get("/feed", &[("Upgrade", "foo"), ("Connection", "Upgrade")])
        .await;
    let r = c.response("GET", support::WAIT).await;
    assert_eq!(r.head.status, 502, "{}", r.head.raw);
    assert_eq!(r.head.header("sidecast-error"), Some("grip-error"));
    assert!(!r.head.raw.to_ascii_lowercase().contains("grip-channel"));
    assert!(!r.text().contains("hello"));
}

/// `Grip-*` headers without `Grip-Hold` ask for nothing: the response
/// passes, without them, however they are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grip_headers_without_a_hold_ask_for_nothing() {
    const PLAIN: &[u8] =
        b"HTTP/1.1 200 OK\r\nGrip-Channel: a b\r\nGrip-Keep-Alive: x; format=hex\r\n\
Content-Length: 3\r\n\r\nok\n";
    let app = RawApp::start(PLAIN, true).await;
    let sc = grip_sidecast(&app, "");
    let r = http::request(&sc.public, "GET", "/plain", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
    assert_eq!(r.header("grip-channel"), None);
}

/// A response hold whose client sent a byte more and then went away is
/// released at once, not kept (with its `max_streams` place) until its
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_hold_whose_client_goes_away_is_released() {
    let app = RawApp::start(POLL, true).await;
    let sc = grip_sidecast(&app, "");
    let mut c = Conn::connect(&sc.public).await;
    c.get("/poll", &[]).await;
    metric_becomes(&sc.admin, GRIP_STREAMS, 1.0).await;
    c.send(b"G").await;
    drop(c);
    metric_becomes(&sc.admin, GRIP_STREAMS, 0.0).await;
}

/// A GRIP item's `id` is its own within its channel: the same id on two
/// channels is two items; on one channel, a retry (same content) is
/// answered with the first id, other content is refused naming the item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_ids_are_per_channel() {
    let app = RawApp::start(STREAM, true).await;
    let sc = grip_sidecast(&app, "");
    let publish = |channel: &str, content: &str| {
        let body = json!({"items": [{"channel": channel, "id": "1",
            "formats": {"http-stream": {"content": content}}}]});
        publish_items(&sc, body)
    };
    let a = publish("ch-a", "x\n").await;
    let b = publish("ch-b", "x\n").await;
    assert_eq!(
        (a.status, b.status),
        (202, 202),
        "{} {}",
        a.text(),
        b.text()
    );
    assert_ne!(a.json()["ids"], b.json()["ids"]);
    let again = publish("ch-a", "x\n").await;
    assert_eq!(again.json()["ids"], a.json()["ids"], "a retry");
    let other = publish("ch-a", "y\n").await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert_eq!(other.json()["field"], "items[0].id");
    let message = other.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("key \"1\""),
        "the item's own id: {message}"
    );
}
