//! Idle upstream connections of the lean path, kept per worker thread: a
//! request takes one from the thread it runs on, with no lock, and gives it
//! back there when its response has ended cleanly.

use std::cell::RefCell;
use std::collections::VecDeque;
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
    /// Oldest first: check-ins push at the back, so expiry looks at the
    /// front only.
    static IDLE: RefCell<VecDeque<Idle>> = const { RefCell::new(VecDeque::new()) };
    /// Read buffers of finished requests, for the next ones on this thread.
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept per thread for reuse.
const MAX_BUFFERS: usize = 64;

/// The most recently used idle connection to `addr`, if any is young
/// enough; expired ones are closed on the way.
pub fn checkout(addr: SocketAddr) -> Option<TcpStream> {
    IDLE.with(|p| {
        let mut p = p.borrow_mut();
        let now = Instant::now();
        while p
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= MAX_IDLE)
        {
            p.pop_front();
        }
        let at = p.iter().rposition(|i| i.addr == addr)?;
        p.remove(at).map(|i| i.conn)
    })
}

/// Keeps a connection whose last response ended cleanly.
pub fn checkin(addr: SocketAddr, conn: TcpStream) {
    IDLE.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= MAX_PER_THREAD {
            p.pop_front();
        }
        p.push_back(Idle {
            addr,
            conn,
            since: Instant::now(),
        });
    });
}

/// An empty buffer with room for `size` bytes, reused when one is free.
pub fn buffer(size: usize) -> Vec<u8> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(size))
}

/// Gives a buffer back for reuse (a grown one is dropped).
pub fn give_back(mut buf: Vec<u8>, size: usize) {
    if buf.capacity() > 4 * size {
        return;
    }
    buf.clear();
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < MAX_BUFFERS {
            b.push(buf);
        }
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
