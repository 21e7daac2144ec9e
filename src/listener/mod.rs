//! The public listener: sidecast's own accept loop. Each request head is
//! read here; events routes go to the lean SSE writer, which owns the bare
//! connection, and everything else is handed to pingora's proxy logic,
//! which gives the kept-alive connection back for its next request.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod cores;

use self::cores::Cores;
use crate::http1::downstream::{self, Downstream, Gate};
use crate::http1::head::{read_head, Head, HeadError, HeadLimits};
use crate::http1::respond::Reply;
use crate::proxy::deadline::HeaderDeadline;
use crate::proxy::failure;
use crate::proxy::{Proxy, Routed};
use crate::routes::Route;
use crate::state::Shared;
use crate::subscribe::recheck::Rechecks;
use crate::subscribe::serve::{serve as serve_events, After, Matched};

/// The proxy logic shared by every connection.
pub type ProxyApp = HttpProxy<Proxy>;

pub fn proxy_app(shared: Arc<Shared>) -> Arc<ProxyApp> {
    let conf = ServerConf {
        threads: 1,
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let conf = Arc::new(conf);
    Arc::new(pingora::proxy::http_proxy(&conf, Proxy { shared }))
}

/// What every connection of the public listener needs.
pub struct Public {
    pub shared: Arc<Shared>,
    /// Pingora's proxy logic, for requests the lean relay does not take.
    pub app: Arc<ProxyApp>,
    /// Where forward auth's streams are registered for rechecks.
    pub rechecks: Arc<Rechecks>,
    pub limits: HeadLimits,
}

/// Accepts until told to stop. Running out of file descriptors pauses the
/// loop briefly instead of spinning, logs at most once a second, and counts.
pub async fn accept_loop(listener: TcpListener, public: Arc<Public>, cores: Arc<Cores>) {
    let shared = &public.shared;
    let mut stop = shared.lifecycle.stop_accepting.subscribe();
    let mut last_log = std::time::Instant::now() - Duration::from_secs(2);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = crate::lifecycle::until_true(&mut stop) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let public = public.clone();
                cores.hand(tcp, peer, move |tcp, peer| connection(tcp, peer, public));
            }
            Err(e) => {
                shared.metrics.accept_errors.inc();
                if last_log.elapsed() >= Duration::from_secs(1) {
                    tracing::warn!(error = %e, "accept failed; pausing the listener briefly");
                    last_log = std::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection's life: heads in a loop until it ends.
async fn connection(tcp: TcpStream, peer: SocketAddr, public: Arc<Public>) {
    let mut buf = Vec::new();
    // A fresh TCP connection stays one until a request goes to pingora,
    // which gives it back as its own stream type.
    let mut kept = Kept::Tcp(tcp);
    let mut settings = None;
    let mut first = true;
    loop {
        let next = match kept {
            Kept::Tcp(io) => serve_one(io, &mut buf, first, peer, &public, settings).await,
            Kept::L4(io) => serve_one(io, &mut buf, first, peer, &public, settings).await,
        };
        first = false;
        match next {
            Some((k, s)) => {
                kept = k;
                settings = s;
            }
            None => return,
        }
    }
}

/// A connection between two requests.
enum Kept {
    Tcp(TcpStream),
    L4(Box<Downstream>),
}

/// A connection kept for its next request, with pingora's persistent
/// settings when pingora served the last one.
type Reused = (Kept, Option<HttpPersistentSettings>);

/// The IO types a connection can be in: bare TCP, or the pingora stream a
/// proxied request came back in.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The connection for pingora, with `bytes` to read first and `gate`
    /// for what it may read after them.
    fn into_l4(self, bytes: &[u8], gate: Gate, peer: SocketAddr) -> Box<Downstream>;
    fn kept(self) -> Kept;
}

impl Conn for TcpStream {
    fn into_l4(self, bytes: &[u8], gate: Gate, peer: SocketAddr) -> Box<Downstream> {
        let mut s = Downstream::new(self, peer);
        s.rewind(bytes, gate);
        Box::new(s)
    }

    fn kept(self) -> Kept {
        Kept::Tcp(self)
    }
}

impl Conn for Box<Downstream> {
    fn into_l4(mut self, bytes: &[u8], gate: Gate, _peer: SocketAddr) -> Box<Downstream> {
        self.rewind(bytes, gate);
        self
    }

    fn kept(self) -> Kept {
        Kept::L4(self)
    }
}

/// How many bytes of `buf` (which starts with `head`) belong to this
/// request (the head and as much of its body as is there), and how much
/// more pingora may read from the socket. Pingora is given only these, so
/// that a pipelined request behind it stays for sidecast's next round.
fn own_bytes(head: &Head, buf: &[u8]) -> (usize, Gate) {
    let body = &buf[head.len..];
    let upgrade = head.header("upgrade").is_some();
    if head.header("transfer-encoding").is_some() {
        let mut scan = crate::http1::chunked::ChunkScan::default();
        return match scan.feed(body) {
            Ok(n) if scan.done() => (head.len + n, Gate::Closed),
            Ok(_) if !upgrade => (buf.len(), Gate::Chunked(scan)),
            _ => (buf.len(), Gate::Open),
        };
    }
    let length = head
        .header_str("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let in_buf = body
        .len()
        .min(usize::try_from(length).unwrap_or(usize::MAX));
    let left = length - in_buf as u64;
    let gate = match (upgrade, left) {
        // What follows an upgrade's head is the upgraded connection's.
        (true, 0) => Gate::Open,
        (true, _) => Gate::Open,
        (false, 0) => Gate::Closed,
        (false, n) => Gate::Body(n),
    };
    if upgrade {
        return (buf.len(), gate);
    }
    (head.len + in_buf, gate)
}

/// Reads the next head; a kept-alive connection that is idle when the
/// drain stops accepting is closed at once (it would otherwise wait for
/// `keepalive`), while one whose request has begun to arrive is read on.
async fn next_head<C: Conn>(
    io: &mut C,
    buf: &mut Vec<u8>,
    limits: HeadLimits,
    first: bool,
    shared: &Shared,
) -> Result<Head, HeadError> {
    if first || !buf.is_empty() {
        return read_head(io, buf, limits, first).await;
    }
    let mut stop = shared.lifecycle.stop_accepting.subscribe();
    let read = tokio::select! {
        r = read_head(&mut *io, &mut *buf, limits, false) => Some(r),
        _ = crate::lifecycle::until_true(&mut stop) => None,
    };
    match read {
        Some(r) => r,
        None if buf.is_empty() => Err(HeadError::Idle),
        None => read_head(io, buf, limits, false).await,
    }
}

async fn serve_one<C: Conn>(
    mut io: C,
    buf: &mut Vec<u8>,
    first: bool,
    peer: SocketAddr,
    public: &Public,
    settings: Option<HttpPersistentSettings>,
) -> Option<Reused> {
    let Public {
        shared,
        app,
        rechecks,
        limits,
    } = public;
    let head = match next_head(&mut io, buf, *limits, first, shared).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(status) = e.status() {
                let code = match e {
                    HeadError::Timeout => "head_timeout",
                    HeadError::TooLarge(_) => "head_too_large",
                    HeadError::TooManyHeaders(_) => "too_many_headers",
                    HeadError::TargetTooLong(_) => "uri_too_long",
                    _ => "malformed",
                };
                let r = Reply::error(status, code, e.to_string()).header("Sidecast-Error", code);
                let sent = r.send(&mut io, 1, false, false).await.is_ok();
                tracing::debug!(peer = %peer, error = %e, "refused a request head");
                if sent {
                    linger(&mut io).await;
                }
            }
            return None;
        }
    };
    if head.method == "CONNECT" {
        // A tunnel is not pass-through; refused here so that no answer of
        // the proxy library's own reaches the client.
        let r = Reply::error(405, "method", "CONNECT is not supported")
            .header("Sidecast-Error", "method-not-allowed");
        if r.send(&mut io, head.minor, false, false).await.is_ok() {
            linger(&mut io).await;
        }
        return None;
    }
    // The runtime is loaded once and the head routed once: the request is
    // served with that route and that configuration to its end, even if a
    // reload swaps them meanwhile. `index` is into the events routes for
    // an events request, else into the proxy routes.
    let rt = shared.runtime();
    let (events, index) = match rt.routes.route(&head.method, head.path()) {
        Route::Events { index, params } => (
            Some(
                params
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>(),
            ),
            index,
        ),
        Route::Proxy { index } => (None, index),
    };
    if let Some(params) = events {
        // What follows the head stays for the next request (a body on an
        // events route is refused, and the connection closed, by serve).
        buf.drain(..head.len);
        if buf.is_empty() {
            *buf = Vec::new();
        }
        let matched = Matched {
            route: index.map(|i| &rt.routes.events[i]),
            params,
        };
        let after = serve_events(&mut io, head, &rt, matched, shared, rechecks, peer).await;
        return then(io, after, settings).await;
    }
    let routed = Routed::new(rt, index);
    if crate::proxy::lean::tunnels(&head) {
        shared.lifecycle.in_flight.fetch_add(1, Ordering::Relaxed);
        crate::proxy::lean::tunnel(&mut io, buf, &head, peer, &routed, shared).await;
        shared.lifecycle.in_flight.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    // A GRIP route's plain requests take the lean relay whatever
    // `fast_path` says: only it can hand the connection to a hold.
    let fast_path = routed.runtime().config.upstream.fast_path || routed.grip();
    if fast_path && crate::proxy::lean::eligible(&head) {
        shared.lifecycle.in_flight.fetch_add(1, Ordering::Relaxed);
        let after = crate::proxy::lean::relay(&mut io, buf, &head, peer, &routed, shared).await;
        // A stream the app held with GRIP counts as a stream from here on,
        // no longer as a proxied request in flight.
        shared.lifecycle.in_flight.fetch_sub(1, Ordering::Relaxed);
        return then(io, after, settings).await;
    }
    // Only what a late-headers answer needs outlives the routing (a
    // WebSocket can be proxied for hours).
    let (own, gate) = own_bytes(&head, buf);
    let Head {
        method,
        target,
        minor,
        ..
    } = head;
    let rest = buf.split_off(own);
    let stream = io.into_l4(buf, gate, peer);
    *buf = rest;
    let fd = stream.as_raw_fd();
    let mut session = ServerSession::new_http1(stream);
    if let Some(s) = settings {
        s.apply_to_session(&mut session);
    }
    if minor == 0 {
        // An HTTP/1.0 client takes any response for the final one: no
        // interim `1xx` of the upstream's may reach it (RFC 9110 §15.2).
        session.set_ignore_info_resp(true);
    }
    let watch = shared.lifecycle.shutdown_tx.subscribe();
    let deadline = HeaderDeadline::new();
    let started = std::time::Instant::now();
    shared.lifecycle.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut proxied = Box::pin(downstream::scope(
        deadline.scope(routed.clone().scope(app.process_new_http(session, &watch))),
    ));
    let reused = tokio::select! {
        r = &mut proxied => Some(r),
        _ = deadline.expired() => None,
    };
    let Some(reused) = reused else {
        // No response headers in time: the request was read whole and
        // nothing of the response was written, so the client gets a 504 on
        // the same socket, through a second handle taken before pingora's
        // session (and its handle) is dropped.
        let socket = clone_socket(fd);
        drop(proxied);
        shared.lifecycle.in_flight.fetch_sub(1, Ordering::Relaxed);
        late_headers(
            socket,
            (&method, &target, minor),
            peer,
            &routed,
            started,
            shared,
        )
        .await;
        return None;
    };
    shared.lifecycle.in_flight.fetch_sub(1, Ordering::Relaxed);
    let reused = reused?;
    let (stream, settings) = reused.consume();
    let mut l4 = stream.into_any().downcast::<Downstream>().ok()?;
    let leftover = l4.release();
    if !leftover.is_empty() {
        buf.splice(0..0, leftover);
    }
    Some((Kept::L4(l4), settings))
}

/// What the connection does after a request that sidecast answered or
/// relayed itself: serve the next one, close, or carry a stream (an
/// events stream, or one the app held with GRIP) as a task of its own,
/// sized to the stream alone: this task, which has room for every kind of
/// request, ends here.
async fn then<C: Conn>(
    mut io: C,
    after: After,
    settings: Option<HttpPersistentSettings>,
) -> Option<Reused> {
    match after {
        After::KeepAlive => Some((io.kept(), settings)),
        After::Close => {
            linger(&mut io).await;
            None
        }
        After::Stream(opened) => {
            tokio::spawn(opened.run(io));
            None
        }
    }
}

/// Closes a connection after sidecast's own final answer without losing
/// that answer. Bytes the client sent that were never read (a refused
/// body, a pipelined request) would make the kernel reset the connection
/// on close, and a reset can discard the answer before the client reads
/// it: so the write side is shut first, and what arrives is read and
/// dropped (never parsed) until the client closes, for at most
/// `LINGER_TIME` and `LINGER_BYTES`.
async fn linger<C: AsyncRead + AsyncWrite + Unpin>(io: &mut C) {
    use tokio::io::AsyncReadExt;
    const LINGER_TIME: Duration = Duration::from_secs(2);
    const LINGER_BYTES: usize = 256 * 1024;
    if io.shutdown().await.is_err() {
        return;
    }
    let mut scratch = vec![0u8; 4096];
    let mut seen = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while seen < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    })
    .await;
}

/// A second handle on a connection's socket.
#[allow(unsafe_code)]
fn clone_socket(fd: RawFd) -> std::io::Result<std::net::TcpStream> {
    // SAFETY: `fd` belongs to the connection's stream, which the caller
    // still owns (inside the proxying future it has not dropped yet and that
    // no other task polls), so the descriptor is open for this call; the
    // borrow ends before the caller drops that stream.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(std::net::TcpStream::from(borrowed.try_clone_to_owned()?))
}

/// Answers `504 upstream-timeout` for a request whose response headers did
/// not come within `[upstream] timeout`, and closes the connection.
async fn late_headers(
    socket: std::io::Result<std::net::TcpStream>,
    (method, target, minor): (&str, &str, u8),
    peer: SocketAddr,
    routed: &Routed,
    started: std::time::Instant,
    shared: &Shared,
) {
    let failure = failure::TIMEOUT_504;
    let sent = match socket.and_then(|s| {
        s.set_nonblocking(true)?;
        TcpStream::from_std(s)
    }) {
        Ok(mut io) => {
            let reply = failure::reply(failure);
            let r = reply.send(&mut io, minor, false, method == "HEAD");
            let ok = tokio::time::timeout(Duration::from_secs(5), r)
                .await
                .is_ok_and(|r| r.is_ok());
            let _ = io.shutdown().await;
            ok
        }
        Err(_) => false,
    };
    crate::proxy::record(
        shared,
        routed.runtime(),
        crate::proxy::Access {
            method,
            target,
            status: if sent { 504 } else { 0 },
            route: routed.label(),
            started,
            peer: &peer.to_string(),
            error: "ResponseHeaderTimedout",
            sidecast_error: failure.code,
        },
    );
}
