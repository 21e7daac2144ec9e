//! How a stream opens: parsing the id it comes back with, then its replay
//! from history, or a reset when history no longer reaches back to it.

use std::sync::Arc;
use std::time::Instant;

use super::{format_id, Opening, Start, State};
use crate::events::frame::{Event, Reader};
use crate::topic::Topic;

impl State {
    /// The seq of an id this epoch issued, or why it cannot be replayed
    /// from.
    fn parse_id(&self, id: &str) -> Result<u64, &'static str> {
        let (epoch, seq) = id.rsplit_once('-').ok_or("malformed id")?;
        let seq: u64 = seq.parse().map_err(|_| "malformed id")?;
        if epoch != &*self.epoch {
            return Err("id from another epoch (a restart or a history reset)");
        }
        if seq > self.last_seq {
            return Err("unknown id");
        }
        Ok(seq)
    }

    /// The replay (or reset) for a new stream, computed under the same lock
    /// as its registration so that no event falls between the two.
    pub(super) fn opening(
        &mut self,
        topics: &[Topic],
        user: Option<&str>,
        reader: Reader,
        start: &Start,
    ) -> Opening {
        let newest = format_id(&self.epoch, self.last_seq);
        let mut opening = Opening {
            replay: Vec::new(),
            reset: None,
            newest,
        };
        let after = match start {
            Start::New => return opening,
            Start::After(id) => match self.parse_id(id) {
                Ok(seq) => seq,
                Err(reason) => {
                    opening.reset = Some((reason.to_owned(), id.clone()));
                    return opening;
                }
            },
            Start::Earliest | Start::Last(_) => 0,
        };
        self.expire_some(topics, Instant::now());
        let mut events: Vec<Arc<Event>> = Vec::new();
        for t in topics {
            match self.topics.get(t) {
                Some(ts) => {
                    if matches!(start, Start::After(_)) && ts.evicted > after {
                        opening.reset = Some((
                            "events after this id are no longer in history".to_owned(),
                            match start {
                                Start::After(id) => id.clone(),
                                _ => String::new(),
                            },
                        ));
                        return opening;
                    }
                    let from = ts.ring.partition_point(|e| e.seq <= after);
                    events.extend(
                        ts.ring
                            .range(from..)
                            .filter(|e| e.reaches(user, reader))
                            .cloned(),
                    );
                }
                None => {
                    if let Start::After(id) = start {
                        if self.forgotten.lost(t) > after {
                            opening.reset = Some((
                                "events after this id are no longer in history".to_owned(),
                                id.clone(),
                            ));
                            return opening;
                        }
                    }
                }
            }
        }
        if topics.len() > 1 {
            events.sort_by_key(|e| e.seq);
            events.dedup_by_key(|e| e.seq);
        }
        if let Start::Last(n) = start {
            let skip = events.len().saturating_sub(*n);
            events.drain(..skip);
        }
        opening.replay = events;
        opening
    }
}
