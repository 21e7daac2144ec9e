//! The public listener: sidecast's own accept loop. Each request head is
//! read here; events routes go to the lean SSE writer, which owns the bare
//! connection, and everything else is handed to pingora's proxy logic,
//! which gives the kept-alive connection back for its next request.

pub mod head;
pub mod respond;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora_core::protocols::http::ServerSession;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::events::serve::{serve as serve_events, After};
use crate::proxy::Proxy;
use crate::routes::Route;
use crate::state::Shared;
use head::{read_head, HeadError, Limits};
use respond::Reply;

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

/// Accepts until told to stop. Running out of file descriptors pauses the
/// loop briefly instead of spinning, logs at most once a second, and counts.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    app: Arc<ProxyApp>,
    limits: Limits,
) {
    let mut stop = shared.lifecycle.stop_accepting.subscribe();
    let mut last_log = std::time::Instant::now() - Duration::from_secs(2);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = crate::state::until_true(&mut stop) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                let app = app.clone();
                tokio::spawn(connection(tcp, peer, shared, app, limits));
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
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    app: Arc<ProxyApp>,
    limits: Limits,
) {
    let mut buf = Vec::new();
    // The fresh TCP connection: the common case for EventSource.
    let next = match serve_one(tcp, &mut buf, true, peer, &shared, &app, None, limits).await {
        Some(n) => n,
        None => return,
    };
    let (mut stream, mut settings) = next;
    loop {
        match serve_one(
            stream, &mut buf, false, peer, &shared, &app, settings, limits,
        )
        .await
        {
            Some((s, p)) => {
                stream = s;
                settings = p;
            }
            None => return,
        }
    }
}

/// A connection that pingora gave back, with its persistent settings.
type Reused = (Box<L4Stream>, Option<HttpPersistentSettings>);

/// The IO types a connection can be in: bare TCP, or the pingora stream a
/// proxied request came back in.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_l4(self, bytes: &[u8]) -> Box<L4Stream>;
}

impl Conn for TcpStream {
    fn into_l4(self, bytes: &[u8]) -> Box<L4Stream> {
        use std::os::fd::AsRawFd;
        let fd = self.as_raw_fd();
        let mut s = L4Stream::from(self);
        s.set_socket_digest(SocketDigest::from_raw_fd(fd));
        s.rewind(bytes);
        Box::new(s)
    }
}

impl Conn for Box<L4Stream> {
    fn into_l4(mut self, bytes: &[u8]) -> Box<L4Stream> {
        self.rewind(bytes);
        self
    }
}

/// Reads the next head; a kept-alive connection that is idle when the
/// drain stops accepting is closed at once (it would otherwise wait for
/// `keepalive`), while one whose request has begun to arrive is read on.
async fn next_head<C: Conn>(
    io: &mut C,
    buf: &mut Vec<u8>,
    limits: Limits,
    first: bool,
    shared: &Shared,
) -> Result<head::Head, HeadError> {
    if first || !buf.is_empty() {
        return read_head(io, buf, limits, first).await;
    }
    let mut stop = shared.lifecycle.stop_accepting.subscribe();
    let read = tokio::select! {
        r = read_head(&mut *io, &mut *buf, limits, false) => Some(r),
        _ = crate::state::until_true(&mut stop) => None,
    };
    match read {
        Some(r) => r,
        None if buf.is_empty() => Err(HeadError::Idle),
        None => read_head(io, buf, limits, false).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_one<C: Conn>(
    mut io: C,
    buf: &mut Vec<u8>,
    first: bool,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    app: &Arc<ProxyApp>,
    settings: Option<HttpPersistentSettings>,
    limits: Limits,
) -> Option<Reused> {
    let head = match next_head(&mut io, buf, limits, first, shared).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(status) = e.status() {
                let code = match e {
                    HeadError::Timeout => "head_timeout",
                    HeadError::TooLarge(_) => "head_too_large",
                    _ => "malformed",
                };
                let r = Reply::error(status, code, e.to_string()).header("Sidecast-Error", code);
                let _ = r.send(&mut io, 1, false, false).await;
                tracing::debug!(peer = %peer, error = %e, "refused a request head");
            }
            return None;
        }
    };
    let rt = shared.runtime();
    let route = match rt.routes.route(&head.method, head.path()) {
        Route::Events { index, params } => Some((
            index,
            params
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>(),
        )),
        Route::Proxy { .. } => None,
    };
    drop(rt);
    if let Some((index, params)) = route {
        // What follows the head stays for the next request (a body on an
        // events route is refused, and the connection closed, by serve).
        buf.drain(..head.len);
        if buf.is_empty() {
            *buf = Vec::new();
        }
        return match serve_events(&mut io, head, index, params, shared).await {
            After::KeepAlive => Some((io.into_l4(&std::mem::take(buf)), settings)),
            After::Close => None,
        };
    }
    let stream = io.into_l4(&std::mem::take(buf));
    let mut session = ServerSession::new_http1(stream);
    if let Some(s) = settings {
        s.apply_to_session(&mut session);
    }
    let watch = shared.lifecycle.shutdown_tx.subscribe();
    shared.lifecycle.in_flight.fetch_add(1, Ordering::Relaxed);
    let reused = Box::pin(app.process_new_http(session, &watch)).await;
    shared.lifecycle.in_flight.fetch_sub(1, Ordering::Relaxed);
    let reused = reused?;
    let (stream, settings) = reused.consume();
    let l4 = stream.into_any().downcast::<L4Stream>().ok()?;
    Some((l4, settings))
}
