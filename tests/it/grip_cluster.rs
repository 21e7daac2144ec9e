//! GRIP holds in cluster mode: a stream held on one replica gets what is
//! published on another, in GRIP's format and in sidecast's own, through
//! the one Redis log.
use crate::support;

use std::time::Duration;

use serde_json::json;
use support::conn::Conn;
use support::grip::publish_items;
use support::redis::{all_connected, Redis};
use support::upstream::RawApp;
use support::{Opts, Sidecast};

/// The app: every GET answered with a stream hold on `news`.
const HOLD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\n\
Grip-Channel: news\r\nContent-Length: 6\r\n\r\nhello\n";

fn replica(app: &RawApp, redis: &Redis) -> Sidecast {
    let mut o = Opts::new(&app.url);
    o.upstream_extra = "grip = true\n".into();
    o.extra = redis.cluster_toml("startup_timeout = \"5s\"\n");
    Sidecast::start(&o)
}

/// Publishes one `http-stream` item (`format`) to channel `news` on `sc`.
async fn publish_news(sc: &Sidecast, format: serde_json::Value) {
    let r = publish_items(
        sc,
        json!({"items": [{"channel": "news", "formats": {"http-stream": format}}]}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_held_on_one_replica_gets_what_another_publishes() {
    let Some(redis) = Redis::required(false) else {
        return;
    };
    let app = RawApp::start(HOLD, true).await;
    let (a, b) = (replica(&app, &redis), replica(&app, &redis));
    all_connected(&[&a, &b]).await;
    let mut held = Conn::connect(&b.public).await;
    held.get("/feed", &[]).await;
    let head = held.head(support::WAIT).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        head.header("grip-hold"),
        None,
        "no Grip-* header reaches the client"
    );
    assert_eq!(held.chunk(support::WAIT).await.unwrap(), b"hello\n");
    // The hold is registered on B before the app's answer reaches the
    // client, so what A publishes now reaches it.
    publish_news(&a, json!({"content": "one\n"})).await;
    let sse_id = a.publish_one("news", "two").await;
    publish_news(&a, json!({"content-bin": "dGhyZWUK"})).await;
    assert_eq!(held.chunk(support::WAIT).await.unwrap(), b"one\n");
    assert_eq!(
        String::from_utf8(held.chunk(support::WAIT).await.unwrap()).unwrap(),
        format!("id: {sse_id}\ndata: two\n\n")
    );
    assert_eq!(held.chunk(support::WAIT).await.unwrap(), b"three\n");
    // A close published on A ends the stream on B with the last chunk.
    publish_news(&a, json!({"action": "close"})).await;
    assert_eq!(held.chunk(support::WAIT).await, None);
    assert!(held.closes_within(Duration::from_secs(5)).await);
}
