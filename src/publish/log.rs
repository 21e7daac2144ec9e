//! Where the publish API's requests go, chosen once at start-up: this
//! process's hub (with its own idempotency record), or the cluster's Redis
//! log and control channel, which reach every replica's hub.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::dedupe::{Dedupe, KeyReused};
use crate::cluster::{self, Cluster, Unavailable};
use crate::events::frame::NewEvent;
use crate::events::hub::Hub;
use crate::events::queue::Close;
use crate::topic::Topic;

pub enum Log {
    /// One process: the hub is the log.
    Local {
        hub: Arc<Hub>,
        dedupe: Mutex<Dedupe>,
    },
    /// Replicas joined through Redis.
    Cluster(Arc<Cluster>),
}

/// Why a publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Cluster mode without Redis: whether anything was published says
    /// the error.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// An idempotency key reused with other content: nothing was published.
    #[error(transparent)]
    KeyReused(#[from] KeyReused),
}

impl Log {
    pub fn new(hub: Arc<Hub>, cluster: Option<Arc<Cluster>>) -> Log {
        match cluster {
            Some(c) => Log::Cluster(c),
            None => Log::Local {
                hub,
                dedupe: Mutex::new(Dedupe::default()),
            },
        }
    }

    /// Publishes what is new of a checked batch and answers every event's
    /// id; the idempotency check and the publish are one step.
    pub async fn publish(
        &self,
        events: Vec<NewEvent>,
        request_key: Option<String>,
        window: Duration,
    ) -> Result<Vec<String>, PublishError> {
        match self {
            Log::Local { hub, dedupe } => {
                // Without any key there is nothing to check: no second
                // lock, and the events are framed outside every lock.
                if request_key.is_none() && events.iter().all(|e| e.idempotency_key.is_none()) {
                    return Ok(hub.publish(&events));
                }
                let mut d = dedupe.lock().unwrap_or_else(|e| e.into_inner());
                Ok(
                    d.accept(events, request_key, window, Instant::now(), |fresh| {
                        hub.publish(fresh)
                    })?,
                )
            }
            Log::Cluster(c) => match c.publish(&events, request_key.as_deref(), window).await {
                Ok(ids) => Ok(ids),
                Err(cluster::PublishError::Unavailable(e)) => Err(e.into()),
                Err(cluster::PublishError::KeyReused(key)) => {
                    if request_key.as_deref() == Some(key.as_str()) {
                        return Err(KeyReused::request(key).into());
                    }
                    let i = events
                        .iter()
                        .position(|e| e.idempotency_key.as_deref() == Some(key.as_str()))
                        .unwrap_or(0);
                    Err(KeyReused::event(key, i).into())
                }
            },
        }
    }

    /// Closes the streams of `user`, on `topic`, or both (on every
    /// replica); how many.
    pub async fn disconnect(
        &self,
        user: Option<&str>,
        topic: Option<&Topic>,
        reason: String,
        reconnect: bool,
    ) -> Result<usize, Unavailable> {
        match self {
            Log::Local { hub, .. } => {
                Ok(hub.disconnect(user, topic, Close::Disconnect { reason, reconnect }))
            }
            Log::Cluster(c) => c.disconnect(user, topic, &reason, reconnect).await,
        }
    }

    /// The streams open on `topic` across every replica; `None` without a
    /// cluster (the hub's own count is all there is).
    pub async fn cluster_streams(&self, topic: &Topic) -> Result<Option<usize>, Unavailable> {
        match self {
            Log::Local { .. } => Ok(None),
            Log::Cluster(c) => c.cluster_streams(topic).await.map(Some),
        }
    }
}
