//! Idempotency: keys accepted within `dedupe_window` are answered with the
//! first call's ids instead of publishing again. The check and the publish
//! happen under one lock, so two concurrent retries publish once. A key
//! reused with another event (or a request key with other events) is a bug
//! in the publisher, not a retry: it is refused whole, and nothing of that
//! request is published.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::events::frame::{NewEvent, StreamPart};

/// What an event or a request is, for telling a retry from a reuse.
type Fingerprint = [u8; 32];

/// An idempotency key reused within the window with other content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the idempotency key {key:?} was used within dedupe_window for a different {what}")]
pub struct KeyReused {
    pub key: String,
    /// `"event"` for an event's key, `"request body"` for the header's.
    pub what: &'static str,
    /// The field that carried the key.
    pub field: String,
    /// The event of the batch whose key it was (`None`: the request's).
    pub index: Option<usize>,
}

impl KeyReused {
    /// The request's key (the `Idempotency-Key` header).
    pub fn request(key: String) -> KeyReused {
        KeyReused {
            key,
            what: "request body",
            field: "Idempotency-Key".into(),
            index: None,
        }
    }

    /// The key of the batch's event `i`.
    pub fn event(key: String, i: usize) -> KeyReused {
        KeyReused {
            key,
            what: "event",
            field: format!("[{i}].idempotency_key"),
            index: Some(i),
        }
    }
}

/// An event's content as a retry must repeat it: topics, name, data,
/// retry and user (the key itself is not content).
fn event_fingerprint(e: &NewEvent) -> Fingerprint {
    let mut h = Sha256::new();
    fingerprint_into(&mut h, e);
    h.finalize().into()
}

fn fingerprint_into(h: &mut Sha256, e: &NewEvent) {
    // Length-prefixed fields: no two different events hash the same input.
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(&(e.topics.len() as u64).to_le_bytes());
    for t in &e.topics {
        field(t.as_str().as_bytes());
    }
    field(e.data.as_bytes());
    field(e.name.as_deref().unwrap_or("\0").as_bytes());
    field(e.user.as_deref().unwrap_or("\0").as_bytes());
    field(&e.retry.map_or([0xff; 8], u64::to_le_bytes));
    // A GRIP item's formats are its content (an SSE event has none).
    if let Some(g) = &e.grip {
        match &g.stream {
            Some(StreamPart::Content(c)) => field(c),
            Some(StreamPart::Close) => field(b"\0close"),
            None => field(b"\0"),
        }
        match &g.response {
            Some(r) => {
                field(&r.code.to_le_bytes());
                field(r.reason.as_bytes());
                field(&(r.headers.len() as u64).to_le_bytes());
                for (n, v) in &r.headers {
                    field(n.as_bytes());
                    field(v.as_bytes());
                }
                field(&r.body);
            }
            None => field(b"\0"),
        }
    }
}

/// A request's content: its events in order, keys included.
fn request_fingerprint(events: &[NewEvent]) -> Fingerprint {
    let mut h = Sha256::new();
    for e in events {
        fingerprint_into(&mut h, e);
        let key = e.idempotency_key.as_deref().unwrap_or("\0");
        h.update((key.len() as u64).to_le_bytes());
        h.update(key.as_bytes());
    }
    h.finalize().into()
}

#[derive(Default)]
pub struct Dedupe {
    events: HashMap<String, (String, Fingerprint)>,
    requests: HashMap<String, (Vec<String>, Fingerprint)>,
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
    /// one's id. A key reused with other content refuses the whole batch
    /// before anything is published.
    pub fn accept(
        &mut self,
        events: Vec<NewEvent>,
        request_key: Option<String>,
        window: Duration,
        now: Instant,
        publish: impl FnOnce(&[NewEvent]) -> Vec<String>,
    ) -> Result<Vec<String>, KeyReused> {
        self.expire(now);
        let request_fp = request_key.as_ref().map(|_| request_fingerprint(&events));
        if let (Some(k), Some(fp)) = (&request_key, &request_fp) {
            if let Some((ids, first)) = self.requests.get(k) {
                if first != fp {
                    return Err(KeyReused::request(k.clone()));
                }
                return Ok(ids.clone());
            }
        }
        let keyed: Vec<Option<(String, Fingerprint)>> = events
            .iter()
            .map(|e| e.idempotency_key.clone().map(|k| (k, event_fingerprint(e))))
            .collect();
        let mut slots: Vec<Slot> = Vec::with_capacity(events.len());
        for (i, key) in keyed.iter().enumerate() {
            let slot = match key {
                None => Slot::Fresh,
                Some((k, fp)) => {
                    let reused = || KeyReused::event(k.clone(), i);
                    if let Some((id, first)) = self.events.get(k) {
                        if first != fp {
                            return Err(reused());
                        }
                        Slot::Known(id.clone())
                    } else if let Some(j) = keyed[..i]
                        .iter()
                        .position(|p| p.as_ref().is_some_and(|(pk, _)| pk == k))
                    {
                        if keyed[j].as_ref().is_some_and(|(_, pf)| pf != fp) {
                            return Err(reused());
                        }
                        Slot::SameAs(j)
                    } else {
                        Slot::Fresh
                    }
                }
            };
            slots.push(slot);
        }
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
        for (slot, key) in slots.into_iter().zip(keyed) {
            let id = match slot {
                Slot::Known(id) => id,
                Slot::SameAs(first) => ids[first].clone(),
                Slot::Fresh => {
                    let id = new_ids.next().unwrap_or_default();
                    if let (Some((k, fp)), false) = (key, window.is_zero()) {
                        self.order.push_back((now + window, false, k.clone()));
                        self.events.insert(k, (id.clone(), fp));
                    }
                    id
                }
            };
            ids.push(id);
        }
        if let (Some(k), Some(fp)) = (request_key, request_fp) {
            if !window.is_zero() {
                self.order.push_back((now + window, true, k.clone()));
                self.requests.insert(k, (ids.clone(), fp));
            }
        }
        Ok(ids)
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
            grip: None,
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
        let ids = d
            .accept(
                vec![ev("a", Some("k1")), ev("b", None), ev("a", Some("k1"))],
                None,
                w,
                t0,
                publisher(&mut log, &mut n),
            )
            .unwrap();
        assert_eq!(ids, ["id-1", "id-2", "id-1"]);
        let ids = d
            .accept(
                vec![ev("d", Some("k2")), ev("a", Some("k1"))],
                None,
                w,
                t0,
                publisher(&mut log, &mut n),
            )
            .unwrap();
        assert_eq!(ids, ["id-3", "id-1"]);
        assert_eq!(log, ["a", "b", "d"]);
        // Past the window the key is new again.
        let ids = d
            .accept(
                vec![ev("a late", Some("k1"))],
                None,
                w,
                t0 + w,
                publisher(&mut log, &mut n),
            )
            .unwrap();
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
        let first = d
            .accept(
                vec![ev("a", None), ev("b", None)],
                Some("r".into()),
                w,
                t0,
                publisher(&mut log, &mut n),
            )
            .unwrap();
        let again = d
            .accept(
                vec![ev("a", None), ev("b", None)],
                Some("r".into()),
                w,
                t0,
                publisher(&mut log, &mut n),
            )
            .unwrap();
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
        )
        .unwrap();
        assert!(d.events.is_empty() && d.requests.is_empty() && d.order.is_empty());
    }

    #[test]
    fn a_key_reused_with_other_content_refuses_the_whole_request() {
        let mut d = Dedupe::default();
        let (mut log, mut n) = (Vec::new(), 0);
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        d.accept(
            vec![ev("a", Some("k1"))],
            None,
            w,
            t0,
            publisher(&mut log, &mut n),
        )
        .unwrap();
        // Another event under k1, beside a fresh one: nothing is published.
        let err = d
            .accept(
                vec![ev("fresh", None), ev("b", Some("k1"))],
                None,
                w,
                t0,
                publisher(&mut log, &mut n),
            )
            .unwrap_err();
        assert_eq!(err.key, "k1");
        assert_eq!(err.field, "[1].idempotency_key");
        // Two different events under one key in the same batch.
        let err = d
            .accept(
                vec![ev("x", Some("k2")), ev("y", Some("k2"))],
                None,
                w,
                t0,
                publisher(&mut log, &mut n),
            )
            .unwrap_err();
        assert_eq!(err.key, "k2");
        // A request key repeated with another body.
        d.accept(
            vec![ev("r1", None)],
            Some("req".into()),
            w,
            t0,
            publisher(&mut log, &mut n),
        )
        .unwrap();
        let err = d
            .accept(
                vec![ev("r1", None), ev("r2", None), ev("r3", None)],
                Some("req".into()),
                w,
                t0,
                publisher(&mut log, &mut n),
            )
            .unwrap_err();
        assert_eq!((err.key.as_str(), err.what), ("req", "request body"));
        assert_eq!(
            log,
            ["a", "r1"],
            "nothing of a refused request is published"
        );
    }
}
