//! The hub: topics with their streams and history, one lock for all.
//!
//! One lock is deliberate: an event's id is assigned, it enters history and
//! it is queued to every stream in one critical section, so every stream
//! sees events in id order, and a subscriber's replay and its registration
//! for live events happen at one instant (no event can fall between them).
//! Pushing into a stream queue never waits, so the section stays short.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::frame::{Draft, Event, NewEvent, Reader};
use super::queue::{Close, StreamHandle};
use crate::config::{Config, HistoryPolicy};
use crate::metrics::Metrics;
use crate::topic::Topic;
use forgotten::Forgotten;

/// How a new stream starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Live events only.
    New,
    /// Everything after this id (`Last-Event-ID`).
    After(String),
    /// All that history holds.
    Earliest,
    /// The newest N events history holds.
    Last(usize),
}

/// What a stream is opened with.
#[derive(Debug)]
pub struct Opening {
    pub replay: Vec<Arc<Event>>,
    /// A reset instead of a replay: (reason, the id the client sent).
    pub reset: Option<(String, String)>,
    /// The newest id issued when the stream was registered, read under the
    /// same lock (the reset's `id:`, or the cursor). In an epoch that has
    /// issued none yet it is seq 0, which sorts before every later id.
    pub newest: String,
}

impl Opening {
    /// The id a stream opens with when nothing else carries one (no reset,
    /// no replay): sent as a block with only `id:`, so that a client whose
    /// stream drops before its first event comes back with it as
    /// `Last-Event-ID` and is replayed what it missed, instead of
    /// reconnecting live only and losing it silently. It is the newest id
    /// at the instant of registration, so every later event reaches the
    /// stream live and none falls between the cursor and the first one.
    pub fn cursor(&self) -> Option<&str> {
        (self.reset.is_none() && self.replay.is_empty()).then_some(self.newest.as_str())
    }
}

/// A subscription request.
pub struct Subscribe {
    pub topics: Vec<Topic>,
    pub user: Option<Arc<str>>,
    pub key_id: Option<Arc<str>>,
    pub start: Start,
    pub queue: usize,
    pub reader: Reader,
}

/// The hub's limits under one configuration: history (its size, age and
/// bytes, per topic by policy) and the number of open streams.
#[derive(Clone, Debug)]
pub struct HubLimits {
    pub size: usize,
    pub ttl: Duration,
    pub bytes: u64,
    pub policies: Vec<HistoryPolicy>,
    pub max_streams: usize,
}

impl HubLimits {
    pub fn new(config: &Config, max_streams: usize) -> HubLimits {
        HubLimits {
            size: config.events.history,
            ttl: config.events.history_ttl,
            bytes: config.events.history_bytes,
            policies: config.history.clone(),
            max_streams,
        }
    }

    fn policy(&self, topic: &Topic) -> (usize, Duration) {
        self.policies
            .iter()
            .find(|p| p.pattern.matches(topic))
            .map_or((self.size, self.ttl), |p| (p.size, p.ttl))
    }
}

struct TopicState {
    subs: HashMap<u64, Arc<StreamHandle>>,
    ring: VecDeque<Arc<Event>>,
    /// Highest seq ever dropped from `ring`: a replay from before it has a gap.
    evicted: u64,
    size: usize,
    ttl: Duration,
    generation: u64,
}

struct State {
    epoch: Arc<str>,
    last_seq: u64,
    topics: HashMap<Topic, TopicState>,
    /// Events in publish order, for the byte budget (entries no ring holds
    /// any more are skipped and trimmed).
    fifo: VecDeque<Arc<Event>>,
    bytes: u64,
    /// What topics dropped entirely had lost.
    forgotten: Forgotten,
    streams: HashMap<u64, Arc<StreamHandle>>,
    limits: HubLimits,
    generation: u64,
}

/// Refusals at subscribe time.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyStreams,
}

pub struct Hub {
    state: Mutex<State>,
    next_stream: AtomicU64,
    open: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// The textual id of `seq` in `epoch`.
pub fn format_id(epoch: &str, seq: u64) -> String {
    format!("{epoch}-{seq}")
}

/// A new epoch for this run: the start time, so that ids from an earlier run
/// never match, plus randomness against two starts in one millisecond.
pub fn new_epoch() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{ms:x}{:04x}", fastrand::u16(..))
}

impl State {
    /// History, fan-out and accounting for one event with its seq assigned.
    fn deliver(&mut self, ev: Arc<Event>, metrics: &Metrics) {
        self.last_seq = ev.seq;
        let mut held = false;
        let mut delivered = 0u64;
        let mut seen: Vec<u64> = Vec::new();
        let multi = ev.topics.len() > 1;
        let mut bytes = self.bytes;
        for t in ev.topics.iter() {
            let ts = self.topic(t);
            if ts.size > 0 {
                ts.ring.push_back(ev.clone());
                ev.rings.fetch_add(1, Ordering::Relaxed);
                held = true;
                while ts.ring.len() > ts.size {
                    ts.drop_front(&mut bytes);
                }
            } else {
                ts.evicted = ev.seq;
            }
            for (id, s) in &ts.subs {
                if !ev.reaches(s.user.as_deref(), s.reader) {
                    continue;
                }
                if multi {
                    if seen.contains(id) {
                        continue;
                    }
                    seen.push(*id);
                }
                s.push(&ev);
                delivered += 1;
            }
        }
        if held {
            bytes += ev.size() as u64;
            self.fifo.push_back(ev);
        }
        self.bytes = bytes;
        self.enforce_budget();
        metrics.events_delivered.inc_by(delivered);
    }
}

/// One topic's numbers for `GET /topics`.
#[derive(Debug, serde::Serialize)]
pub struct TopicInfo {
    pub topic: Topic,
    pub streams: usize,
    pub last_id: Option<String>,
    pub held: usize,
}

impl Hub {
    pub fn new(limits: HubLimits, metrics: Arc<Metrics>) -> Hub {
        Hub {
            state: Mutex::new(State {
                epoch: new_epoch().into(),
                last_seq: 0,
                topics: HashMap::new(),
                fifo: VecDeque::new(),
                bytes: 0,
                forgotten: Forgotten::default(),
                streams: HashMap::new(),
                limits,
                generation: 0,
            }),
            next_stream: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New limits from a reloaded configuration; history policies apply to
    /// events published from now on.
    pub fn set_limits(&self, limits: HubLimits) {
        let mut s = self.lock();
        s.limits = limits;
        s.generation += 1;
        s.enforce_budget();
    }

    /// Assigns ids and delivers a batch, in order. Each event is framed
    /// before the lock is taken; under it only its id is written in.
    pub fn publish(&self, batch: &[NewEvent]) -> Vec<String> {
        let drafts: Vec<Draft> = batch.iter().map(Draft::new).collect();
        let mut ids = Vec::with_capacity(batch.len());
        let mut s = self.lock();
        for draft in drafts {
            let seq = s.last_seq + 1;
            let id = format_id(&s.epoch, seq);
            let ev = Arc::new(Event::from_draft(seq, &id, draft));
            s.deliver(ev, &self.metrics);
            ids.push(id);
        }
        self.metrics.events_published.inc_by(batch.len() as u64);
        ids
    }

    /// Opens a stream: its replay (or reset, or cursor) and its
    /// registration for live events, at one instant.
    pub fn subscribe(&self, req: Subscribe) -> Result<(Arc<StreamHandle>, Opening), Refused> {
        let mut s = self.lock();
        if self.open.load(Ordering::Relaxed) >= s.limits.max_streams {
            return Err(Refused::TooManyStreams);
        }
        let opening = s.opening(&req.topics, req.user.as_deref(), req.reader, &req.start);
        let handle = Arc::new(StreamHandle::new(
            self.next_stream.fetch_add(1, Ordering::Relaxed),
            req.user,
            req.topics.into_boxed_slice(),
            req.key_id,
            req.reader,
            req.queue,
        ));
        for t in handle.topics.iter() {
            s.topic(t).subs.insert(handle.id, handle.clone());
        }
        s.streams.insert(handle.id, handle.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok((handle, opening))
    }

    pub fn unsubscribe(&self, handle: &StreamHandle) {
        let mut s = self.lock();
        if s.streams.remove(&handle.id).is_none() {
            return;
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        for t in handle.topics.iter() {
            if let Some(ts) = s.topics.get_mut(t) {
                ts.subs.remove(&handle.id);
            }
            s.forget(t);
        }
    }

    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Whether a stream opened now would be refused as one too many: what a
    /// `HEAD` answers by, as its `GET` would be answered.
    pub fn is_full(&self) -> bool {
        let s = self.lock();
        self.open.load(Ordering::Relaxed) >= s.limits.max_streams
    }

    /// Closes the streams that match every filter given; returns how many.
    pub fn disconnect(&self, user: Option<&str>, topic: Option<&Topic>, why: Close) -> usize {
        let s = self.lock();
        let mut n = 0;
        for h in s.streams.values() {
            if user.is_some_and(|u| h.user.as_deref() != Some(u)) {
                continue;
            }
            if topic.is_some_and(|t| !h.topics.contains(t)) {
                continue;
            }
            if !h.is_closed() {
                h.close(why.clone());
                n += 1;
            }
        }
        n
    }

    /// Closes the streams whose token was verified by a key that `keep`
    /// rejects (a key removed by a reload).
    pub fn revoke(&self, keep: impl Fn(&str) -> bool) -> usize {
        let s = self.lock();
        let mut n = 0;
        for h in s.streams.values() {
            if h.key_id.as_deref().is_some_and(|k| !keep(k)) {
                h.close(Close::Revoked);
                n += 1;
            }
        }
        n
    }

    /// Every open stream, for a drain.
    pub fn streams(&self) -> Vec<Arc<StreamHandle>> {
        self.lock().streams.values().cloned().collect()
    }

    /// Sweeps expired history every second while the process lives.
    pub fn spawn_sweep(self: &Arc<Self>) {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                hub.sweep();
            }
        });
    }

    /// Drops expired history; run every second.
    pub fn sweep(&self) {
        let mut s = self.lock();
        s.expire(Instant::now());
        let empty: Vec<Topic> = s
            .topics
            .iter()
            .filter(|(_, t)| t.subs.is_empty() && t.ring.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for t in empty {
            s.forget(&t);
        }
        s.trim_fifo();
    }

    #[cfg(test)]
    pub fn newest_id(&self) -> String {
        let s = self.lock();
        format_id(&s.epoch, s.last_seq)
    }

    pub fn topic_info(&self, topic: &Topic) -> Option<TopicInfo> {
        let mut s = self.lock();
        s.expire_some(std::slice::from_ref(topic), Instant::now());
        let epoch = s.epoch.clone();
        let ts = s.topics.get(topic)?;
        (!ts.subs.is_empty() || !ts.ring.is_empty()).then(|| TopicInfo {
            topic: topic.clone(),
            streams: ts.subs.len(),
            last_id: ts.ring.back().map(|e| format_id(&epoch, e.seq)),
            held: ts.ring.len(),
        })
    }

    pub fn topics(&self) -> Vec<TopicInfo> {
        let names: Vec<Topic> = {
            let mut s = self.lock();
            s.expire(Instant::now());
            let mut v: Vec<Topic> = s.topics.keys().cloned().collect();
            v.sort();
            v
        };
        names.iter().filter_map(|t| self.topic_info(t)).collect()
    }

    /// Cluster mode: starts `epoch` (a new Redis data set) with an empty
    /// history; a client holding an id of the old epoch gets a reset.
    pub fn ingest_epoch(&self, epoch: &str) {
        let mut s = self.lock();
        if &*s.epoch == epoch {
            return;
        }
        // The open streams' ids belong to the old epoch, and events of it
        // that Redis acknowledged but this replica had not read yet are
        // gone with the data set: every open stream is told now, in band,
        // with a reset whose id is the new epoch's first, and goes on live
        // (never a silent gap, and no reconnect storm).
        let reset = Arc::new(Event::new(
            0,
            &format_id(epoch, 0),
            &NewEvent {
                topics: Vec::new(),
                data: serde_json::json!({
                    "reason": "the cluster's history was lost (a new epoch)",
                    "last_event_id": serde_json::Value::Null,
                })
                .to_string(),
                name: Some("sidecast.reset".into()),
                user: None,
                retry: None,
                idempotency_key: None,
                grip: None,
            },
        ));
        // SSE streams only: a GRIP hold carries the app's format, with no
        // place for sidecast's notices.
        for h in s.streams.values() {
            if h.reader == Reader::Sse && !h.is_closed() && h.push(&reset) {
                self.metrics.resets.inc();
            }
        }
        s.epoch = epoch.into();
        s.last_seq = 0;
        s.forgotten = forgotten::Forgotten::default();
        s.fifo.clear();
        s.bytes = 0;
        for t in s.topics.values_mut() {
            for e in t.ring.drain(..) {
                e.rings.store(0, Ordering::Relaxed);
            }
            t.evicted = 0;
        }
    }

    /// Cluster mode: delivers an event read from the log with the seq Redis
    /// gave it; a seq not after the newest is a duplicate and skipped.
    pub fn ingest(&self, epoch: &str, seq: u64, new: &NewEvent) {
        let mut s = self.lock();
        if &*s.epoch != epoch || seq <= s.last_seq {
            return;
        }
        let id = format_id(epoch, seq);
        let ev = Arc::new(Event::new(seq, &id, new));
        s.deliver(ev, &self.metrics);
        self.metrics.events_published.inc();
    }

    /// Bytes of history held.
    #[cfg(test)]
    pub fn history_bytes(&self) -> u64 {
        self.lock().bytes
    }
}

mod forgotten;
mod history;
mod replay;

#[cfg(test)]
mod tests;
