//! SSE framing, done once per event: the bytes every stream writes are one
//! shared [`Bytes`], already wrapped as an HTTP/1.1 chunk; an HTTP/1.0
//! stream writes a slice of the same buffer without the chunk framing.
//!
//! A GRIP item (published in Pushpin's format) is an event of another
//! kind: its `http-stream` content is framed once as a chunk in the same
//! way, but without any SSE lines, because the streams it reaches (held
//! by the app's own response) carry the app's format, not SSE.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::topic::Topic;

/// One published event, as history holds it and streams write it.
#[derive(Debug)]
pub struct Event {
    /// Position in the epoch's single order of events.
    pub seq: u64,
    pub topics: Box<[Topic]>,
    /// Delivered only to streams of this user, when set.
    pub user: Option<Arc<str>>,
    pub name: Option<Box<str>>,
    pub kind: Kind,
    /// `"{len:x}\r\n" + sse + "\r\n"`; for a GRIP item the same around
    /// its `http-stream` content (empty when it has none).
    chunk: Bytes,
    /// Where the SSE text starts and ends inside `chunk`.
    start: u16,
    pub published: Instant,
    /// Topic rings still holding this event (changed under the hub lock).
    pub(crate) rings: AtomicU32,
}

/// What a publisher asks to send.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub topics: Vec<Topic>,
    pub data: String,
    pub name: Option<String>,
    pub user: Option<String>,
    pub retry: Option<u64>,
    pub idempotency_key: Option<String>,
    /// A GRIP item instead of an SSE event (`data`, `name` and `retry`
    /// unused).
    pub grip: Option<Arc<GripItem>>,
}

/// What a GRIP item carries: its `http-stream` and `http-response`
/// formats, either or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GripItem {
    pub stream: Option<StreamPart>,
    pub response: Option<Arc<GripResponse>>,
}

/// An item's `http-stream` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPart {
    /// Written raw to the streams held on the channel.
    Content(Vec<u8>),
    /// `"action": "close"`: ends those streams, after what came before.
    Close,
}

/// An item's `http-response` format: the answer to a response hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GripResponse {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What an event is, for the streams it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Published with sidecast's own API: an SSE event.
    Sse,
    /// A GRIP item: for the streams and responses the app holds.
    Grip {
        close: bool,
        response: Option<Arc<GripResponse>>,
    },
}

/// Who reads a stream, and so which events reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// An events route's SSE stream (or long-poll): SSE events only.
    Sse,
    /// A stream the app held (`Grip-Hold: stream`): GRIP items with
    /// `http-stream`, and SSE events as SSE text.
    Held,
    /// A response the app held (`Grip-Hold: response`): GRIP items with
    /// `http-response` only.
    Response,
}

/// Room kept in front of a draft for the chunk-size line and the `id:`
/// line, written once the id is known.
const HEADROOM: usize = 96;

/// An event framed but for its id. Everything that costs (copying the
/// payload, splitting its lines) happens here, outside the hub lock; under
/// the lock [`Event::from_draft`] only writes the id and the chunk size
/// into the room kept in front. One allocation per event.
#[derive(Debug)]
pub struct Draft {
    topics: Box<[Topic]>,
    user: Option<Arc<str>>,
    name: Option<Box<str>>,
    kind: Kind,
    /// `HEADROOM` bytes, then the SSE text after the `id:` line, then
    /// `\r\n`; for a GRIP item, its content already chunked (or nothing).
    buf: BytesMut,
}

impl Draft {
    pub fn new(new: &NewEvent) -> Draft {
        if let Some(g) = &new.grip {
            let buf = match &g.stream {
                Some(StreamPart::Content(c)) if !c.is_empty() => chunk_buf(c),
                _ => BytesMut::new(),
            };
            return Draft {
                topics: new.topics.clone().into_boxed_slice(),
                user: None,
                name: None,
                kind: Kind::Grip {
                    close: g.stream == Some(StreamPart::Close),
                    response: g.response.clone(),
                },
                buf,
            };
        }
        let mut buf = BytesMut::with_capacity(HEADROOM + sse_capacity(new) + 2);
        buf.put_bytes(0, HEADROOM);
        sse_body(&mut buf, new.name.as_deref(), new.retry, &new.data);
        buf.put_slice(b"\r\n");
        Draft {
            topics: new.topics.clone().into_boxed_slice(),
            user: new.user.as_deref().map(Arc::from),
            name: new.name.as_deref().map(Box::from),
            kind: Kind::Sse,
            buf,
        }
    }
}

fn sse_capacity(new: &NewEvent) -> usize {
    let lines = 1 + new
        .data
        .bytes()
        .filter(|&b| b == b'\n' || b == b'\r')
        .count();
    new.data.len() + lines * 7 + new.name.as_ref().map_or(0, |n| n.len() + 8) + 32
}

/// `n` in lower-case hex, into the end of `out`; how many digits.
fn hex(mut n: usize, out: &mut [u8; 16]) -> usize {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return out.len() - i;
        }
    }
}

impl Event {
    /// Frames an event with its id.
    pub fn new(seq: u64, id: &str, new: &NewEvent) -> Event {
        Event::from_draft(seq, id, Draft::new(new))
    }

    /// Completes a draft with its id: a few bytes written in place.
    pub fn from_draft(seq: u64, id: &str, draft: Draft) -> Event {
        let Draft {
            topics,
            user,
            name,
            kind,
            buf,
        } = draft;
        let (chunk, start) = if let Kind::Grip { .. } = kind {
            // No id line: the app's format has no place for one.
            let start = buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            (buf.freeze(), start)
        } else {
            sse_chunk(id, buf)
        };
        Event {
            seq,
            topics,
            user,
            name,
            kind,
            start: start as u16,
            chunk,
            published: Instant::now(),
            rings: AtomicU32::new(0),
        }
    }
}

/// An SSE draft's chunk, with its id and size written into the room kept
/// in front; where the SSE text starts in it.
fn sse_chunk(id: &str, mut buf: BytesMut) -> (Bytes, usize) {
    let id_line = if id.is_empty() { 0 } else { id.len() + 5 };
    let sse_len = id_line + buf.len() - HEADROOM - 2;
    let mut digits = [0u8; 16];
    let n = hex(sse_len, &mut digits);
    let prefix = n + 2 + id_line;
    if prefix <= HEADROOM {
        let at = HEADROOM - prefix;
        let mut w = &mut buf[at..HEADROOM];
        w.put_slice(&digits[16 - n..]);
        w.put_slice(b"\r\n");
        if id_line > 0 {
            w.put_slice(b"id: ");
            w.put_slice(id.as_bytes());
            w.put_u8(b'\n');
        }
        let _ = buf.split_to(at);
        (buf.freeze(), n + 2)
    } else {
        // An id longer than the room kept: frame anew (never in practice).
        let mut sse = BytesMut::with_capacity(sse_len);
        sse.put_slice(b"id: ");
        sse.put_slice(id.as_bytes());
        sse.put_u8(b'\n');
        sse.put_slice(&buf[HEADROOM..buf.len() - 2]);
        (chunked(&sse), n + 2)
    }
}

impl Event {
    /// Whether this event is for a stream of `user` read by `reader`.
    pub fn reaches(&self, user: Option<&str>, reader: Reader) -> bool {
        self.visible_to(user)
            && match (&self.kind, reader) {
                (Kind::Sse, Reader::Sse | Reader::Held) => true,
                (Kind::Grip { close, .. }, Reader::Held) => *close || !self.chunk.is_empty(),
                (Kind::Grip { response, .. }, Reader::Response) => response.is_some(),
                _ => false,
            }
    }

    /// A GRIP item's `"action": "close"`.
    pub fn closes(&self) -> bool {
        matches!(self.kind, Kind::Grip { close: true, .. })
    }

    /// A GRIP item's `http-response`, for a response hold.
    pub fn response(&self) -> Option<&Arc<GripResponse>> {
        match &self.kind {
            Kind::Grip { response, .. } => response.as_ref(),
            Kind::Sse => None,
        }
    }

    /// The bytes to write: chunked for HTTP/1.1, plain for HTTP/1.0.
    pub fn wire(&self, chunked: bool) -> Bytes {
        if chunked {
            self.chunk.clone()
        } else {
            self.sse()
        }
    }

    /// The same bytes as [`Event::wire`], borrowed.
    pub fn bytes(&self, chunked: bool) -> &[u8] {
        if chunked {
            &self.chunk
        } else {
            &self.chunk[self.start as usize..self.chunk.len() - 2]
        }
    }

    /// The SSE text of the event alone.
    pub fn sse(&self) -> Bytes {
        self.chunk.slice(self.start as usize..self.chunk.len() - 2)
    }

    /// The bytes history accounts for.
    pub fn size(&self) -> usize {
        let response = self.response().map_or(0, |r| {
            r.body.len()
                + r.reason.len()
                + r.headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>()
        });
        self.chunk.len() + response + std::mem::size_of::<Event>() + self.topics.len() * 16
    }

    /// The `id:` of the frame.
    pub fn id(&self) -> &str {
        let sse = &self.chunk[self.start as usize..];
        let line = sse.split(|&b| b == b'\n').next().unwrap_or_default();
        std::str::from_utf8(line.strip_prefix(b"id: ").unwrap_or_default()).unwrap_or_default()
    }

    /// The payload as the stream carries it (data lines joined by `\n`), for
    /// long-polling.
    pub fn data(&self) -> String {
        let sse = self.sse();
        let text = String::from_utf8_lossy(&sse);
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("data: ")
                    .or_else(|| (l == "data:").then_some(""))
            })
            .collect();
        lines.join("\n")
    }

    pub fn visible_to(&self, user: Option<&str>) -> bool {
        match &self.user {
            None => true,
            Some(u) => user == Some(&**u),
        }
    }
}

/// The SSE text: `id:`, `event:` when named, `retry:` when given, one
/// `data:` per line of the payload (`\n`, `\r\n` and `\r` all split), then a
/// blank line.
pub fn sse_text(id: &str, name: Option<&str>, retry: Option<u64>, data: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(data.len() + id.len() + 32);
    if !id.is_empty() {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    sse_body(&mut out, name, retry, data);
    out
}

/// The SSE text after the `id:` line.
fn sse_body(out: &mut BytesMut, name: Option<&str>, retry: Option<u64>, data: &str) {
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(retry) = retry {
        out.put_slice(b"retry: ");
        out.put_slice(retry.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest.as_bytes()[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.put_u8(b'\n');
}

/// Wraps bytes as one HTTP/1.1 chunk.
pub fn chunked(body: &[u8]) -> Bytes {
    chunk_buf(body).freeze()
}

/// [`chunked`], still writable (a GRIP draft keeps it as its buffer).
fn chunk_buf(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 12);
    out.put_slice(format!("{:x}\r\n", body.len()).as_bytes());
    out.put_slice(body);
    out.put_slice(b"\r\n");
    out
}

/// A control frame that sidecast writes itself (`retry:`, a heartbeat, a
/// `sidecast.*` event), in the framing the stream needs.
pub fn control(text: &[u8], is_chunked: bool) -> Bytes {
    if is_chunked {
        chunked(text)
    } else {
        Bytes::copy_from_slice(text)
    }
}

/// A named event with JSON data and no id (`sidecast.expired`,
/// `sidecast.disconnect`, `sidecast.unavailable`), optionally ending with a
/// `retry:` line.
pub fn notice(name: &str, json: &serde_json::Value, id: Option<&str>) -> BytesMut {
    sse_text(id.unwrap_or(""), Some(name), None, &json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(data: &str) -> NewEvent {
        NewEvent {
            topics: vec![Topic::parse("a").unwrap()],
            data: data.into(),
            name: Some("n".into()),
            user: None,
            retry: Some(10),
            idempotency_key: None,
            grip: None,
        }
    }

    #[test]
    fn frames_lines() {
        let e = Event::new(1, "e-1", &new("a\nb\r\nc\rd"));
        assert_eq!(
            &e.sse()[..],
            b"id: e-1\nevent: n\nretry: 10\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert!(e
            .wire(true)
            .starts_with(format!("{:x}\r\n", e.sse().len()).as_bytes()));
        assert!(e.wire(true).ends_with(b"\n\r\n"));
        assert_eq!(e.id(), "e-1");
        assert_eq!(e.data(), "a\nb\nc\nd");
        let empty = Event::new(2, "e-2", &new(""));
        assert_eq!(empty.data(), "");
    }

    fn grip(stream: Option<StreamPart>, response: bool) -> Event {
        let mut n = new("");
        n.grip = Some(Arc::new(GripItem {
            stream,
            response: response.then(|| {
                Arc::new(GripResponse {
                    code: 200,
                    reason: "OK".into(),
                    headers: Vec::new(),
                    body: b"hi".to_vec(),
                })
            }),
        }));
        Event::new(3, "e-3", &n)
    }

    /// A GRIP item's content is framed raw, with no SSE line and no id, and
    /// reaches only the readers that take its formats.
    #[test]
    fn grip_items_frame_raw_and_reach_their_readers() {
        let e = grip(Some(StreamPart::Content(b"line\n".to_vec())), false);
        assert_eq!(e.bytes(true), b"5\r\nline\n\r\n");
        assert_eq!(e.bytes(false), b"line\n");
        assert!(e.reaches(None, Reader::Held));
        assert!(!e.reaches(None, Reader::Sse));
        assert!(!e.reaches(None, Reader::Response));
        let r = grip(None, true);
        assert!(r.reaches(None, Reader::Response));
        assert!(!r.reaches(None, Reader::Held));
        let empty = grip(Some(StreamPart::Content(Vec::new())), true);
        assert!(
            !empty.reaches(None, Reader::Held),
            "an empty chunk would end the body"
        );
        let close = grip(Some(StreamPart::Close), false);
        assert!(close.closes() && close.reaches(None, Reader::Held));
        let sse = Event::new(4, "e-4", &new("x"));
        assert!(sse.reaches(None, Reader::Held) && !sse.reaches(None, Reader::Response));
    }

    /// The framing one writes in place equals the plain framing, whatever
    /// the id (none, long enough to need the fallback) and payload size
    /// (chunk sizes of one to several hex digits).
    fn same_as_plain(id: &str, new: &NewEvent) {
        let e = Event::new(7, id, new);
        let sse = sse_text(id, new.name.as_deref(), new.retry, &new.data);
        assert_eq!(&e.sse()[..], &sse[..]);
        assert_eq!(&e.wire(false)[..], &sse[..]);
        assert_eq!(&e.wire(true)[..], &chunked(&sse)[..]);
        assert_eq!(e.bytes(true), &e.wire(true)[..]);
        assert_eq!(e.bytes(false), &e.wire(false)[..]);
        assert_eq!(e.id(), id);
    }

    #[test]
    fn drafts_complete_in_place() {
        for len in [0, 1, 5, 14, 15, 16, 200, 4000, 70_000] {
            let mut n = new(&"x".repeat(len));
            same_as_plain("e-1", &n);
            same_as_plain("", &n);
            same_as_plain(&"i".repeat(200), &n);
            n.name = None;
            n.retry = None;
            same_as_plain("18f3a9c2b1d0abcd-123456789", &n);
        }
    }

    proptest::proptest! {
        #[test]
        fn drafts_frame_like_plain_text(
            data in "[a-z\r\n]{0,300}",
            id in "[a-f0-9-]{0,120}",
            name in proptest::option::of("[a-z.:_-]{1,64}"),
            retry in proptest::option::of(0u64..100_000),
        ) {
            let mut n = new(&data);
            n.name = name;
            n.retry = retry;
            same_as_plain(&id, &n);
        }
    }
}
