//! The hub's promise, checked without sockets: a subscriber receives every
//! event of its topics in order, or is told (a reset) that it missed some.
//! Unit tests pin each rule; the property tests drive random interleavings
//! of publishing, disconnecting and reconnecting.

use super::*;
use crate::events::frame::NewEvent;
use futures_util::FutureExt;
use proptest::prelude::*;

fn t(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn limits(size: usize, ttl: Duration, bytes: u64) -> HubLimits {
    HubLimits {
        size,
        ttl,
        bytes,
        policies: Vec::new(),
        max_streams: 10_000,
    }
}

fn roomy() -> HubLimits {
    limits(1000, Duration::from_secs(3600), 64 << 20)
}

fn hub(l: HubLimits) -> Hub {
    Hub::new(l, Arc::new(Metrics::new()))
}

fn new_event(topics: &[&str], data: &str, user: Option<&str>) -> NewEvent {
    NewEvent {
        topics: topics.iter().map(|n| t(n)).collect(),
        data: data.to_owned(),
        name: None,
        user: user.map(str::to_owned),
        retry: None,
        idempotency_key: None,
        grip: None,
    }
}

fn publish(h: &Hub, topics: &[&str], data: &str) -> String {
    h.publish(&[new_event(topics, data, None)]).remove(0)
}

fn sub(h: &Hub, topics: &[&str], user: Option<&str>, start: Start) -> (Arc<StreamHandle>, Opening) {
    sub_cap(h, topics, user, start, 1000)
}

fn sub_cap(
    h: &Hub,
    topics: &[&str],
    user: Option<&str>,
    start: Start,
    queue: usize,
) -> (Arc<StreamHandle>, Opening) {
    h.subscribe(Subscribe {
        topics: topics.iter().map(|n| t(n)).collect(),
        user: user.map(Arc::from),
        key_id: None,
        start,
        queue,
        reader: crate::events::frame::Reader::Sse,
    })
    .expect("subscribe")
}

/// Everything queued on a stream now, without waiting, and why it ended if
/// it did.
fn queued(s: &StreamHandle) -> (Vec<Arc<Event>>, Option<Close>) {
    let mut out = Vec::new();
    loop {
        match s.next(&mut out, usize::MAX).now_or_never() {
            None => return (out, None),
            Some(Ok(())) => {}
            Some(Err(c)) => return (out, Some(c)),
        }
    }
}

fn ids(events: &[Arc<Event>]) -> Vec<String> {
    events.iter().map(|e| e.id().to_owned()).collect()
}

fn datas(events: &[Arc<Event>]) -> Vec<String> {
    events.iter().map(|e| e.data()).collect()
}

#[test]
fn replay_after_an_id_is_exactly_what_was_missed_then_live() {
    let h = hub(roomy());
    let (s, o) = sub(&h, &["a"], None, Start::New);
    assert!(o.replay.is_empty() && o.reset.is_none());
    for i in 1..=5 {
        publish(&h, &["a"], &format!("seen {i}"));
    }
    let (seen, _) = queued(&s);
    assert_eq!(seen.len(), 5);
    h.unsubscribe(&s);
    let missed: Vec<String> = (1..=5)
        .map(|i| publish(&h, &["a"], &format!("missed {i}")))
        .collect();
    let (s, o) = sub(&h, &["a"], None, Start::After(seen[4].id().to_owned()));
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), missed);
    assert_eq!(o.newest, missed[4]);
    let live = publish(&h, &["a"], "live");
    assert_eq!(ids(&queued(&s).0), vec![live]);
}

#[test]
fn several_topics_replay_in_one_order_and_once() {
    let h = hub(roomy());
    let start = publish(&h, &["c"], "before");
    let expected = vec![
        publish(&h, &["a"], "1"),
        publish(&h, &["b"], "2"),
        publish(&h, &["a", "b"], "3"),
        publish(&h, &["b"], "4"),
        publish(&h, &["b", "c", "a"], "5"),
        publish(&h, &["a"], "6"),
    ];
    publish(&h, &["c"], "other topic");
    let (s, o) = sub(&h, &["a", "b"], None, Start::After(start));
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), expected);
    assert_eq!(datas(&o.replay), ["1", "2", "3", "4", "5", "6"]);
    let both = publish(&h, &["b", "a"], "live on both");
    let (live, _) = queued(&s);
    assert_eq!(ids(&live), vec![both]);
}

#[test]
fn user_targeted_events_reach_that_user_only_live_and_in_replay() {
    let h = hub(roomy());
    let start = publish(&h, &["a"], "start");
    let (alice, _) = sub(&h, &["a"], Some("alice"), Start::New);
    let (bob, _) = sub(&h, &["a"], Some("bob"), Start::New);
    let (anon, _) = sub(&h, &["a"], None, Start::New);
    let to_alice = h.publish(&[new_event(&["a"], "for alice", Some("alice"))]);
    let all = publish(&h, &["a"], "for all");
    assert_eq!(
        ids(&queued(&alice).0),
        vec![to_alice[0].clone(), all.clone()]
    );
    assert_eq!(ids(&queued(&bob).0), vec![all.clone()]);
    assert_eq!(ids(&queued(&anon).0), vec![all.clone()]);
    let (_, o) = sub(&h, &["a"], Some("bob"), Start::After(start.clone()));
    assert_eq!(ids(&o.replay), vec![all.clone()]);
    let (_, o) = sub(&h, &["a"], Some("alice"), Start::After(start));
    assert_eq!(ids(&o.replay), vec![to_alice[0].clone(), all]);
}

fn reset_reason(o: &Opening) -> &str {
    &o.reset.as_ref().expect("a reset").0
}

#[test]
fn an_evicted_id_resets_with_the_newest_id() {
    let h = hub(limits(3, Duration::from_secs(3600), 64 << 20));
    let issued: Vec<String> = (0..10)
        .map(|i| publish(&h, &["a"], &i.to_string()))
        .collect();
    let (s, o) = sub(&h, &["a"], None, Start::After(issued[0].clone()));
    assert!(o.replay.is_empty());
    assert_eq!(o.newest, issued[9]);
    assert!(reset_reason(&o).contains("no longer in history"));
    assert_eq!(o.reset.as_ref().unwrap().1, issued[0]);
    // Still within the three held: an exact replay.
    let (_, o) = sub(&h, &["a"], None, Start::After(issued[6].clone()));
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), issued[7..].to_vec());
    // The reset stream goes on live.
    let live = publish(&h, &["a"], "live");
    assert_eq!(ids(&queued(&s).0), vec![live]);
}

#[test]
fn unknown_malformed_and_foreign_ids_reset() {
    let h = hub(roomy());
    let id = publish(&h, &["a"], "x");
    let (epoch, _) = id.rsplit_once('-').unwrap();
    let cases = [
        (format!("{epoch}-99"), "unknown id"),
        ("nonsense".to_owned(), "malformed id"),
        (format!("{epoch}-x"), "malformed id"),
        (String::new(), "malformed id"),
        ("0-1".to_owned(), "another epoch"),
    ];
    for (sent, why) in cases {
        let (_, o) = sub(&h, &["a"], None, Start::After(sent.clone()));
        assert!(reset_reason(&o).contains(why), "{sent:?}: {:?}", o.reset);
        assert_eq!(o.reset.as_ref().unwrap().1, sent);
        assert_eq!(o.newest, id);
        assert!(o.replay.is_empty());
    }
}

#[test]
fn ids_of_another_run_never_replay() {
    let first = hub(roomy());
    let old = publish(&first, &["a"], "old run");
    let second = hub(roomy());
    publish(&second, &["a"], "new run");
    publish(&second, &["a"], "new run");
    let (_, o) = sub(&second, &["a"], None, Start::After(old));
    assert!(reset_reason(&o).contains("another epoch"));
}

#[test]
fn the_newest_id_of_an_empty_history_resumes_cleanly() {
    let h = hub(roomy());
    let newest = h.newest_id();
    let (_, o) = sub(&h, &["a"], None, Start::After("garbage".into()));
    assert_eq!(o.newest, newest);
    let first = publish(&h, &["a"], "first");
    let (_, o) = sub(&h, &["a"], None, Start::After(newest));
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), vec![first]);
}

/// The cursor is sent only when nothing else carries an id (no replay, no
/// reset), is the newest id at registration, and on a fresh hub is an id
/// that sorts before every later one: resuming from it replays the first
/// event.
#[test]
fn a_stream_opens_with_the_newest_id_as_its_cursor() {
    let h = hub(roomy());
    let (s, o) = sub(&h, &["a"], None, Start::New);
    let fresh = o.cursor().expect("a cursor on a fresh hub").to_owned();
    assert_eq!(fresh, h.newest_id());
    assert_eq!(fresh.rsplit_once('-').map(|(_, seq)| seq), Some("0"));
    let first = publish(&h, &["a"], "first");
    assert_eq!(ids(&queued(&s).0), vec![first.clone()]);
    let (_, o) = sub(&h, &["a"], None, Start::After(fresh));
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), vec![first.clone()]);
    assert_eq!(o.cursor(), None, "the replay carries the id");

    // Events of other topics move the cursor on: they are not this
    // stream's, and resuming after them loses none of its own.
    let other = publish(&h, &["b"], "elsewhere");
    let (_, o) = sub(&h, &["a"], None, Start::After(first.clone()));
    assert!(o.replay.is_empty());
    assert_eq!(o.cursor(), Some(other.as_str()));
    let (_, o) = sub(&h, &["a"], None, Start::New);
    assert_eq!(o.cursor(), Some(other.as_str()));

    // A reset carries the newest id itself: no cursor after it.
    let (_, o) = sub(&h, &["a"], None, Start::After("garbage".into()));
    assert!(o.reset.is_some());
    assert_eq!(o.cursor(), None);
    // Nothing to replay from history: the cursor.
    let (_, o) = sub(&h, &["c"], None, Start::Earliest);
    assert_eq!(o.cursor(), Some(other.as_str()));
}

/// Registration and cursor are one step: with events published from
/// another thread all along, every stream receives live exactly the events
/// after its cursor, and a resume from the cursor replays exactly those —
/// none falls between the cursor and the first live event, none twice.
#[test]
fn the_cursor_and_the_registration_are_one_step() {
    use std::sync::atomic::AtomicBool;
    const MAX_EVENTS: usize = 20_000;
    const STREAMS: usize = 100;
    let h = Arc::new(hub(limits(MAX_EVENTS, Duration::from_secs(3600), 1 << 30)));
    // Published so far, and what the subscribing side has seen of it: the
    // publisher keeps at most LEAD events ahead, and each subscription
    // waits for it to move on, so streams register at many points of one
    // publishing run, racing it, however the threads are scheduled.
    const LEAD: usize = 50;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(10);
    let publisher = {
        let (h, count, seen, stop) = (h.clone(), count.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            while !stop.load(Ordering::SeqCst)
                && ids.len() < MAX_EVENTS
                && Instant::now() < deadline
            {
                if ids.len() >= seen.load(Ordering::SeqCst) + LEAD {
                    std::thread::yield_now();
                    continue;
                }
                ids.push(publish(&h, &["a"], &ids.len().to_string()));
                count.store(ids.len(), Ordering::SeqCst);
            }
            ids
        })
    };
    let mut streams = Vec::new();
    while streams.len() < STREAMS && Instant::now() < deadline {
        if count.load(Ordering::SeqCst) > seen.load(Ordering::SeqCst) {
            streams.push(sub_cap(&h, &["a"], None, Start::New, MAX_EVENTS + 1));
            seen.store(count.load(Ordering::SeqCst), Ordering::SeqCst);
        } else {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let published = publisher.join().unwrap();
    assert_eq!(streams.len(), STREAMS);
    let mut froms = std::collections::HashSet::new();
    for (s, o) in &streams {
        let cursor = o.cursor().expect("a live stream's cursor");
        let from = published
            .iter()
            .position(|id| id == cursor)
            .map_or(0, |i| i + 1);
        froms.insert(from);
        let (got, closed) = queued(s);
        assert_eq!(closed, None);
        assert_eq!(ids(&got), published[from..].to_vec(), "cursor {cursor}");
        let (_, resumed) = sub(&h, &["a"], None, Start::After(cursor.to_owned()));
        assert_eq!(resumed.reset, None);
        assert_eq!(ids(&resumed.replay), published[from..].to_vec());
    }
    assert!(froms.len() > 10, "streams registered at distinct points");
}

/// Cluster mode: a replica's cursor is the newest id it has ingested from
/// the log. While its history is still being filled, that is behind the
/// cluster's newest, never ahead: every event still to be ingested reaches
/// the stream live and a resume from the cursor elsewhere replays it.
#[test]
fn a_cursor_during_a_backfill_skips_nothing_still_to_come() {
    let h = hub(roomy());
    h.ingest_epoch("redisepoch");
    let log: Vec<u64> = vec![1_000_000, 1_000_001, 2_000_000, 3_000_000];
    h.ingest("redisepoch", log[0], &new_event(&["a"], "0", None));
    h.ingest("redisepoch", log[1], &new_event(&["b"], "1", None));
    let (s, o) = sub(&h, &["a"], None, Start::New);
    assert_eq!(o.cursor(), Some(format_id("redisepoch", log[1]).as_str()));
    for (i, seq) in log.iter().enumerate().skip(2) {
        h.ingest("redisepoch", *seq, &new_event(&["a"], &i.to_string(), None));
    }
    let rest: Vec<String> = log[2..]
        .iter()
        .map(|seq| format_id("redisepoch", *seq))
        .collect();
    assert_eq!(ids(&queued(&s).0), rest);
    // Filled: a new stream's cursor is the cluster's newest id.
    let (_, o) = sub(&h, &["a"], None, Start::New);
    assert_eq!(o.cursor(), Some(rest[1].as_str()));
    // Another replica holding the same log replays from the cursor.
    let other = hub(roomy());
    other.ingest_epoch("redisepoch");
    for (i, seq) in log.iter().enumerate() {
        let topic = if i == 1 { "b" } else { "a" };
        other.ingest("redisepoch", *seq, &new_event(&[topic], "x", None));
    }
    let (_, o) = sub(
        &other,
        &["a"],
        None,
        Start::After(format_id("redisepoch", log[1])),
    );
    assert_eq!(ids(&o.replay), rest);
}

#[test]
fn expired_history_resets_and_is_dropped() {
    let h = hub(limits(1000, Duration::from_secs(1), 64 << 20));
    let ids: Vec<String> = (0..3)
        .map(|i| publish(&h, &["a"], &i.to_string()))
        .collect();
    h.lock().expire(Instant::now() + Duration::from_secs(2));
    assert_eq!(h.history_bytes(), 0);
    let (_, o) = sub(&h, &["a"], None, Start::After(ids[0].clone()));
    assert!(reset_reason(&o).contains("no longer in history"));
    // Nothing after the newest was lost: no reset for that one.
    let (_, o) = sub(&h, &["a"], None, Start::After(ids[2].clone()));
    assert_eq!(o.reset, None);
}

/// What history accounts for one event of `len` bytes of data.
fn event_size(len: usize) -> u64 {
    let h = hub(roomy());
    publish(&h, &["a"], &"x".repeat(len));
    let s = h.lock();
    s.topics[&t("a")].ring[0].size() as u64
}

#[test]
fn the_byte_budget_evicts_oldest_first_across_topics() {
    let probe = event_size(100);
    let budget = probe * 5 + probe / 2;
    let h = hub(limits(1000, Duration::from_secs(3600), budget));
    let first = publish(&h, &["a"], &"1".repeat(100));
    let kept: Vec<String> = (0..5)
        .map(|i| publish(&h, &[if i % 2 == 0 { "b" } else { "a" }], &"2".repeat(100)))
        .collect();
    assert!(h.history_bytes() <= budget);
    assert_eq!(
        h.lock().topics[&t("a")].ring.len(),
        2,
        "the oldest went first"
    );
    let (_, o) = sub(&h, &["a", "b"], None, Start::After(first.clone()));
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), kept);

    let h = hub(limits(
        1000,
        Duration::from_secs(3600),
        probe * 2 + probe / 2,
    ));
    let gone = publish(&h, &["a"], &"1".repeat(100));
    let from = publish(&h, &["a"], &"2".repeat(100));
    let held = vec![
        publish(&h, &["a"], &"3".repeat(100)),
        publish(&h, &["a"], &"4".repeat(100)),
    ];
    let (_, o) = sub(&h, &["a"], None, Start::After(gone));
    assert!(reset_reason(&o).contains("no longer in history"));
    let (_, o) = sub(&h, &["a"], None, Start::After(from));
    assert_eq!(ids(&o.replay), held);
}

#[test]
fn an_event_larger_than_the_budget_is_not_held() {
    let h = hub(limits(1000, Duration::from_secs(3600), 64));
    let before = publish(&h, &["a"], "small?");
    let (s, _) = sub(&h, &["a"], None, Start::New);
    let big = publish(&h, &["a"], &"x".repeat(1000));
    assert_eq!(ids(&queued(&s).0), vec![big]);
    assert_eq!(h.history_bytes(), 0);
    let (_, o) = sub(&h, &["a"], None, Start::After(before));
    assert!(o.reset.is_some());
}

#[test]
fn earliest_and_last_n_respect_the_user() {
    let h = hub(roomy());
    let mut mine = Vec::new();
    for i in 0..6 {
        mine.push(publish(&h, &["a"], &i.to_string()));
        h.publish(&[new_event(&["a"], "for bob", Some("bob"))]);
    }
    let (s, o) = sub(&h, &["a"], Some("alice"), Start::Earliest);
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), mine);
    let (_, o) = sub(&h, &["a"], Some("alice"), Start::Last(3));
    assert_eq!(ids(&o.replay), mine[3..].to_vec());
    let (_, o) = sub(&h, &["a"], Some("bob"), Start::Last(3));
    assert_eq!(datas(&o.replay), ["for bob", "5", "for bob"]);
    let (_, o) = sub(&h, &["a"], None, Start::Last(100));
    assert_eq!(ids(&o.replay), mine);
    let live = publish(&h, &["a"], "live");
    assert_eq!(ids(&queued(&s).0), vec![live]);
}

#[test]
fn history_policies_by_pattern_first_match_wins_and_reload_applies_to_new_events() {
    let policy = |pattern: &str, size: usize| HistoryPolicy {
        pattern: crate::topic::Pattern::parse(pattern).unwrap(),
        size,
        ttl: Duration::from_secs(3600),
    };
    let mut l = roomy();
    l.policies = vec![policy("prices/**", 1), policy("prices/*", 50)];
    let h = hub(l.clone());
    for i in 0..20 {
        publish(&h, &["prices/eur"], &i.to_string());
        publish(&h, &["chat"], &i.to_string());
    }
    let (_, o) = sub(&h, &["prices/eur"], None, Start::Earliest);
    assert_eq!(datas(&o.replay), ["19"]);
    let (_, o) = sub(&h, &["chat"], None, Start::Earliest);
    assert_eq!(o.replay.len(), 20);
    l.policies = vec![policy("prices/**", 3)];
    h.set_limits(l);
    let (_, o) = sub(&h, &["prices/eur"], None, Start::Earliest);
    assert_eq!(
        datas(&o.replay),
        ["19"],
        "a reload does not change what is held"
    );
    for i in 20..25 {
        publish(&h, &["prices/eur"], &i.to_string());
    }
    let (_, o) = sub(&h, &["prices/eur"], None, Start::Earliest);
    assert_eq!(datas(&o.replay), ["22", "23", "24"]);
}

#[test]
fn a_full_queue_closes_that_stream_only() {
    let h = hub(roomy());
    let (slow, _) = sub_cap(&h, &["a"], None, Start::New, 3);
    let (fast, _) = sub_cap(&h, &["a"], None, Start::New, 3);
    let mut published = Vec::new();
    for i in 0..10 {
        published.push(publish(&h, &["a"], &i.to_string()));
        assert_eq!(queued(&fast).0.len(), 1);
    }
    let (left, why) = queued(&slow);
    assert!(left.is_empty(), "a slow stream's queue is dropped at once");
    assert_eq!(why, Some(Close::Slow));
    h.unsubscribe(&slow);
    // Reconnecting from the last id it wrote gives what it missed.
    let (_, o) = sub(&h, &["a"], None, Start::After(published[1].clone()));
    assert_eq!(ids(&o.replay), published[2..].to_vec());
}

#[test]
fn disconnect_matches_every_filter_given() {
    let h = hub(roomy());
    let (a1, _) = sub(&h, &["x"], Some("alice"), Start::New);
    let (a2, _) = sub(&h, &["y"], Some("alice"), Start::New);
    let (b1, _) = sub(&h, &["x"], Some("bob"), Start::New);
    let why = Close::Disconnect {
        reason: "ban".into(),
        reconnect: false,
    };
    assert_eq!(h.disconnect(Some("carol"), None, why.clone()), 0);
    assert_eq!(h.disconnect(Some("alice"), Some(&t("x")), why.clone()), 1);
    assert!(a1.is_closed() && !a2.is_closed() && !b1.is_closed());
    assert_eq!(h.disconnect(Some("alice"), None, why.clone()), 1);
    assert_eq!(queued(&a2).1, Some(why.clone()));
    assert_eq!(h.disconnect(None, Some(&t("x")), why), 1);
    assert!(b1.is_closed());
}

#[test]
fn topic_info_counts_streams_and_history_and_forgets_empty_topics() {
    let h = hub(roomy());
    assert!(h.topic_info(&t("a")).is_none());
    let (s1, _) = sub(&h, &["a"], None, Start::New);
    let (s2, _) = sub(&h, &["a", "b"], None, Start::New);
    let i = h.topic_info(&t("a")).unwrap();
    assert_eq!((i.streams, i.held, i.last_id), (2, 0, None));
    let id = publish(&h, &["a"], "x");
    let i = h.topic_info(&t("a")).unwrap();
    assert_eq!((i.streams, i.held, i.last_id), (2, 1, Some(id)));
    h.unsubscribe(&s1);
    h.unsubscribe(&s2);
    h.unsubscribe(&s2);
    assert_eq!(h.open_streams(), 0);
    assert_eq!(h.topic_info(&t("a")).unwrap().streams, 0);
    assert!(h.topic_info(&t("b")).is_none());
    assert!(
        !h.lock().topics.contains_key(&t("b")),
        "an empty topic is forgotten"
    );
    let names: Vec<String> = h.topics().iter().map(|i| i.topic.to_string()).collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn max_streams_refuses_beyond_the_limit() {
    let mut l = roomy();
    l.max_streams = 1;
    let h = hub(l);
    let (s, _) = sub(&h, &["a"], None, Start::New);
    let refused = h.subscribe(Subscribe {
        topics: vec![t("a")],
        user: None,
        key_id: None,
        start: Start::New,
        queue: 10,
        reader: crate::events::frame::Reader::Sse,
    });
    assert_eq!(refused.err(), Some(Refused::TooManyStreams));
    h.unsubscribe(&s);
    assert!(h
        .subscribe(Subscribe {
            topics: vec![t("a")],
            user: None,
            key_id: None,
            start: Start::New,
            queue: 10,
            reader: crate::events::frame::Reader::Sse,
        })
        .is_ok());
}

/// Checks what the hub holds against its limits: ring sizes, the byte
/// budget, and that the byte count is the sum of the distinct events held.
fn check_bounds(h: &Hub) {
    let s = h.lock();
    let mut held: Vec<&Arc<Event>> = Vec::new();
    for ts in s.topics.values() {
        assert!(ts.ring.len() <= ts.size, "ring over its size");
        assert!(ts
            .ring
            .iter()
            .zip(ts.ring.iter().skip(1))
            .all(|(a, b)| a.seq < b.seq));
        held.extend(ts.ring.iter());
    }
    held.sort_by_key(|e| e.seq);
    held.dedup_by_key(|e| e.seq);
    let bytes: u64 = held.iter().map(|e| e.size() as u64).sum();
    assert_eq!(s.bytes, bytes, "byte count drifted");
    assert!(s.bytes <= s.limits.bytes, "over the byte budget");
    let ring_total: usize = s.topics.values().map(|t| t.ring.len()).sum();
    assert!(s.fifo.len() <= 64.max(2 * ring_total) + 1, "fifo grows");
}

const TOPICS: [&str; 3] = ["a", "b", "c"];
const USERS: [Option<&str>; 3] = [None, Some("alice"), Some("bob")];

#[derive(Clone, Debug)]
enum Op {
    /// Publishes a batch: each item a topic mask (1..=7) and a user index.
    Publish(Vec<(u8, usize)>),
    /// The client reads this many queued events, then its connection drops.
    Disconnect(usize),
    /// The client reconnects with its last id.
    Reconnect,
    /// The client reads what is queued.
    Read,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((1u8..8, 0usize..3), 1..4).prop_map(Op::Publish),
        1 => (0usize..6).prop_map(Op::Disconnect),
        1 => Just(Op::Reconnect),
        2 => Just(Op::Read),
    ]
}

fn topics_of(mask: u8) -> Vec<&'static str> {
    (0..3)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| TOPICS[i])
        .collect()
}

/// One client's run: connected or not, the last id it read, and all it
/// received, in order.
struct Client {
    stream: Option<Arc<StreamHandle>>,
    last: Option<String>,
    got: Vec<String>,
}

impl Client {
    fn read(&mut self, h: &Hub, at_most: usize) {
        let Some(s) = self.stream.clone() else {
            return;
        };
        let mut out = Vec::new();
        let mut closed = None;
        while out.len() < at_most {
            let want = at_most - out.len();
            match s.next(&mut out, want).now_or_never() {
                None => break,
                Some(Ok(())) => {}
                Some(Err(c)) => {
                    closed = Some(c);
                    break;
                }
            }
        }
        self.take(&out);
        if closed.is_some() {
            h.unsubscribe(&s);
            self.stream = None;
        }
    }

    fn take(&mut self, events: &[Arc<Event>]) {
        for e in events {
            self.got.push(e.id().to_owned());
            self.last = Some(e.id().to_owned());
        }
    }

    fn connect(&mut self, h: &Hub, topics: &[&str], user: Option<&str>, queue: usize) {
        if self.stream.is_some() {
            return;
        }
        let start = self.last.clone().map_or(Start::New, Start::After);
        let (s, o) = sub_cap(h, topics, user, start, queue);
        assert_eq!(o.reset, None, "within history there is no reset");
        self.take(&o.replay);
        // As a browser does: the cursor block's `id:` becomes its last id.
        if let Some(cursor) = o.cursor() {
            self.last = Some(cursor.to_owned());
        }
        self.stream = Some(s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the interleaving of publishing, dropped connections (some
    /// by a full queue) and reconnects with the last id, a client's
    /// concatenated receipts are the published sequence of what it may see.
    #[test]
    fn a_client_receives_its_sequence_across_reconnects(
        client_mask in 1u8..8,
        client_user in 0usize..3,
        queue in 2usize..12,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let h = hub(roomy());
        let topics = topics_of(client_mask);
        let user = USERS[client_user];
        let mut published: Vec<(String, u8, Option<&str>)> = Vec::new();
        let mut c = Client { stream: None, last: None, got: Vec::new() };
        c.connect(&h, &topics, user, queue);
        for op in ops {
            match op {
                Op::Publish(items) => {
                    let batch: Vec<NewEvent> = items
                        .iter()
                        .map(|(m, u)| new_event(&topics_of(*m), "d", USERS[*u]))
                        .collect();
                    let issued = h.publish(&batch);
                    for (id, (m, u)) in issued.into_iter().zip(items) {
                        published.push((id, m, USERS[u]));
                    }
                }
                Op::Disconnect(n) => {
                    c.read(&h, n);
                    if let Some(s) = c.stream.take() {
                        h.unsubscribe(&s);
                    }
                }
                Op::Reconnect => c.connect(&h, &topics, user, queue),
                Op::Read => c.read(&h, usize::MAX),
            }
            check_bounds(&h);
        }
        c.read(&h, usize::MAX);
        c.connect(&h, &topics, user, queue);
        c.read(&h, usize::MAX);
        let expected: Vec<String> = published
            .into_iter()
            .filter(|(_, m, u)| m & client_mask != 0 && (u.is_none() || *u == user))
            .map(|(id, _, _)| id)
            .collect();
        prop_assert_eq!(c.got, expected);
    }

    /// History stays within its count, age and byte limits, and a replay
    /// from any id it ever issued is either exactly the events after it or
    /// a reset, never wrong events.
    #[test]
    fn history_is_bounded_and_replay_is_exact_or_a_reset(
        size in 1usize..8,
        budget in 200u64..3000,
        items in prop::collection::vec((1u8..8, 0usize..3, 0usize..300), 1..80),
        from in any::<prop::sample::Index>(),
        client_mask in 1u8..8,
        client_user in 0usize..3,
    ) {
        let h = hub(limits(size, Duration::from_secs(3600), budget));
        let mut published = Vec::new();
        for (m, u, len) in &items {
            let id = h.publish(&[new_event(&topics_of(*m), &"x".repeat(*len), USERS[*u])]).remove(0);
            published.push((id, *m, USERS[*u]));
            check_bounds(&h);
        }
        let i = from.index(published.len());
        let user = USERS[client_user];
        let (_, o) = sub(&h, &topics_of(client_mask), user, Start::After(published[i].0.clone()));
        let expected: Vec<String> = published[i + 1..]
            .iter()
            .filter(|(_, m, u)| m & client_mask != 0 && (u.is_none() || *u == user))
            .map(|(id, _, _)| id.clone())
            .collect();
        match &o.reset {
            None => prop_assert_eq!(ids(&o.replay), expected),
            Some(_) => {
                prop_assert!(o.replay.is_empty());
                // A reset only where some topic of the stream no longer
                // holds one of its events after the id (history is kept per
                // topic; whoever the event was for).
                let s = h.lock();
                let gone = (0..3).filter(|k| client_mask & (1 << k) != 0).any(|k| {
                    let held: Vec<u64> = s
                        .topics
                        .get(&t(TOPICS[k]))
                        .map(|ts| ts.ring.iter().map(|e| e.seq).collect())
                        .unwrap_or_default();
                    published[i + 1..].iter().enumerate().any(|(j, (_, m, _))| {
                        let seq = (i + 2 + j) as u64;
                        m & (1 << k) != 0 && !held.contains(&seq)
                    })
                });
                prop_assert!(gone, "a reset although every event after the id is held");
            }
        }
        {
            let mut s = h.lock();
            s.expire(Instant::now() + Duration::from_secs(3601));
            s.trim_fifo();
        }
        check_bounds(&h);
        prop_assert_eq!(h.history_bytes(), 0);
    }
}

/// A topic forgotten (no streams, nothing held) must not make another
/// topic's client reset: eviction is remembered per topic.
#[test]
fn a_forgotten_topic_does_not_reset_the_clients_of_others() {
    let mut l = roomy();
    l.policies = vec![HistoryPolicy {
        pattern: crate::topic::Pattern::parse("typing/**").unwrap(),
        size: 0,
        ttl: Duration::from_secs(3600),
    }];
    let h = hub(l);
    let (s, _) = sub(&h, &["room", "user/alice"], Some("alice"), Start::New);
    let last = publish(&h, &["room"], "hello");
    assert_eq!(ids(&queued(&s).0), vec![last.clone()]);
    h.unsubscribe(&s);
    // Events nobody keeps, on a topic nobody listens to: forgotten at once.
    publish(&h, &["typing/bob"], "...");
    h.sweep();
    let mine = publish(&h, &["user/alice"], "for alice");
    let (_, o) = sub(
        &h,
        &["room", "user/alice"],
        Some("alice"),
        Start::After(last.clone()),
    );
    assert_eq!(o.reset, None);
    assert_eq!(ids(&o.replay), vec![mine]);

    // The same where alice's own topic is gone when she comes back.
    let h = hub(roomy());
    let (s, _) = sub(&h, &["room", "user/alice"], Some("alice"), Start::New);
    let last = publish(&h, &["room"], "hello");
    h.unsubscribe(&s);
    drop(queued(&s));
    let gone = publish(&h, &["user/carol"], "soon evicted");
    h.lock().expire(Instant::now() + Duration::from_secs(3601));
    h.sweep();
    assert!(h.topic_info(&t("user/carol")).is_none());
    let (_, o) = sub(
        &h,
        &["room", "user/alice"],
        Some("alice"),
        Start::After(last.clone()),
    );
    assert_eq!(o.reset, None, "nothing of alice's topics was lost");
    // ...while carol, whose event expired, is told.
    let (_, o) = sub(&h, &["user/carol"], Some("carol"), Start::After(last));
    assert!(o.reset.is_some());
    let (_, o) = sub(&h, &["user/carol"], Some("carol"), Start::After(gone));
    assert_eq!(o.reset, None);
}

/// Cluster mode: when Redis lost its data set, a replica moves to a new
/// epoch. Its open streams may have missed events Redis acknowledged but the
/// replica had not read: each is told at once, in band, with a reset whose
/// id is the new epoch's first, and goes on live in the new epoch.
#[test]
fn a_new_epoch_resets_every_open_stream_in_band() {
    let h = hub(roomy());
    h.ingest_epoch("first");
    h.ingest("first", 1_000_000, &new_event(&["a"], "0", None));
    let (s, _) = sub(&h, &["a"], None, Start::New);
    let (other, _) = sub(&h, &["b"], None, Start::New);
    h.ingest("first", 2_000_000, &new_event(&["a"], "1", None));
    h.ingest_epoch("second");
    h.ingest("second", 5_000_000, &new_event(&["a"], "2", None));
    let (events, closed) = queued(&s);
    assert_eq!(closed, None, "the stream goes on");
    assert_eq!(
        ids(&events),
        [
            format_id("first", 2_000_000),
            format_id("second", 0),
            format_id("second", 5_000_000)
        ]
    );
    let sse = String::from_utf8(events[1].sse().to_vec()).unwrap();
    assert!(sse.contains("event: sidecast.reset\n"), "{sse}");
    assert!(sse.contains("\"last_event_id\":null"), "{sse}");
    // A stream of other topics is told too: its ids are of the old epoch.
    assert_eq!(ids(&queued(&other).0), [format_id("second", 0)]);
    // The same epoch again is no change.
    h.ingest_epoch("second");
    assert!(queued(&s).0.is_empty());
}

/// A GRIP hold carries the app's format: a new epoch's reset, an SSE
/// notice, is not written into it.
#[test]
fn a_new_epoch_reset_skips_grip_holds() {
    let h = hub(roomy());
    h.ingest_epoch("first");
    let held = h
        .subscribe(Subscribe {
            topics: vec![t("a")],
            user: None,
            key_id: None,
            start: Start::New,
            queue: 8,
            reader: crate::events::frame::Reader::Held,
        })
        .expect("subscribe")
        .0;
    h.ingest_epoch("second");
    h.ingest("second", 7, &new_event(&["a"], "after", None));
    assert_eq!(datas(&queued(&held).0), ["after"]);
}
