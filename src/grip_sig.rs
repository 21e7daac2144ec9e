//! `Grip-Sig`: the JWT every proxied request carries when a key is
//! configured, so that a GRIP app can tell that a proxy which honours its
//! hold instructions stands in front of it (GRIP libraries check it with
//! their own validator: HS256, and an `exp` still ahead).
//!
//! Signing costs an HMAC and two base64 encodings: the token is made once
//! and reused for a minute, not made per request: its `exp` stays within
//! a minute of one hour ahead.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

/// How long a token is valid.
const LIFETIME: u64 = 3600;
/// A token with less than this left is made anew.
const RENEW_BELOW: u64 = LIFETIME - 60;

#[derive(serde::Serialize)]
struct Claims {
    iss: &'static str,
    exp: u64,
}

/// The signer of one configuration (a reload with another key makes
/// another).
pub struct GripSigner {
    key: EncodingKey,
    /// The token in use and its `exp`.
    current: Mutex<Option<(u64, Arc<str>)>>,
}

impl std::fmt::Debug for GripSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GripSigner")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl GripSigner {
    /// The key's bytes as they are (Pushpin's `sig_key` is used the same
    /// way, so an app keeps its validator's key).
    pub fn new(key: &[u8]) -> GripSigner {
        GripSigner {
            key: EncodingKey::from_secret(key),
            current: Mutex::new(None),
        }
    }

    /// The `Grip-Sig` value to send now.
    pub fn token(&self) -> Arc<str> {
        let now = now();
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((exp, t)) = &*cur {
            if *exp > now + RENEW_BELOW {
                return t.clone();
            }
        }
        let exp = now + LIFETIME;
        let claims = Claims {
            iss: "sidecast",
            exp,
        };
        // HS256 over two small JSON objects cannot fail.
        let token: Arc<str> = encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .unwrap_or_default()
            .into();
        *cur = Some((exp, token.clone()));
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[derive(serde::Deserialize)]
    struct Seen {
        iss: String,
        exp: u64,
    }

    #[test]
    fn signs_hs256_with_issuer_and_an_hour_and_reuses_the_token() {
        let s = GripSigner::new(b"changeme");
        let t = s.token();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["sidecast"]);
        let got = decode::<Seen>(t.as_bytes(), &DecodingKey::from_secret(b"changeme"), &v).unwrap();
        assert_eq!(got.claims.iss, "sidecast");
        let left = got.claims.exp - now();
        assert!((LIFETIME - 5..=LIFETIME).contains(&left), "{left}");
        assert_eq!(s.token(), t, "made once, not per request");
        assert!(decode::<Seen>(t.as_bytes(), &DecodingKey::from_secret(b"other"), &v).is_err());
    }
}
