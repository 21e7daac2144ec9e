//! Who a subscriber is and what it may read: tokens from a request, JWT
//! verification (keys in `crate::keys`, fetched ones in `jwks`), grants.
//! Forward auth (asking the app) lives in `forward`; which of them decides
//! for a request (the configured mode) in `mode`. Nothing here knows of
//! streams or listeners: the subscribe layer above calls in.

pub(crate) mod forward;
pub(crate) mod jwks;
pub mod jwt;
pub(crate) mod mode;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::http1::head::Head;
use crate::topic::{Pattern, Topic};

/// An authenticated subscriber.
#[derive(Clone, Debug, Default)]
pub struct Principal {
    /// The stream's user (`sub`, or the user forward auth returned).
    pub user: Option<Arc<str>>,
    pub grants: Vec<Pattern>,
    /// String and other claims, for route templates (`{team}`).
    pub claims: HashMap<String, serde_json::Value>,
    /// When the token expires: the stream ends then.
    pub expires: Option<SystemTime>,
    /// Identity of the key that verified the token.
    pub key_id: Option<Arc<str>>,
}

impl Principal {
    pub fn may_read(&self, topic: &Topic) -> bool {
        crate::topic::granted(&self.grants, topic)
    }
}

/// Why a subscriber is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// `401`: `code` is the `error=` of `WWW-Authenticate` and the metric
    /// reason (`missing`, `malformed`, `bad_signature`, `expired`, ...).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// `403`.
    #[error("{0}")]
    Forbidden(String),
    /// `503` (forward auth's app unavailable): a passing refusal.
    #[error("{0}")]
    Unavailable(String),
}

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Query,
    Cookie,
}

/// The token of a request: `Authorization: Bearer`, then the query's
/// `token` or `access_token`, then the configured cookie.
pub fn token_of(head: &Head, cookie: &str) -> Result<Option<(String, TokenSource)>, Denied> {
    if let Some(v) = head.header("authorization") {
        let v = std::str::from_utf8(v)
            .map_err(|_| malformed("the Authorization header is not text"))?;
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(malformed("expected Authorization: Bearer <token>"));
        }
        return Ok(Some((rest.trim().to_owned(), TokenSource::Header)));
    }
    for (k, v) in form_urlencoded::parse(head.query().as_bytes()) {
        if k == "token" || k == "access_token" {
            return Ok(Some((v.into_owned(), TokenSource::Query)));
        }
    }
    for (name, value) in &head.headers {
        if name != "cookie" {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k.trim() == cookie {
                    return Ok(Some((
                        v.trim().trim_matches('"').to_owned(),
                        TokenSource::Cookie,
                    )));
                }
            }
        }
    }
    Ok(None)
}

pub(crate) fn malformed(message: &str) -> Denied {
    Denied::Unauthorized {
        code: "malformed",
        message: message.to_owned(),
    }
}
