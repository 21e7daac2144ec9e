//! `sidecast token`: a development token signed with the configured HS
//! secret (the file's when `secret_file` is set, else `secret_env`'s), with
//! the configured issuer, first audience and grants claim, so that it opens
//! a stream on this very configuration.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, SystemTimeError, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use crate::config::Config;
use crate::topic::{Pattern, PatternError};

/// Why no token could be minted (`sidecast token` prints it and exits 2).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--topic: {0}")]
    Topic(PatternError),
    #[error("{}: {error}", path.display())]
    SecretFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no HS secret: set {0} (or auth.secret_file)")]
    NoSecret(String),
    #[error("auth.algorithms accepts no HS algorithm, so a token signed with the HS secret would be refused")]
    NoHsAlgorithm,
    #[error("{0}")]
    Clock(SystemTimeError),
    #[error("{0}")]
    Encode(jsonwebtoken::errors::Error),
}

/// Mints a token for `sub` granting `topics`, valid for `ttl`.
pub fn mint(
    config: &Config,
    sub: &str,
    topics: &[String],
    ttl: Duration,
) -> Result<String, TokenError> {
    for t in topics {
        Pattern::parse(t).map_err(TokenError::Topic)?;
    }
    let a = &config.auth;
    let secret: Vec<u8> = if let Some(p) = &a.secret_file {
        let b = std::fs::read(p).map_err(|error| TokenError::SecretFile {
            path: p.clone(),
            error,
        })?;
        b.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(b)
    } else {
        use std::os::unix::ffi::OsStringExt;
        std::env::var_os(&a.secret_env)
            .filter(|v| !v.is_empty())
            .map(OsStringExt::into_vec)
            .ok_or_else(|| TokenError::NoSecret(a.secret_env.clone()))?
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(TokenError::Clock)?
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": sub,
        "iat": now,
        "exp": now.saturating_add(ttl.as_secs()),
    });
    claims[a.topics_claim.as_str()] = serde_json::json!(topics);
    if let Some(iss) = &a.issuer {
        claims["iss"] = serde_json::json!(iss);
    }
    if let Some(aud) = a.audience.first() {
        claims["aud"] = serde_json::json!(aud);
    }
    // The first HS algorithm accepted; a configuration that accepts none
    // would refuse the token, so say so instead of printing it.
    let hs = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    let alg = match &a.algorithms {
        None => Algorithm::HS256,
        Some(algs) => *algs
            .iter()
            .find(|x| hs.contains(x))
            .ok_or(TokenError::NoHsAlgorithm)?,
    };
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(&secret),
    )
    .map_err(TokenError::Encode)
}
