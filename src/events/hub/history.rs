//! History: each topic's ring bounded by count and age, one byte budget
//! for all topics (oldest first across topics), and what is remembered of
//! topics dropped entirely. Every function runs under the hub lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{State, TopicState};
use crate::topic::Topic;

impl TopicState {
    /// Drops the oldest event of the topic's ring.
    pub(super) fn drop_front(&mut self, bytes: &mut u64) {
        if let Some(ev) = self.ring.pop_front() {
            self.evicted = self.evicted.max(ev.seq);
            if ev.rings.fetch_sub(1, Ordering::Relaxed) == 1 {
                *bytes -= ev.size() as u64;
            }
        }
    }
}

/// Drops what has outlived the topic's ttl.
fn expire_topic(topic: &mut TopicState, bytes: &mut u64, now: Instant) {
    while topic
        .ring
        .front()
        .is_some_and(|e| now.duration_since(e.published) > topic.ttl)
    {
        topic.drop_front(bytes);
    }
}

impl State {
    /// Drops what has outlived its topic's ttl, in every topic (the
    /// once-a-second sweep).
    pub(super) fn expire(&mut self, now: Instant) {
        let State { topics, bytes, .. } = self;
        for t in topics.values_mut() {
            expire_topic(t, bytes, now);
        }
    }

    /// The same for a few topics: what a subscribe or a topic query needs,
    /// without walking every topic under the lock.
    pub(super) fn expire_some(&mut self, names: &[Topic], now: Instant) {
        let State { topics, bytes, .. } = self;
        for name in names {
            if let Some(t) = topics.get_mut(name) {
                expire_topic(t, bytes, now);
            }
        }
    }

    /// Drops from the front of the byte-budget order what no ring holds.
    pub(super) fn trim_fifo(&mut self) {
        while self
            .fifo
            .front()
            .is_some_and(|e| e.rings.load(Ordering::Relaxed) == 0)
        {
            self.fifo.pop_front();
        }
    }

    /// Evicts the oldest events, across topics, until history fits its
    /// byte budget.
    pub(super) fn enforce_budget(&mut self) {
        while self.bytes > self.limits.bytes {
            let Some(ev) = self.fifo.pop_front() else {
                break;
            };
            for t in ev.topics.iter() {
                if let Some(ts) = self.topics.get_mut(t) {
                    if ts.ring.front().is_some_and(|f| Arc::ptr_eq(f, &ev)) {
                        ts.drop_front(&mut self.bytes);
                    }
                }
            }
        }
        self.trim_fifo();
        if self.fifo.len() > 64
            && self.fifo.len() > 2 * self.topics.values().map(|t| t.ring.len()).sum::<usize>()
        {
            self.fifo.retain(|e| e.rings.load(Ordering::Relaxed) > 0);
        }
    }

    /// A topic's state, created on first use with the history policy of
    /// the current configuration (re-read after a reload).
    pub(super) fn topic(&mut self, topic: &Topic) -> &mut TopicState {
        let generation = self.generation;
        let State {
            limits,
            forgotten,
            topics,
            ..
        } = self;
        let ts = topics.entry(topic.clone()).or_insert_with(|| {
            let (size, ttl) = limits.policy(topic);
            TopicState {
                subs: HashMap::new(),
                ring: VecDeque::new(),
                evicted: forgotten.revive(topic),
                size,
                ttl,
                generation,
            }
        });
        if ts.generation != generation {
            (ts.size, ts.ttl) = limits.policy(topic);
            ts.generation = generation;
        }
        ts
    }

    /// Drops a topic with neither streams nor history, remembering what it
    /// lost.
    pub(super) fn forget(&mut self, topic: &Topic) {
        if let Some(ts) = self.topics.get(topic) {
            if ts.subs.is_empty() && ts.ring.is_empty() {
                let lost = ts.evicted;
                self.topics.remove(topic);
                self.forgotten.remember(topic.clone(), lost);
            }
        }
    }
}
