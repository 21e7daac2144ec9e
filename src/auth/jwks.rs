//! Keys from an identity provider's JWKS URL: fetched at start (start-up
//! fails if the first fetch does), on a reload that sets or changes the URL
//! (the reload is refused if that fetch fails), every `jwks_refresh`, and
//! on a token with an unknown `kid` at most once a minute. When a refresh
//! fails the last good set is kept, so a provider outage does not lock
//! users out. The client owns the fetched keys and swaps them in whole:
//! nothing else is rebuilt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

use crate::keys::{jwks_keys, Key, KeyError};

/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// An unknown `kid` refetches at most this often.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Why a fetch of the key set failed (the last good set stays).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request could not be built or sent, or the body not read.
    #[error("{url}: {why}")]
    Request { url: String, why: String },
    #[error("{url}: answered {status}")]
    Status {
        url: String,
        status: http::StatusCode,
    },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{url}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
}

/// The keys fetched from `jwks_url`, read once per verification.
#[derive(Default)]
pub struct FetchedKeys(ArcSwap<Vec<Key>>);

impl FetchedKeys {
    pub fn new(keys: Vec<Key>) -> FetchedKeys {
        FetchedKeys(ArcSwap::from_pointee(keys))
    }

    pub fn load(&self) -> Arc<Vec<Key>> {
        self.0.load_full()
    }

    fn store(&self, keys: Vec<Key>) {
        self.0.store(Arc::new(keys));
    }
}

/// The JWKS client, the keys it fetched, and when it last fetched on an
/// unknown `kid`.
pub struct Jwks {
    client: Client<Https, Empty<Bytes>>,
    last_unknown: Mutex<Option<Instant>>,
    keys: Arc<FetchedKeys>,
    /// The URL the keys in force came from (`None`: no URL, no keys). A
    /// refresh stores what it fetched only if its URL is still this one,
    /// so a fetch of the old URL that ends after a reload changed it
    /// cannot bring the old provider's keys back.
    source: std::sync::Mutex<Option<String>>,
}

impl Default for Jwks {
    fn default() -> Self {
        Self::new()
    }
}

impl Jwks {
    pub fn new() -> Jwks {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Jwks {
            client: Client::builder(TokioExecutor::new()).build(https),
            last_unknown: Mutex::new(None),
            keys: Arc::default(),
            source: std::sync::Mutex::new(None),
        }
    }

    /// The store of fetched keys, for runtimes to share.
    pub fn keys(&self) -> Arc<FetchedKeys> {
        self.keys.clone()
    }

    /// Fetches the key set at `url` and puts it in force; how many keys
    /// came.
    pub async fn load(&self, url: &str) -> Result<usize, FetchError> {
        let keys = self.fetch(url).await?;
        let n = keys.len();
        self.install(Some(url), keys);
        Ok(n)
    }

    /// Puts `keys`, fetched from `url`, in force (no URL: no keys), for a
    /// reload that set, changed or removed the URL.
    pub fn install(&self, url: Option<&str>, keys: Vec<Key>) {
        let mut source = self.source.lock().unwrap_or_else(|e| e.into_inner());
        *source = url.map(str::to_owned);
        self.keys.store(keys);
    }

    /// Fetches and parses the key set at `url`.
    pub async fn fetch(&self, url: &str) -> Result<Vec<Key>, FetchError> {
        let failed = |why: &dyn std::fmt::Display| FetchError::Request {
            url: url.to_owned(),
            why: why.to_string(),
        };
        let req = http::Request::get(url)
            .header("Accept", "application/json")
            .body(Empty::new())
            .map_err(|e| failed(&e))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| failed(&e))?;
            if !resp.status().is_success() {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status: resp.status(),
                });
            }
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| failed(&e))?
                .to_bytes();
            let (keys, notes) = jwks_keys(&body, url)?;
            for n in notes {
                tracing::warn!("{n}");
            }
            Ok(keys)
        };
        tokio::time::timeout(FETCH_TIMEOUT, call)
            .await
            .map_err(|_| FetchError::Timeout {
                url: url.to_owned(),
            })?
    }

    /// Fetches and swaps the keys in; keeps the last good set on failure,
    /// and drops what came if a reload has meanwhile moved to another URL.
    pub async fn refresh(&self, url: &str) -> bool {
        match self.fetch(url).await {
            Ok(keys) => {
                let source = self.source.lock().unwrap_or_else(|e| e.into_inner());
                if source.as_deref() != Some(url) {
                    tracing::debug!("JWKS fetched from a URL no longer in force; dropped");
                    return false;
                }
                tracing::debug!(keys = keys.len(), "JWKS refreshed");
                self.keys.store(keys);
                true
            }
            Err(e) => {
                tracing::warn!("JWKS refresh failed, keeping the last good key set: {e}");
                false
            }
        }
    }

    /// Refetches for a token with an unknown `kid`, at most once a minute;
    /// whether new keys were swapped in.
    pub async fn on_unknown_kid(&self, url: &str) -> bool {
        {
            let mut last = self.last_unknown.lock().await;
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh(url).await
    }

    /// Refreshes every `jwks_refresh` while the process lives. `settings`
    /// reads the URL and the interval in force (a reload may change them;
    /// without a URL a round fetches nothing).
    pub fn spawn_refresh<F>(self: &Arc<Self>, settings: F)
    where
        F: Fn() -> (Option<String>, Duration) + Send + 'static,
    {
        let jwks = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(settings().1).await;
                if let Some(url) = settings().0 {
                    jwks.refresh(&url).await;
                }
            }
        });
    }
}
