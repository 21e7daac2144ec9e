//! A first end-to-end check: a stream opens, a publish reaches it; and
//! the test's own SSE parser, which every stream test reads through.
use crate::support;

use support::sse::Sse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_stream() {
    let (_up, sc) = support::start().await;
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

#[test]
fn the_test_sse_parser_reads_the_whatwg_framing() {
    let mut t = String::from(
        "retry: 10\n\nid: 1\nevent: x\ndata: a\ndata: b\n\n: hb\n\ndata:c\r\n\r\npartial",
    );
    let b = support::sse::parse_blocks(&mut t);
    assert_eq!(b.len(), 4, "{b:?}");
    assert_eq!(b[0].retry, Some(10));
    assert_eq!(b[1].id.as_deref(), Some("1"));
    assert_eq!(b[1].event.as_deref(), Some("x"));
    assert_eq!(b[1].data.as_deref(), Some("a\nb"));
    assert_eq!(b[2].comments, 1);
    assert_eq!(b[2].data, None);
    assert_eq!(b[3].data.as_deref(), Some("c"));
    assert_eq!(t, "partial");
}
