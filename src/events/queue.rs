//! One stream's bounded queue: the hub pushes shared events into it without
//! ever waiting, and a stream that falls `cap` events behind is closed as
//! slow instead of blocking publishers or growing memory.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use super::frame::{Event, Reader};
use crate::topic::Topic;

/// Why a stream ends from the server's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Close {
    /// Its queue filled: the client reads too slowly.
    Slow,
    /// The app asked (`POST /disconnect`).
    Disconnect { reason: String, reconnect: bool },
    /// The key that verified its token was removed by a reload, or forward
    /// auth's recheck was refused.
    Revoked,
    /// Draining on shutdown.
    Shutdown,
}

impl Close {
    pub fn label(&self) -> &'static str {
        match self {
            Close::Slow => "slow",
            Close::Disconnect { .. } => "disconnect",
            Close::Revoked => "revoked",
            Close::Shutdown => "shutdown",
        }
    }
}

struct State {
    queue: VecDeque<Arc<Event>>,
    closed: Option<Close>,
    waker: Option<Waker>,
}

/// What the hub knows of an open stream.
pub struct StreamHandle {
    pub id: u64,
    pub user: Option<Arc<str>>,
    pub topics: Box<[Topic]>,
    /// Identity of the key that verified the token (revocation on reload).
    pub key_id: Option<Arc<str>>,
    /// Which events reach it (SSE, or what a GRIP hold takes).
    pub reader: Reader,
    cap: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl StreamHandle {
    pub fn new(
        id: u64,
        user: Option<Arc<str>>,
        topics: Box<[Topic]>,
        key_id: Option<Arc<str>>,
        reader: Reader,
        cap: usize,
    ) -> Self {
        StreamHandle {
            id,
            user,
            topics,
            key_id,
            reader,
            cap,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: None,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event; never waits. Returns false when this closed the
    /// stream as slow.
    pub fn push(&self, event: &Arc<Event>) -> bool {
        let mut s = self.lock();
        if s.closed.is_some() {
            return true;
        }
        if s.queue.len() >= self.cap {
            s.closed = Some(Close::Slow);
            s.queue = VecDeque::new();
            let w = s.waker.take();
            drop(s);
            if let Some(w) = w {
                w.wake();
            }
            return false;
        }
        s.queue.push_back(event.clone());
        let w = s.waker.take();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
        true
    }

    /// Ends the stream; the first reason given wins.
    pub fn close(&self, why: Close) {
        let mut s = self.lock();
        if s.closed.is_none() {
            s.closed = Some(why);
        }
        let w = s.waker.take();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Waits for events and moves up to `max` of them into `out`; a closed
    /// stream gets its reason once its queue is empty (slow streams at
    /// once: their queue was dropped).
    pub async fn next(&self, out: &mut Vec<Arc<Event>>, max: usize) -> Result<(), Close> {
        poll_fn(|cx| {
            let mut s = self.lock();
            if !s.queue.is_empty() {
                let n = s.queue.len().min(max);
                out.extend(s.queue.drain(..n));
                if s.queue.is_empty() && s.queue.capacity() > 64 {
                    s.queue = VecDeque::new();
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(c) = &s.closed {
                return Poll::Ready(Err(c.clone()));
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Resolves once the stream is closed (to stop a write that waits on a
    /// client that does not read).
    pub async fn closed(&self) -> Close {
        poll_fn(|cx| {
            let mut s = self.lock();
            match &s.closed {
                Some(c) => Poll::Ready(c.clone()),
                None => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}
