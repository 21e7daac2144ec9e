//! JWT verification with jsonwebtoken: the algorithm must be one configured
//! (and never `none`), the key is chosen by `kid` when the token names one,
//! and every failure maps to a short reason a client can act on.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::Value;

use super::keys::Key;
use super::{Denied, Principal};
use crate::config::Auth;
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
    pub keys: &'a [Key],
    pub algorithms: &'a [Algorithm],
    pub auth: &'a Auth,
}

/// Verified claims and the key that verified them.
pub struct Verified {
    pub claims: HashMap<String, Value>,
    pub key_id: std::sync::Arc<str>,
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

impl Verifier<'_> {
    pub fn verify(&self, token: &str) -> Result<Verified, Denied> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(unauthorized(
                "malformed",
                "the token is not a JWT (three base64url parts)",
            ));
        }
        let header = decode_header(token).map_err(|_| {
            unauthorized(
                "malformed",
                "the token header is not valid JSON with a supported alg",
            )
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(unauthorized(
                "algorithm",
                format!("algorithm {:?} is not accepted here", header.alg),
            ));
        }
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => true,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(match &header.kid {
                Some(kid) if self.keys.iter().any(|k| k.kid.is_some()) => {
                    unauthorized("unknown_kid", format!("no key with kid {kid:?}"))
                }
                _ => unauthorized(
                    "bad_signature",
                    format!("no key configured for {:?}", header.alg),
                ),
            });
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.auth.leeway.as_secs();
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
                    return Ok(Verified {
                        claims: data.claims,
                        key_id: key.id.clone(),
                    })
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
        Err(last)
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
        let expires = v
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s.max(0.0)));
        Ok(Principal {
            user,
            grants,
            claims: v.claims,
            expires,
            key_id: Some(v.key_id),
        })
    }
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
