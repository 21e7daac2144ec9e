//! `[upstream] timeout` as README.md states it: *no response headers by
//! then*: `504`. Pingora's own `read_timeout` is reset on every read and
//! covers the body too, so it would also cut a slow stream whose chunks are
//! further apart than the timeout; it is therefore left off, and this clock
//! runs instead.
//!
//! The clock is armed when the request has been read whole (its last body
//! piece handed to the upstream side), stopped for good when the upstream's
//! response head arrives, and watched by the listener, which answers `504`
//! itself when it runs out. The hooks reach the clock of their request
//! through a task-local: pingora runs a request's hooks on the task that
//! polls `process_new_http`, which the listener wraps in
//! [`HeaderDeadline::scope`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

tokio::task_local! {
    static CURRENT: HeaderDeadline;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The request is still being read or sent.
    Idle,
    /// Sent whole: response headers are due by then.
    Armed(Instant),
    /// The response head came: never a `504` for this request any more.
    Answered,
}

/// The response-header clock of one proxied request.
#[derive(Clone, Debug)]
pub struct HeaderDeadline {
    state: Arc<watch::Sender<State>>,
}

impl Default for HeaderDeadline {
    fn default() -> Self {
        HeaderDeadline {
            state: Arc::new(watch::channel(State::Idle).0),
        }
    }
}

impl HeaderDeadline {
    pub fn new() -> HeaderDeadline {
        HeaderDeadline::default()
    }

    /// Runs `fut` (a request's proxying) with this clock as the current one.
    pub fn scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self.clone(), fut)
    }

    /// Starts the clock, unless the answer already came (an app may answer
    /// before it has read the whole request). A retry on another upstream
    /// connection starts it again.
    pub fn arm(&self, timeout: Duration) {
        self.state.send_if_modified(|s| {
            if *s == State::Answered {
                return false;
            }
            *s = State::Armed(Instant::now() + timeout);
            true
        });
    }

    /// Stops the clock for good: the response head arrived.
    pub fn answered(&self) {
        self.state.send_replace(State::Answered);
    }

    /// Resolves once the clock runs out; never if it is stopped first.
    pub async fn expired(&self) {
        let mut rx = self.state.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            match state {
                State::Armed(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => return,
                        _ = rx.changed() => {}
                    }
                }
                // `self` holds the sender, so `changed` cannot fail.
                _ => {
                    let _ = rx.changed().await;
                }
            }
        }
    }

    /// Whether the current task runs inside a clock's scope.
    pub fn in_scope() -> bool {
        CURRENT.try_with(|_| ()).is_ok()
    }

    /// Arms the current task's clock, if there is one.
    pub fn arm_current(timeout: Duration) {
        let _ = CURRENT.try_with(|d| d.arm(timeout));
    }

    /// Stops the current task's clock, if there is one.
    pub fn answered_current() {
        let _ = CURRENT.try_with(HeaderDeadline::answered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_out_only_when_armed_and_unanswered() {
        let d = HeaderDeadline::new();
        // Idle: never.
        let idle = tokio::time::timeout(Duration::from_secs(60), d.expired()).await;
        assert!(idle.is_err());
        d.arm(Duration::from_secs(1));
        let t0 = Instant::now();
        d.expired().await;
        assert!(t0.elapsed() >= Duration::from_secs(1));

        let d = HeaderDeadline::new();
        d.arm(Duration::from_secs(1));
        d.answered();
        let after = tokio::time::timeout(Duration::from_secs(60), d.expired()).await;
        assert!(after.is_err(), "an answered request never times out");
        d.arm(Duration::from_secs(1));
        let again = tokio::time::timeout(Duration::from_secs(60), d.expired()).await;
        assert!(again.is_err(), "arming after the answer does nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn rearming_moves_the_deadline() {
        let d = HeaderDeadline::new();
        d.arm(Duration::from_secs(1));
        let d2 = d.clone();
        let t0 = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            d2.arm(Duration::from_secs(1));
        });
        d.expired().await;
        assert!(t0.elapsed() >= Duration::from_millis(1800));
    }

    #[tokio::test]
    async fn hooks_reach_the_clock_of_their_task() {
        assert!(!HeaderDeadline::in_scope());
        let d = HeaderDeadline::new();
        let inside = d
            .scope(async {
                HeaderDeadline::answered_current();
                HeaderDeadline::in_scope()
            })
            .await;
        assert!(inside);
        assert_eq!(*d.state.borrow(), State::Answered);
    }
}
