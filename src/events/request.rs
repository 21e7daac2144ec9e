//! What an events request asks for: its topics (from the query or a route),
//! its principal, and where its stream starts. Pure of I/O but for forward
//! auth, so that every refusal is a plain value to test.

use std::sync::Arc;

use super::hub::Start;
use crate::auth::{token_of, Denied, Principal};
use crate::config::AuthMode;
use crate::listener::head::Head;
use crate::listener::respond::Reply;
use crate::routes::{claim_lookup, Fill};
use crate::state::{Runtime, Shared};
use crate::topic::Topic;

/// A request that may open a stream or a poll.
pub struct Asked {
    pub topics: Vec<Topic>,
    /// Forward auth: what to ask the app again on recheck.
    pub forward: Option<crate::auth::forward::Creds>,
    pub principal: Principal,
    pub start: Start,
    pub poll: bool,
    /// The route's label for metrics.
    pub route: Arc<str>,
}

/// The query parameters an events request reads.
#[derive(Default)]
struct Query {
    topics: Vec<String>,
    last_event_id: Option<String>,
    last: Option<String>,
    mode: Option<String>,
}

fn query(head: &Head) -> Query {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(head.query().as_bytes()) {
        match &*k {
            "topic" => q.topics.push(v.into_owned()),
            "lastEventId" => q.last_event_id = Some(v.into_owned()),
            "last" => q.last = Some(v.into_owned()),
            "mode" => q.mode = Some(v.into_owned()),
            _ => {}
        }
    }
    q
}

fn bad(code: &str, message: impl Into<String>) -> Reply {
    Reply::error(400, code, message)
}

/// Whether the client takes `text/event-stream` (EventSource always does;
/// `*/*` does not count).
pub fn accepts_sse(head: &Head) -> bool {
    head.header_str("accept").is_some_and(|a| {
        a.split(',').any(|p| {
            p.trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
    })
}

fn wants_poll(head: &Head, q: &Query) -> bool {
    if q.mode.as_deref() == Some("poll") {
        return true;
    }
    let accept = head.header_str("accept").unwrap_or("");
    !accepts_sse(head)
        && accept.split(',').any(|p| {
            p.trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

/// A `401`/`403`/`503` reply for a refused principal.
pub fn denied_reply(d: &Denied, shared: &Shared) -> Reply {
    match d {
        Denied::Unauthorized { code, message } => {
            shared.metrics.auth_failure(code);
            Reply::error(401, code, message.clone()).header(
                "WWW-Authenticate",
                format!("Bearer error=\"invalid_token\", error_description=\"{code}\""),
            )
        }
        Denied::Forbidden(m) => {
            shared.metrics.auth_failure("forbidden");
            Reply::error(403, "forbidden", m.clone())
        }
        Denied::Unavailable(m) => Reply::error(503, "unavailable", m.clone()),
    }
}

/// Resolves topics, principal and start of an events request; `Err` is the
/// reply to send instead (or a passing refusal, for `Unavailable`).
pub async fn resolve(
    head: &Head,
    route: Option<usize>,
    params: &[(&str, &str)],
    rt: &Runtime,
    shared: &Shared,
    peer: Option<std::net::IpAddr>,
) -> Result<Asked, Result<Reply, Denied>> {
    let q = query(head);
    let config = &rt.config;
    // The topics known before the subscriber's identity (forward auth
    // tells the app which topics are asked for).
    let known: Vec<Topic> = match route {
        Some(i) => rt.routes.events[i]
            .topics
            .iter()
            .filter(|t| !t.uses_claims())
            .filter_map(|t| t.build(params, None, &|_| None).ok())
            .collect(),
        None => q
            .topics
            .iter()
            .filter_map(|t| Topic::parse(t).ok())
            .collect(),
    };
    let (principal, forward) = authenticate(head, rt, shared, peer, &known)
        .await
        .map_err(Err)?;
    let (topics, label, needs_grant) = match route {
        Some(i) => {
            let r = &rt.routes.events[i];
            let lookup = claim_lookup(&principal.claims);
            let mut topics = Vec::with_capacity(r.topics.len());
            let mut needs = Vec::with_capacity(r.topics.len());
            for t in &r.topics {
                match t.build(params, principal.user.as_deref(), &lookup) {
                    Ok(topic) => {
                        needs.push(!t.from_token_only());
                        topics.push(topic);
                    }
                    Err(Fill::Missing(c)) => {
                        return Err(Ok(Reply::error(
                            403,
                            "forbidden",
                            format!(
                                "this route needs the {c} claim, which the token does not carry"
                            ),
                        )))
                    }
                    Err(Fill::Bad(e)) => return Err(Ok(bad("bad_topic", e))),
                }
            }
            (topics, r.label.clone(), needs)
        }
        None => {
            if q.topics.is_empty() {
                return Err(Ok(bad(
                    "no_topic",
                    format!(
                        "name at least one topic: {}?topic=NAME (repeatable)",
                        config.events.path
                    ),
                )));
            }
            let mut topics = Vec::with_capacity(q.topics.len());
            for t in &q.topics {
                let topic = Topic::parse(t).map_err(|e| Ok(bad("bad_topic", e)))?;
                if !topics.contains(&topic) {
                    topics.push(topic);
                }
            }
            let n = topics.len();
            (topics, rt.routes.events_label.clone(), vec![true; n])
        }
    };
    if topics.len() > config.events.max_topics {
        return Err(Ok(bad(
            "too_many_topics",
            format!(
                "at most {} topics per stream, got {}",
                config.events.max_topics,
                topics.len()
            ),
        )));
    }
    if config.auth.required {
        for (t, needs) in topics.iter().zip(&needs_grant) {
            if *needs && !principal.may_read(t) {
                return Err(Err(Denied::Forbidden(format!(
                    "the token does not grant topic {t}"
                ))));
            }
        }
    }
    // The header wins: a browser updates it on each reconnect by itself,
    // while a `lastEventId` in the URL stays what the page put there when it
    // opened the stream, so preferring the query would replay events twice.
    let last_event_id = head
        .header_str("last-event-id")
        .map(str::to_owned)
        .or_else(|| q.last_event_id.clone());
    let start = match (last_event_id, &q.last) {
        (Some(id), _) if id == "earliest" => Start::Earliest,
        (Some(id), _) => Start::After(id),
        (None, Some(n)) => match n.parse::<usize>() {
            Ok(n) => Start::Last(n.min(config.events.history)),
            Err(_) => {
                return Err(Ok(bad(
                    "bad_last",
                    format!("last must be a whole number, got {n:?}"),
                )))
            }
        },
        (None, None) => Start::New,
    };
    Ok(Asked {
        forward,
        poll: wants_poll(head, &q),
        topics,
        principal,
        start,
        route: label,
    })
}

type Forwarded = Option<crate::auth::forward::Creds>;

async fn authenticate(
    head: &Head,
    rt: &Runtime,
    shared: &Shared,
    peer: Option<std::net::IpAddr>,
    known: &[Topic],
) -> Result<(Principal, Forwarded), Denied> {
    let auth = &rt.config.auth;
    if !auth.required {
        return Ok((Principal::default(), None));
    }
    match auth.mode {
        AuthMode::Jwt => {
            let Some((token, _)) = token_of(head, &auth.cookie)? else {
                return Err(Denied::Unauthorized {
                    code: "missing",
                    message: format!(
                        "a token is required: Authorization: Bearer, ?token=, or the {} cookie",
                        auth.cookie
                    ),
                });
            };
            match rt.verifier().principal(&token) {
                Err(d) if crate::auth::jwt::is_unknown_kid(&d) && auth.jwks_url.is_some() => {
                    // The provider may have rotated its keys: refetch (at
                    // most once a minute) and try once more.
                    if shared.jwks.on_unknown_kid(shared).await {
                        shared
                            .runtime()
                            .verifier()
                            .principal(&token)
                            .map(|p| (p, None))
                    } else {
                        Err(d)
                    }
                }
                other => other.map(|p| (p, None)),
            }
        }
        AuthMode::Forward => {
            let creds = crate::auth::forward::Creds::new(head, auth, peer, known);
            let p = shared
                .forward
                .authorize(&creds, auth, &rt.config.upstream.target)
                .await?;
            Ok((p, Some(creds)))
        }
    }
}
