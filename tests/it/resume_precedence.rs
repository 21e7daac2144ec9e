//! Where a stream resumes when a client names two ids: a page that reopened
//! its EventSource with `?lastEventId=A` keeps that URL, and the browser's
//! own later reconnects send the newer `Last-Event-ID: B` header with it.
//! The header must win, or the events between A and B arrive twice.
use crate::support;

use support::sse::Sse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_event_id_header_wins_over_the_query() {
    let (_up, sc) = support::start().await;
    let token = sc.token("alice", &["orders"]);
    let a = sc.publish_one("orders", "one").await;
    let b = sc.publish_one("orders", "two").await;
    let c = sc.publish_one("orders", "three").await;

    let path = format!("/events?topic=orders&lastEventId={a}");
    let auth = format!("Bearer {token}");
    let mut s = Sse::open(
        &sc.public,
        &path,
        &[
            ("Authorization", auth.as_str()),
            ("Last-Event-ID", b.as_str()),
        ],
    )
    .await;
    assert_eq!(s.status(), 200);
    let ev = s
        .next_event()
        .await
        .expect("the event after the header's id");
    assert_eq!(
        ev.id.as_deref(),
        Some(c.as_str()),
        "resumed after {b}, not {a}"
    );
    assert_eq!(ev.data.as_deref(), Some("three"));

    // The query alone still resumes (a page reopening its stream itself).
    let mut s = Sse::open_token(&sc.public, &path, &token).await;
    let got: Vec<_> = s.events(2).await.into_iter().map(|e| e.id).collect();
    assert_eq!(got, vec![Some(b), Some(c)]);
}
