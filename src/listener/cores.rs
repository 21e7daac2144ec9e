//! One single-threaded runtime per core for the public listener's
//! connections.
//!
//! Why: a proxied request is a few short reads and writes on two sockets.
//! On a work-stealing runtime each wake-up may move the connection's task
//! to another worker, which costs cross-thread wakes, cache misses and a
//! cold per-thread upstream pool (`proxy::pool`). Measured on two cores,
//! one current-thread runtime per core served more requests per second for
//! the same CPU than the multi-threaded runtime (see BENCHMARKS.md,
//! "Pass-through"). The accept loop stays on the main runtime and hands
//! each accepted connection to the next core in turn, so that a connection
//! lives, with its upstream connections, on one thread from its first
//! request to its last.
//!
//! Everything else (publish, admin, hub, cluster link, timers of the drain)
//! stays on the main runtime: those tasks are few and need not be pinned.
//! Streams served on a core are woken by the hub from any thread, as before.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The cores' runtimes, and where the next connection goes.
pub struct Cores {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

/// The runtimes could not be started (threads or the IO driver).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the public listener's runtime {index}: {source}")]
pub struct CoresError {
    index: usize,
    #[source]
    source: std::io::Error,
}

impl Cores {
    /// Starts `n` threads (at least one), each driving a current-thread
    /// runtime until the process exits. They are never joined: the drain
    /// ends every connection they serve, then the process exits.
    pub fn start(n: usize) -> Result<Arc<Cores>, CoresError> {
        let mut handles = Vec::with_capacity(n.max(1));
        for index in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| CoresError { index, source })?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("sidecast-core-{index}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|source| CoresError { index, source })?;
        }
        Ok(Arc::new(Cores {
            handles,
            next: AtomicUsize::new(0),
        }))
    }

    /// How many runtimes serve connections.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Moves an accepted connection to the next core, round robin, and runs
    /// `serve` on it there. The socket leaves the accepting runtime's IO
    /// driver and joins the core's, so that every read and write of the
    /// connection is driven by the thread that runs it.
    pub fn hand<F, Fut>(&self, tcp: TcpStream, peer: SocketAddr, serve: F)
    where
        F: FnOnce(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "accepted connection lost before serving");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(async move {
            match TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp, peer).await,
                Err(e) => tracing::debug!(error = %e, %peer, "cannot register the connection"),
            }
        });
    }
}
