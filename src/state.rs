//! State shared by the listeners: the reloadable runtime (swapped whole
//! through arc-swap), the hub, metrics, the lifecycle flags and the clients
//! that outlive a reload (forward auth, JWKS, the cluster link).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::jwks::FetchedKeys;
use crate::auth::jwt::Verifier;
use crate::auth::mode::Authenticator;
use crate::config::Config;
use crate::events::hub::Hub;
use crate::grip_sig::GripSigner;
use crate::keys::Key;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::routes::RouteTable;

/// Everything derived from one configuration; a reload builds a new one.
pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// The keys fetched from `jwks_url`: the JWKS client's store, which
    /// every runtime shares, so that a refresh swaps the keys without
    /// building a runtime, and a reload keeps them.
    pub fetched: Arc<FetchedKeys>,
    /// Signs proxied requests with `Grip-Sig` when a key is configured.
    pub grip_sig: Option<GripSigner>,
}

impl Runtime {
    /// A runtime with a key store of its own holding `fetched` (for checks
    /// and tests); the running sidecar shares the JWKS client's store
    /// through [`Runtime::with_keys`].
    pub fn new(config: Arc<Config>, fetched: &[Key]) -> Runtime {
        Runtime::with_keys(config, Arc::new(FetchedKeys::new(fetched.to_vec())))
    }

    pub fn with_keys(config: Arc<Config>, fetched: Arc<FetchedKeys>) -> Runtime {
        Runtime {
            routes: RouteTable::new(&config),
            grip_sig: config
                .upstream
                .grip_sig_key
                .as_ref()
                .map(|k| GripSigner::new(&k.0)),
            config,
            fetched,
        }
    }

    /// A verifier over the configuration's keys and those fetched now.
    pub fn verifier(&self) -> Verifier<'_> {
        Verifier::new(&self.config.auth, &self.fetched)
    }

    /// The identity of every key in force.
    pub fn key_ids(&self) -> Vec<Arc<str>> {
        let fetched = self.fetched.load();
        let all = self.config.auth.keys.iter().chain(fetched.iter());
        all.map(|k| k.id.clone()).collect()
    }
}

pub(crate) struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Lifecycle,
    /// What `max_streams = "auto"` resolves to on this machine, computed
    /// once at start-up (the limits it derives from do not change).
    pub auto_max_streams: usize,
    /// Forward auth's client and cache.
    pub forward: crate::auth::forward::ForwardAuth,
    /// The JWKS-URL client and the keys it fetched (used only when
    /// `jwks_url` is set).
    pub jwks: Arc<crate::auth::jwks::Jwks>,
    /// Cluster mode's link to Redis.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Shared {
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// What authenticates a subscriber under `rt`, the runtime its request
    /// was routed with.
    pub fn authenticator<'a>(&'a self, rt: &'a Runtime) -> Authenticator<'a> {
        Authenticator {
            auth: &rt.config.auth,
            fetched: &rt.fetched,
            jwks: &self.jwks,
            forward: &self.forward,
            upstream: &rt.config.upstream.target,
        }
    }

    /// The stream limit a configuration asks for.
    pub fn max_streams(&self, config: &Config) -> usize {
        match config.events.max_streams {
            crate::config::MaxStreams::Fixed(n) => n,
            crate::config::MaxStreams::Auto => self.auto_max_streams,
        }
    }
}
