//! Small complete responses that sidecast writes itself on the public
//! listener (errors, preflights, refusals), each marked with a
//! `Sidecast-Error` or plain `Server` header so that it cannot be taken for
//! the app's own.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A response made by sidecast.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub content_type: Option<&'static str>,
}

pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            content_type: None,
        }
    }

    /// A JSON error: `{"error": code, "message": message}`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        let body = serde_json::json!({ "error": code, "message": message.into() });
        Reply::json(status, &body)
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            content_type: Some("application/json"),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes of the response; `head_only` for `HEAD`.
    pub fn encode(&self, minor: u8, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        out.extend_from_slice(
            format!("HTTP/1.{minor} {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        if let Some(ct) = self.content_type {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if self.status != 204 && self.status >= 200 {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(if keep_alive {
            if minor == 0 {
                &b"Connection: keep-alive\r\n\r\n"[..]
            } else {
                &b"\r\n"[..]
            }
        } else {
            &b"Connection: close\r\n\r\n"[..]
        });
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }

    pub async fn send<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        minor: u8,
        keep_alive: bool,
        head_only: bool,
    ) -> std::io::Result<()> {
        io.write_all(&self.encode(minor, keep_alive, head_only))
            .await?;
        io.flush().await
    }
}
