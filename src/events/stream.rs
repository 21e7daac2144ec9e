//! The lean SSE writer: it owns the bare connection once the response head
//! is written, and waits on four things only: its queue of shared frames,
//! the heartbeat, the client going away, and the token's expiry. Nothing
//! per-stream is kept but this future and its queue handle.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};

use super::frame::{control, notice, Event};
use super::queue::{Close, StreamHandle};

/// Frames written per wake-up at most.
const BATCH: usize = 64;

/// Settings a stream keeps from the configuration it opened with.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub heartbeat: Duration,
    pub retry: Duration,
    pub chunked: bool,
    /// When the token expires (plus leeway).
    pub expires: Option<Instant>,
}

/// How a stream ended, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Client,
    Expired,
    Closed(Close),
}

impl Ended {
    pub fn label(&self) -> &'static str {
        match self {
            Ended::Client => "client",
            Ended::Expired => "expired",
            Ended::Closed(c) => c.label(),
        }
    }
}

/// A `retry:` between `retry` and 3 × `retry`, so that clients told to
/// come back do not all come back at once.
pub fn jittered(retry: Duration) -> u64 {
    let ms = retry.as_millis() as u64;
    fastrand::u64(ms..=ms.saturating_mul(3).max(ms))
}

/// Writes all of `frames`, vectored, however the kernel splits it.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[Bytes],
) -> std::io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < frames.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&frames[idx][off..])
            .chain(frames[idx + 1..].iter().map(|b| &b[..]))
            .take(64)
            .map(IoSlice::new)
            .collect();
        let mut n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while idx < frames.len() && n > 0 {
            let left = frames[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    io.flush().await
}

/// Writes, unless the stream is closed as slow meanwhile (a client that
/// stopped reading must not hold the task on a full socket).
async fn write_or_slow<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[Bytes],
    handle: &StreamHandle,
) -> Result<(), Ended> {
    let write = write_frames(io, frames);
    tokio::pin!(write);
    tokio::select! {
        biased;
        r = &mut write => r.map_err(|_| Ended::Client),
        c = handle.closed() => {
            if c == Close::Slow {
                Err(Ended::Closed(Close::Slow))
            } else {
                write.await.map_err(|_| Ended::Client)
            }
        }
    }
}

/// Runs a stream until it ends; `first` (head, `retry:`, replay) is written
/// before anything live.
pub async fn run<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    handle: &StreamHandle,
    first: Vec<Bytes>,
    s: Settings,
) -> Ended {
    if let Err(e) = write_or_slow(io, &first, handle).await {
        return e;
    }
    drop(first);
    let mut next_beat = Instant::now() + s.heartbeat;
    let mut probe = [0u8; 8];
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let expires = s.expires.unwrap_or(far);
    loop {
        let mut batch: Vec<Arc<Event>> = Vec::new();
        let ended = tokio::select! {
            biased;
            r = handle.next(&mut batch, BATCH) => match r {
                Ok(()) => {
                    let frames: Vec<Bytes> = batch.iter().map(|e| e.wire(s.chunked)).collect();
                    drop(batch);
                    if let Err(e) = write_or_slow(io, &frames, handle).await {
                        return e;
                    }
                    next_beat = Instant::now() + s.heartbeat;
                    continue;
                }
                Err(close) => Ended::Closed(close),
            },
            _ = sleep_until(next_beat) => {
                if write_or_slow(io, &[control(b":\n\n", s.chunked)], handle).await.is_err() {
                    return Ended::Client;
                }
                next_beat = Instant::now() + s.heartbeat;
                continue;
            }
            r = io.read(&mut probe) => match r {
                Ok(0) | Err(_) => return Ended::Client,
                Ok(_) => continue,
            },
            _ = sleep_until(expires), if s.expires.is_some() => Ended::Expired,
        };
        finish(io, &ended, s).await;
        return ended;
    }
}

/// The last words of a stream that sidecast ends, then the end of the body.
async fn finish<W: AsyncWrite + Unpin>(io: &mut W, ended: &Ended, s: Settings) {
    let retry = jittered(s.retry);
    let last: Option<bytes::BytesMut> = match ended {
        Ended::Client | Ended::Closed(Close::Slow) => None,
        Ended::Expired => {
            let mut f = notice(
                "sidecast.expired",
                &serde_json::json!({"reason": "token expired"}),
                None,
            );
            f.extend_from_slice(format!("retry: {retry}\n\n").as_bytes());
            Some(f)
        }
        Ended::Closed(Close::Disconnect { reason, reconnect }) => Some(notice(
            "sidecast.disconnect",
            &serde_json::json!({"reason": reason, "reconnect": reconnect}),
            None,
        )),
        Ended::Closed(Close::Revoked) | Ended::Closed(Close::Shutdown) => {
            Some(format!("retry: {retry}\n\n").as_bytes().into())
        }
    };
    if let Some(text) = last {
        let mut frames = vec![control(&text, s.chunked)];
        if s.chunked {
            frames.push(Bytes::from_static(b"0\r\n\r\n"));
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), write_frames(io, &frames)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), io.shutdown()).await;
    }
}
