//! What an events request asks for: its topics (from the query or a route),
//! where its stream starts, whether it is a long-poll, its CORS origin; then,
//! once auth (`auth::mode`) has said who sent it, the topics that name the
//! subscriber and the grants they need. Pure of I/O but for auth, so that
//! every refusal is a plain value to test.

use std::sync::Arc;

use crate::auth::mode::Forwarded;
use crate::auth::{Denied, Principal};
use crate::config::Events;
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
    pub forward: Forwarded,
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

/// Whether the `Accept` header names `media` (parameters ignored; `*/*`
/// and `text/*` do not count).
fn accepts(head: &Head, media: &str) -> bool {
    head.header_str("accept").is_some_and(|a| {
        a.split(',').any(|p| {
            p.trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(media)
        })
    })
}

/// Whether the client takes `text/event-stream` (EventSource always does;
/// `*/*` does not count).
pub fn accepts_sse(head: &Head) -> bool {
    accepts(head, "text/event-stream")
}

/// A long-poll: `mode=poll`, or JSON accepted and not an event stream.
fn wants_poll(head: &Head, q: &Query) -> bool {
    q.mode.as_deref() == Some("poll") || (!accepts_sse(head) && accepts(head, "application/json"))
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

/// An events request's head, read into what it asks for before anyone is
/// asked who sent it.
pub struct EventsRequest<'r> {
    /// The topics known from the head (the query's, or the route's that
    /// take only path segments).
    wanted: Vec<Wanted>,
    /// The route's templates that name the subscriber (`{sub}`, claims):
    /// filled once it is known.
    later: Vec<&'r TopicTemplate>,
    /// Where the stream starts, or the refusal of a bad `last`, which is
    /// answered only once the subscriber is let in (a stranger is told
    /// `401` first, whatever else is wrong).
    start: Result<Start, Reply>,
    /// A long-poll rather than a stream.
    poll: bool,
    /// The route's label for metrics.
    route: Arc<str>,
}

impl<'r> EventsRequest<'r> {
    /// Reads a head routed to `route` (`None`: `[events] path`), with the
    /// path segments it bound, under the runtime it was routed with. A bad
    /// request (`400`, or a route's topic that cannot be built) is the
    /// reply to send, whoever sends it.
    pub fn parse(
        head: &Head,
        route: Option<&'r EventsRoute>,
        params: &[(&str, &str)],
        rt: &Runtime,
    ) -> Result<EventsRequest<'r>, Reply> {
        let q = query(head);
        let events = &rt.config.events;
        let (wanted, later) = topics_before_auth(&q, route, params, events)?;
        Ok(EventsRequest {
            wanted,
            later,
            start: start(head, &q, events.history),
            poll: wants_poll(head, &q),
            route: route.map_or_else(|| rt.routes.events_label.clone(), |r| r.label.clone()),
        })
    }

    /// The topics known before auth (forward auth tells the app).
    fn known(&self) -> Vec<Topic> {
        self.wanted.iter().map(|w| w.topic.clone()).collect()
    }

    /// The request of an authenticated subscriber: the route's topics
    /// that name it filled, every topic that needs a grant checked
    /// against its grants (when auth is required), and its start.
    fn admit(
        mut self,
        principal: Principal,
        forward: Forwarded,
        params: &[(&str, &str)],
        auth_required: bool,
    ) -> Result<Asked, Refusal> {
        {
            let lookup = claim_lookup(&principal.claims);
            for t in self.later {
                match t.build(params, principal.user.as_deref(), &lookup) {
                    Ok(topic) => push(&mut self.wanted, topic, !t.is_subscribers_own()),
                    Err(Fill::Missing(name)) => {
                        return Err(Refusal::Denied(Denied::Forbidden(format!(
                            "this route needs the {name} claim, which the token does not carry"
                        ))))
                    }
                    Err(e) => return Err(Refusal::Reply(fill_refusal(e))),
                }
            }
        }
        if auth_required {
            if let Some(w) = self
                .wanted
                .iter()
                .find(|w| w.needs_grant && !principal.may_read(&w.topic))
            {
                return Err(Refusal::Denied(Denied::Forbidden(format!(
                    "the token does not grant topic {}",
                    w.topic
                ))));
            }
        }
        Ok(Asked {
            forward,
            poll: self.poll,
            topics: self.wanted.into_iter().map(|w| w.topic).collect(),
            principal,
            start: self.start.map_err(Refusal::Reply)?,
            route: self.route,
        })
    }
}

/// The topics known before auth: the query's, or a route's that take only
/// path segments. Checked first, so that a bad request is a `400` whoever
/// sends it, and forward auth can tell the app what is asked for.
fn topics_before_auth<'r>(
    q: &Query,
    route: Option<&'r EventsRoute>,
    params: &[(&str, &str)],
    events: &Events,
) -> Result<(Vec<Wanted>, Vec<&'r TopicTemplate>), Reply> {
    let mut wanted = Vec::new();
    let mut later = Vec::new();
    match route {
        Some(r) => {
            for t in &r.topics {
                if t.uses_claims() {
                    later.push(t);
                    continue;
                }
                let topic = t.build(params, None, &|_| None).map_err(fill_refusal)?;
                push(&mut wanted, topic, true);
            }
        }
        None => {
            if q.topics.is_empty() {
                return Err(bad(
                    "no_topic",
                    format!(
                        "name at least one topic: {}?topic=NAME (repeatable)",
                        events.path
                    ),
                ));
            }
            for t in &q.topics {
                let topic = Topic::parse(t).map_err(|e| bad("bad_topic", e.to_string()))?;
                push(&mut wanted, topic, true);
            }
        }
    }
    let n = wanted.len() + later.len();
    let max = events.max_topics;
    if n > max {
        return Err(bad(
            "too_many_topics",
            format!("at most {max} topics per stream, got {n}"),
        ));
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

/// Where a stream starts: after the id it comes back with, from the
/// earliest event kept, with the last `n` (at most `history`), or with new
/// events only.
fn start(head: &Head, q: &Query, history: usize) -> Result<Start, Reply> {
    // The header wins: a browser updates it on each reconnect by itself,
    // while a `lastEventId` in the URL stays what the page put there when it
    // opened the stream, so preferring the query would replay events twice.
    let last_event_id = head
        .header_str("last-event-id")
        .map(str::to_owned)
        .or_else(|| q.last_event_id.clone());
    match (last_event_id, &q.last) {
        (Some(id), _) if id == "earliest" => Ok(Start::Earliest),
        (Some(id), _) => Ok(Start::After(id)),
        (None, Some(n)) => match n.parse::<usize>() {
            Ok(n) => Ok(Start::Last(n.min(history))),
            Err(_) => Err(bad(
                "bad_last",
                format!("last must be a whole number, got {n:?}"),
            )),
        },
        (None, None) => Ok(Start::New),
    }
}

/// The request's `Origin` when it is one of `cors_origins` (matched byte
/// for byte), for the CORS headers of every answer; `None` otherwise.
pub fn cors_origin(head: &Head, cors_origins: &[String]) -> Option<String> {
    let origin = head.header("origin")?;
    cors_origins
        .iter()
        .find(|o| o.as_bytes() == origin)
        .cloned()
}

/// Resolves topics, principal and start of an events request; `Err` is the
/// reply to send instead (or a passing refusal, for `Unavailable`).
pub async fn resolve(
    head: &Head,
    route: Option<&EventsRoute>,
    params: &[(&str, &str)],
    rt: &Runtime,
    shared: &Shared,
    peer: Option<std::net::IpAddr>,
) -> Result<Asked, Refusal> {
    let request = EventsRequest::parse(head, route, params, rt).map_err(Refusal::Reply)?;
    let (principal, forward) = shared
        .authenticator(rt)
        .authenticate(head, peer, &request.known())
        .await?;
    request.admit(principal, forward, params, rt.config.auth.required)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use arc_swap::ArcSwap;
    use jsonwebtoken::{encode, EncodingKey, Header};

    use super::*;
    use crate::auth::forward::ForwardAuth;
    use crate::auth::jwks::Jwks;
    use crate::config::Config;
    use crate::events::hub::{Hub, HubLimits};
    use crate::lifecycle::Lifecycle;
    use crate::metrics::Metrics;
    use crate::template::PathTemplate;

    const SECRET: &[u8] = b"a unit test's HS secret, 32 bytes or more";

    /// A runtime on `text` (`[events]` and routes). With `required`, JWT
    /// auth with [`SECRET`] as its key, set here so that neither a file
    /// nor the environment is read.
    fn runtime(text: &str, required: bool) -> Runtime {
        let text =
            format!("[upstream]\nurl = \"http://127.0.0.1:9\"\n[auth]\nrequired = false\n{text}");
        let mut config = Config::parse(std::path::Path::new("unit.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        config.auth.required = required;
        config.auth.keys = vec![crate::keys::secret_key(SECRET, "unit").unwrap()];
        Runtime::new(Arc::new(config), &[])
    }

    fn head(target: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: "GET".into(),
            target: target.into(),
            minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            len: 0,
        }
    }

    /// Parses `target` with `headers` on `[events] path`.
    fn parse(
        rt: &Runtime,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<EventsRequest<'static>, Reply> {
        EventsRequest::parse(&head(target, headers), None, &[], rt)
    }

    /// The `error` code of one of sidecast's replies, with its status.
    fn code(r: &Reply) -> (u16, String) {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (r.status, body["error"].as_str().unwrap().to_owned())
    }

    fn topics(r: &EventsRequest) -> Vec<String> {
        r.wanted.iter().map(|w| w.topic.to_string()).collect()
    }

    #[test]
    fn topics_come_from_the_query_once_each() {
        let rt = runtime("[events]\nmax_topics = 2\n", false);
        let r = parse(&rt, "/events?topic=a&topic=b%2Fc&topic=a", &[])
            .ok()
            .expect("a good request");
        assert_eq!(topics(&r), ["a", "b/c"]);
        assert_eq!(&*r.route, "/events");
        let refused = |target: &str| code(&parse(&rt, target, &[]).err().unwrap());
        assert_eq!(refused("/events"), (400, "no_topic".into()));
        assert_eq!(refused("/events?topic=a/**"), (400, "bad_topic".into()));
        assert_eq!(
            refused("/events?topic=a&topic=b&topic=c"),
            (400, "too_many_topics".into())
        );
    }

    #[test]
    fn a_routes_topics_take_its_path_segments_and_wait_for_the_subscriber() {
        let rt = runtime("", true);
        let path = PathTemplate::parse("/orders/{id}/events").unwrap();
        let route = &EventsRoute {
            topics: ["orders/{id}", "users/{sub}"]
                .map(|t| TopicTemplate::parse(t, &path).unwrap())
                .into(),
            label: path.as_str().into(),
            path,
        };
        let h = head("/orders/42/events?topic=ignored", &[]);
        let r = EventsRequest::parse(&h, Some(route), &[("id", "42")], &rt)
            .ok()
            .expect("a good request");
        assert_eq!(topics(&r), ["orders/42"]);
        assert_eq!(r.later.len(), 1, "users/{{sub}} is filled after auth");
        assert_eq!(&*r.route, "/orders/{id}/events");
        // A path segment that makes no topic is the request's fault.
        let r = EventsRequest::parse(&h, Some(route), &[("id", "a+b")], &rt);
        assert_eq!(code(&r.err().unwrap()), (400, "bad_topic".into()));
    }

    #[test]
    fn the_last_event_id_header_wins_over_the_query() {
        let rt = runtime("[events]\nhistory = 3\n", false);
        let start = |target: &str, headers: &[(&str, &str)]| {
            parse(&rt, target, headers)
                .ok()
                .unwrap()
                .start
                .ok()
                .unwrap()
        };
        let id = [("last-event-id", "e-5")];
        assert_eq!(
            start("/events?topic=a&lastEventId=e-1", &id),
            Start::After("e-5".into())
        );
        assert_eq!(
            start("/events?topic=a&lastEventId=e-1", &[]),
            Start::After("e-1".into())
        );
        assert_eq!(
            start("/events?topic=a&last=2", &id),
            Start::After("e-5".into())
        );
        assert_eq!(
            start("/events?topic=a&lastEventId=earliest", &[]),
            Start::Earliest
        );
        assert_eq!(start("/events?topic=a&last=2", &[]), Start::Last(2));
        assert_eq!(
            start("/events?topic=a&last=9", &[]),
            Start::Last(3),
            "at most history"
        );
        assert_eq!(start("/events?topic=a", &[]), Start::New);
        let bad = parse(&rt, "/events?topic=a&last=x", &[])
            .ok()
            .unwrap()
            .start;
        assert_eq!(code(&bad.err().unwrap()), (400, "bad_last".into()));
    }

    #[test]
    fn a_poll_is_asked_for_by_mode_or_by_accepting_json_only() {
        let rt = runtime("", false);
        let poll = |target: &str, accept: Option<&str>| {
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            parse(&rt, target, &headers).ok().unwrap().poll
        };
        assert!(poll("/events?topic=a&mode=poll", Some("text/event-stream")));
        assert!(poll("/events?topic=a", Some("application/json")));
        assert!(poll(
            "/events?topic=a",
            Some("text/html, Application/JSON; q=0.9")
        ));
        assert!(!poll(
            "/events?topic=a",
            Some("text/event-stream, application/json")
        ));
        assert!(!poll("/events?topic=a", Some("*/*")));
        assert!(!poll("/events?topic=a", None));
        assert!(!poll(
            "/events?topic=a&mode=stream",
            Some("text/event-stream")
        ));
    }

    #[test]
    fn the_origin_is_one_of_cors_origins_byte_for_byte() {
        let origins = ["https://app.example".to_owned()];
        let of = |headers: &[(&str, &str)]| cors_origin(&head("/events", headers), &origins);
        assert_eq!(
            of(&[("origin", "https://app.example")]).as_deref(),
            Some("https://app.example")
        );
        assert_eq!(of(&[("origin", "https://App.example")]), None);
        assert_eq!(of(&[("origin", "https://app.example/")]), None);
        assert_eq!(of(&[("origin", "https://evil.example")]), None);
        assert_eq!(of(&[]), None);
    }

    fn shared(rt: &Runtime) -> Shared {
        let metrics = Arc::new(Metrics::new());
        Shared {
            runtime: ArcSwap::from_pointee(Runtime::new(rt.config.clone(), &[])),
            hub: Arc::new(Hub::new(HubLimits::new(&rt.config, 8), metrics.clone())),
            metrics: metrics.clone(),
            lifecycle: Lifecycle::default(),
            auto_max_streams: 8,
            forward: ForwardAuth::new(metrics),
            jwks: Arc::new(Jwks::new()),
            cluster: None,
        }
    }

    /// An HS256 token for `sub` granting `grants`.
    fn token(sub: &str, grants: &[&str]) -> String {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(600);
        let claims = serde_json::json!({"sub": sub, "exp": exp.as_secs(), "topics": grants});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    /// Resolves `target` with `headers` on `[events] path`.
    async fn resolved(
        rt: &Runtime,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Asked, Refusal> {
        resolve(&head(target, headers), None, &[], rt, &shared(rt), None).await
    }

    fn denied(r: Result<Asked, Refusal>) -> Denied {
        match r {
            Err(Refusal::Denied(d)) => d,
            Err(Refusal::Reply(r)) => panic!("a reply, not a refusal: {:?}", code(&r)),
            Ok(_) => panic!("let in"),
        }
    }

    fn unauthorized(r: Result<Asked, Refusal>) -> &'static str {
        match denied(r) {
            Denied::Unauthorized { code, .. } => code,
            other => panic!("not a 401: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_token_in_the_header_wins_over_one_in_the_query() {
        let rt = runtime("", true);
        let good = token("alice", &["a"]);
        let bearer = format!("Bearer {good}");
        let header = [("authorization", bearer.as_str())];
        // A good header and a bad query: the header's token is the one.
        let asked = resolved(&rt, "/events?topic=a&token=x.y.z", &header).await;
        let asked = asked.ok().expect("let in by the header's token");
        assert_eq!(asked.principal.user.as_deref(), Some("alice"));
        // A bad header and a good query: still the header's.
        let target = format!("/events?topic=a&token={good}");
        let bad = resolved(&rt, &target, &[("authorization", "Bearer x.y.z")]).await;
        assert_eq!(unauthorized(bad), "malformed");
        // The query's alone, and the cookie's.
        let asked = resolved(&rt, &target, &[])
            .await
            .ok()
            .expect("let in by the query");
        assert_eq!(asked.principal.user.as_deref(), Some("alice"));
        let cookie = format!("other=1; sidecast_token={good}");
        let asked = resolved(&rt, "/events?topic=a", &[("cookie", &cookie)]).await;
        assert!(asked.is_ok(), "let in by the cookie");
        // Not a bearer token, and none at all.
        let basic = resolved(&rt, "/events?topic=a", &[("authorization", "Basic YTpi")]).await;
        assert_eq!(unauthorized(basic), "malformed");
        match denied(resolved(&rt, "/events?topic=a", &[]).await) {
            Denied::Unauthorized { code, message } => {
                assert_eq!(code, "missing");
                assert!(message.contains("the sidecast_token cookie"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stranger_is_refused_before_a_bad_cursor_and_a_grant_is_checked() {
        let rt = runtime("", true);
        // Nobody: 401, though `last` is bad too.
        assert_eq!(
            unauthorized(resolved(&rt, "/events?topic=a&last=x", &[]).await),
            "missing"
        );
        let bearer = format!("Bearer {}", token("alice", &["a"]));
        let header = [("authorization", bearer.as_str())];
        match resolved(&rt, "/events?topic=a&last=x", &header).await {
            Err(Refusal::Reply(r)) => assert_eq!(code(&r), (400, "bad_last".into())),
            _ => panic!("a bad last is a 400 once the subscriber is let in"),
        }
        match denied(resolved(&rt, "/events?topic=a&topic=b", &header).await) {
            Denied::Forbidden(m) => assert_eq!(m, "the token does not grant topic b"),
            other => panic!("{other:?}"),
        }
        // Without auth, anyone reads anything.
        let open = runtime("", false);
        let asked = resolved(&open, "/events?topic=b", &[])
            .await
            .ok()
            .expect("open");
        assert_eq!(asked.principal.user, None);
        assert_eq!(asked.topics, [Topic::parse("b").unwrap()]);
    }
}
