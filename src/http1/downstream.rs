//! The client connection as pingora's general path sees it. sidecast owns
//! the socket and reads every head itself; pingora gets this wrapper, which
//! gives back the bytes sidecast already read, and on the way out puts the
//! app's own `Date` back into the response head (pingora writes its clock
//! over it, and no hook of its runs after that) and sends the head
//! together with the first body bytes in one write.
//!
//! It also lets pingora read exactly one request and no byte past it (a
//! [`Gate`]). While it waits for the app, pingora probes the client's
//! socket; a byte that arrives then (the next pipelined request, or the
//! first WebSocket frame of a client that read the `101` before pingora
//! switched to relaying) fails the request. Past its request, reads wait:
//! what follows stays on the socket for sidecast's next head. (An upgrade
//! that pingora serves is given the connection open: what follows its head
//! is the upgraded connection's.)

use std::cell::RefCell;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

tokio::task_local! {
    /// The app's `Date` for the response being proxied, set by the
    /// response hook and taken when the head is written. A task-local,
    /// because pingora runs the hook and the write on the task that polls
    /// the request, and gives neither a way to reach the other.
    static APP_DATE: RefCell<Option<Bytes>>;
}

/// Runs `fut` (one request through pingora) with a slot for its app's
/// `Date`.
pub fn scope<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    APP_DATE.scope(RefCell::new(None), fut)
}

/// Keeps the app's `Date` (or its absence) for the head about to be sent.
pub fn keep_app_date(value: Option<&[u8]>) {
    let _ = APP_DATE.try_with(|d| *d.borrow_mut() = value.map(Bytes::copy_from_slice));
}

/// How much pingora may read past the bytes given back.
#[derive(Debug)]
pub enum Gate {
    /// The rest of a `Content-Length` body.
    Body(u64),
    /// The rest of a chunked body, found by scanning it.
    Chunked(crate::http1::chunked::ChunkScan),
    /// The request is whole: reads wait.
    Closed,
    /// Everything (an upgraded connection, or a request whose end is not
    /// known).
    Open,
}

/// A client connection handed to pingora.
#[derive(Debug)]
pub struct Downstream {
    tcp: TcpStream,
    digest: Arc<SocketDigest>,
    /// Bytes sidecast read that belong to pingora's request.
    rewound: Bytes,
    /// A response head, rewritten and not sent yet.
    held: Vec<u8>,
    /// The next bytes pingora writes start a response head.
    expect_head: bool,
    gate: Gate,
    /// Bytes read past a chunked body's end: the next request's.
    leftover: Vec<u8>,
}

impl Downstream {
    pub fn new(tcp: TcpStream, peer: SocketAddr) -> Downstream {
        let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
        // Known from the accept: no getpeername when pingora asks.
        let _ = digest.peer_addr.set(Some(PSocketAddr::Inet(peer)));
        Downstream {
            tcp,
            digest: Arc::new(digest),
            rewound: Bytes::new(),
            held: Vec::new(),
            expect_head: true,
            gate: Gate::Open,
            leftover: Vec::new(),
        }
    }

    /// Hands `bytes` (a request sidecast read) back for pingora to read,
    /// with what it may read after them, and readies the write side for its
    /// response.
    pub fn rewind(&mut self, bytes: &[u8], gate: Gate) {
        self.rewound = Bytes::copy_from_slice(bytes);
        self.expect_head = true;
        self.gate = gate;
    }

    /// Takes the connection back from pingora: reads go to the socket
    /// again. Returns the bytes read past the last request's body, for
    /// sidecast's next head.
    pub fn release(&mut self) -> Vec<u8> {
        self.gate = Gate::Open;
        std::mem::take(&mut self.leftover)
    }

    /// Sends the held head, if any.
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

/// The head with its `Date` value replaced by `date`.
fn with_date(head: &[u8], date: &[u8]) -> Option<Vec<u8>> {
    let at = head
        .windows(8)
        .position(|w| w.eq_ignore_ascii_case(b"\r\ndate: "))?
        + 8;
    let end = at + head[at..].windows(2).position(|w| w == b"\r\n")?;
    let mut out = Vec::with_capacity(head.len() + date.len());
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(date);
    out.extend_from_slice(&head[end..]);
    Some(out)
}

/// Whether `buf` starts a final (not interim) response head.
fn final_head(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.")
        && buf
            .get(9)
            .is_some_and(|&c| c != b'1' || buf.get(10..12) == Some(b"01"))
}

impl AsyncRead for Downstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = &mut *self;
        if !me.rewound.is_empty() {
            let n = out.remaining().min(me.rewound.len());
            let piece = me.rewound.split_to(n);
            out.put_slice(&piece);
            return Poll::Ready(Ok(()));
        }
        match &mut me.gate {
            Gate::Open => Pin::new(&mut me.tcp).poll_read(cx, out),
            // No waker is kept: pingora waits on the app meanwhile, and
            // reads again after the request moves on.
            Gate::Closed => Poll::Pending,
            Gate::Body(left) => {
                // Read no further than the body's end: through a small
                // buffer of its own, copied on (only uploads come here).
                let mut tmp = [0u8; 8192];
                let want = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(out.remaining())
                    .min(tmp.len());
                let mut part = ReadBuf::new(&mut tmp[..want]);
                ready!(Pin::new(&mut me.tcp).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                out.put_slice(part.filled());
                *left -= n as u64;
                if *left == 0 {
                    me.gate = Gate::Closed;
                }
                Poll::Ready(Ok(()))
            }
            Gate::Chunked(scan) => {
                let before = out.filled().len();
                ready!(Pin::new(&mut me.tcp).poll_read(cx, out))?;
                let got = &out.filled()[before..];
                let belongs = scan.feed(got).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
                if scan.done() {
                    me.leftover.extend_from_slice(&got[belongs..]);
                    out.set_filled(before + belongs);
                    me.gate = Gate::Closed;
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = &mut *self;
        if me.expect_head && final_head(buf) {
            me.expect_head = false;
            // pingora writes a head whole, in one buffer: it is held, so
            // that it leaves with the first body bytes.
            let date = APP_DATE.try_with(|d| d.borrow_mut().take()).ok().flatten();
            me.held = match date.and_then(|d| with_date(buf, &d)) {
                Some(h) => h,
                None => buf.to_vec(),
            };
            return Poll::Ready(Ok(buf.len()));
        }
        if me.held.is_empty() {
            return Pin::new(&mut me.tcp).poll_write(cx, buf);
        }
        // The held head and these bytes in one write.
        loop {
            let slices = [IoSlice::new(&me.held), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut me.tcp).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            if n <= me.held.len() {
                me.held.drain(..n);
                if me.held.is_empty() {
                    return Pin::new(&mut me.tcp).poll_write(cx, buf);
                }
            } else {
                let from_buf = n - me.held.len();
                me.held.clear();
                return Poll::Ready(Ok(from_buf));
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_held(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_held(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Downstream {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for Downstream {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for Downstream {}

impl GetTimingDigest for Downstream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Downstream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Downstream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
}

impl Peek for Downstream {}

impl AsRawFd for Downstream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_date_goes_back_in() {
        let head =
            b"HTTP/1.1 200 OK\r\nDate: Fri, 04 Dec 2026 18:00:00 GMT\r\nContent-Length: 2\r\n\r\n";
        let out = with_date(head, b"Mon, 01 Jan 2024 00:00:00 GMT").unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 2\r\n\r\n"
        );
        assert!(with_date(b"HTTP/1.1 200 OK\r\n\r\n", b"x").is_none());
        assert!(final_head(b"HTTP/1.1 200 OK\r\n"));
        assert!(final_head(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(!final_head(b"HTTP/1.1 100 Continue\r\n"));
        assert!(!final_head(b"hello"));
    }
}
