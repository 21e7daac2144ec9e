//! Forward auth: a legacy app's own session decides. Each subscriber is
//! authorised by a `GET` to the app's existing "who am I" endpoint carrying
//! the subscriber's cookie and authorization headers; answers are cached for
//! `forward_cache` (keyed by the forwarded header values and the sorted
//! topics, so a different cookie never hits another user's entry), identical
//! concurrent requests make one call. Open streams are asked again every
//! `forward_recheck` so that a logout ends them: which streams and when is
//! `subscribe::recheck`'s, the asking ([`ForwardAuth::recheck`]) is here.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::OnceCell;

use super::{Denied, Principal};
use crate::config::{Auth, ForwardUser, Target};
use crate::http1::head::Head;
use crate::metrics::{Metrics, ResultLabel};
use crate::topic::{encode_value, Pattern, Topic};

/// Cached answers at most; past it the oldest go first.
const MAX_CACHED: usize = 10_000;
/// The app's answer body read for a JSON-pointer user, at most.
const MAX_BODY: usize = 64 * 1024;

/// What a subscriber sends that the app needs to decide: the forwarded
/// headers, its address and request target, and the topics it asks for.
#[derive(Clone, Debug)]
pub struct Creds {
    headers: Vec<(String, Vec<u8>)>,
    peer: Option<IpAddr>,
    original_uri: String,
    topics: Vec<Topic>,
}

impl Creds {
    pub fn new(head: &Head, auth: &Auth, peer: Option<IpAddr>, topics: &[Topic]) -> Creds {
        let headers = head
            .headers
            .iter()
            .filter(|(n, _)| auth.forward_headers.iter().any(|f| f == n))
            .cloned()
            .collect();
        let mut topics = topics.to_vec();
        topics.sort();
        Creds {
            headers,
            peer,
            original_uri: head.target.clone(),
            topics,
        }
    }

    fn cache_key(&self) -> Vec<u8> {
        let mut k = Vec::new();
        for (n, v) in &self.headers {
            k.extend_from_slice(n.as_bytes());
            k.push(0);
            k.extend_from_slice(v);
            k.push(0);
        }
        k.push(1);
        for t in &self.topics {
            k.extend_from_slice(t.as_str().as_bytes());
            k.push(0);
        }
        k
    }
}

/// The app's decision.
#[derive(Clone, Debug)]
pub enum Outcome {
    Allowed {
        user: Option<Arc<str>>,
        grants: Vec<Pattern>,
    },
    Denied(Denied),
    Unavailable(String),
}

/// Answers with their expiry, and the order they came in (for eviction).
type Cache = (HashMap<Vec<u8>, (Outcome, Instant)>, VecDeque<Vec<u8>>);

/// Forward auth's client and cache.
pub struct ForwardAuth {
    client: Client<HttpConnector, Empty<Bytes>>,
    cache: Mutex<Cache>,
    inflight: Mutex<HashMap<Vec<u8>, Arc<OnceCell<Outcome>>>>,
    metrics: Arc<Metrics>,
}

impl ForwardAuth {
    pub fn new(metrics: Arc<Metrics>) -> ForwardAuth {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        ForwardAuth {
            client: Client::builder(TokioExecutor::new()).build(connector),
            cache: Mutex::default(),
            inflight: Mutex::default(),
            metrics,
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .forward_auth
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Authorises a subscriber, from the cache or by asking the app.
    pub async fn authorize(
        &self,
        creds: &Creds,
        auth: &Auth,
        upstream: &Target,
    ) -> Result<Principal, Denied> {
        let key = creds.cache_key();
        let cached = {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match c.0.get(&key) {
                Some((o, until)) if *until > Instant::now() => Some(o.clone()),
                Some(_) => {
                    c.0.remove(&key);
                    None
                }
                None => None,
            }
        };
        let outcome = match cached {
            Some(o) => o,
            None => {
                let cell = {
                    let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                    inflight.entry(key.clone()).or_default().clone()
                };
                let outcome = cell
                    .get_or_init(|| self.ask(creds, auth, upstream))
                    .await
                    .clone();
                self.inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                if !matches!(outcome, Outcome::Unavailable(_)) && !auth.forward_cache.is_zero() {
                    let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    if c.0.len() >= MAX_CACHED {
                        while c.0.len() >= MAX_CACHED / 2 {
                            let Some(old) = c.1.pop_front() else { break };
                            c.0.remove(&old);
                        }
                    }
                    if c.0
                        .insert(
                            key.clone(),
                            (outcome.clone(), Instant::now() + auth.forward_cache),
                        )
                        .is_none()
                    {
                        c.1.push_back(key);
                    }
                }
                outcome
            }
        };
        match outcome {
            Outcome::Allowed { user, grants } => {
                self.count("allowed");
                Ok(Principal {
                    user,
                    grants,
                    ..Principal::default()
                })
            }
            Outcome::Denied(d) => {
                self.count("denied");
                Err(d)
            }
            Outcome::Unavailable(why) => {
                self.count("unavailable");
                Err(Denied::Unavailable(why))
            }
        }
    }

    /// One call to the app. Nothing of the subscriber's headers or the
    /// app's answer is logged.
    async fn ask(&self, creds: &Creds, auth: &Auth, upstream: &Target) -> Outcome {
        let Some(forward) = &auth.forward else {
            return Outcome::Unavailable("forward auth has no endpoint configured".into());
        };
        let url = if forward.starts_with('/') {
            format!("http://{}{}", upstream.addr, forward)
        } else {
            forward.clone()
        };
        let mut req = http::Request::get(&url);
        for (n, v) in &creds.headers {
            req = req.header(n.as_str(), v.as_slice());
        }
        if let Some(ip) = creds.peer {
            req = req.header("X-Forwarded-For", ip.to_string());
        }
        req = req
            .header("X-Original-URI", creds.original_uri.as_str())
            .header(
                "Sidecast-Topics",
                creds
                    .topics
                    .iter()
                    .map(Topic::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        let Ok(req) = req.body(Empty::new()) else {
            return Outcome::Unavailable("the forward-auth request could not be built".into());
        };
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|_| "the app's auth endpoint is unreachable")?;
            let status = resp.status().as_u16();
            let user_header = match &auth.forward_user {
                ForwardUser::Header(h) => resp
                    .headers()
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                ForwardUser::Pointer(_) => None,
            };
            let grants_header = resp
                .headers()
                .get("sidecast-grants")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = if matches!(auth.forward_user, ForwardUser::Pointer(_))
                && (200..300).contains(&status)
            {
                Limited::new(resp.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default()
            } else {
                Bytes::new()
            };
            Ok::<_, &str>((status, user_header, grants_header, body))
        };
        let (status, user_header, grants_header, body) =
            match tokio::time::timeout(auth.forward_timeout, call).await {
                Err(_) => {
                    return Outcome::Unavailable(
                        "the app's auth endpoint did not answer in time".into(),
                    )
                }
                Ok(Err(why)) => return Outcome::Unavailable(why.into()),
                Ok(Ok(x)) => x,
            };
        match status {
            200..=299 => {}
            401 => {
                return Outcome::Denied(Denied::Unauthorized {
                    code: "forward_denied",
                    message: "the app did not recognise this session".into(),
                })
            }
            403 => {
                return Outcome::Denied(Denied::Forbidden(
                    "the app refused these topics to this session".into(),
                ))
            }
            other => {
                return Outcome::Unavailable(format!("the app's auth endpoint answered {other}"))
            }
        }
        let user: Option<Arc<str>> = match &auth.forward_user {
            ForwardUser::Header(_) => user_header.filter(|u| !u.is_empty()).map(Arc::from),
            ForwardUser::Pointer(p) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| match v.pointer(p) {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => {
                        Some(Arc::from(s.as_str()))
                    }
                    Some(serde_json::Value::Number(n)) => Some(Arc::from(n.to_string().as_str())),
                    _ => None,
                }),
        };
        let grants = match grants_header {
            Some(list) => {
                let mut out = Vec::new();
                for g in list.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    match Pattern::parse(g) {
                        Ok(p) => out.push(p),
                        Err(_) => {
                            return Outcome::Unavailable(
                                "the app's Sidecast-Grants header has a bad pattern".into(),
                            )
                        }
                    }
                }
                out
            }
            None => grants_from(&auth.forward_grants, user.as_deref()),
        };
        Outcome::Allowed { user, grants }
    }

    /// Asks the app again about an open stream's credentials; `true`
    /// when it now refuses them (`401`/`403`), and only then: a refused
    /// call, a timeout or a `5xx` ends nothing. A refusal also drops the
    /// cached "allowed", so that a reconnect with the same cookie asks again.
    pub async fn recheck(&self, creds: &Creds, auth: &Auth, upstream: &Target) -> bool {
        if let Outcome::Denied(_) = self.ask(creds, auth, upstream).await {
            self.count("denied");
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.0.remove(&creds.cache_key());
            return true;
        }
        false
    }
}

/// `forward_grants` with `{sub}` as the percent-encoded user; a pattern
/// that needs a user is dropped when there is none.
pub fn grants_from(templates: &[String], user: Option<&str>) -> Vec<Pattern> {
    templates
        .iter()
        .filter_map(|t| {
            if t.contains("{sub}") {
                user.and_then(|u| Pattern::parse(&t.replace("{sub}", &encode_value(u))).ok())
            } else {
                Pattern::parse(t).ok()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_grants_are_encoded() {
        let g = grants_from(&["user/{sub}".into(), "public/**".into()], Some("*"));
        assert_eq!(g[0].as_str(), "user/%2A");
        assert!(!g[0].matches(&Topic::parse("user/bob").unwrap()));
        assert_eq!(grants_from(&["user/{sub}".into()], None).len(), 0);
    }
}
