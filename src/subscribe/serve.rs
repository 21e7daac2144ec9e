//! An events request on the public listener, from its head to the end of
//! its stream: CORS, refusals, the response head, the opening (replay or
//! reset), then the lean writer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};

use super::recheck::Rechecks;
use super::request::{accepts_sse, cors_origin, denied_reply, resolve, Asked, Refusal};
use crate::auth::Denied;
use crate::events::frame::{chunked, control, notice};
use crate::events::hub::{Hub, Opening, Refused, Subscribe};
use crate::events::queue::StreamHandle;
use crate::events::stream::{self, jittered, Beat, Settings};
use crate::http1::head::Head;
use crate::http1::respond::Reply;
use crate::metrics::Metrics;
use crate::routes::EventsRoute;
use crate::state::{Runtime, Shared};

/// What the connection does after an events request.
pub enum After {
    /// The response is complete and the connection may serve another.
    KeepAlive,
    Close,
    /// A stream is subscribed and ready to run on this connection.
    Stream(Opened),
}

/// A subscribed stream, handed back instead of run in place. An async
/// function is as large as its largest state, so a stream run inside the
/// request handling would keep the room of auth and forward-auth calls for
/// its whole life; run as a task of its own, it holds only the connection,
/// this and the lean writer.
pub struct Opened {
    handle: Arc<StreamHandle>,
    first: Vec<Bytes>,
    settings: Settings,
    gauge: Gauge,
    route: Arc<str>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl Opened {
    /// A stream subscribed on `route` (its label in metrics and logs),
    /// counted as open from now on.
    pub fn new(
        handle: Arc<StreamHandle>,
        first: Vec<Bytes>,
        settings: Settings,
        route: Arc<str>,
        shared: &Shared,
    ) -> Opened {
        let gauge = shared.metrics.streams_open_on(&route);
        gauge.inc();
        Opened {
            handle,
            first,
            settings,
            gauge,
            route,
            hub: shared.hub.clone(),
            metrics: shared.metrics.clone(),
        }
    }

    /// Runs the stream to its end, then closes the connection.
    pub async fn run<IO: AsyncRead + AsyncWrite + Unpin>(self, mut io: IO) {
        let started = std::time::Instant::now();
        let handle = &self.handle;
        tracing::info!(target: "sidecast::stream", stream = handle.id, route = %self.route, user = handle.user.as_deref().unwrap_or("-"), "stream opened");
        // Released however the writer ends, a panic or a cancelled task
        // included: a stream that is gone never keeps its `max_streams`
        // place or its count.
        let registered = Registered {
            hub: &self.hub,
            handle,
            gauge: &self.gauge,
        };
        let ended = stream::run(
            &mut io,
            handle,
            self.first,
            &self.settings,
            &self.metrics.delivery_latency,
        )
        .await;
        drop(registered);
        self.metrics.closed(ended.label());
        // Boxed: the last words are written once, and their room is not
        // kept in every stream's task for its whole life.
        Box::pin(stream::finish(&mut io, &ended, &self.settings)).await;
        tracing::info!(target: "sidecast::stream", stream = handle.id, route = %self.route, reason = ended.label(), duration_ms = started.elapsed().as_millis() as u64, "stream closed");
    }
}

/// A stream's place in the hub and in the open-streams gauge, given back
/// when dropped.
struct Registered<'a> {
    hub: &'a Hub,
    handle: &'a StreamHandle,
    gauge: &'a Gauge,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.handle);
        self.gauge.dec();
    }
}

fn with_cors(mut r: Reply, origin: &Option<String>) -> Reply {
    r = r.header("Vary", "Origin");
    if let Some(o) = origin {
        r = r
            .header("Access-Control-Allow-Origin", o.clone())
            .header("Access-Control-Allow-Credentials", "true");
    }
    r
}

async fn reply<IO: AsyncWrite + Unpin>(io: &mut IO, head: &Head, r: Reply) -> After {
    let keep = head.keep_alive() && r.status < 500 && r.status != 400;
    match r.send(io, head.minor, keep, head.method == "HEAD").await {
        Ok(()) if keep => After::KeepAlive,
        _ => After::Close,
    }
}

/// A refusal that passes (overload, draining, auth backend down): an
/// EventSource gets a `200` stream with a jittered `retry:` and one
/// `sidecast.unavailable` event, because browsers never retry a non-200
/// answer; other clients get `503` with `Retry-After`.
async fn unavailable<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    head: &Head,
    rt: &Runtime,
    origin: &Option<String>,
    reason: &str,
) -> After {
    let retry = jittered(rt.config.events.retry);
    // An EventSource gets a 200 stream that tells it to come back later;
    // its HEAD, the same head without the body.
    if accepts_sse(head) && (head.method == "GET" || head.method == "HEAD") {
        let mut out = sse_head(head.minor, origin).into_bytes();
        if head.method == "GET" {
            let mut text = format!("retry: {retry}\n\n").into_bytes();
            text.extend_from_slice(&notice(
                "sidecast.unavailable",
                &serde_json::json!({"reason": reason}),
                None,
            ));
            if head.minor == 1 {
                out.extend_from_slice(&chunked(&text));
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(&text);
            }
        }
        let _ = stream::write_frames(io, &[Bytes::from(out)]).await;
        return After::Close;
    }
    let r = Reply::error(503, "unavailable", reason)
        .header("Retry-After", retry.div_ceil(1000).to_string());
    reply(io, head, with_cors(r, origin)).await
}

fn sse_head(minor: u8, origin: &Option<String>) -> String {
    let mut h = format!(
        "HTTP/1.{minor} 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-transform\r\nX-Accel-Buffering: no\r\nVary: Origin\r\n"
    );
    if let Some(o) = origin {
        h.push_str(&format!(
            "Access-Control-Allow-Origin: {o}\r\nAccess-Control-Allow-Credentials: true\r\n"
        ));
    }
    h.push_str(if minor == 1 {
        "Transfer-Encoding: chunked\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    h
}

/// The events route a head matched in the runtime it was routed with
/// (`None`: `[events] path`), and the path segments its template bound.
pub struct Matched<'r> {
    pub route: Option<&'r EventsRoute>,
    pub params: Vec<(String, String)>,
}

/// Serves one events request up to its stream: a refusal or a complete
/// answer is written here, a stream is returned as [`After::Stream`] for
/// the caller to run. `head` is taken by value: a long-lived stream keeps
/// nothing of its request. `rt` is the runtime the head was routed with:
/// every setting is read from it.
pub async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    head: Head,
    rt: &Runtime,
    matched: Matched<'_>,
    shared: &Arc<Shared>,
    rechecks: &Rechecks,
    peer: std::net::SocketAddr,
) -> After {
    let origin = cors_origin(&head, &rt.config.events.cors_origins);
    // Before anything else: sidecast answers this request itself and reads
    // no body, so a body left on the connection would be parsed as the next
    // request (a smuggled request, behind any ingress that shares
    // connections). Refused, and the connection closed, for every method.
    if head.has_body() {
        let r = Reply::error(400, "body", "a request to an events path has no body");
        return reply(io, &head, with_cors(r, &origin)).await;
    }
    if head.method == "OPTIONS" {
        let mut r = with_cors(Reply::new(204), &origin);
        if origin.is_some() {
            r = r
                .header("Access-Control-Allow-Methods", "GET")
                .header(
                    "Access-Control-Allow-Headers",
                    "Authorization, Last-Event-ID",
                )
                .header("Access-Control-Max-Age", "600");
        }
        return reply(io, &head, r).await;
    }
    let params: Vec<(&str, &str)> = matched
        .params
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let asked = match resolve(&head, matched.route, &params, rt, shared, Some(peer.ip())).await {
        Ok(a) => a,
        Err(Refusal::Reply(r)) => return reply(io, &head, with_cors(r, &origin)).await,
        Err(Refusal::Denied(Denied::Unavailable(reason))) => {
            return unavailable(io, &head, rt, &origin, &reason).await
        }
        Err(Refusal::Denied(d)) => {
            return reply(io, &head, with_cors(denied_reply(&d, shared), &origin)).await
        }
    };
    if asked.poll {
        let keep = super::poll::serve(io, &head, asked, rt, shared, &origin).await;
        return if keep { After::KeepAlive } else { After::Close };
    }
    if shared.lifecycle.is_draining() {
        return unavailable(io, &head, rt, &origin, "draining").await;
    }
    // HEAD: the status and headers its GET would get, and no stream.
    if head.method == "HEAD" {
        if shared.hub.is_full() {
            return unavailable(io, &head, rt, &origin, "too many streams").await;
        }
        let head_bytes = sse_head(head.minor, &origin);
        let ok = stream::write_frames(io, &[Bytes::from(head_bytes)])
            .await
            .is_ok();
        return if ok && head.keep_alive() && head.minor == 1 {
            After::KeepAlive
        } else {
            After::Close
        };
    }
    open(io, head, asked, rt, shared, rechecks, origin).await
}

async fn open<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    head: Head,
    asked: Asked,
    rt: &Runtime,
    shared: &Arc<Shared>,
    rechecks: &Rechecks,
    origin: Option<String>,
) -> After {
    let ev = &rt.config.events;
    let minor = head.minor;
    let is_chunked = minor == 1;
    let expires = asked.principal.expires.map(|at| {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + left + rt.config.auth.leeway
    });
    let settings = Settings {
        beat: Some(Beat::sse(ev.heartbeat, is_chunked)),
        retry: ev.retry,
        chunked: is_chunked,
        expires,
        held: false,
    };
    let req = Subscribe {
        topics: asked.topics,
        user: asked.principal.user.clone(),
        key_id: asked.principal.key_id.clone(),
        start: asked.start,
        queue: ev.queue,
        reader: crate::events::frame::Reader::Sse,
    };
    drop(asked.principal);
    let (handle, opening) = match shared.hub.subscribe(req) {
        Ok(x) => x,
        Err(Refused::TooManyStreams) => {
            return unavailable(io, &head, rt, &origin, "too many streams").await;
        }
    };
    drop(head);
    if let Some(creds) = asked.forward {
        rechecks.register(&handle, creds, rt.config.auth.forward_recheck);
    }
    let first = first_frames(minor, &origin, rt, &opening, shared, is_chunked);
    drop(opening);
    After::Stream(Opened::new(handle, first, settings, asked.route, shared))
}

/// The response head, `retry:`, and the replay, the reset or the cursor (a
/// block with only `id:`, see [`Opening::cursor`]), as one write.
fn first_frames(
    minor: u8,
    origin: &Option<String>,
    rt: &Runtime,
    opening: &Opening,
    shared: &Shared,
    is_chunked: bool,
) -> Vec<Bytes> {
    let mut frames = Vec::with_capacity(3 + opening.replay.len());
    frames.push(Bytes::from(sse_head(minor, origin)));
    let retry_ms = rt.config.events.retry.as_millis();
    frames.push(control(
        format!("retry: {retry_ms}\n\n").as_bytes(),
        is_chunked,
    ));
    if let Some((reason, sent)) = &opening.reset {
        shared.metrics.resets.inc();
        let text = notice(
            "sidecast.reset",
            &serde_json::json!({"reason": reason, "last_event_id": sent}),
            Some(&opening.newest),
        );
        frames.push(control(&text, is_chunked));
    } else if !opening.replay.is_empty() {
        shared.metrics.replays.inc();
        frames.extend(opening.replay.iter().map(|e| e.wire(is_chunked)));
    }
    if let Some(cursor) = opening.cursor() {
        frames.push(control(format!("id: {cursor}\n\n").as_bytes(), is_chunked));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::hub::HubLimits;

    /// Every open stream is one such task, and idle streams are what a pod
    /// holds by the thousand: the whole task (the connection, the writer,
    /// what the stream keeps) must stay near the lean writer's own size.
    #[test]
    fn a_stream_task_stays_small() {
        let metrics = Arc::new(Metrics::new());
        let limits = HubLimits {
            size: 0,
            ttl: Duration::ZERO,
            bytes: 0,
            policies: Vec::new(),
            max_streams: 1,
        };
        let opened = Opened {
            handle: Arc::new(StreamHandle::new(
                1,
                None,
                Box::new([]),
                None,
                crate::events::frame::Reader::Sse,
                4,
            )),
            first: Vec::new(),
            settings: Settings {
                beat: Some(Beat::sse(Duration::from_secs(1), true)),
                retry: Duration::from_secs(1),
                chunked: true,
                expires: None,
                held: false,
            },
            gauge: Gauge::default(),
            route: Arc::from("r"),
            hub: Arc::new(Hub::new(limits, metrics.clone())),
            metrics,
        };
        let (io, _peer) = tokio::io::duplex(64);
        let task = opened.run(io);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1280, "a stream's task is {size} bytes");
    }
}
