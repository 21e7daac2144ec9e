//! `sidecast token`: a development token signed with the configured HS
//! secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};

use crate::config::Config;

/// Mints a token for `sub` granting `topics`, valid for `ttl`.
pub fn mint(
    config: &Config,
    sub: &str,
    topics: &[String],
    ttl: Duration,
) -> Result<String, String> {
    for t in topics {
        crate::topic::Pattern::parse(t).map_err(|e| format!("--topic: {e}"))?;
    }
    let a = &config.auth;
    let secret: Vec<u8> = if let Some(p) = &a.secret_file {
        let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        b.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(b)
    } else {
        std::env::var(&a.secret_env)
            .ok()
            .filter(|v| !v.is_empty())
            .map(String::into_bytes)
            .ok_or_else(|| format!("no HS secret: set {} (or auth.secret_file)", a.secret_env))?
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": sub,
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    claims[a.topics_claim.as_str()] = serde_json::json!(topics);
    if let Some(iss) = &a.issuer {
        claims["iss"] = serde_json::json!(iss);
    }
    if let Some(aud) = a.audience.first() {
        claims["aud"] = serde_json::json!(aud);
    }
    let alg = a
        .algorithms
        .as_ref()
        .and_then(|algs| {
            algs.iter()
                .find(|x| {
                    matches!(
                        x,
                        jsonwebtoken::Algorithm::HS256
                            | jsonwebtoken::Algorithm::HS384
                            | jsonwebtoken::Algorithm::HS512
                    )
                })
                .copied()
        })
        .unwrap_or(jsonwebtoken::Algorithm::HS256);
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(&secret),
    )
    .map_err(|e| e.to_string())
}
