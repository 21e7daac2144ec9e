//! A cursor before the first event: a stream's first bytes are `retry:`
//! and, when no replay or reset follows, a block with only `id:` (the
//! newest id at registration). A client whose stream drops before any
//! event arrives comes back with that id as `Last-Event-ID` and is replayed
//! what was published while it was away, instead of going on live and
//! missing it silently. Checked wherever a client can resume: a plain
//! stream cut by the app or by the client, an events route, HTTP/1.0,
//! long-poll, and a cluster of two replicas on a real Redis.
use crate::support;

use serde_json::json;
use support::delivery::{poll, publish_with, streams_on};
use support::http::Response;
use support::redis::{all_connected, cluster, replica};
use support::sse::{Block, Sse};
use support::upstream::Upstream;
use support::{eventually, http, Sidecast, WAIT};

async fn start(events: &str, extra: &str) -> (Upstream, Sidecast) {
    support::start_with(|o| {
        o.events = events.to_owned();
        o.extra = extra.to_owned();
    })
    .await
}

fn headers<'a>(auth: &'a str, last: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("Authorization", auth)];
    if let Some(id) = last {
        h.push(("Last-Event-ID", id));
    }
    h
}

/// `POST /disconnect` on the publish listener.
async fn disconnect(sc: &Sidecast, body: serde_json::Value) -> Response {
    publish_with(
        sc,
        "POST",
        "/disconnect",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// Reads a stream cut by `POST /disconnect` to its end: one
/// `sidecast.disconnect` event with `reconnect: true` and no `id:` (so the
/// browser keeps the cursor as its last event id), and nothing else.
async fn cut_for_reconnect(s: &mut Sse) {
    let rest = s.until_end(WAIT).await;
    let events: Vec<&Block> = rest.iter().filter(|b| b.data.is_some()).collect();
    assert_eq!(events.len(), 1, "{rest:?}");
    assert_eq!(events[0].event.as_deref(), Some("sidecast.disconnect"));
    assert_eq!(
        events[0].id, None,
        "the disconnect leaves the last id as is"
    );
    let data: serde_json::Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(data["reconnect"], true);
    assert!(rest.iter().all(|b| b.id.is_none()), "{rest:?}");
    assert!(s.eof);
}

/// Opens a stream resuming from `last` and checks that it is a replay of
/// exactly `missed` (no reset), then the live stream.
async fn resumes_with(addr: &str, path: &str, auth: &str, last: &str, missed: &[(&str, &str)]) {
    let mut s = Sse::open(addr, path, &headers(auth, Some(last))).await;
    assert_eq!(s.status(), 200);
    let first = s.next_block(WAIT).await.expect("retry block");
    assert!(first.retry.is_some() && first.id.is_none(), "{first:?}");
    for (id, data) in missed {
        let b = s.next_block(WAIT).await.expect("a replayed event");
        assert_eq!(b.event, None, "a replay, not a reset: {b:?}");
        assert_eq!(
            (b.id.as_deref(), b.data.as_deref()),
            (Some(*id), Some(*data)),
            "resuming from {last}"
        );
    }
}

/// The app ends a stream that has received nothing (`reconnect: true`); an
/// event is published while the client is away; the client comes back
/// with the cursor and is replayed it. On a fresh sidecast the cursor is an
/// id that sorts before the first one issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_app_cuts_before_any_event_resumes_from_its_cursor() {
    let (_up, sc) = start("", "").await;
    let auth = format!("Bearer {}", sc.token("alice", &["orders/*"]));
    let mut s = Sse::open(&sc.public, "/events?topic=orders/1", &headers(&auth, None)).await;
    let (retry, cursor) = s.cursor().await;
    assert_eq!(retry, 3000);

    let r = disconnect(&sc, json!({"topic": "orders/1", "reconnect": true})).await;
    assert_eq!((r.status, r.json()), (200, json!({"closed": 1})));
    cut_for_reconnect(&mut s).await;
    eventually("the stream is gone", || async {
        streams_on(&sc, "orders/1").await == 0
    })
    .await;

    let missed = sc.publish_one("orders/1", "paid").await;
    assert_ne!(missed, cursor);
    resumes_with(
        &sc.public,
        "/events?topic=orders/1",
        &auth,
        &cursor,
        &[(&missed, "paid")],
    )
    .await;
    // The same with the query parameter a page would use.
    resumes_with(
        &sc.public,
        &format!("/events?topic=orders/1&lastEventId={cursor}"),
        &auth,
        &cursor,
        &[(&missed, "paid")],
    )
    .await;
}

/// The client drops the connection itself, before any event; events exist
/// from before (on this topic and others), so the cursor is the newest id,
/// not the first; what is published while the client is away is replayed,
/// and nothing from before the cursor is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_drops_before_any_event_resumes_from_its_cursor() {
    let (_up, sc) = start("", "").await;
    let auth = format!("Bearer {}", sc.token("alice", &["orders/*"]));
    sc.publish_one("orders/1", "placed").await;
    let newest = sc.publish_one("orders/2", "elsewhere").await;
    let mut s = Sse::open(&sc.public, "/events?topic=orders/1", &headers(&auth, None)).await;
    let (_, cursor) = s.cursor().await;
    assert_eq!(cursor, newest, "the newest id issued at registration");
    drop(s);
    eventually("the stream is gone", || async {
        streams_on(&sc, "orders/1").await == 0
    })
    .await;

    let a = sc.publish_one("orders/1", "paid").await;
    sc.publish_one("orders/3", "not this stream's").await;
    let b = sc.publish_one("orders/1", "shipped").await;
    resumes_with(
        &sc.public,
        "/events?topic=orders/1",
        &auth,
        &cursor,
        &[(&a, "paid"), (&b, "shipped")],
    )
    .await;
}

/// A stream opened while nothing of its topics is published gets live
/// events after its cursor, and a second client's cursor is the newest id
/// at its own registration: the cursor moves on with what was issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_is_the_newest_id_at_registration_and_live_follows_it() {
    let (_up, sc) = start("", "").await;
    let auth = format!("Bearer {}", sc.token("alice", &["a", "b"]));
    let mut first = Sse::open(&sc.public, "/events?topic=a", &headers(&auth, None)).await;
    let (_, fresh) = first.cursor().await;
    let one = sc.publish_one("a", "one").await;
    let got = first.next_event().await.unwrap();
    assert_eq!(
        (got.id.as_deref(), got.data.as_deref()),
        (Some(one.as_str()), Some("one"))
    );
    let other = sc.publish_one("b", "other topic").await;
    let mut second = Sse::open(&sc.public, "/events?topic=a", &headers(&auth, None)).await;
    let (_, cursor) = second.cursor().await;
    assert_eq!(cursor, other);
    assert_ne!(cursor, fresh);
    // Resuming from the fresh cursor replays everything of the topic since.
    resumes_with(
        &sc.public,
        "/events?topic=a",
        &auth,
        &fresh,
        &[(&one, "one")],
    )
    .await;
    // A resume with nothing to replay opens with the cursor too.
    let mut s = Sse::open(&sc.public, "/events?topic=a", &headers(&auth, Some(&one))).await;
    let (_, again) = s.cursor().await;
    assert_eq!(again, other);
    // A replay carries its own ids: no cursor block before or after it.
    let mut s = Sse::open(&sc.public, "/events?topic=a", &headers(&auth, Some(&fresh))).await;
    assert!(s.next_block(WAIT).await.unwrap().retry.is_some());
    let b = s.next_block(WAIT).await.unwrap();
    assert_eq!(
        (b.id.as_deref(), b.data.as_deref()),
        (Some(one.as_str()), Some("one"))
    );
    // A reset carries the newest id: no cursor block either.
    let mut s = Sse::open(
        &sc.public,
        "/events?topic=a",
        &headers(&auth, Some("bogus")),
    )
    .await;
    assert!(s.next_block(WAIT).await.unwrap().retry.is_some());
    let b = s.next_block(WAIT).await.unwrap();
    assert_eq!(b.event.as_deref(), Some("sidecast.reset"));
    assert_eq!(b.id.as_deref(), Some(other.as_str()));
    let live = sc.publish_one("a", "live").await;
    let b = s.next_event().await.unwrap();
    assert_eq!(b.id.as_deref(), Some(live.as_str()));
}

/// An events route opens with the same cursor, and resuming through the
/// route replays what was missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_route_opens_with_a_cursor() {
    let routes = "[[routes]]\npath = \"/orders/{id}/events\"\ntopics = [\"orders/{id}\"]\n";
    let (_up, sc) = start("", routes).await;
    let auth = format!("Bearer {}", sc.token("alice", &["orders/*"]));
    let mut s = Sse::open(&sc.public, "/orders/42/events", &headers(&auth, None)).await;
    let (_, cursor) = s.cursor().await;
    let r = disconnect(&sc, json!({"topic": "orders/42"})).await;
    assert_eq!((r.status, r.json()), (200, json!({"closed": 1})));
    cut_for_reconnect(&mut s).await;
    sc.publish_one("orders/43", "another order").await;
    let missed = sc.publish_one("orders/42", "shipped").await;
    resumes_with(
        &sc.public,
        "/orders/42/events",
        &auth,
        &cursor,
        &[(&missed, "shipped")],
    )
    .await;
}

/// HTTP/1.0 streams (no chunks) open with the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_stream_opens_with_retry_then_the_cursor() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, sc) = start("", "").await;
    let newest = sc.publish_one("b", "before").await;
    let token = sc.token("alice", &["a"]);
    let mut io = tokio::net::TcpStream::connect(&sc.public).await.unwrap();
    let req = format!(
        "GET /events?topic=a HTTP/1.0\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let want = format!("\r\n\r\nretry: 3000\n\nid: {newest}\n\n");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    while raw.len() < 4096 && !String::from_utf8_lossy(&raw).contains(&want) {
        let n = tokio::time::timeout_at(deadline, io.read(&mut buf))
            .await
            .expect("the opening in time")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.0 200"), "{text:?}");
    assert!(text.ends_with(&want), "{text:?}");
}

/// Long-poll: the `Last-Event-ID` answer header is the cursor, on an empty
/// hub and when events exist, and polling from it gets what was published
/// since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_a_cursor_to_resume_from() {
    let (_up, sc) = start("poll_timeout = \"300ms\"", "").await;
    let token = sc.token("alice", &["a"]);
    let empty = poll(&sc, "/events?topic=a&mode=poll", &token, &[]).await;
    assert_eq!((empty.status, empty.items.len()), (200, 0));
    assert!(!empty.next.is_empty(), "a cursor on an empty hub");
    let first = sc.publish_one("a", "first").await;
    assert_ne!(first, empty.next);
    let p = poll(
        &sc,
        &format!("/events?topic=a&mode=poll&lastEventId={}", empty.next),
        &token,
        &[],
    )
    .await;
    assert_eq!(p.items, vec![json!({"id": first, "data": "first"})]);
    assert_eq!(p.next, first);

    // Events exist: the header is the newest id issued, whatever topic.
    let other = sc.publish_one("b", "other").await;
    let idle = poll(&sc, "/events?topic=a&mode=poll", &token, &[]).await;
    assert_eq!((idle.items.len(), idle.next.as_str()), (0, other.as_str()));
    let second = sc.publish_one("a", "second").await;
    let p = poll(
        &sc,
        &format!("/events?topic=a&mode=poll&lastEventId={}", idle.next),
        &token,
        &[("Accept", "application/json")],
    )
    .await;
    assert_eq!(p.items, vec![json!({"id": second, "data": "second"})]);
    assert_eq!(p.next, second);
}

/// Cluster mode: the cursor a replica gives is the cluster's (the Redis
/// epoch's) id; cut by `POST /disconnect` sent to the other replica, the
/// client is replayed on either replica what was published on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_cursor_from_one_replica_resumes_on_any() {
    let Some((_redis, _up, [a, b])) = cluster(false).await else {
        return;
    };
    let auth = format!("Bearer {}", a.token("alice", &["room/**"]));
    let mut s = Sse::open(&a.public, "/events?topic=room/1", &headers(&auth, None)).await;
    let (_, cursor) = s.cursor().await;
    let r = http::request(
        &b.publish_url(),
        "POST",
        "/disconnect",
        &[("Content-Type", "application/json")],
        json!({"topic": "room/1", "reconnect": true})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!((r.status, r.json()["closed"].clone()), (200, json!(1)));
    cut_for_reconnect(&mut s).await;

    let missed = b.publish_one("room/1", "while away").await;
    // The cursor and the event share the cluster's epoch: an id B issued
    // follows A's cursor in the one order.
    let epoch = |id: &str| id.rsplit_once('-').map(|(e, _)| e.to_owned());
    assert_eq!(epoch(&cursor), epoch(&missed));
    for replica in [&a, &b] {
        // A may read the event from the log a moment after B's 202: wait
        // until it holds it, as a client coming back later would find.
        eventually("the event is in the replica's history", || async {
            let r = http::request(&replica.publish_url(), "GET", "/topics/room/1", &[], b"").await;
            r.status == 200 && r.json()["last_id"] == missed.as_str()
        })
        .await;
        resumes_with(
            &replica.public,
            "/events?topic=room/1",
            &auth,
            &cursor,
            &[(&missed, "while away")],
        )
        .await;
    }
}

/// A replica that joins a Redis that already holds events gives the
/// cluster's newest id as its cursor once it is listening (its history is
/// filled before it says so), and a client dropped before any event
/// resumes on the other replica with what was published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joining_a_redis_with_history_gives_the_clusters_newest_id() {
    let Some((redis, up, [a])) = cluster(false).await else {
        return;
    };
    let mut issued = Vec::new();
    for i in 0..5 {
        issued.push(a.publish_one(&format!("room/{i}"), "before").await);
    }
    let b = replica(&up, &redis);
    all_connected(&[&b]).await;
    assert!(
        !b.log_text().contains("history not loaded"),
        "{}",
        b.log_text()
    );
    let auth = format!("Bearer {}", a.token("alice", &["room/**"]));
    let mut s = Sse::open(&b.public, "/events?topic=room/9", &headers(&auth, None)).await;
    let (_, cursor) = s.cursor().await;
    assert_eq!(&cursor, issued.last().unwrap(), "the cluster's newest id");
    drop(s);

    let missed = a.publish_one("room/9", "while away").await;
    for replica in [&a, &b] {
        eventually("the event is in the replica's history", || async {
            let r = http::request(&replica.publish_url(), "GET", "/topics/room/9", &[], b"").await;
            r.status == 200 && r.json()["last_id"] == missed.as_str()
        })
        .await;
        resumes_with(
            &replica.public,
            "/events?topic=room/9",
            &auth,
            &cursor,
            &[(&missed, "while away")],
        )
        .await;
    }
}
