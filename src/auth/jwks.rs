//! Keys from an identity provider's JWKS URL: fetched at start (start-up
//! fails if the first fetch does), every `jwks_refresh`, and on a token with
//! an unknown `kid` at most once a minute. When a fetch fails the last good
//! set is kept, so a provider outage does not lock users out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

use super::keys::{jwks_keys, Key};
use crate::state::{Runtime, Shared};

/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// An unknown `kid` refetches at most this often.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The JWKS client and when it last fetched on an unknown `kid`.
pub struct Jwks {
    client: Client<Https, Empty<Bytes>>,
    last_unknown: Mutex<Option<Instant>>,
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
        }
    }

    /// Fetches and parses the key set at `url`.
    pub async fn fetch(&self, url: &str) -> Result<Vec<Key>, String> {
        let req = http::Request::get(url)
            .header("Accept", "application/json")
            .body(Empty::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: answered {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            let (keys, notes) = jwks_keys(&body, url)?;
            for n in notes {
                tracing::warn!("{n}");
            }
            Ok(keys)
        };
        tokio::time::timeout(FETCH_TIMEOUT, call)
            .await
            .map_err(|_| format!("{url}: no answer within {FETCH_TIMEOUT:?}"))?
    }

    /// Fetches and swaps the keys in; keeps the last good set on failure.
    pub async fn refresh(&self, shared: &Shared) -> bool {
        let Some(url) = shared.runtime().config.auth.jwks_url.clone() else {
            return false;
        };
        match self.fetch(&url).await {
            Ok(keys) => {
                shared
                    .runtime
                    .rcu(|rt| Arc::new(Runtime::new(rt.config.clone(), &keys)));
                tracing::debug!(keys = keys.len(), "JWKS refreshed");
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
    pub async fn on_unknown_kid(&self, shared: &Shared) -> bool {
        {
            let mut last = self.last_unknown.lock().await;
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh(shared).await
    }
}

/// Refreshes every `jwks_refresh` while the process lives.
pub async fn refresh_loop(shared: Arc<Shared>) {
    loop {
        let every = shared.runtime().config.auth.jwks_refresh;
        tokio::time::sleep(every).await;
        shared.jwks.refresh(&shared).await;
    }
}
