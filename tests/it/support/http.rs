//! A raw HTTP/1.1 client over TCP or a Unix socket: one request, read to
//! the end (`Connection: close`), chunked bodies decoded.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits a raw response into status, headers and decoded body.
pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(&raw[end..])
    } else {
        raw[end..].to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

/// Decodes a chunked body (as much as is complete).
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..nl])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || b.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[(nl + 4 + size).min(b.len())..];
    }
    out
}

/// Sends one request on `io` and reads the whole response.
pub async fn exchange<IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    io.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), io.read_to_end(&mut raw))
        .await
        .expect("response within 20s")
        .expect("read response");
    parse_response(&raw)
}

/// One request to `addr` (`host:port`).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let io = tokio::net::TcpStream::connect(addr).await.expect("connect");
    exchange(io, method, path, headers, body).await
}

/// One request over a Unix socket.
pub async fn request_unix(
    path_to_socket: &std::path::Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let io = tokio::net::UnixStream::connect(path_to_socket)
        .await
        .expect("connect unix");
    exchange(io, method, path, headers, body).await
}

/// `GET path` on a connection of its own; `None` when `addr` does not
/// answer within a second (not listening yet, or gone): for polling a
/// listener that may not be there.
pub async fn try_get(addr: &str, path: &str) -> Option<Response> {
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut io = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        io.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        io.read_to_end(&mut raw).await.ok()?;
        Some(parse_response(&raw))
    })
    .await
    .ok()
    .flatten()
}

/// A GET with a Bearer token.
pub async fn get(addr: &str, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    request(addr, "GET", path, &h, b"").await
}
