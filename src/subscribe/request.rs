//! What an events request asks for: its topics (from the query or a route),
//! its principal, and where its stream starts. Pure of I/O but for forward
//! auth, so that every refusal is a plain value to test.

use std::sync::Arc;

use crate::auth::{token_of, Denied, Principal};
use crate::config::AuthMode;
use crate::events::hub::Start;
use crate::http1::head::Head;
use crate::http1::respond::Reply;
use crate::routes::EventsRoute;
use crate::state::{Runtime, Shared};
use crate::template::{claim_lookup, Fill, TopicTemplate};
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

/// A `401`/`403`/`503` reply for a refused principal. The `401` carries
/// `WWW-Authenticate: Bearer error="..."` (RFC 6750): `invalid_request`
/// when no token came, else `invalid_token`, with the reason as the
/// description; never anything of the token itself.
pub fn denied_reply(d: &Denied, shared: &Shared) -> Reply {
    match d {
        Denied::Unauthorized { code, message } => {
            shared.metrics.auth_failure(code);
            let error = if *code == "missing" {
                "invalid_request"
            } else {
                "invalid_token"
            };
            Reply::error(401, code, message.clone()).header(
                "WWW-Authenticate",
                format!(
                    "Bearer realm=\"sidecast\", error=\"{error}\", error_description=\"{code}\""
                ),
            )
        }
        Denied::Forbidden(m) => {
            shared.metrics.auth_failure("forbidden");
            Reply::error(403, "forbidden", m.clone())
        }
        Denied::Unavailable(m) => Reply::error(503, "unavailable", m.clone()),
    }
}

/// A topic of the request and whether it needs a grant (a topic built only
/// from the subscriber's own identity is granted by its route).
struct Wanted {
    topic: Topic,
    needs_grant: bool,
}

fn push(out: &mut Vec<Wanted>, topic: Topic, needs_grant: bool) {
    match out.iter_mut().find(|w| w.topic == topic) {
        Some(w) => w.needs_grant |= needs_grant,
        None => out.push(Wanted { topic, needs_grant }),
    }
}

/// Why an events request opens nothing: a complete reply to send (a bad
/// request), or a refused principal (whose reply depends on the refusal,
/// and for `Unavailable` on the client).
pub enum Refusal {
    Reply(Reply),
    Denied(Denied),
}

impl From<Denied> for Refusal {
    fn from(d: Denied) -> Refusal {
        Refusal::Denied(d)
    }
}

/// The topics known before auth: the query's, or a route's that take only
/// path segments. Checked first, so that a bad request is a `400` whoever
/// sends it, and forward auth can tell the app what is asked for.
fn topics_before_auth<'r>(
    q: &Query,
    route: Option<&'r EventsRoute>,
    params: &[(&str, &str)],
    rt: &Runtime,
) -> Result<(Vec<Wanted>, Vec<&'r TopicTemplate>), Refusal> {
    let mut wanted = Vec::new();
    let mut later = Vec::new();
    match route {
        Some(r) => {
            for t in &r.topics {
                if t.uses_claims() {
                    later.push(t);
                    continue;
                }
                let topic = t
                    .build(params, None, &|_| None)
                    .map_err(|e| Refusal::Reply(fill_refusal(e)))?;
                push(&mut wanted, topic, true);
            }
        }
        None => {
            if q.topics.is_empty() {
                return Err(Refusal::Reply(bad(
                    "no_topic",
                    format!(
                        "name at least one topic: {}?topic=NAME (repeatable)",
                        rt.config.events.path
                    ),
                )));
            }
            for t in &q.topics {
                let topic =
                    Topic::parse(t).map_err(|e| Refusal::Reply(bad("bad_topic", e.to_string())))?;
                push(&mut wanted, topic, true);
            }
        }
    }
    let n = wanted.len() + later.len();
    let max = rt.config.events.max_topics;
    if n > max {
        return Err(Refusal::Reply(bad(
            "too_many_topics",
            format!("at most {max} topics per stream, got {n}"),
        )));
    }
    Ok((wanted, later))
}

fn fill_refusal(e: Fill) -> Reply {
    match e {
        Fill::Missing(name) => Reply::error(
            403,
            "forbidden",
            format!("this route needs the {name} claim, which the token does not carry"),
        ),
        Fill::Bad(e) => bad("bad_topic", e),
    }
}

/// Resolves topics, principal and start of an events request; `Err` is the
/// reply to send instead (or a passing refusal, for `Unavailable`).
pub async fn resolve(
    head: &Head,
    events_route: Option<&EventsRoute>,
    params: &[(&str, &str)],
    rt: &Runtime,
    shared: &Shared,
    peer: Option<std::net::IpAddr>,
) -> Result<Asked, Refusal> {
    let q = query(head);
    let config = &rt.config;
    let (mut wanted, later) = topics_before_auth(&q, events_route, params, rt)?;
    let known: Vec<Topic> = wanted.iter().map(|w| w.topic.clone()).collect();
    let (principal, forward) = authenticate(head, rt, shared, peer, &known).await?;
    {
        let lookup = claim_lookup(&principal.claims);
        for t in later {
            match t.build(params, principal.user.as_deref(), &lookup) {
                Ok(topic) => push(&mut wanted, topic, !t.from_token_only()),
                Err(Fill::Missing(name)) => {
                    return Err(Refusal::Denied(Denied::Forbidden(format!(
                        "this route needs the {name} claim, which the token does not carry"
                    ))))
                }
                Err(e) => return Err(Refusal::Reply(fill_refusal(e))),
            }
        }
    }
    if config.auth.required {
        if let Some(w) = wanted
            .iter()
            .find(|w| w.needs_grant && !principal.may_read(&w.topic))
        {
            return Err(Refusal::Denied(Denied::Forbidden(format!(
                "the token does not grant topic {}",
                w.topic
            ))));
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
                return Err(Refusal::Reply(bad(
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
        topics: wanted.into_iter().map(|w| w.topic).collect(),
        principal,
        start,
        route: events_route.map_or_else(|| rt.routes.events_label.clone(), |r| r.label.clone()),
    })
}

/// Who the subscriber is, by the configured mode. `requested` are the
/// topics known before auth (forward auth sends them to the app).
async fn authenticate(
    head: &Head,
    rt: &Runtime,
    shared: &Shared,
    peer: Option<std::net::IpAddr>,
    requested: &[Topic],
) -> Result<(Principal, Forwarded), Denied> {
    let auth = &rt.config.auth;
    if !auth.required {
        return Ok((Principal::default(), None));
    }
    match auth.mode {
        AuthMode::Jwt => match (jwt_principal(head, rt), &auth.jwks_url) {
            (Err(d), Some(url)) if crate::auth::jwt::is_unknown_kid(&d) => {
                // The provider may have rotated its keys: refetch (at most
                // once a minute) and try once more (the runtime reads the
                // fetched keys anew).
                if shared.jwks.on_unknown_kid(url).await {
                    jwt_principal(head, rt).map(|p| (p, None))
                } else {
                    Err(d)
                }
            }
            (other, _) => other.map(|p| (p, None)),
        },
        AuthMode::Forward => {
            let creds = crate::auth::forward::Creds::new(head, auth, peer, requested);
            let p = shared
                .forward
                .authorize(&creds, auth, &rt.config.upstream.target)
                .await?;
            Ok((p, Some(creds)))
        }
    }
}

/// Forward auth's credentials, kept for rechecks.
type Forwarded = Option<crate::auth::forward::Creds>;

/// A JWT from the request (header, query or cookie), verified with the
/// keys in force.
fn jwt_principal(head: &Head, rt: &Runtime) -> Result<Principal, Denied> {
    let auth = &rt.config.auth;
    let Some((token, _)) = token_of(head, &auth.cookie)? else {
        return Err(Denied::Unauthorized {
            code: "missing",
            message: format!(
                "a token is required: Authorization: Bearer, ?token=, or the {} cookie",
                auth.cookie
            ),
        });
    };
    rt.verifier().principal(&token)
}
