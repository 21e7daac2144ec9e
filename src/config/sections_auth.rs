//! `[auth]`: modes, token settings, forward auth, and the keys, loaded here
//! so that a missing variable or unreadable key file is reported like any
//! other configuration error (and a reload re-reads key files).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::reader::{self as r, take, Diag, Expected, Table};
use super::sections::{Auth, AuthMode, ForwardUser};
use super::values::{nonzero_duration as nonzero, path_value as file_path};
use crate::keys;
use crate::topic::Pattern;

fn algorithm(name: &str) -> Result<Algorithm, Expected> {
    name.parse::<Algorithm>().map_err(|_| {
        format!("expected algorithms among HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA, found {name:?}").into()
    })
}

/// `algorithms`: each name checked where it stands; an empty list is an
/// error (it would refuse every token).
fn read_algorithms(d: &mut Diag, t: &mut Table) -> Option<Vec<Algorithm>> {
    let span = t.raw("algorithms").map(|v| v.span());
    let list = t.get_list(d, "algorithms", algorithm)?;
    if list.is_empty() {
        d.error(
            &span.unwrap_or_else(|| t.span()),
            &t.key_path("algorithms"),
            "expected at least one algorithm, such as [\"HS256\"]",
        );
        return None;
    }
    Some(list)
}

pub(super) fn read_auth(d: &mut Diag, t: &mut Table, base: &Path) -> Auth {
    let mut spans = Vec::new();
    let mut file = |t: &mut Table, d: &mut Diag, key: &'static str| {
        t.get_spanned(d, key, |v| file_path(base, v)).map(|(p, s)| {
            spans.push((key, s.clone()));
            (p, s)
        })
    };
    let secret_file = file(t, d, "secret_file");
    let public_key_file = file(t, d, "public_key_file");
    let jwks_file = file(t, d, "jwks_file");
    let secret_env_set = t.has("secret_env");
    let secret_env = t.get_spanned(d, "secret_env", r::env_name);
    let mut auth = Auth {
        required: take!(t, d, "required", r::boolean, true),
        mode: take!(
            t,
            d,
            "mode",
            |v| r::one_of(v, &[("jwt", AuthMode::Jwt), ("forward", AuthMode::Forward)]),
            AuthMode::Jwt
        ),
        secret_env: secret_env
            .as_ref()
            .map_or_else(|| "SIDECAST_JWT_SECRET".to_owned(), |(v, _)| v.clone()),
        secret_file: secret_file.as_ref().map(|(p, _)| p.clone()),
        public_key_file: public_key_file.as_ref().map(|(p, _)| p.clone()),
        jwks_file: jwks_file.as_ref().map(|(p, _)| p.clone()),
        jwks_url: t.get(d, "jwks_url", |v| {
            let url = r::string(v)?;
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(url)
            } else {
                Err(format!("expected an http:// or https:// URL, found {url:?}").into())
            }
        }),
        algorithms: read_algorithms(d, t),
        issuer: t.get(d, "issuer", r::string),
        audience: take!(t, d, "audience", r::one_or_many, Vec::new()),
        leeway: take!(t, d, "leeway", r::duration, Duration::from_secs(5)),
        cookie: take!(t, d, "cookie", r::string, "sidecast_token".to_owned()),
        topics_claim: take!(t, d, "topics_claim", r::string, "topics".to_owned()),
        jwks_refresh: take!(t, d, "jwks_refresh", nonzero, Duration::from_secs(300)),
        forward: t.get(d, "forward", |v| {
            let f = r::string(v)?;
            if f.starts_with('/') || f.starts_with("http://") {
                Ok(f)
            } else {
                Err(
                    format!("expected a path such as \"/api/me\" or an http:// URL, found {f:?}")
                        .into(),
                )
            }
        }),
        forward_headers: t
            .get_list(d, "forward_headers", |h| {
                http::HeaderName::from_bytes(h.as_bytes())
                    .map(|_| h.to_ascii_lowercase())
                    .map_err(|_| {
                        format!("expected a header name such as \"cookie\", found {h:?}").into()
                    })
            })
            .unwrap_or_else(|| vec!["cookie".to_owned(), "authorization".to_owned()]),
        forward_user: take!(
            t,
            d,
            "forward_user",
            |v| {
                let f = r::string(v)?;
                if let Some(name) = f.strip_prefix("header:") {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_ok() {
                        return Ok(ForwardUser::Header(name.to_ascii_lowercase()));
                    }
                } else if f.starts_with('/') {
                    return Ok(ForwardUser::Pointer(f));
                }
                Err(format!(
                "expected \"header:NAME\" or a JSON pointer starting with '/' such as \"/user/id\", found {f:?}"
            ).into())
            },
            ForwardUser::Header("sidecast-user".to_owned())
        ),
        forward_grants: t
            .get_list(d, "forward_grants", |g| {
                Pattern::parse(&g.replace("{sub}", "x"))
                    .map(|_| g.to_owned())
                    .map_err(|e| format!("bad grant pattern {g:?}: {e}").into())
            })
            .unwrap_or_default(),
        forward_timeout: take!(t, d, "forward_timeout", nonzero, Duration::from_secs(3)),
        forward_cache: take!(t, d, "forward_cache", r::duration, Duration::from_secs(10)),
        forward_recheck: take!(t, d, "forward_recheck", nonzero, Duration::from_secs(300)),
        keys: Vec::new(),
    };
    if auth.mode == AuthMode::Forward && auth.forward.is_none() {
        d.error(
            &t.span(),
            &t.key_path("forward"),
            "mode = \"forward\" needs forward, the app endpoint to ask (such as \"/api/me\")",
        );
    }
    if auth.mode == AuthMode::Jwt || !auth.required {
        load_keys(
            d,
            t,
            &mut auth,
            secret_env_set,
            secret_env.map(|(_, s)| s),
            &spans,
        );
    }
    t.finish(d);
    auth
}

/// Loads every key source named. With none but the default `secret_env`,
/// that variable is the key, and its absence is an error when auth is
/// required in JWT mode.
fn load_keys(
    d: &mut Diag,
    t: &Table,
    auth: &mut Auth,
    secret_env_set: bool,
    secret_env_span: Option<std::ops::Range<usize>>,
    spans: &[(&'static str, std::ops::Range<usize>)],
) {
    let span_of = |key: &str| {
        spans
            .iter()
            .find(|(k, _)| *k == key)
            .map_or_else(|| t.span(), |(_, s)| s.clone())
    };
    let others = auth.secret_file.is_some()
        || auth.public_key_file.is_some()
        || auth.jwks_file.is_some()
        || auth.jwks_url.is_some();
    // A `secret_env` that is not a variable's name was reported already;
    // the default variable is not read in its place.
    let env_usable = !secret_env_set || secret_env_span.is_some();
    let env_span = secret_env_span.unwrap_or_else(|| t.span());
    match std::env::var_os(&auth.secret_env).filter(|_| env_usable) {
        Some(v) if !v.is_empty() => {
            use std::os::unix::ffi::OsStrExt;
            match keys::secret_key(v.as_bytes(), &format!("${}", auth.secret_env)) {
                Ok(k) => auth.keys.push(k),
                Err(e) => d.error(&env_span, &t.key_path("secret_env"), e.to_string()),
            }
        }
        _ if env_usable
            && (secret_env_set || !others)
            && auth.required
            && auth.mode == AuthMode::Jwt =>
        {
            d.error(
            &env_span,
            &t.key_path("secret_env"),
            format!(
                "the environment variable {} is missing or empty; set it to the HS secret (at least {} bytes), or configure another key source",
                auth.secret_env,
                keys::MIN_SECRET_LEN
            ),
        )
        }
        _ => {}
    }
    // Each key file is read and parsed alike; only the parse differs.
    type Parse = fn(&[u8], &str) -> Result<Vec<keys::Key>, keys::KeyError>;
    let files: [(&str, Option<PathBuf>, Parse); 3] = [
        ("secret_file", auth.secret_file.clone(), |bytes, from| {
            let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            keys::secret_key(trimmed, from).map(|k| vec![k])
        }),
        (
            "public_key_file",
            auth.public_key_file.clone(),
            |bytes, from| keys::pem_key(bytes, from).map(|k| vec![k]),
        ),
        ("jwks_file", auth.jwks_file.clone(), |bytes, from| {
            keys::jwks_keys(bytes, from).map(|(ks, _notes)| ks)
        }),
    ];
    for (key, path, parse) in files {
        let Some(path) = path else { continue };
        let (span, name) = (span_of(key), t.key_path(key));
        match std::fs::read(&path) {
            Err(e) => d.error(&span, &name, format!("cannot read {}: {e}", path.display())),
            Ok(bytes) => match parse(&bytes, &path.display().to_string()) {
                Ok(ks) => auth.keys.extend(ks),
                Err(e) => d.error(&span, &name, e.to_string()),
            },
        }
    }
}
