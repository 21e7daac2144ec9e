//! The publish listener (TCP and Unix socket, the same HTTP API on both):
//! `POST /publish`, `POST /disconnect`, `GET /topics[/NAME]`. Data flows one
//! way: a checked batch goes into the hub, which frames and fans it out.

pub mod body;
mod dedupe;
mod fields;
mod grip;
mod log;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::auth::jwt::grants_claim;
use crate::state::Shared;
use crate::topic::{granted, Pattern, Topic};
use body::BodyError;
use fields::IdempotencyKey;
use log::{Log, PublishError};

/// The publish API's state.
pub struct Publisher {
    shared: Arc<Shared>,
    log: Log,
}

type Resp = Response<Full<Bytes>>;

fn json_resp(status: u16, v: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap_or_default()
}

/// A JSON error naming the field.
fn error(status: u16, code: &str, field: Option<&str>, message: &str) -> Resp {
    let mut v = json!({"error": code, "message": message});
    if let Some(f) = field {
        v["field"] = json!(f);
    }
    json_resp(status, &v)
}

/// `400` for a body refused, naming the field.
fn bad_body(BodyError { field, message }: BodyError) -> Resp {
    error(400, "bad_request", Some(&field), &message)
}

/// `503` when cluster mode cannot reach Redis: never a silent drop, and
/// never a claim that nothing happened unless that is certain. `outcome`
/// is `"not_published"` only when nothing reached Redis; otherwise
/// `"unknown"`, with the advice that makes a retry safe.
fn unavailable(e: &crate::cluster::Unavailable) -> Resp {
    let (outcome, advice) = if e.nothing_done() {
        ("not_published", "nothing was published; retry later")
    } else {
        (
            "unknown",
            "the outcome is unknown: the events may have been published; retry with the same idempotency keys (Idempotency-Key header or idempotency_key fields), which makes the retry safe",
        )
    };
    let v = json!({
        "error": "cluster_unavailable",
        "message": format!("{e}; {advice}"),
        "outcome": outcome,
    });
    let mut r = json_resp(503, &v);
    r.headers_mut()
        .insert("Retry-After", http::HeaderValue::from_static("1"));
    r
}

/// `422` for an idempotency key reused with other content.
fn key_reused(key: &str, field: &str, what: &str) -> Resp {
    let mut r = error(
        422,
        "idempotency_key_reused",
        Some(field),
        &format!(
            "the idempotency key {key:?} was used within dedupe_window for a different {what}: \
             a retry must repeat the same request; nothing of this request was published"
        ),
    );
    if let Ok(v) = http::HeaderValue::from_str(key) {
        r.headers_mut().insert("Sidecast-Idempotency-Key", v);
    }
    r
}

/// Who may call: `Ok(None)` for anyone or the static token, `Ok(Some)` for a
/// JWT and its `publish` grants.
type Caller = Option<Vec<Pattern>>;

/// The body a publish request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `POST /publish`: sidecast's events.
    Sidecast,
    /// `POST /publish/`: GRIP items (Pushpin's control API).
    Grip,
}

impl Publisher {
    pub fn new(shared: Arc<Shared>) -> Arc<Publisher> {
        Arc::new(Publisher {
            log: Log::new(shared.hub.clone(), shared.cluster.clone()),
            shared,
        })
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let resp = self.route(req).await;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            self.shared.metrics.publish_error(resp.status().as_u16());
        }
        Ok(resp)
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let allowed = match path.as_str() {
            "/publish" | "/publish/" | "/disconnect" => Method::POST,
            p if p == "/topics" || p.starts_with("/topics/") => Method::GET,
            _ => {
                let r = error(
                    404,
                    "not_found",
                    None,
                    "no such endpoint: /publish, /publish/ (GRIP), /disconnect, /topics, /topics/NAME",
                );
                return self.refuse(req, r).await;
            }
        };
        if method != allowed {
            let mut r = error(
                405,
                "method_not_allowed",
                None,
                &format!("{path} takes {allowed}"),
            );
            if let Ok(v) = http::HeaderValue::from_str(allowed.as_str()) {
                r.headers_mut().insert("Allow", v);
            }
            return self.refuse(req, r).await;
        }
        let caller = match self.authorize(&req) {
            Ok(c) => c,
            Err(r) => return self.refuse(req, r).await,
        };
        match path.as_str() {
            "/publish" => self.publish(req, caller, Format::Sidecast).await,
            "/publish/" => self.publish(req, caller, Format::Grip).await,
            "/disconnect" => self.disconnect(req, caller).await,
            "/topics" => self.topics(caller),
            _ => self.topic(&path["/topics/".len()..], caller).await,
        }
    }

    /// Answers a request refused before its body was read, after reading
    /// (and dropping) that body when it is within `max_body_bytes`: closing
    /// a connection with unread bytes resets it, and the client could lose
    /// the answer that says what was wrong.
    async fn refuse(&self, req: Request<Incoming>, resp: Resp) -> Resp {
        let max = self.shared.runtime().config.publish.max_body_bytes;
        let declared = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_none_or(|n| n <= max) {
            let drain = Limited::new(req.into_body(), max).collect();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
        }
        resp
    }

    #[allow(clippy::result_large_err)]
    fn authorize(&self, req: &Request<Incoming>) -> Result<Caller, Resp> {
        let rt = self.shared.runtime();
        let p = &rt.config.publish;
        if !p.require_token {
            return Ok(None);
        }
        let unauthorized = |m: &str| {
            self.shared.metrics.auth_failure("publish");
            let mut r = error(401, "unauthorized", Some("authorization"), m);
            r.headers_mut()
                .insert("WWW-Authenticate", http::HeaderValue::from_static("Bearer"));
            r
        };
        let Some(value) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(unauthorized(
                "this listener requires Authorization: Bearer <publish token or JWT>",
            ));
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(unauthorized("expected Authorization: Bearer <token>"));
        };
        let token = token.trim();
        if let Some(secret) = &p.token {
            use subtle::ConstantTimeEq;
            if bool::from(secret.0.as_slice().ct_eq(token.as_bytes())) {
                return Ok(None);
            }
        }
        match rt.verifier().verify(token) {
            Ok(v) => match grants_claim(&v.claims, "publish") {
                Ok(g) if !g.is_empty() => Ok(Some(g)),
                _ => Err(unauthorized(
                    "the token has no publish claim listing topic patterns",
                )),
            },
            Err(_) => Err(unauthorized(
                "the bearer token is neither the publish token nor a valid JWT",
            )),
        }
    }

    #[allow(clippy::result_large_err)]
    async fn read_body(&self, req: Request<Incoming>) -> Result<(Option<String>, Bytes), Resp> {
        let max = self.shared.runtime().config.publish.max_body_bytes;
        let too_large = || {
            error(
                413,
                "too_large",
                Some("body"),
                &format!("the body is larger than max_body_bytes ({max})"),
            )
        };
        if let Some(len) = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if len > max {
                return Err(too_large());
            }
        }
        let ct = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match Limited::new(req.into_body(), max).collect().await {
            Ok(b) => Ok((ct, b.to_bytes())),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(too_large())
            }
            Err(_) => Err(error(
                400,
                "bad_request",
                Some("body"),
                "the body could not be read",
            )),
        }
    }

    async fn publish(&self, req: Request<Incoming>, caller: Caller, format: Format) -> Resp {
        let request_key = req.headers().get("idempotency-key").map(|v| {
            v.to_str()
                .ok()
                .and_then(|k| IdempotencyKey::try_from(k.to_owned()).ok())
        });
        let request_key = match request_key {
            Some(Some(IdempotencyKey(k))) => Some(k),
            Some(None) => {
                let r = error(
                    400,
                    "bad_request",
                    Some("Idempotency-Key"),
                    "expected 1 to 128 bytes of text",
                );
                return self.refuse(req, r).await;
            }
            None => None,
        };
        let (ct, bytes) = match self.read_body(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let kind = body::kind(ct.as_deref());
        let events = match (format, kind) {
            (Format::Sidecast, Some(kind)) => body::parse(kind, &bytes),
            (Format::Grip, Some(body::Kind::Json)) => grip::parse(&bytes),
            (Format::Sidecast, None) | (Format::Grip, _) => {
                return error(
                    415,
                    "unsupported_media_type",
                    Some("Content-Type"),
                    match format {
                        Format::Sidecast => "expected application/json or application/x-ndjson",
                        Format::Grip => "expected application/json",
                    },
                );
            }
        };
        let events = match events {
            Ok(e) => e,
            Err(e) => return bad_body(e),
        };
        if let Some(grants) = &caller {
            for (i, e) in events.iter().enumerate() {
                if let Some(t) = e.topics.iter().find(|t| !granted(grants, t)) {
                    let field = match format {
                        Format::Sidecast => format!("[{i}].topic"),
                        Format::Grip => format!("items[{i}].channel"),
                    };
                    return error(
                        403,
                        "forbidden",
                        Some(&field),
                        &format!("the token does not grant publishing to {t}"),
                    );
                }
            }
        }
        let window = self.shared.runtime().config.publish.dedupe_window;
        match self.log.publish(events, request_key, window).await {
            Ok(ids) => json_resp(202, &json!({ "ids": ids })),
            Err(PublishError::Unavailable(e)) => unavailable(&e),
            Err(PublishError::KeyReused(e)) => match (format, e.index) {
                // A GRIP item's key is its `id`.
                (Format::Grip, Some(i)) => {
                    key_reused(grip::item_id(&e.key), &format!("items[{i}].id"), "item")
                }
                _ => key_reused(&e.key, &e.field, e.what),
            },
        }
    }

    async fn disconnect(&self, req: Request<Incoming>, caller: Caller) -> Resp {
        let (ct, bytes) = match self.read_body(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        if body::kind(ct.as_deref()) != Some(body::Kind::Json) {
            return error(
                415,
                "unsupported_media_type",
                Some("Content-Type"),
                "expected application/json",
            );
        }
        let d = match body::disconnect(&bytes) {
            Ok(d) => d,
            Err(e) => return bad_body(e),
        };
        if let (Some(grants), Some(t)) = (&caller, &d.topic) {
            if !granted(grants, t) {
                return error(
                    403,
                    "forbidden",
                    Some("topic"),
                    &format!("the token does not grant {t}"),
                );
            }
        }
        let closed = self
            .log
            .disconnect(d.user.as_deref(), d.topic.as_ref(), d.reason, d.reconnect)
            .await;
        match closed {
            Ok(closed) => json_resp(200, &json!({ "closed": closed })),
            Err(e) => unavailable(&e),
        }
    }

    fn topics(&self, caller: Caller) -> Resp {
        let list: Vec<_> = self
            .shared
            .hub
            .topics()
            .into_iter()
            .filter(|i| caller.as_ref().is_none_or(|g| granted(g, &i.topic)))
            .collect();
        json_resp(200, &json!({ "topics": list }))
    }

    async fn topic(&self, raw: &str, caller: Caller) -> Resp {
        let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        let topic = match Topic::parse(&name) {
            Ok(t) => t,
            Err(e) => return error(400, "bad_request", Some("topic"), &e.to_string()),
        };
        if caller.as_ref().is_some_and(|g| !granted(g, &topic)) {
            return error(
                403,
                "forbidden",
                Some("topic"),
                &format!("the token does not grant {topic}"),
            );
        }
        let info = self.shared.hub.topic_info(&topic);
        let mut body = match &info {
            Some(info) => serde_json::to_value(info).unwrap_or_default(),
            None => json!({"topic": topic, "streams": 0, "last_id": null, "held": 0}),
        };
        let mut known = info.is_some();
        match self.log.cluster_streams(&topic).await {
            Ok(Some(n)) => {
                known |= n > 0;
                body["cluster_streams"] = json!(n);
            }
            Ok(None) => {}
            Err(e) => return unavailable(&e),
        }
        if known {
            json_resp(200, &body)
        } else {
            error(
                404,
                "not_found",
                Some("topic"),
                &format!("{topic} has neither streams nor history"),
            )
        }
    }
}
