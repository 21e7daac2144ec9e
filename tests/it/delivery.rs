//! The central promise, end to end on the real binary: a subscriber
//! receives every event of its topics in order, or is told in the stream
//! that it missed some (replay, reset, slow subscribers, long-poll).
use crate::support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::delivery::{
    events_of_raw, expect_reset, ids_of, metric, never_reading, opening, poll, publish_json,
    read_rest, rss_kib, streams_on,
};
use support::sse::Sse;
use support::upstream::Upstream;
use support::{eventually, Opts, Sidecast, WAIT};

async fn start(events: &str) -> (Upstream, Sidecast) {
    support::start_with(|o| o.events = events.to_owned()).await
}

async fn open(sc: &Sidecast, path: &str, token: &str, headers: &[(&str, &str)]) -> Sse {
    let auth = format!("Bearer {token}");
    let mut h = vec![("Authorization", auth.as_str())];
    h.extend_from_slice(headers);
    let mut s = Sse::open(&sc.public, path, &h).await;
    opening(&mut s).await;
    s
}

async fn ids_read(s: &mut Sse, n: usize) -> Vec<String> {
    s.events(n)
        .await
        .into_iter()
        .map(|b| {
            assert_eq!(b.event, None, "an unexpected named event: {b:?}");
            b.id.expect("an id")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_header_and_by_query_is_exactly_what_was_missed() {
    let (_up, sc) = start("").await;
    let token = sc.token("alice", &["news"]);
    for by_query in [false, true] {
        let mut s = open(&sc, "/events?topic=news", &token, &[]).await;
        let mut seen = Vec::new();
        for i in 0..5 {
            seen.push(sc.publish_one("news", &format!("seen {i}")).await);
        }
        assert_eq!(ids_read(&mut s, 5).await, seen);
        drop(s);
        let mut missed = Vec::new();
        for i in 0..5 {
            missed.push(sc.publish_one("news", &format!("missed {i}")).await);
        }
        let last = &seen[4];
        let mut s = if by_query {
            open(
                &sc,
                &format!("/events?topic=news&lastEventId={last}"),
                &token,
                &[],
            )
            .await
        } else {
            open(
                &sc,
                "/events?topic=news",
                &token,
                &[("Last-Event-ID", last)],
            )
            .await
        };
        let got = s.events(5).await;
        let got_ids: Vec<String> = got.iter().map(|b| b.id.clone().unwrap()).collect();
        assert_eq!(got_ids, missed);
        let data: Vec<&str> = got.iter().map(|b| b.data.as_deref().unwrap()).collect();
        assert_eq!(
            data,
            ["missed 0", "missed 1", "missed 2", "missed 3", "missed 4"]
        );
        // Then live, with nothing replayed twice in between.
        let live = sc.publish_one("news", "live").await;
        assert_eq!(ids_read(&mut s, 1).await, vec![live]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_topics_replay_in_one_global_order_and_each_event_once() {
    let (_up, sc) = start("").await;
    let token = sc.token("alice", &["a", "b"]);
    let mark = sc.publish_one("a", "mark").await;
    let mut expected = Vec::new();
    for (topics, data) in [
        (json!(["a"]), "1"),
        (json!(["b"]), "2"),
        (json!(["a", "b"]), "3"),
        (json!(["c"]), "not mine"),
        (json!(["b", "a", "c"]), "4"),
        (json!(["a"]), "5"),
    ] {
        let r = publish_json(&sc, &json!({"topics": topics, "data": data})).await;
        if data != "not mine" {
            expected.push((ids_of(&r)[0].clone(), data));
        }
    }
    let mut s = open(
        &sc,
        &format!("/events?topic=a&topic=b&lastEventId={mark}"),
        &token,
        &[],
    )
    .await;
    let got = s.events(expected.len()).await;
    let got: Vec<(String, &str)> = got
        .iter()
        .map(|b| (b.id.clone().unwrap(), b.data.as_deref().unwrap()))
        .collect();
    let want: Vec<(String, &str)> = expected.iter().map(|(i, d)| (i.clone(), *d)).collect();
    assert_eq!(got, want);
    let r = publish_json(&sc, &json!({"topics": ["b", "a"], "data": "live on both"})).await;
    let both = ids_of(&r)[0].clone();
    let after = sc.publish_one("a", "after").await;
    assert_eq!(ids_read(&mut s, 2).await, vec![both, after]);
}

/// What was published, in order: each id with its topics.
type Published = Arc<Mutex<Vec<(String, Vec<&'static str>)>>>;

/// Publishes continuously to random topics while clients keep reconnecting
/// with their last id; each client's concatenated receipts must be the
/// published sequence of its topics, with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_while_publishing_has_no_race() {
    let (_up, sc) = start("history = 100000").await;
    let sc = Arc::new(sc);
    let mark = sc.publish_one("a", "mark").await;
    let published: Published = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    const TOPICS: [&str; 3] = ["a", "b", "c"];
    const EVENTS: usize = 1500;
    let publisher = {
        let (sc, published, done) = (sc.clone(), published.clone(), done.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while n < EVENTS {
                let batch: Vec<(Vec<&'static str>, String)> = (0..fastrand::usize(1..4))
                    .map(|_| {
                        let mut ts: Vec<&'static str> = TOPICS
                            .iter()
                            .copied()
                            .filter(|_| fastrand::bool())
                            .collect();
                        if ts.is_empty() {
                            ts.push(TOPICS[fastrand::usize(..3)]);
                        }
                        n += 1;
                        (ts, format!("event {n}"))
                    })
                    .collect();
                let body: Vec<_> = batch
                    .iter()
                    .map(|(ts, d)| json!({"topics": ts, "data": d}))
                    .collect();
                let ids = ids_of(&publish_json(&sc, &json!(body)).await);
                let mut p = published.lock().unwrap();
                for (id, (ts, _)) in ids.into_iter().zip(batch) {
                    p.push((id, ts));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let reconnects = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = [vec!["a"], vec!["b", "c"], vec!["a", "b", "c"], vec!["c"]]
        .into_iter()
        .map(|topics| {
            let (sc, published, done, mark, reconnects) = (
                sc.clone(),
                published.clone(),
                done.clone(),
                mark.clone(),
                reconnects.clone(),
            );
            tokio::spawn(async move {
                let token = sc.token("alice", &["a", "b", "c"]);
                let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
                let mut last = mark;
                let mut got: Vec<String> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    assert!(Instant::now() < deadline, "client did not catch up in time");
                    let path = format!("/events?{}&lastEventId={last}", query.join("&"));
                    let mut s = open(&sc, &path, &token, &[]).await;
                    reconnects.fetch_add(1, Ordering::Relaxed);
                    for _ in 0..fastrand::usize(0..40) {
                        match tokio::time::timeout(Duration::from_millis(300), s.next_event()).await
                        {
                            Ok(Some(b)) => {
                                assert_eq!(b.event, None, "no reset within history: {b:?}");
                                let id = b.id.expect("id");
                                got.push(id.clone());
                                last = id;
                            }
                            Ok(None) => panic!("the stream ended"),
                            Err(_) => break,
                        }
                    }
                    drop(s);
                    if done.load(Ordering::SeqCst) {
                        let p = published.lock().unwrap();
                        let mine = p
                            .iter()
                            .rev()
                            .find(|(_, ts)| ts.iter().any(|t| topics.contains(t)));
                        if mine.is_none_or(|(id, _)| *id == last) {
                            break;
                        }
                    }
                }
                let expected: Vec<String> = published
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, ts)| ts.iter().any(|t| topics.contains(t)))
                    .map(|(id, _)| id.clone())
                    .collect();
                assert_eq!(got.len(), expected.len(), "client of {topics:?}");
                assert_eq!(got, expected, "client of {topics:?}");
            })
        })
        .collect();
    publisher.await.unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let n = reconnects.load(Ordering::Relaxed);
    assert!(n >= 40, "only {n} reconnects: the race was hardly tried");
    eprintln!("{n} reconnects while {EVENTS} events were published");
}

/// Opens a stream on `a` from `sent`, expects a reset whose id is `newest`
/// and which names `reason`, then a live event; returns that event's id.
async fn reset_then_live(
    sc: &Sidecast,
    token: &str,
    sent: &str,
    newest: &str,
    reason: &str,
) -> String {
    let encoded: String = form_urlencoded_byte(sent);
    let mut s = open(
        sc,
        &format!("/events?topic=a&lastEventId={encoded}"),
        token,
        &[],
    )
    .await;
    let (id, data) = expect_reset(&mut s).await;
    assert_eq!(id, newest, "the reset's id is the newest issued");
    assert_eq!(data["last_event_id"], sent);
    let why = data["reason"].as_str().expect("reason");
    assert!(why.contains(reason), "reason {why:?} for {sent:?}");
    let live = sc.publish_one("a", "live").await;
    assert_eq!(ids_read(&mut s, 1).await, vec![live.clone()]);
    live
}

fn form_urlencoded_byte(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_for_evicted_unknown_and_malformed_ids() {
    let (_up, sc) = start("history = 3").await;
    let token = sc.token("alice", &["a"]);
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..10 {
            v.push(sc.publish_one("a", &i.to_string()).await);
        }
        v
    };
    let mut newest = reset_then_live(&sc, &token, &ids[0], &ids[9], "no longer in history").await;
    // Ids are opaque to clients; the test forges unknown ones from the
    // shape this build issues.
    let epoch = ids[0].rsplit_once('-').unwrap().0;
    for (sent, reason) in [
        (format!("{epoch}-999999"), "unknown id"),
        ("not an id".to_owned(), "malformed"),
        (format!("{epoch}-x"), "malformed"),
    ] {
        newest = reset_then_live(&sc, &token, &sent, &newest, reason).await;
    }
    // The reset's id is a place to resume from: no reset with it.
    let mut s = open(&sc, "/events?topic=a&lastEventId=junk", &token, &[]).await;
    let (resume, _) = expect_reset(&mut s).await;
    drop(s);
    let next = sc.publish_one("a", "after the reset").await;
    let mut s = open(
        &sc,
        "/events?topic=a",
        &token,
        &[("Last-Event-ID", resume.as_str())],
    )
    .await;
    assert_eq!(ids_read(&mut s, 1).await, vec![next]);
    assert!(metric(&sc, "sidecast_resets_total").await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_from_before_a_restart_resets() {
    let up = Upstream::start("app").await;
    let opts = Opts::new(&up.url());
    let old = {
        let sc = Sidecast::start(&opts);
        sc.publish_one("a", "first run").await;
        sc.publish_one("a", "first run").await
    };
    let sc = Sidecast::start(&opts);
    let token = sc.token("alice", &["a"]);
    let mut s = open(&sc, "/events?topic=a", &token, &[("Last-Event-ID", &old)]).await;
    let (resume, data) = expect_reset(&mut s).await;
    assert_eq!(data["last_event_id"], old.as_str());
    assert!(data["reason"].as_str().unwrap().contains("another epoch"));
    assert_ne!(
        resume.rsplit_once('-').unwrap().0,
        old.rsplit_once('-').unwrap().0
    );
    let live = sc.publish_one("a", "second run").await;
    assert_eq!(ids_read(&mut s, 1).await, vec![live.clone()]);
    drop(s);
    // The id the reset gave (none issued yet in this run) resumes cleanly.
    let mut s = open(
        &sc,
        "/events?topic=a",
        &token,
        &[("Last-Event-ID", &resume)],
    )
    .await;
    assert_eq!(ids_read(&mut s, 1).await, vec![live]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_by_ttl_resets() {
    let (_up, sc) = start("history_ttl = \"1s\"").await;
    let token = sc.token("alice", &["a"]);
    let first = sc.publish_one("a", "1").await;
    let second = sc.publish_one("a", "2").await;
    // Let the history age past its ttl (the condition under test).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reset_then_live(&sc, &token, &first, &second, "no longer in history").await;
    let (status, _) = support::delivery::topic_info(&sc, "a").await;
    assert_eq!(status, 200, "the live event is held");
    // Nothing after the newest was lost: no reset for it.
    let mut s = open(
        &sc,
        &format!("/events?topic=a&lastEventId={second}"),
        &token,
        &[],
    )
    .await;
    let b = s.next_event().await.unwrap();
    assert_eq!(b.data.as_deref(), Some("live"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_evicts_and_resets() {
    let (_up, sc) = start("history_bytes = 4096").await;
    let token = sc.token("alice", &["a"]);
    let kb = "x".repeat(1000);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(sc.publish_one("a", &kb).await);
    }
    let (_, info) = support::delivery::topic_info(&sc, "a").await;
    let held = info["held"].as_u64().unwrap() as usize;
    assert!(
        (1..=3).contains(&held),
        "4 KiB holds at most 3 events of 1 KB: {info}"
    );
    // From the id just before those held: exact.
    let from = &ids[9 - held];
    let mut s = open(
        &sc,
        &format!("/events?topic=a&lastEventId={from}"),
        &token,
        &[],
    )
    .await;
    assert_eq!(ids_read(&mut s, held).await, ids[10 - held..].to_vec());
    drop(s);
    reset_then_live(&sc, &token, &ids[0], &ids[9], "no longer in history").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_closed_and_replays_what_it_missed() {
    let (_up, sc) = start("history = 10000\nqueue = 256").await;
    let token = sc.token("alice", &["load"]);
    let mark = sc.publish_one("load", "mark").await;
    let mut slow = never_reading(
        &sc.public,
        &format!("/events?topic=load&lastEventId={mark}"),
        &token,
    )
    .await;
    let mut normal = open(&sc, "/events?topic=load", &token, &[]).await;
    eventually("both streams open", || async {
        streams_on(&sc, "load").await == 2
    })
    .await;
    let slow_before = metric(&sc, "sidecast_streams_closed_total{reason=\"slow\"}").await;
    let rss_before = rss_kib(sc.pid());
    const N: usize = 5000;
    let read = Arc::new(AtomicUsize::new(0));
    let reader = {
        let read = read.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(N);
            while ids.len() < N {
                let b = normal
                    .next_event()
                    .await
                    .expect("the normal stream goes on");
                assert_eq!(b.data.as_deref().map(str::len), Some(1000));
                ids.push(b.id.unwrap());
                read.store(ids.len(), Ordering::Relaxed);
            }
            (ids, normal)
        })
    };
    let payload = "p".repeat(1000);
    let mut published = Vec::with_capacity(N);
    let started = Instant::now();
    while published.len() < N {
        let batch: Vec<_> = (0..100)
            .map(|_| json!({"topic": "load", "data": payload}))
            .collect();
        published.extend(ids_of(&publish_json(&sc, &json!(batch)).await));
        // A normal subscriber keeps up; give it the time to (bounded).
        let deadline = Instant::now() + WAIT;
        while read.load(Ordering::Relaxed) + 200 < published.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let publish_time = started.elapsed();
    let (got, _normal) = reader.await.unwrap();
    assert_eq!(got, published, "the normal subscriber got all, in order");
    let rss_after = rss_kib(sc.pid());
    eprintln!("published {N} x 1 KB in {publish_time:?}; RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    eventually("the slow stream closed as slow", || async {
        metric(&sc, "sidecast_streams_closed_total{reason=\"slow\"}").await > slow_before
    })
    .await;
    assert_eq!(streams_on(&sc, "load").await, 1);
    // The slow client reads what its socket still holds, then reconnects
    // with the last id it saw: the concatenation is everything.
    let raw = read_rest(&mut slow, WAIT).await;
    let before: Vec<String> = events_of_raw(&raw)
        .into_iter()
        .filter_map(|b| b.id)
        .collect();
    eprintln!("the slow client's socket held {} events", before.len());
    assert!(
        before.len() < N,
        "the slow client cannot have had everything"
    );
    assert_eq!(before[..], published[..before.len()]);
    let last = before.last().cloned().unwrap_or(mark);
    let mut again = open(
        &sc,
        "/events?topic=load",
        &token,
        &[("Last-Event-ID", &last)],
    )
    .await;
    let rest = ids_read(&mut again, N - before.len()).await;
    let mut all = before;
    all.extend(rest);
    assert_eq!(all, published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_beyond_history_gets_a_reset() {
    let (_up, sc) = start("history = 300\nqueue = 100").await;
    let token = sc.token("alice", &["load"]);
    let mark = sc.publish_one("load", "mark").await;
    let _slow = never_reading(
        &sc.public,
        &format!("/events?topic=load&lastEventId={mark}"),
        &token,
    )
    .await;
    eventually("the stream is open", || async {
        streams_on(&sc, "load").await == 1
    })
    .await;
    // Publish until the stream is closed: how much the kernel's socket
    // buffers absorb first is not ours to decide (bounded all the same).
    let payload = "p".repeat(1000);
    let mut n = 0;
    while streams_on(&sc, "load").await == 1 {
        assert!(n < 20_000, "the slow stream was never closed");
        let batch: Vec<_> = (0..100)
            .map(|_| json!({"topic": "load", "data": payload}))
            .collect();
        ids_of(&publish_json(&sc, &json!(batch)).await);
        n += 100;
    }
    eprintln!("closed as slow after {n} events");
    let mut s = open(
        &sc,
        "/events?topic=load",
        &token,
        &[("Last-Event-ID", &mark)],
    )
    .await;
    let (_, data) = expect_reset(&mut s).await;
    assert_eq!(data["last_event_id"], mark.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_events_times_out_and_pages() {
    let (_up, sc) = start("poll_timeout = \"1s\"\nhistory = 5000").await;
    let token = sc.token("alice", &["a"]);
    let mark = sc.publish_one("a", "mark").await;
    let r = publish_json(
        &sc,
        &json!([
            {"topic": "a", "data": "one"},
            {"topic": "a", "data": {"two": 2}, "event": "named"},
            {"topic": "b", "data": "other topic"},
        ]),
    )
    .await;
    let ids = ids_of(&r);
    for (path, headers) in [
        (
            format!("/events?topic=a&mode=poll&lastEventId={mark}"),
            vec![],
        ),
        (
            format!("/events?topic=a&lastEventId={mark}"),
            vec![("Accept", "application/json")],
        ),
    ] {
        let p = poll(&sc, &path, &token, &headers).await;
        assert_eq!(p.status, 200);
        assert!(p
            .response
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(
            serde_json::Value::Array(p.items.clone()),
            json!([
                {"id": ids[0], "data": "one"},
                {"id": ids[1], "event": "named", "data": "{\"two\":2}"},
            ])
        );
        assert_eq!(p.next, ids[1]);
    }
    // Nothing after the cursor: [] once poll_timeout passed, and the cursor.
    let started = Instant::now();
    let p = poll(
        &sc,
        &format!("/events?topic=a&mode=poll&lastEventId={}", ids[1]),
        &token,
        &[],
    )
    .await;
    let waited = started.elapsed();
    assert_eq!((p.status, p.items.len()), (200, 0));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(p.next, ids[2], "the newest id issued");
    // Without lastEventId a poll waits for new events only.
    let waiting = {
        let (public, token) = (sc.public.clone(), token.clone());
        tokio::spawn(async move {
            let auth = format!("Bearer {token}");
            support::http::request(
                &public,
                "GET",
                "/events?topic=a&mode=poll",
                &[("Authorization", &auth)],
                b"",
            )
            .await
        })
    };
    eventually("the poll waits", || async {
        streams_on(&sc, "a").await == 1
    })
    .await;
    let fresh = sc.publish_one("a", "fresh").await;
    let r = waiting.await.unwrap();
    assert_eq!(r.json(), json!([{"id": fresh, "data": "fresh"}]));
    assert_eq!(r.header("last-event-id"), Some(fresh.as_str()));
    // A reset is the first element.
    let p = poll(
        &sc,
        "/events?topic=a&mode=poll&lastEventId=bogus",
        &token,
        &[],
    )
    .await;
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0]["event"], "sidecast.reset");
    assert_eq!(p.items[0]["id"].as_str(), Some(p.next.as_str()));
    let data: serde_json::Value =
        serde_json::from_str(p.items[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["last_event_id"], "bogus");
    assert!(data["reason"].is_string());
    // At most 1000 elements; the cursor goes on from there.
    let from = sc.publish_one("a", "page mark").await;
    let mut paged = Vec::new();
    for _ in 0..15 {
        let batch: Vec<_> = (0..100).map(|i| json!({"topic": "a", "data": i})).collect();
        paged.extend(ids_of(&publish_json(&sc, &json!(batch)).await));
    }
    let p = poll(
        &sc,
        &format!("/events?topic=a&mode=poll&lastEventId={from}"),
        &token,
        &[],
    )
    .await;
    assert_eq!(p.items.len(), 1000);
    let got: Vec<&str> = p.items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        got,
        paged[..1000].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(p.next, paged[999]);
    let p = poll(
        &sc,
        &format!("/events?topic=a&mode=poll&lastEventId={}", p.next),
        &token,
        &[],
    )
    .await;
    let got: Vec<&str> = p.items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        got,
        paged[1000..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(p.next, paged[1499]);
}

/// HTTP/1.0 has no chunked encoding: the same frames, unwrapped, replay
/// and live alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_stream_replays_and_goes_on_without_chunks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, sc) = start("").await;
    let token = sc.token("alice", &["a"]);
    let mark = sc.publish_one("a", "mark").await;
    let missed = sc.publish_one("a", "missed\nin two lines").await;
    let mut io = tokio::net::TcpStream::connect(&sc.public).await.unwrap();
    let req = format!(
        "GET /events?topic=a HTTP/1.0\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\nLast-Event-ID: {mark}\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut live = None;
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&raw).contains("data: live\n\n") {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&raw)
        );
        if live.is_none() && String::from_utf8_lossy(&raw).contains("in two lines\n\n") {
            live = Some(sc.publish_one("a", "live").await);
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, io.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let live = live.unwrap();
    assert!(
        body.ends_with(&format!(
            "id: {missed}\ndata: missed\ndata: in two lines\n\nid: {live}\ndata: live\n\n"
        )),
        "{body:?}"
    );
}
