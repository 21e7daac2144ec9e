//! Logs through `tracing`: text or JSON lines, the level from the config
//! unless `RUST_LOG` is set. The level reloads with the config.
//!
//! Lines are written to stderr by a thread of their own: a request that
//! logs (the access log, one line per request) hands its line over a
//! channel instead of taking stderr's lock and making a `write` itself, so
//! a slow log reader (a terminal, a container runtime under pressure) does
//! not slow the requests. Nothing is dropped: when the channel is full, the
//! logging thread blocks until the writer catches up. `flush` writes out
//! what is queued; the binary calls it before it exits.

use std::sync::Mutex;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::{Log, LogFormat};

/// Changes the level filter after a reload.
pub struct LevelHandle(Option<reload::Handle<EnvFilter, Registry>>);

impl LevelHandle {
    pub fn set(&self, level: &str) {
        if let (Some(h), Ok(f)) = (&self.0, EnvFilter::try_new(level)) {
            let _ = h.reload(f);
        }
    }
}

/// Pingora's debug and trace lines print whole request heads (the target
/// with its query, `Authorization`, cookies): tokens must never reach a
/// log, so pingora is heard at `info` and above whatever the level asked.
fn no_header_dumps(meta: &tracing::Metadata<'_>) -> bool {
    !meta.target().starts_with("pingora") || *meta.level() <= tracing::Level::INFO
}

/// The writer thread's guard: dropping it writes out the queued lines.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Writes out every queued line and stops the writer thread. Lines logged
/// afterwards are lost, so this is the last thing the process does.
pub fn flush() {
    let guard = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(guard);
}

pub fn init(log: &Log) -> LevelHandle {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = EnvFilter::try_new(from_env.as_deref().unwrap_or(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("sidecast-log")
        .finish(std::io::stderr());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::filter::filter_fn(no_header_dumps));
    let result = match log.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_writer(writer))
            .try_init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            let ansi = std::io::stderr().is_terminal();
            registry
                .with(fmt::layer().with_ansi(ansi).with_writer(writer))
                .try_init()
        }
    };
    if result.is_err() {
        return LevelHandle(None);
    }
    *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    LevelHandle(from_env.is_none().then_some(handle))
}
