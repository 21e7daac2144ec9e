//! Long-polling, for clients that cannot hold a stream: the same topics,
//! auth and cursor as a stream, answered as one JSON array. A poll is a
//! short-lived subscription, so the replay/registration instant that keeps
//! streams gap-free keeps polls gap-free too.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::request::Asked;
use crate::events::frame::Event;
use crate::events::hub::{Refused, Subscribe};
use crate::events::queue::Close;
use crate::http1::head::Head;
use crate::http1::respond::Reply;
use crate::state::{Runtime, Shared};

/// Elements in one answer at most; the cursor goes on from the last.
pub const MAX_ELEMENTS: usize = 1000;

fn element(e: &Event) -> serde_json::Value {
    let mut o = serde_json::json!({ "id": e.id(), "data": e.data() });
    if let Some(n) = &e.name {
        o["event"] = serde_json::Value::String(n.to_string());
    }
    o
}

/// Answers one poll; whether the connection may serve another request.
pub async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    head: &Head,
    asked: Asked,
    rt: &Runtime,
    shared: &Arc<Shared>,
    origin: &Option<String>,
) -> bool {
    let req = Subscribe {
        topics: asked.topics,
        user: asked.principal.user.clone(),
        key_id: None,
        // Without `lastEventId` a poll waits for new events only: its
        // `Last-Event-ID` answer is then the newest id read in the step
        // that registers it, so no event falls between that id and what
        // the poll waits for (reading it in a step of its own first would
        // leave a gap).
        start: asked.start,
        queue: MAX_ELEMENTS,
        reader: crate::events::frame::Reader::Sse,
    };
    let (handle, opening) = match shared.hub.subscribe(req) {
        Ok(x) => x,
        Err(Refused::TooManyStreams) => {
            let r = Reply::error(503, "unavailable", "too many streams").header(
                "Retry-After",
                rt.config.events.retry.as_secs().max(1).to_string(),
            );
            let _ = r.send(io, head.minor, false, false).await;
            return false;
        }
    };
    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut cursor = opening.newest.clone();
    if let Some((reason, sent)) = &opening.reset {
        shared.metrics.resets.inc();
        items.push(serde_json::json!({
            "id": opening.newest,
            "event": "sidecast.reset",
            "data": serde_json::json!({"reason": reason, "last_event_id": sent}).to_string(),
        }));
    }
    let mut events: Vec<Arc<Event>> = opening.replay;
    let mut ended = None;
    if items.is_empty() && events.is_empty() {
        let wait = handle.next(&mut events, MAX_ELEMENTS);
        if let Ok(Err(why)) = tokio::time::timeout(rt.config.events.poll_timeout, wait).await {
            ended = Some(why);
        }
    }
    shared.hub.unsubscribe(&handle);
    events.truncate(MAX_ELEMENTS - items.len());
    if let Some(last) = events.last() {
        cursor = last.id().to_owned();
    }
    items.extend(events.iter().map(|e| element(e)));
    // The app closed this poll (`POST /disconnect`): it is told as a
    // stream would be, with the cursor as its id.
    if let Some(Close::Disconnect { reason, reconnect }) = ended {
        items.push(serde_json::json!({
            "id": cursor,
            "event": "sidecast.disconnect",
            "data": serde_json::json!({"reason": reason, "reconnect": reconnect}).to_string(),
        }));
    }
    let mut r = Reply::json(200, &serde_json::Value::Array(items))
        .header("Last-Event-ID", cursor)
        .header("Cache-Control", "no-cache")
        .header("Vary", "Origin");
    if let Some(o) = origin {
        r = r
            .header("Access-Control-Allow-Origin", o.clone())
            .header("Access-Control-Allow-Credentials", "true")
            .header("Access-Control-Expose-Headers", "Last-Event-ID");
    }
    let keep = head.keep_alive();
    let sent = r.send(io, head.minor, keep, head.method == "HEAD").await;
    sent.is_ok() && keep
}
