//! Forward auth's rechecks: every open stream that forward auth let in is
//! asked about again every `forward_recheck`, so that a logout in the app
//! ends the stream. The registry lives here, beside the streams it ends;
//! the call to the app is `auth::forward`'s.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::auth::forward::{Creds, ForwardAuth};
use crate::config::{Auth, AuthMode, Target};
use crate::events::queue::{Close, StreamHandle};
use crate::state::Shared;

struct Registered {
    stream: Weak<StreamHandle>,
    creds: Creds,
    next: Instant,
}

/// The open streams forward auth let in, with their credentials. A stream
/// is held weakly: one that ended is forgotten at the next round.
#[derive(Default)]
pub struct Rechecks {
    streams: Mutex<Vec<Registered>>,
}

impl Rechecks {
    /// Remembers an open stream for rechecks.
    pub fn register(&self, stream: &Arc<StreamHandle>, creds: Creds, every: Duration) {
        let mut s = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        s.push(Registered {
            stream: Arc::downgrade(stream),
            creds,
            next: Instant::now() + every,
        });
    }

    /// Asks the app again for every stream due; a `401`/`403` ends the
    /// stream, any other outcome (refused, timeout, 5xx) ends nothing.
    pub async fn recheck_due(&self, forward: &ForwardAuth, auth: &Auth, upstream: &Target) {
        let now = Instant::now();
        let due: Vec<(Arc<StreamHandle>, Creds)> = {
            let mut s = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            s.retain(|r| r.stream.strong_count() > 0);
            s.iter_mut()
                .filter(|r| r.next <= now)
                .filter_map(|r| {
                    r.next = now + auth.forward_recheck;
                    Some((r.stream.upgrade()?, r.creds.clone()))
                })
                .collect()
        };
        for (stream, creds) in due {
            if forward.recheck(&creds, auth, upstream).await {
                stream.close(Close::Revoked);
            }
        }
    }
}

/// Runs the rechecks once a second while the process lives (a round does
/// something only in forward-auth mode, which a reload may switch on).
pub fn spawn_rechecks(rechecks: Arc<Rechecks>, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let rt = shared.runtime();
            if rt.config.auth.mode == AuthMode::Forward {
                rechecks
                    .recheck_due(&shared.forward, &rt.config.auth, &rt.config.upstream.target)
                    .await;
            }
        }
    });
}
