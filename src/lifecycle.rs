//! Readiness and shutdown flags, on their own: every listener reads them,
//! `admin` answers `/readyz` from them, `shutdown` sets them, and they know
//! nothing of the rest, so any layer may hold them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::watch;

/// Readiness and shutdown, seen by every listener. A shutdown has two
/// phases: *stopping* (a signal came: `/readyz` fails so that the load
/// balancer stops routing here, but everything is still served, for
/// `[shutdown] delay`), then *draining* (accepting stops, new streams get a
/// passing refusal, open ones are closed).
pub struct Lifecycle {
    ready: AtomicBool,
    stopping: AtomicBool,
    draining: AtomicBool,
    /// Pingora's shutdown watch: `true` once keep-alive reuse must stop.
    pub shutdown_tx: watch::Sender<bool>,
    /// `true` once the public listener must stop accepting (and idle
    /// kept-alive connections be closed).
    pub stop_accepting: watch::Sender<bool>,
    /// Proxied requests being served (a drain waits for them).
    pub in_flight: AtomicUsize,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            shutdown_tx: watch::channel(false).0,
            stop_accepting: watch::channel(false).0,
            in_flight: AtomicUsize::new(0),
        }
    }
}

impl Lifecycle {
    /// Listeners are up and the configuration is loaded.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// What `/readyz` answers: ready, and no shutdown begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_stopping()
    }

    /// A signal came: `/readyz` fails from now on.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// `delay` is over: new streams are refused (a refusal that passes).
    pub fn start_draining(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Resolves once `rx` holds `true` (never, if its sender is gone).
pub async fn until_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
