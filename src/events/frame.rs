//! SSE framing, done once per event: the bytes every stream writes are one
//! shared [`Bytes`], already wrapped as an HTTP/1.1 chunk; an HTTP/1.0
//! stream writes a slice of the same buffer without the chunk framing.

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
    /// `"{len:x}\r\n" + sse + "\r\n"`.
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
}

impl Event {
    /// Frames an event with its id.
    pub fn new(seq: u64, id: &str, new: &NewEvent) -> Event {
        let sse = sse_text(id, new.name.as_deref(), new.retry, &new.data);
        let chunk = chunked(&sse);
        Event {
            seq,
            topics: new.topics.clone().into_boxed_slice(),
            user: new.user.as_deref().map(Arc::from),
            name: new.name.as_deref().map(Box::from),
            start: (chunk.len() - sse.len() - 2) as u16,
            chunk,
            published: Instant::now(),
            rings: AtomicU32::new(0),
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

    /// The SSE text of the event alone.
    pub fn sse(&self) -> Bytes {
        self.chunk.slice(self.start as usize..self.chunk.len() - 2)
    }

    /// The bytes history accounts for.
    pub fn size(&self) -> usize {
        self.chunk.len() + std::mem::size_of::<Event>() + self.topics.len() * 16
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
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(retry) = retry {
        out.put_slice(format!("retry: {retry}\n").as_bytes());
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
    out
}

/// Wraps bytes as one HTTP/1.1 chunk.
pub fn chunked(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 12);
    out.put_slice(format!("{:x}\r\n", body.len()).as_bytes());
    out.put_slice(body);
    out.put_slice(b"\r\n");
    out.freeze()
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
}
