//! A hold on the client's connection, once the app answered with
//! `Grip-Hold`: a stream that gets each item published to its channels, or
//! a response that waits for one. Both are subscriptions to the hub like
//! an events route's: they count toward `max_streams`, show in the
//! metrics under the route `grip`, end in a drain and reach every replica
//! in cluster mode (the cluster feeds the same hub).

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::instruct::{Instruction, Mode};
use crate::events::frame::{chunked, GripResponse, Reader};
use crate::events::hub::{Refused, Start, Subscribe};
use crate::events::stream::{jittered, Beat, Settings};
use crate::http1::hop;
use crate::http1::respond::{reason, Reply};
use crate::routes::GRIP_LABEL;
use crate::state::{Runtime, Shared};
use crate::subscribe::serve::Opened;

/// What the app answered, made ready for the client.
#[derive(Debug)]
pub struct Held {
    pub instruction: Instruction,
    /// The app's status.
    pub status: u16,
    /// The status line and the app's headers the client gets (no `Grip-*`,
    /// no framing, no hop-by-hop ones), each line ending in CRLF, without
    /// the blank line: the framing is added by the kind of answer.
    pub head: Vec<u8>,
    /// The app's body, whole: a stream's initial content, or a response
    /// hold's answer at its timeout.
    pub body: Vec<u8>,
}

/// How a hold ended, for the access log and the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The status the client got (0: none).
    pub status: u16,
    /// The client's connection may serve another request.
    pub keep_client: bool,
}

/// What a hold leaves to the connection's owner.
pub enum Begun {
    /// A held stream, subscribed and ready: run as a task of its own (like
    /// an events stream, so that it keeps only the connection and the
    /// writer, not the room of the request that made it).
    Stream(Opened),
    /// A response hold, answered (or a refusal).
    Served(Served),
}

/// Begins a hold on `io`: a stream is subscribed and handed back; a
/// response hold is waited for and answered here. `keep_client`: the
/// client's connection may stay open after a complete answer.
pub async fn begin<C: AsyncRead + AsyncWrite + Unpin>(
    io: &mut C,
    held: Held,
    shared: &Shared,
    rt: &Runtime,
    keep_client: bool,
) -> Begun {
    let i = &held.instruction;
    // The first channel's prev-id given: sidecast ids are one order over
    // every topic, so one cursor serves them all.
    let start = i
        .channels
        .iter()
        .find_map(|c| c.prev_id.clone())
        .map_or(Start::New, Start::After);
    let reader = match i.mode {
        Mode::Stream => Reader::Held,
        Mode::Response => Reader::Response,
    };
    let req = Subscribe {
        topics: i.channels.iter().map(|c| c.topic.clone()).collect(),
        user: None,
        key_id: None,
        start,
        queue: rt.config.events.queue,
        reader,
    };
    // A drain closes the streams open when it starts: a hold made after
    // would outlive it, so it is refused as an events stream is.
    let subscribed = if shared.lifecycle.is_draining() {
        Err(("draining", "draining"))
    } else {
        shared
            .hub
            .subscribe(req)
            .map_err(|Refused::TooManyStreams| ("too many streams", "too-many-streams"))
    };
    let (handle, opening) = match subscribed {
        Ok(x) => x,
        Err((reason, code)) => {
            let retry = jittered(rt.config.events.retry);
            let r = Reply::error(503, "unavailable", reason)
                .header("Retry-After", retry.div_ceil(1000).to_string())
                .header("Sidecast-Error", code);
            let _ = r.send(io, 1, false, false).await;
            return Begun::Served(Served {
                status: 503,
                keep_client: false,
            });
        }
    };
    // A prev-id sidecast does not know (or history lost) opens live: a
    // GRIP stream's format is the app's, with no place for a reset notice.
    let replay = if opening.reset.is_none() {
        opening.replay
    } else {
        Vec::new()
    };
    match i.mode {
        Mode::Stream => {
            let mut head = held.head;
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
            let mut first = Vec::with_capacity(2 + replay.len());
            first.push(Bytes::from(head));
            if !held.body.is_empty() {
                first.push(chunked(&held.body));
            }
            if !replay.is_empty() {
                shared.metrics.replays.inc();
            }
            // A close published after the prev-id ends this stream too,
            // after what came before it: it was published for the client
            // whose place the prev-id keeps.
            let close = replay.iter().position(|e| e.closes());
            let upto = close.unwrap_or(replay.len());
            first.extend(replay[..upto].iter().map(|e| e.wire(true)));
            drop(replay);
            if close.is_some() {
                shared.hub.unsubscribe(&handle);
                first.push(Bytes::from_static(b"0\r\n\r\n"));
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    crate::events::stream::write_frames(io, &first),
                )
                .await;
                return Begun::Served(Served {
                    status: held.status,
                    keep_client: false,
                });
            }
            let settings = Settings {
                beat: i.keep_alive.as_ref().map(|k| Beat {
                    every: k.every,
                    frame: chunked(&k.content),
                    interval: k.interval,
                }),
                retry: rt.config.events.retry,
                chunked: true,
                expires: None,
                held: true,
            };
            Begun::Stream(Opened::new(
                handle,
                first,
                settings,
                GRIP_LABEL.into(),
                shared,
            ))
        }
        Mode::Response => {
            let gauge = shared.metrics.streams_open_on(GRIP_LABEL);
            gauge.inc();
            let answer = match replay.iter().find_map(|e| e.response().cloned()) {
                Some(r) => Some(Ok(r)),
                None => wait(io, &handle, i.timeout).await,
            };
            shared.hub.unsubscribe(&handle);
            gauge.dec();
            // A drain that began while it waited closes the connection
            // after the answer, and the answer says so.
            let keep_client = keep_client && !shared.lifecycle.is_draining();
            Begun::Served(match answer {
                // The client went away.
                None => Served {
                    status: 0,
                    keep_client: false,
                },
                Some(Ok(item)) => {
                    let ok = write_item(io, &item, &held.head, keep_client).await.is_ok();
                    Served {
                        status: item.code,
                        keep_client: ok && keep_client,
                    }
                }
                // The timeout, a drain or a disconnect: the app's own answer.
                Some(Err(keep)) => {
                    let keep = keep && keep_client;
                    let mut out = held.head;
                    finish(&mut out, held.status, &held.body, keep);
                    let ok = write_all(io, &out).await.is_ok();
                    Served {
                        status: held.status,
                        keep_client: ok && keep,
                    }
                }
            })
        }
    }
}

/// Waits for an item with an `http-response` for a response hold, up to
/// `timeout`: `Some(Ok)` the item, `Some(Err(keep))` the timeout or a close
/// (`keep`: the connection may still serve another request), `None` the
/// client went away.
async fn wait<C: AsyncRead + Unpin>(
    io: &mut C,
    handle: &crate::events::queue::StreamHandle,
    timeout: std::time::Duration,
) -> Option<Result<Arc<GripResponse>, bool>> {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut batch = Vec::new();
    let mut probe = [0u8; 64];
    // Bytes from the client while it waits belong to a request after this
    // one, which this hold cannot give back: once read, the connection is
    // not kept. It is read on all the same, to see the client go away.
    let mut keep = true;
    loop {
        tokio::select! {
            biased;
            r = handle.next(&mut batch, 16) => match r {
                Ok(()) => {
                    if let Some(item) = batch.iter().find_map(|e| e.response().cloned()) {
                        return Some(Ok(item));
                    }
                    batch.clear();
                }
                Err(_) => return Some(Err(keep)),
            },
            _ = &mut deadline => return Some(Err(keep)),
            r = io.read(&mut probe) => match r {
                Ok(0) | Err(_) => return None,
                Ok(_) => keep = false,
            },
        }
    }
}

/// Ends a head with `Content-Length` and, when the connection is not kept,
/// `Connection: close`, then adds the body. A `204` or `304` has neither
/// (a long-poll with `ETag`s answers `304` at its timeout).
fn finish(out: &mut Vec<u8>, status: u16, body: &[u8], keep: bool) {
    let bodiless = status == 204 || status == 304;
    if !bodiless {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(body);
    }
}

/// Whether an item's header may be sent as it is: framing and hop-by-hop
/// headers are sidecast's to write.
fn item_header_allowed(name: &str) -> bool {
    let name = name.as_bytes();
    !hop::is_hop_by_hop(name)
        && !name.eq_ignore_ascii_case(b"content-length")
        && !super::instruct::is_grip_header(name)
}

/// An item's `http-response` as the answer to a response hold.
async fn write_item<C: AsyncWrite + Unpin>(
    io: &mut C,
    r: &GripResponse,
    original: &[u8],
    keep: bool,
) -> std::io::Result<()> {
    let out = item_answer(r, original, keep);
    write_all(io, &out).await
}

/// The answer to a response hold from an item: its status and body, the
/// app's original headers (`original`, the held head) but those the item
/// names, then the item's headers, as Pushpin answers. So what the app
/// set on every answer (CORS, caching) holds for the published one too.
fn item_answer(r: &GripResponse, original: &[u8], keep: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(original.len() + 128 + r.body.len());
    let reason_text = if r.reason.is_empty() {
        reason(r.code)
    } else {
        &r.reason
    };
    out.extend_from_slice(format!("HTTP/1.1 {} {reason_text}\r\n", r.code).as_bytes());
    for line in original.split_inclusive(|&b| b == b'\n').skip(1) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !r
            .headers
            .iter()
            .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()))
        {
            out.extend_from_slice(line);
        }
    }
    for (n, v) in &r.headers {
        if item_header_allowed(n) {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    finish(&mut out, r.code, &r.body, keep);
    out
}

async fn write_all<C: AsyncWrite + Unpin>(io: &mut C, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The app's headers stay but for those the item sets; the item's
    /// status, body and length replace the app's.
    #[test]
    fn a_published_answer_keeps_the_apps_other_headers() {
        let original = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nAccess-Control-Allow-Origin: *\r\nX-App: 1\r\n";
        let r = GripResponse {
            code: 201,
            reason: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        };
        let got = String::from_utf8(item_answer(&r, original, true)).unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 201 Created\r\nAccess-Control-Allow-Origin: *\r\nX-App: 1\r\n\
             content-type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    /// A `304` answer (a long-poll with `ETag`s) carries no body and no
    /// length of one.
    #[test]
    fn a_bodiless_answer_has_no_body() {
        let r = GripResponse {
            code: 304,
            reason: String::new(),
            headers: vec![("ETag".into(), "\"v2\"".into())],
            body: b"ignored".to_vec(),
        };
        let got = String::from_utf8(item_answer(&r, b"HTTP/1.1 200 OK\r\n", false)).unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 304 Not Modified\r\nETag: \"v2\"\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn an_items_framing_and_grip_headers_are_not_sent() {
        assert!(item_header_allowed("Content-Type"));
        assert!(item_header_allowed("X-Thing"));
        for h in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Grip-Hold",
        ] {
            assert!(!item_header_allowed(h), "{h}");
        }
    }
}
