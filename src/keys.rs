//! JWT verification keys: an HS secret (variable or file), a PEM public key,
//! a JWKS file, or a JWKS fetched from a URL. Every source configured is used
//! at once, so keys can rotate.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// An HS secret shorter than this is refused.
pub const MIN_SECRET_LEN: usize = 32;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// Stable identity of the key material: a stream remembers it, and a
    /// reload that drops it closes the stream (a revoked key takes effect).
    pub id: Arc<str>,
    /// From a JWKS: the `kid` a token must name to use this key.
    pub kid: Option<String>,
    /// The algorithms this key may verify.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    /// Where it came from, for logs (never the key itself).
    pub source: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("source", &self.source)
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

const HS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];

fn fingerprint(kind: &str, bytes: &[u8]) -> Arc<str> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    bytes.hash(&mut h);
    format!("{kind}:{:016x}", h.finish()).into()
}

/// Why key material is refused; `from` names where it came from (a file,
/// `$VARIABLE` or a URL), never the key itself.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{from}: the HS secret is {len} bytes; at least {min} are required", min = MIN_SECRET_LEN)]
    ShortSecret { from: String, len: usize },
    #[error("{0}: not a PEM public key (RSA, EC or Ed25519 \"-----BEGIN PUBLIC KEY-----\")")]
    NotPem(String),
    #[error("{from}: not a JWKS document ({{\"keys\": [...]}}): {error}")]
    NotJwks {
        from: String,
        error: serde_json::Error,
    },
    #[error("{0}: the key set has no usable signing key")]
    NoUsableKey(String),
}

/// An HS key from secret bytes, refusing short ones.
pub fn secret_key(bytes: &[u8], source: &str) -> Result<Key, KeyError> {
    if bytes.len() < MIN_SECRET_LEN {
        return Err(KeyError::ShortSecret {
            from: source.to_owned(),
            len: bytes.len(),
        });
    }
    Ok(Key {
        id: fingerprint("hs", bytes),
        kid: None,
        algorithms: HS.to_vec(),
        key: DecodingKey::from_secret(bytes),
        source: source.to_owned(),
    })
}

/// A PEM public key: RSA, EC or Ed25519, whichever it parses as.
pub fn pem_key(pem: &[u8], source: &str) -> Result<Key, KeyError> {
    let id = fingerprint("pem", pem);
    let (key, algorithms) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (k, RSA.to_vec())
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (k, EC.to_vec())
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, vec![Algorithm::EdDSA])
    } else {
        return Err(KeyError::NotPem(source.to_owned()));
    };
    Ok(Key {
        id,
        kid: None,
        algorithms,
        key,
        source: source.to_owned(),
    })
}

/// The keys of a JWKS document. A key whose set declares `alg` verifies that
/// algorithm only; `use: enc` keys are skipped; unsupported keys are skipped
/// with a note in the returned warnings.
pub fn jwks_keys(json: &[u8], source: &str) -> Result<(Vec<Key>, Vec<String>), KeyError> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|error| KeyError::NotJwks {
        from: source.to_owned(),
        error,
    })?;
    let mut keys = Vec::new();
    let mut notes = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA.to_vec(),
            AlgorithmParameters::EllipticCurve(_) => EC.to_vec(),
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => HS.to_vec(),
        };
        let algorithms = match jwk
            .common
            .key_algorithm
            .map(|a| format!("{a:?}").parse::<Algorithm>())
        {
            None => family,
            Some(Ok(alg)) if family.contains(&alg) => vec![alg],
            Some(_) => {
                notes.push(format!(
                    "{source}: key {name}: its alg does not fit its kty; skipped"
                ));
                continue;
            }
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push(Key {
                id: fingerprint(
                    "jwk",
                    serde_json::to_string(jwk).unwrap_or_default().as_bytes(),
                ),
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
                source: format!("{source} kid {name}"),
            }),
            Err(e) => notes.push(format!("{source}: key {name} unusable ({e}); skipped")),
        }
    }
    if keys.is_empty() {
        return Err(KeyError::NoUsableKey(source.to_owned()));
    }
    Ok((keys, notes))
}

/// Default algorithms: those of the keys configured.
pub fn family_of(keys: &[Key]) -> Vec<Algorithm> {
    let mut out: Vec<Algorithm> = Vec::new();
    for k in keys {
        for a in &k.algorithms {
            if !out.contains(a) {
                out.push(*a);
            }
        }
    }
    out
}
