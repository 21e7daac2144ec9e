//! The request-head reader of the public listener. sidecast reads every
//! head itself (to route `/events` to the lean writer), so this is where a
//! hostile client meets the sidecar first: limits on size and time, and a
//! refusal of anything ambiguous.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Header slots tried first, on the stack: enough for nearly every head.
const COMMON_HEADERS: usize = 64;
/// The most header fields a head may have. pingora, which reads every
/// proxied head again, parses at most this many; a head with more would
/// meet the proxy library's own error page, so it is refused here first,
/// with a `431` that says so.
pub const MAX_HEADERS: usize = 256;

/// A parsed request head. Header names are lower-cased.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Length of the head in the read buffer.
    pub len: usize,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The path, also of an absolute-form target (`http://h/a` → `/a`).
    pub fn path(&self) -> &str {
        super::target::path(&self.target)
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// Whether the request has a body: a positive `Content-Length`, or any
    /// `Transfer-Encoding`.
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self
                .header_str("content-length")
                .is_some_and(|v| v.trim() != "0")
    }

    /// Whether the client lets the connection live after this request.
    pub fn keep_alive(&self) -> bool {
        let conn = self
            .header_str("connection")
            .unwrap_or("")
            .to_ascii_lowercase();
        if self.minor == 0 {
            conn.split(',').any(|t| t.trim() == "keep-alive")
        } else {
            !conn.split(',').any(|t| t.trim() == "close")
        }
    }
}

/// Why no head could be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("the connection closed before a request")]
    Closed,
    #[error("the request head did not arrive in time")]
    Timeout,
    #[error("the request head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request head has more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the request target is longer than {0} bytes")]
    TargetTooLong(usize),
    #[error("idle connection closed")]
    Idle,
}

impl HeadError {
    /// The status to answer with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            HeadError::Closed | HeadError::Idle => None,
            HeadError::Timeout => Some(408),
            HeadError::TooLarge(_) | HeadError::TooManyHeaders(_) => Some(431),
            HeadError::Malformed(_) => Some(400),
            HeadError::TargetTooLong(_) => Some(414),
        }
    }
}

/// Limits of the head reader: how long a head may take, and how large it may be.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub head_timeout: Duration,
    pub keepalive: Duration,
    pub max_head_bytes: usize,
}

/// Reads one request head into `buf` (which may already hold bytes). For the
/// first request of a connection `head_timeout` runs from now; for a later
/// one the connection may idle for `keepalive`, and `head_timeout` runs from
/// its first byte.
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    limits: HeadLimits,
    first: bool,
) -> Result<Head, HeadError> {
    let start = Instant::now();
    let mut deadline = if first || !buf.is_empty() {
        start + limits.head_timeout
    } else {
        start + limits.keepalive
    };
    let mut waiting_first_byte = !first && buf.is_empty();
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse(buf, limits.max_head_bytes)? {
                return Ok(head);
            }
        }
        if buf.len() >= limits.max_head_bytes {
            return Err(HeadError::TooLarge(limits.max_head_bytes));
        }
        if buf.capacity() == buf.len() {
            let want = (buf.capacity().max(512) * 2).min(limits.max_head_bytes);
            buf.reserve_exact(want - buf.len());
        }
        let read = tokio::time::timeout_at(deadline, io.read_buf(buf)).await;
        match read {
            Err(_) if waiting_first_byte => return Err(HeadError::Idle),
            Err(_) => return Err(HeadError::Timeout),
            Ok(Err(_)) => return Err(HeadError::Closed),
            Ok(Ok(0)) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(Ok(0)) => {
                return Err(HeadError::Malformed(
                    "the connection closed mid-head".into(),
                ))
            }
            Ok(Ok(_)) => {
                if waiting_first_byte {
                    waiting_first_byte = false;
                    deadline = Instant::now() + limits.head_timeout;
                }
            }
        }
    }
}

/// Parses a complete head from `buf`, `None` when more bytes are needed.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<Head>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; COMMON_HEADERS];
    match parse_with(buf, max, &mut slots) {
        Err(HeadError::TooManyHeaders(_)) => {
            // A head with many small fields: as many slots as it has lines
            // (an upper bound of its fields), up to the most pingora takes.
            let lines = buf.iter().filter(|&&b| b == b'\n').count();
            let mut slots = vec![httparse::EMPTY_HEADER; lines.clamp(1, MAX_HEADERS)];
            parse_with(buf, max, &mut slots)
        }
        other => other,
    }
}

fn parse_with<'b>(
    buf: &'b [u8],
    max: usize,
    slots: &mut [httparse::Header<'b>],
) -> Result<Option<Head>, HeadError> {
    let mut req = httparse::Request::new(slots);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders(MAX_HEADERS)),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if has_bare_cr(buf) {
                return Err(HeadError::Malformed("bare CR in the request head".into()));
            }
            return Ok(None);
        }
    };
    if len > max {
        return Err(HeadError::TooLarge(max));
    }
    if has_bare_cr(&buf[..len]) {
        return Err(HeadError::Malformed("bare CR in the request head".into()));
    }
    if req.path.is_some_and(|t| t.len() > super::target::MAX_LEN) {
        return Err(HeadError::TargetTooLong(super::target::MAX_LEN));
    }
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    let minor = req.version.unwrap_or(1);
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let head = Head {
        method,
        target,
        minor,
        headers,
        len,
    };
    check_framing(&head)?;
    if head.method != "CONNECT" {
        super::target::check(&head.method, &head.target, head.header("host"))
            .map_err(|e| HeadError::Malformed(e.to_string()))?;
    }
    Ok(Some(head))
}

fn has_bare_cr(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && bytes.get(i + 1).is_some_and(|&n| n != b'\n'))
}

/// Refuses heads whose body framing is ambiguous (request smuggling).
fn check_framing(head: &Head) -> Result<(), HeadError> {
    let te = head
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .count();
    let cls: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_slice())
        .collect();
    if te > 0 && !cls.is_empty() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding".into(),
        ));
    }
    if te > 1 {
        return Err(HeadError::Malformed(
            "more than one Transfer-Encoding".into(),
        ));
    }
    if let Some(v) = head.header_str("transfer-encoding") {
        if head.minor == 0 || !v.trim().eq_ignore_ascii_case("chunked") {
            return Err(HeadError::Malformed(format!(
                "unsupported Transfer-Encoding {v:?} (only chunked, on HTTP/1.1)"
            )));
        }
    }
    for v in &cls {
        let ok = !v.is_empty()
            && v.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(v).is_ok_and(|n| n.parse::<u64>().is_ok());
        if !ok {
            return Err(HeadError::Malformed(
                "Content-Length is not a number below 2^64".into(),
            ));
        }
    }
    if cls.windows(2).any(|w| w[0] != w[1]) {
        return Err(HeadError::Malformed(
            "conflicting Content-Length values".into(),
        ));
    }
    let hosts = head.headers.iter().filter(|(n, _)| n == "host").count();
    if hosts > 1 || (hosts == 0 && head.minor == 1) {
        return Err(HeadError::Malformed(
            "HTTP/1.1 needs exactly one Host header".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<Head>, HeadError> {
        parse(s.as_bytes(), 16384)
    }

    #[test]
    fn good_and_partial() {
        let h =
            p("GET /events?topic=a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\nrest")
                .unwrap()
                .unwrap();
        assert_eq!(h.path(), "/events");
        assert_eq!(h.query(), "topic=a");
        assert_eq!(h.header_str("accept"), Some("text/event-stream"));
        assert_eq!(h.len, 68);
        assert!(p("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn refusals() {
        for bad in [
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(
                matches!(p(bad), Err(HeadError::Malformed(_))),
                "{bad:?}: {:?}",
                p(bad)
            );
        }
    }

    #[test]
    fn many_small_headers_fit() {
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..150 {
            req.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        let h = p(&req).unwrap().unwrap();
        assert_eq!(h.headers.len(), 151);
        req.insert_str(req.len() - 2, &"A: b\r\n".repeat(200));
        assert_eq!(p(&req).unwrap_err(), HeadError::TooManyHeaders(MAX_HEADERS));
    }
}
