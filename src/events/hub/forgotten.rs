//! What history remembers of topics it dropped (no streams, nothing held):
//! the highest seq each one lost, so that a client of that topic coming
//! back is told of a gap exactly when one of *its* topics lost an event.
//!
//! Memory stays bounded: past [`MAX_REMEMBERED`] topics the oldest entry
//! is folded into one watermark, which then stands for every topic not
//! remembered. That errs towards a reset, never towards a silent gap.

use std::collections::{HashMap, VecDeque};

use crate::topic::Topic;

/// Topics remembered one by one at most (about 100 bytes each).
pub const MAX_REMEMBERED: usize = 65_536;

#[derive(Default)]
pub struct Forgotten {
    /// Topic → the highest seq it lost, for those above `watermark`.
    lost: HashMap<Topic, u64>,
    /// Order of forgetting, to fold the oldest first. An entry may be
    /// stale (its topic came back): then it is skipped.
    order: VecDeque<Topic>,
    /// The highest seq lost by a topic no longer remembered one by one.
    watermark: u64,
}

impl Forgotten {
    /// Remembers a topic as it is dropped, with the highest seq it lost.
    pub fn remember(&mut self, topic: Topic, lost: u64) {
        if lost <= self.watermark {
            return;
        }
        if self.lost.insert(topic.clone(), lost).is_none() {
            self.order.push_back(topic);
        }
        while self.lost.len() > MAX_REMEMBERED {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(seq) = self.lost.remove(&oldest) {
                self.watermark = self.watermark.max(seq);
            }
        }
        if self.order.len() > 2 * self.lost.len() + 64 {
            let lost = &self.lost;
            self.order.retain(|t| lost.contains_key(t));
        }
    }

    /// The highest seq a topic without state may have lost.
    pub fn lost(&self, topic: &Topic) -> u64 {
        self.lost.get(topic).copied().unwrap_or(self.watermark)
    }

    /// The same, for a topic that gets state again (it is no longer
    /// remembered here).
    pub fn revive(&mut self, topic: &Topic) -> u64 {
        self.lost.remove(topic).unwrap_or(self.watermark)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lost.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: &str) -> Topic {
        Topic::parse(n).unwrap()
    }

    #[test]
    fn per_topic_then_folded_into_the_watermark() {
        let mut f = Forgotten::default();
        f.remember(t("a"), 5);
        f.remember(t("b"), 9);
        assert_eq!(
            (f.lost(&t("a")), f.lost(&t("b")), f.lost(&t("c"))),
            (5, 9, 0)
        );
        assert_eq!(f.revive(&t("a")), 5);
        assert_eq!(f.lost(&t("a")), 0);
        for i in 0..MAX_REMEMBERED as u64 + 10 {
            f.remember(t(&format!("n/{i}")), 100 + i);
        }
        assert!(f.len() <= MAX_REMEMBERED);
        assert!(f.order.len() <= 2 * f.len() + 64);
        let w = f.watermark;
        assert!(w >= 100, "the oldest were folded");
        assert_eq!(f.lost(&t("never")), w);
        assert_eq!(f.lost(&t("b")), w.max(9));
        // Nothing above the watermark is forgotten one by one.
        f.remember(t("low"), 1);
        assert_eq!(f.lost(&t("low")), w);
    }
}
