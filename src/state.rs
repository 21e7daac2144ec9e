//! State shared by the listeners: the reloadable runtime (swapped whole
//! through arc-swap), the hub, metrics and the lifecycle flags.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use tokio::sync::watch;

use crate::auth::keys::{family_of, Key};
use crate::config::Config;
use crate::events::hub::Hub;
use crate::metrics::Metrics;
use crate::routes::RouteTable;

/// Everything derived from one configuration; a reload builds a new one.
pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// The configuration's keys plus those fetched from `jwks_url`.
    pub keys: Vec<Key>,
    /// The keys fetched from `jwks_url` (kept across reloads).
    pub fetched: Vec<Key>,
    pub algorithms: Vec<Algorithm>,
}

impl Runtime {
    pub fn new(config: Arc<Config>, fetched: &[Key]) -> Runtime {
        let mut keys = config.auth.keys.clone();
        keys.extend(fetched.iter().cloned());
        let algorithms = config
            .auth
            .algorithms
            .clone()
            .unwrap_or_else(|| family_of(&keys));
        Runtime {
            routes: RouteTable::new(&config),
            config,
            keys,
            fetched: fetched.to_vec(),
            algorithms,
        }
    }

    pub fn verifier(&self) -> crate::auth::jwt::Verifier<'_> {
        crate::auth::jwt::Verifier {
            keys: &self.keys,
            algorithms: &self.algorithms,
            auth: &self.config.auth,
        }
    }
}

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

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Lifecycle,
    /// What `max_streams = "auto"` resolves to on this machine, computed
    /// once at start-up (the limits it derives from do not change).
    pub auto_max_streams: usize,
    /// Forward auth's client, cache and recheck registry.
    pub forward: crate::auth::forward::ForwardAuth,
    /// The JWKS-URL client (used only when `jwks_url` is set).
    pub jwks: crate::auth::jwks::Jwks,
    /// Cluster mode's link to Redis.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Shared {
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The stream limit a configuration asks for.
    pub fn max_streams(&self, config: &Config) -> usize {
        match config.events.max_streams {
            crate::config::MaxStreams::Fixed(n) => n,
            crate::config::MaxStreams::Auto => self.auto_max_streams,
        }
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
