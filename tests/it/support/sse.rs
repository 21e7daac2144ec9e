//! An SSE client on a raw socket, with its own parser written from the
//! WHATWG rules (not sidecast's framing code): lines end in CRLF, LF or CR;
//! `data` fields join with LF; a blank line dispatches.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::Response;

/// One blank-line-terminated block of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    pub id: Option<String>,
    pub event: Option<String>,
    /// `None` when the block had no `data` field (not dispatched).
    pub data: Option<String>,
    pub retry: Option<u64>,
    pub comments: usize,
}

/// Parses complete blocks out of `text`, leaving the incomplete tail.
pub fn parse_blocks(text: &mut String) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur = Block::default();
    let mut consumed = 0;
    let mut pos = 0;
    let bytes = text.as_bytes();
    while pos < bytes.len() {
        let Some(rel) = bytes[pos..].iter().position(|&b| b == b'\n' || b == b'\r') else {
            break;
        };
        let end = pos + rel;
        let mut next = end + 1;
        if bytes[end] == b'\r' {
            if next >= bytes.len() {
                break; // a CR at the end: wait to see if LF follows
            }
            if bytes[next] == b'\n' {
                next += 1;
            }
        }
        let line = &text[pos..end];
        pos = next;
        if line.is_empty() {
            if let Some(d) = cur.data.as_mut() {
                d.pop();
            }
            out.push(std::mem::take(&mut cur));
            consumed = pos;
            continue;
        }
        if line.starts_with(':') {
            cur.comments += 1;
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..]),
            ),
            None => (line, ""),
        };
        match field {
            "data" => {
                let d = cur.data.get_or_insert_with(String::new);
                d.push_str(value);
                d.push('\n');
            }
            "id" => cur.id = Some(value.to_owned()),
            "event" => cur.event = Some(value.to_owned()),
            "retry" => cur.retry = value.parse().ok(),
            _ => {}
        }
    }
    text.drain(..consumed);
    out
}

/// An open SSE response.
pub struct Sse {
    io: TcpStream,
    raw: Vec<u8>,
    chunked: bool,
    text: String,
    pending: std::collections::VecDeque<Block>,
    pub head: Response,
    pub eof: bool,
}

impl Sse {
    /// Sends a GET and reads the response head.
    pub async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut io = TcpStream::connect(addr).await.expect("connect");
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        io.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = tokio::time::timeout(super::WAIT, io.read(&mut buf))
                .await
                .expect("response head in time")
                .unwrap();
            assert!(
                n > 0,
                "connection closed before the response head: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        };
        let head = super::http::parse_response(&raw[..end]);
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"));
        let mut s = Sse {
            io,
            raw: raw[end..].to_vec(),
            chunked,
            text: String::new(),
            pending: Default::default(),
            head,
            eof: false,
        };
        s.decode();
        s
    }

    /// Opens with a Bearer token.
    pub async fn open_token(addr: &str, path: &str, token: &str) -> Sse {
        let auth = format!("Bearer {token}");
        Sse::open(addr, path, &[("Authorization", &auth)]).await
    }

    pub fn status(&self) -> u16 {
        self.head.status
    }

    fn decode(&mut self) {
        if self.chunked {
            while let Some(nl) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.raw[..nl]).unwrap_or("0").trim(),
                    16,
                )
                .unwrap_or(0);
                if size == 0 {
                    if self.raw.len() >= nl + 4 {
                        self.eof = true;
                        self.raw.clear();
                    }
                    break;
                }
                if self.raw.len() < nl + 2 + size + 2 {
                    break;
                }
                let chunk = self.raw[nl + 2..nl + 2 + size].to_vec();
                self.raw.drain(..nl + 4 + size);
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        } else {
            let all = std::mem::take(&mut self.raw);
            self.text.push_str(&String::from_utf8_lossy(&all));
        }
        self.pending.extend(parse_blocks(&mut self.text));
    }

    /// The next block, `None` at the end of the stream; panics after `within`.
    pub async fn next_block(&mut self, within: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.eof {
                return None;
            }
            let mut buf = [0u8; 16384];
            let n = match tokio::time::timeout_at(deadline, self.io.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => panic!("no SSE block within {within:?}"),
            };
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.raw.extend_from_slice(&buf[..n]);
            self.decode();
        }
    }

    /// The opening of a stream with nothing to replay and no reset: the
    /// `retry:` block, then the cursor, a block with only `id:` (no data,
    /// so nothing is dispatched; a browser keeps it as its last event id).
    /// Checks both; returns (retry in ms, the cursor).
    pub async fn cursor(&mut self) -> (u64, String) {
        assert_eq!(self.status(), 200);
        let first = self.next_block(super::WAIT).await.expect("retry block");
        let retry = first.retry.expect("a stream opens with retry:");
        assert_eq!(
            first,
            Block {
                retry: Some(retry),
                ..Block::default()
            },
            "the retry block has nothing else"
        );
        let b = self.next_block(super::WAIT).await.expect("cursor block");
        let cursor = b.id.clone().expect("a cursor after retry:");
        assert_eq!(
            b,
            Block {
                id: Some(cursor.clone()),
                ..Block::default()
            },
            "the cursor block has only id:"
        );
        (retry, cursor)
    }

    /// The next dispatched event (a block with data); `None` at the end.
    pub async fn next_event(&mut self) -> Option<Block> {
        loop {
            let b = self.next_block(super::WAIT).await?;
            if b.data.is_some() {
                return Some(b);
            }
        }
    }

    /// `n` events, in order.
    pub async fn events(&mut self, n: usize) -> Vec<Block> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_event().await {
                Some(e) => out.push(e),
                None => panic!("stream ended after {} of {n} events: {out:?}", out.len()),
            }
        }
        out
    }

    /// Reads until the end of the stream; the blocks seen on the way.
    pub async fn until_end(&mut self, within: Duration) -> Vec<Block> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_block(left.max(Duration::from_millis(1))).await {
                Some(b) => out.push(b),
                None => return out,
            }
        }
    }

    /// Stops reading without closing (a slow client).
    pub fn into_inner(self) -> TcpStream {
        self.io
    }
}
