//! Idle upstream connections of the lean path, kept per worker thread: a
//! request takes one from the thread it runs on, with no lock, and gives it
//! back there when its response has ended cleanly.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// An idle connection older than this is closed instead of reused: apps
/// close idle keep-alive connections after a few seconds (Node.js after 5),
/// and a request written just as the app closes is answered by nobody.
pub const MAX_IDLE: Duration = Duration::from_secs(4);

/// Idle connections kept per thread, across upstreams.
const MAX_PER_THREAD: usize = 256;

struct Idle {
    addr: SocketAddr,
    conn: TcpStream,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
}

/// The most recently used idle connection to `addr`, if any is young
/// enough; older ones are closed on the way.
pub fn checkout(addr: SocketAddr) -> Option<TcpStream> {
    IDLE.with(|p| {
        let mut p = p.borrow_mut();
        let now = Instant::now();
        p.retain(|i| now.duration_since(i.since) < MAX_IDLE);
        let at = p.iter().rposition(|i| i.addr == addr)?;
        Some(p.remove(at).conn)
    })
}

/// Keeps a connection whose last response ended cleanly.
pub fn checkin(addr: SocketAddr, conn: TcpStream) {
    IDLE.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= MAX_PER_THREAD {
            p.remove(0);
        }
        p.push(Idle {
            addr,
            conn,
            since: Instant::now(),
        });
    });
}

/// A new connection, within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let conn = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    conn.set_nodelay(true)?;
    Ok(conn)
}
