//! Idempotency: keys accepted within `dedupe_window` are answered with the
//! first call's ids instead of publishing again. The check and the publish
//! happen under one lock, so two concurrent retries publish once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Dedupe {
    events: HashMap<String, String>,
    requests: HashMap<String, Vec<String>>,
    /// Expiry order: (when, is_request, key).
    order: VecDeque<(Instant, bool, String)>,
}

impl Dedupe {
    pub fn expire(&mut self, now: Instant) {
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

    pub fn request(&self, key: &str) -> Option<&Vec<String>> {
        self.requests.get(key)
    }

    pub fn event(&self, key: &str) -> Option<&String> {
        self.events.get(key)
    }

    pub fn remember_event(&mut self, key: String, id: String, window: Duration) {
        if window.is_zero() {
            return;
        }
        self.order
            .push_back((Instant::now() + window, false, key.clone()));
        self.events.insert(key, id);
    }

    pub fn remember_request(&mut self, key: String, ids: Vec<String>, window: Duration) {
        if window.is_zero() {
            return;
        }
        self.order
            .push_back((Instant::now() + window, true, key.clone()));
        self.requests.insert(key, ids);
    }
}
