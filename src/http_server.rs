//! Serving a hyper service on a TCP or Unix listener (the publish and admin
//! listeners), until told to stop.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// A listener of either kind.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

fn serve_conn<IO, F, Fut>(io: IO, handler: F)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .serve_connection(TokioIo::new(io), service_fn(handler));
        let _ = conn.await;
    });
}

/// Accepts connections until `stop` turns true.
pub async fn serve<F, Fut>(listener: Listener, handler: F, mut stop: watch::Receiver<bool>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    loop {
        match &listener {
            Listener::Tcp(l) => tokio::select! {
                _ = crate::lifecycle::until_true(&mut stop) => return,
                a = l.accept() => match a {
                    Ok((s, _)) => serve_conn(s, handler.clone()),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                },
            },
            Listener::Unix(l) => tokio::select! {
                _ = crate::lifecycle::until_true(&mut stop) => return,
                a = l.accept() => match a {
                    Ok((s, _)) => serve_conn(s, handler.clone()),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                },
            },
        }
    }
}
