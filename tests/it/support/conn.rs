//! A raw, kept-alive HTTP/1.x connection for tests that look at the wire:
//! several requests on one socket, interim responses, partial heads, and
//! when the peer closes. Every read is bounded by a deadline.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One response head as it came on the wire.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub line: String,
    pub headers: Vec<(String, String)>,
    /// The raw head text, blank line included.
    pub raw: String,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        v.sort();
        v
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection with its read buffer.
pub struct Conn {
    pub io: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub async fn connect(addr: &str) -> Conn {
        let io = TcpStream::connect(addr).await.expect("connect");
        io.set_nodelay(true).unwrap();
        Conn {
            io,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write");
    }

    /// Sends `GET path` (HTTP/1.1, kept alive) with extra header lines.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.send(req.as_bytes()).await;
    }

    /// Reads more bytes into the buffer; false at EOF. Panics at `deadline`.
    async fn fill(&mut self, deadline: Instant, what: &str) -> bool {
        if self.eof {
            return false;
        }
        let mut tmp = [0u8; 65536];
        match tokio::time::timeout_at(deadline, self.io.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => panic!(
                "timed out waiting for {what}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads one response head (an interim `1xx` one too).
    pub async fn head(&mut self, within: Duration) -> Head {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..p + 4).collect();
                return parse_head(&String::from_utf8_lossy(&raw));
            }
            assert!(
                self.fill(deadline, "a response head").await,
                "closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads `n` body bytes.
    async fn exact(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(deadline, "body bytes").await, "closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self, deadline: Instant) -> String {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..p + 2).collect();
                return String::from_utf8_lossy(&l[..p]).into_owned();
            }
            assert!(
                self.fill(deadline, "a chunk line").await,
                "closed mid-chunk"
            );
        }
    }

    /// Reads one chunk of a chunked body: `None` for the last one.
    pub async fn chunk(&mut self, within: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + within;
        let size_line = self.line(deadline).await;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            // trailers, then the blank line
            while !self.line(deadline).await.is_empty() {}
            return None;
        }
        let data = self.exact(size, deadline).await;
        let crlf = self.exact(2, deadline).await;
        assert_eq!(crlf, b"\r\n", "chunk not followed by CRLF");
        Some(data)
    }

    /// Reads a whole response to a request of `method`, following its
    /// framing (no body for HEAD, 1xx, 204, 304; else Content-Length,
    /// chunked, or until close). Interim `1xx` heads are skipped unless
    /// `keep_interim`.
    pub async fn response(&mut self, method: &str, within: Duration) -> Reply {
        let deadline = Instant::now() + within;
        let head = loop {
            let h = self.head(deadline - Instant::now()).await;
            if (100..200).contains(&h.status) && h.status != 101 {
                continue;
            }
            break h;
        };
        let body = self.body(&head, method, deadline).await;
        Reply { head, body }
    }

    /// Reads the body that follows `head`.
    pub async fn body(&mut self, head: &Head, method: &str, deadline: Instant) -> Vec<u8> {
        if method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
            return Vec::new();
        }
        if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            let mut out = Vec::new();
            while let Some(c) = self.chunk(deadline - Instant::now()).await {
                out.extend_from_slice(&c);
            }
            return out;
        }
        if let Some(n) = head.header("content-length") {
            let n: usize = n.trim().parse().expect("content-length");
            return self.exact(n, deadline).await;
        }
        self.until_closed(deadline - Instant::now()).await
    }

    /// Reads until the peer closes; panics if it does not within `within`.
    pub async fn until_closed(&mut self, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        while self.fill(deadline, "the connection to close").await {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer closes within `within` (bytes that arrive on the
    /// way are kept).
    pub async fn closes_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.eof {
                return true;
            }
            let mut tmp = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.io.read(&mut tmp)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
                Err(_) => return false,
            }
        }
    }

    /// Bytes read but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

pub fn parse_head(raw: &str) -> Head {
    let mut lines = raw.split("\r\n");
    let line = lines.next().unwrap_or_default().to_owned();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Head {
        status,
        line,
        headers,
        raw: raw.to_owned(),
    }
}

/// A free loopback port with nothing listening on it.
pub fn closed_port() -> String {
    format!("127.0.0.1:{}", super::free_port())
}
