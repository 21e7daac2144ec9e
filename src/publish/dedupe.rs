//! Idempotency: keys accepted within `dedupe_window` are answered with the
//! first call's ids instead of publishing again. The check and the publish
//! happen under one lock, so two concurrent retries publish once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::events::frame::NewEvent;

#[derive(Default)]
pub struct Dedupe {
    events: HashMap<String, String>,
    requests: HashMap<String, Vec<String>>,
    /// Expiry order: (when, is_request, key).
    order: VecDeque<(Instant, bool, String)>,
}

/// What becomes of one event of a batch.
enum Slot {
    /// Published now.
    Fresh,
    /// Its key was accepted before: the first one's id.
    Known(String),
    /// Its key came earlier in this batch, at this index.
    SameAs(usize),
}

impl Dedupe {
    /// Publishes (through `publish`) what is new of a checked batch and
    /// answers every event's id, in order. A repeated request key answers
    /// the first call's ids; an event whose key was accepted before, or
    /// earlier in this batch, is not published again and answers the first
    /// one's id.
    pub fn accept(
        &mut self,
        events: Vec<NewEvent>,
        request_key: Option<String>,
        window: Duration,
        now: Instant,
        publish: impl FnOnce(&[NewEvent]) -> Vec<String>,
    ) -> Vec<String> {
        self.expire(now);
        if let Some(ids) = request_key.as_ref().and_then(|k| self.requests.get(k)) {
            return ids.clone();
        }
        let keys: Vec<Option<String>> = events.iter().map(|e| e.idempotency_key.clone()).collect();
        let slots: Vec<Slot> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| match key {
                None => Slot::Fresh,
                Some(k) => match self.events.get(k) {
                    Some(id) => Slot::Known(id.clone()),
                    None => keys[..i]
                        .iter()
                        .position(|p| p.as_ref() == Some(k))
                        .map_or(Slot::Fresh, Slot::SameAs),
                },
            })
            .collect();
        // The common case, nothing repeated, passes the batch on as it is.
        let fresh: Vec<NewEvent> = if slots.iter().all(|s| matches!(s, Slot::Fresh)) {
            events
        } else {
            events
                .into_iter()
                .zip(&slots)
                .filter(|(_, s)| matches!(s, Slot::Fresh))
                .map(|(e, _)| e)
                .collect()
        };
        let mut new_ids = publish(&fresh).into_iter();
        let mut ids: Vec<String> = Vec::with_capacity(slots.len());
        for (slot, key) in slots.into_iter().zip(keys) {
            let id = match slot {
                Slot::Known(id) => id,
                Slot::SameAs(first) => ids[first].clone(),
                Slot::Fresh => {
                    let id = new_ids.next().unwrap_or_default();
                    if let (Some(k), false) = (key, window.is_zero()) {
                        self.order.push_back((now + window, false, k.clone()));
                        self.events.insert(k, id.clone());
                    }
                    id
                }
            };
            ids.push(id);
        }
        if let Some(k) = request_key {
            if !window.is_zero() {
                self.order.push_back((now + window, true, k.clone()));
                self.requests.insert(k, ids.clone());
            }
        }
        ids
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, req, key)) = self.order.pop_front() {
                if req {
                    self.requests.remove(&key);
                } else {
                    self.events.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Topic;

    fn ev(data: &str, key: Option<&str>) -> NewEvent {
        NewEvent {
            topics: vec![Topic::parse("a").unwrap()],
            data: data.into(),
            name: None,
            user: None,
            retry: None,
            idempotency_key: key.map(str::to_owned),
        }
    }

    /// A publisher that numbers what it is given and records it.
    fn publisher<'a>(
        log: &'a mut Vec<String>,
        next: &'a mut u32,
    ) -> impl FnOnce(&[NewEvent]) -> Vec<String> + 'a {
        move |batch| {
            batch
                .iter()
                .map(|e| {
                    *next += 1;
                    log.push(e.data.clone());
                    format!("id-{next}")
                })
                .collect()
        }
    }

    #[test]
    fn keys_publish_once_within_the_window() {
        let mut d = Dedupe::default();
        let (mut log, mut n) = (Vec::new(), 0);
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        let ids = d.accept(
            vec![ev("a", Some("k1")), ev("b", None), ev("c", Some("k1"))],
            None,
            w,
            t0,
            publisher(&mut log, &mut n),
        );
        assert_eq!(ids, ["id-1", "id-2", "id-1"]);
        let ids = d.accept(
            vec![ev("d", Some("k2")), ev("a again", Some("k1"))],
            None,
            w,
            t0,
            publisher(&mut log, &mut n),
        );
        assert_eq!(ids, ["id-3", "id-1"]);
        assert_eq!(log, ["a", "b", "d"]);
        // Past the window the key is new again.
        let ids = d.accept(
            vec![ev("a late", Some("k1"))],
            None,
            w,
            t0 + w,
            publisher(&mut log, &mut n),
        );
        assert_eq!(ids, ["id-4"]);
        assert!(
            d.events.len() == 1 && d.order.len() == 1,
            "expired keys are dropped"
        );
    }

    #[test]
    fn a_request_key_answers_the_first_ids() {
        let mut d = Dedupe::default();
        let (mut log, mut n) = (Vec::new(), 0);
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        let first = d.accept(
            vec![ev("a", None), ev("b", None)],
            Some("r".into()),
            w,
            t0,
            publisher(&mut log, &mut n),
        );
        let again = d.accept(
            vec![ev("other", None)],
            Some("r".into()),
            w,
            t0,
            publisher(&mut log, &mut n),
        );
        assert_eq!(first, again);
        assert_eq!(log, ["a", "b"]);
        // A zero window remembers nothing.
        let mut d = Dedupe::default();
        let z = Duration::ZERO;
        d.accept(
            vec![ev("a", Some("k"))],
            Some("r".into()),
            z,
            t0,
            publisher(&mut log, &mut n),
        );
        assert!(d.events.is_empty() && d.requests.is_empty() && d.order.is_empty());
    }
}
