//! A first end-to-end check: a stream opens, a publish reaches it.
mod support;

use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_stream() {
    let up = Upstream::start("app").await;
    let sc = Sidecast::start(&Opts::new(&up.url()));
    let token = sc.token("alice", &["news"]);
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    assert_eq!(s.status(), 200);
    let first = s.next_block(support::WAIT).await.unwrap();
    assert_eq!(first.retry, Some(3000));
    let id = sc.publish_one("news", "hello\nworld").await;
    let ev = s.next_event().await.unwrap();
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_eq!(ev.data.as_deref(), Some("hello\nworld"));
}
