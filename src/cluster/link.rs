//! A connection to Redis kept by the redis crate's `ConnectionManager`,
//! which reconnects (with its backoff) after a command finds the
//! connection lost. Two things it leaves to its user are done here:
//!
//! - It learns of a lost connection only from the next command sent on it,
//!   which then fails after it may have reached Redis. A publisher must be
//!   told "nothing was published" only when that is certain, so while the
//!   link is suspect (not used yet, the log reader lost Redis, or a
//!   command failed) the next user first sends a `PING`: when that fails,
//!   nothing of its own was sent.
//! - When a connection cannot be made, it tries again only after an I/O
//!   failure. A connection that failed otherwise (a password Redis does
//!   not take, a reply it cannot parse) would be kept failed for good, so
//!   such a failure replaces the manager.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult};

/// How long a connection (TCP, TLS and the client's handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a link reconnects and how long its replies may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A reply later than this fails the command (a blocking read needs
    /// more than its block time).
    pub response: Duration,
    /// Connection attempts after the first, each after a delay growing
    /// from 100 ms to 5 s (with jitter), before a reconnect gives up and
    /// the next command starts another.
    pub retries: usize,
}

pub struct Link {
    client: Client,
    config: ConnectionManagerConfig,
    manager: ArcSwap<ConnectionManager>,
    suspect: AtomicBool,
}

impl Link {
    /// A link that connects on first use (a Tokio runtime must be running).
    pub fn new(client: Client, timing: Timing) -> RedisResult<Link> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(timing.response))
            .set_number_of_retries(timing.retries)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(5))
            .set_exponent_base(2.0);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Link {
            client,
            config,
            manager: ArcSwap::from_pointee(manager),
            // Not yet connected: the first use connects with a PING too, so
            // that a connection that cannot be made is told apart from a
            // request that got no answer.
            suspect: AtomicBool::new(true),
        })
    }

    /// The connection, as it is (it may have been lost unnoticed).
    pub fn conn(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.manager.load())
    }

    /// Marks the connection as possibly lost (another connection to the
    /// same Redis was): the next [`Link::checked`] tries it first.
    pub fn suspect(&self) {
        self.suspect.store(true, Ordering::SeqCst);
    }

    /// Records a failed command: the connection may be lost, so the next
    /// [`Link::checked`] tries it first.
    pub fn failed(&self, e: &RedisError) {
        self.suspect();
        // The failures that call for a new connection (the crate's
        // "unrecoverable") that are not I/O failures.
        if e.is_unrecoverable_error() && !e.is_io_error() {
            if let Ok(m) =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            {
                self.manager.store(Arc::new(m));
            }
        }
    }

    /// The connection, tried with a `PING` first when it is suspect; an
    /// error here means that nothing but that `PING` was sent. A first
    /// `PING` that meets a lost connection makes the manager reconnect, and
    /// a second one waits for that; both together within
    /// [`CONNECT_TIMEOUT`], what a new connection was always given.
    pub async fn checked(&self) -> RedisResult<ConnectionManager> {
        let mut conn = self.conn();
        if !self.suspect.load(Ordering::SeqCst) {
            return Ok(conn);
        }
        let ping = async {
            match ping(&mut conn).await {
                Err(e) if e.is_io_error() => ping(&mut conn).await,
                other => other,
            }
        };
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, ping).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer to PING within {}s", CONNECT_TIMEOUT.as_secs()),
            )
            .into()),
        };
        match result {
            Ok(()) => {
                self.suspect.store(false, Ordering::SeqCst);
                Ok(conn)
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }
}

async fn ping(conn: &mut ConnectionManager) -> RedisResult<()> {
    redis::cmd("PING").query_async(conn).await
}
