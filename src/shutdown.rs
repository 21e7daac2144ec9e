//! The drain, in the order Kubernetes needs: `/readyz` fails at once
//! (endpoints take a few seconds to stop sending traffic here), everything
//! is still served for `delay`, then the public listener stops accepting
//! (idle kept-alive connections are closed, new streams get a passing
//! refusal), open streams are closed spread over the first half of `grace`
//! (each with a jittered `retry:`, so clients come back gradually,
//! elsewhere), proxied requests finish, and the process exits 0 within
//! `delay + grace`. The publish and admin listeners serve to the end.
//!
//! Its own file, because it is the one place that knows the order: the
//! lifecycle flags it sets are read everywhere else.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::queue::Close;
use crate::state::Shared;

/// The drain, in the order Kubernetes needs (see the module doc). Returns
/// by `delay + grace` at the latest, whatever clients and the upstream do.
pub async fn drain(shared: &Arc<Shared>, signal: &str, accepting: tokio::task::JoinHandle<()>) {
    let sh = shared.runtime().config.shutdown.clone();
    let started = Instant::now();
    let grace_end = started + sh.delay + sh.grace;
    shared.lifecycle.begin_stopping();
    tracing::info!(signal, delay = ?sh.delay, grace = ?sh.grace, "shutting down: /readyz answers 503; serving on for the delay");
    tokio::time::sleep(sh.delay).await;

    shared.lifecycle.start_draining();
    shared.lifecycle.shutdown_tx.send_replace(true);
    shared.lifecycle.stop_accepting.send_replace(true);
    let _ = tokio::time::timeout_at(grace_end, accepting).await;
    let streams = shared.hub.streams();
    let n = streams.len();
    let spread = sh.grace / 2;
    tracing::info!(streams = n, spread = ?spread, "stopped accepting; closing streams");
    let close_start = Instant::now();
    for (i, h) in streams.iter().enumerate() {
        let at = close_start + spread.mul_f64(i as f64 / n.max(1) as f64);
        tokio::time::sleep_until(at).await;
        h.close(Close::Shutdown);
    }
    // A stream that slipped in while the first were closed (its request was
    // read before draining began) is closed now.
    for h in shared.hub.streams() {
        h.close(Close::Shutdown);
    }
    // Streams end by themselves once told; wait for them and for proxied
    // requests in flight, until grace ends.
    loop {
        let streams = shared.hub.open_streams();
        let proxied = shared.lifecycle.in_flight.load(Ordering::Relaxed);
        if streams + proxied == 0 {
            tracing::info!(elapsed = ?started.elapsed(), "drained");
            break;
        }
        if Instant::now() >= grace_end {
            tracing::warn!(streams, proxied, "grace is over: closing what is left");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
