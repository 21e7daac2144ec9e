//! JWT verification with jsonwebtoken: the algorithm must be one configured
//! (and never `none`), the key is chosen by `kid` when the token names one,
//! and every failure maps to a short reason a client can act on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::Value;

use super::jwks::FetchedKeys;
use super::{Denied, Principal};
use crate::config::Auth;
use crate::keys::Key;
use crate::topic::Pattern;

/// The longest token looked at; anything longer is malformed.
const MAX_TOKEN_LEN: usize = 16 * 1024;

fn unauthorized(code: &'static str, message: impl Into<String>) -> Denied {
    Denied::Unauthorized {
        code,
        message: message.into(),
    }
}

/// What verification needs besides the token.
pub struct Verifier<'a> {
    /// The configuration's keys, tried first.
    pub keys: &'a [Key],
    /// The keys fetched from `jwks_url` when verification began.
    pub fetched: Arc<Vec<Key>>,
    pub auth: &'a Auth,
}

/// Verified claims and the key that verified them.
pub struct Verified {
    pub claims: HashMap<String, Value>,
    pub key_id: Arc<str>,
}

/// Whether a failure was an unknown `kid` (worth refetching a JWKS).
pub fn is_unknown_kid(d: &Denied) -> bool {
    matches!(
        d,
        Denied::Unauthorized {
            code: "unknown_kid",
            ..
        }
    )
}

/// The most leeway applied to `exp` and `nbf` (a year): more would make
/// the clock arithmetic of validation meaningless.
const MAX_LEEWAY_SECS: u64 = 365 * 86400;

/// The longest `kid` repeated in an error message.
const MAX_KID_SHOWN: usize = 64;

/// How far ahead an expiry is taken literally; a later one (or a number
/// too large for a clock) counts as this far, so that no timer overflows.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86400);

/// The header fields looked at before any key is tried, read by hand so
/// that `alg: none` or an unknown algorithm is named as such rather than
/// reported as an undecodable header.
#[derive(serde::Deserialize)]
struct RawHeader {
    alg: Value,
}

fn algorithm_of(token: &str) -> Result<Algorithm, Denied> {
    use base64::Engine;
    let not_json = || {
        unauthorized(
            "malformed",
            "the token header is not base64url-encoded JSON",
        )
    };
    let first = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim_end_matches('='))
        .map_err(|_| not_json())?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| not_json())?;
    let Value::String(name) = raw.alg else {
        return Err(unauthorized(
            "malformed",
            "the token header's alg is not a string",
        ));
    };
    if name.eq_ignore_ascii_case("none") {
        return Err(unauthorized(
            "algorithm",
            "unsigned tokens (alg \"none\") are never accepted",
        ));
    }
    name.parse::<Algorithm>().map_err(|_| {
        unauthorized(
            "algorithm",
            format!(
                "algorithm {:?} is not supported",
                name.chars().take(16).collect::<String>()
            ),
        )
    })
}

impl<'a> Verifier<'a> {
    /// A verifier over the configuration's keys and those fetched now.
    pub fn new(auth: &'a Auth, fetched: &FetchedKeys) -> Verifier<'a> {
        Verifier {
            keys: &auth.keys,
            fetched: fetched.load(),
            auth,
        }
    }

    /// Every key in force: the configuration's, then the fetched ones.
    fn all(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter().chain(self.fetched.iter())
    }

    /// Whether `alg` is accepted: one of `algorithms`, or by default one
    /// of the keys' own.
    fn accepts(&self, alg: Algorithm) -> bool {
        match &self.auth.algorithms {
            Some(list) => list.contains(&alg),
            None => self.all().any(|k| k.algorithms.contains(&alg)),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Verified, Denied> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(unauthorized(
                "malformed",
                "the token is not a JWT (three base64url parts)",
            ));
        }
        let alg = algorithm_of(token)?;
        if !self.accepts(alg) {
            return Err(unauthorized(
                "algorithm",
                format!("algorithm {alg:?} is not accepted here"),
            ));
        }
        let header = decode_header(token)
            .map_err(|_| unauthorized("malformed", "the token header is not a valid JWS header"))?;
        // A token naming a kid is verified by that key; one naming a kid
        // that no key has, or none, by the keys without a kid (a PEM key or
        // a secret), so that a provider's habit of always setting kid does
        // not lock out a single configured key.
        let of_alg = |k: &&Key| k.algorithms.contains(&header.alg);
        let named: Vec<&Key> = match &header.kid {
            Some(kid) => self
                .all()
                .filter(of_alg)
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let unknown_kid = match &header.kid {
            Some(kid) if named.is_empty() && self.all().any(|k| k.kid.is_some()) => {
                Some(unauthorized(
                    "unknown_kid",
                    format!(
                        "no {:?} key has kid {:?}",
                        header.alg,
                        kid.chars().take(MAX_KID_SHOWN).collect::<String>()
                    ),
                ))
            }
            _ => None,
        };
        let candidates: Vec<&Key> = if named.is_empty() {
            self.all()
                .filter(of_alg)
                .filter(|k| header.kid.is_none() || k.kid.is_none())
                .collect()
        } else {
            named
        };
        if candidates.is_empty() {
            return Err(unknown_kid.unwrap_or_else(|| {
                unauthorized(
                    "bad_signature",
                    format!("no key is configured for {:?}", header.alg),
                )
            }));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.auth.leeway.as_secs().min(MAX_LEEWAY_SECS);
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        if let Some(iss) = &self.auth.issuer {
            validation.set_issuer(&[iss]);
        }
        if self.auth.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.auth.audience);
        }
        let mut last = unauthorized("bad_signature", "the signature does not verify");
        for key in candidates {
            match decode::<HashMap<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    // jsonwebtoken accepts a token during the second its exp
                    // names; RFC 7519 (and a stream, which ends at exp) does
                    // not, or a client would reopen just to be ended again.
                    let exp = data.claims.get("exp").and_then(Value::as_f64);
                    let ended = |e: f64| {
                        expiry(e)
                            .checked_add(self.auth.leeway)
                            .is_some_and(|at| SystemTime::now() >= at)
                    };
                    if exp.is_some_and(ended) {
                        return Err(unauthorized("expired", "the token has expired"));
                    }
                    return Ok(Verified {
                        claims: data.claims,
                        key_id: key.id.clone(),
                    });
                }
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                            unauthorized("bad_signature", "the signature does not verify")
                        }
                        ErrorKind::ExpiredSignature => {
                            unauthorized("expired", "the token has expired")
                        }
                        ErrorKind::ImmatureSignature => {
                            unauthorized("not_yet_valid", "the token is not valid yet (nbf)")
                        }
                        ErrorKind::InvalidIssuer => {
                            unauthorized("issuer", "the token's issuer is not accepted")
                        }
                        ErrorKind::InvalidAudience => {
                            unauthorized("audience", "the token's audience is not accepted")
                        }
                        ErrorKind::MissingRequiredClaim(c) => {
                            unauthorized("malformed", format!("the token has no {c} claim"))
                        }
                        _ => unauthorized("malformed", "the token cannot be decoded"),
                    };
                    // A bad signature may just be the wrong key of several.
                    if !matches!(
                        last,
                        Denied::Unauthorized {
                            code: "bad_signature",
                            ..
                        }
                    ) {
                        return Err(last);
                    }
                }
            }
        }
        match (&last, unknown_kid) {
            (
                Denied::Unauthorized {
                    code: "bad_signature",
                    ..
                },
                Some(unknown),
            ) => Err(unknown),
            _ => Err(last),
        }
    }

    /// A subscriber's principal from its token.
    pub fn principal(&self, token: &str) -> Result<Principal, Denied> {
        let v = self.verify(token)?;
        let grants = grants_claim(&v.claims, &self.auth.topics_claim)?;
        let user = match v.claims.get("sub") {
            Some(Value::String(s)) => Some(s.as_str().into()),
            Some(_) => return Err(unauthorized("malformed", "the sub claim is not a string")),
            None => None,
        };
        let expires = v.claims.get("exp").and_then(Value::as_f64).map(expiry);
        Ok(Principal {
            user,
            grants,
            claims: v.claims,
            expires,
            key_id: Some(v.key_id),
        })
    }
}

/// The instant an `exp` (seconds since the epoch) names, at most
/// [`FAR_FUTURE`] from now, so that a token valid "forever" cannot overflow
/// the stream's timer.
fn expiry(exp: f64) -> SystemTime {
    let now = SystemTime::now();
    let far = now + FAR_FUTURE;
    Duration::try_from_secs_f64(exp.max(0.0))
        .ok()
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
        .map_or(far, |at| at.min(far))
}

/// Patterns from a claim that lists them (a missing claim grants nothing).
pub fn grants_claim(claims: &HashMap<String, Value>, name: &str) -> Result<Vec<Pattern>, Denied> {
    match claims.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or(())
                    .and_then(|s| Pattern::parse(s).map_err(|_| ()))
                    .map_err(|_| {
                        unauthorized(
                            "malformed",
                            format!("the {name} claim must list topic patterns"),
                        )
                    })
            })
            .collect(),
        Some(Value::String(s)) => Pattern::parse(s).map(|p| vec![p]).map_err(|_| {
            unauthorized(
                "malformed",
                format!("the {name} claim must list topic patterns"),
            )
        }),
        Some(_) => Err(unauthorized(
            "malformed",
            format!("the {name} claim must list topic patterns"),
        )),
    }
}
