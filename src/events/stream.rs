//! The lean SSE writer: it owns the bare connection once the response head
//! is written, and waits on four things only: its queue of shared frames,
//! the heartbeat, the client going away, and the token's expiry. Nothing
//! per-stream is kept but this future and its queue handle.

use std::io::IoSlice;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};

use super::frame::{control, notice, Event};
use super::queue::{Close, StreamHandle};

/// Frames written per wake-up at most.
const BATCH: usize = 64;

/// Settings a stream keeps from the configuration it opened with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What a quiet stream is sent, and when; `None`: nothing (a GRIP hold
    /// without `Grip-Keep-Alive`).
    pub beat: Option<Beat>,
    pub retry: Duration,
    pub chunked: bool,
    /// When the token expires (plus leeway).
    pub expires: Option<Instant>,
    /// A stream the app held with GRIP: it carries the app's format, so
    /// sidecast adds no SSE of its own when it ends it.
    pub held: bool,
}

/// A stream's keep-alive: the SSE heartbeat, or a GRIP `Grip-Keep-Alive`.
#[derive(Clone, Debug)]
pub struct Beat {
    pub every: Duration,
    /// Written as it is (already framed for the stream).
    pub frame: Bytes,
    /// Every `every`, however busy the stream (GRIP's `mode=interval`),
    /// instead of `every` after the last write.
    pub interval: bool,
}

impl Beat {
    /// The SSE heartbeat, a comment line: no allocation per stream.
    pub fn sse(every: Duration, chunked: bool) -> Beat {
        Beat {
            every,
            frame: Bytes::from_static(if chunked { b"3\r\n:\n\n\r\n" } else { b":\n\n" }),
            interval: false,
        }
    }
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

/// `at + wait`, or a year after `at` when that cannot be told (a wait the
/// clock cannot add is one that never comes in a stream's life).
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

/// Writes all of `frames`, vectored, however the kernel splits it.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[Bytes],
) -> std::io::Result<()> {
    write_slices(io, frames.len(), |i| &frames[i][..]).await
}

/// Writes the `n` slices `part(0..n)`, vectored, 64 at a time; a single
/// slice (one event, the usual case) is a plain write, nothing allocated.
async fn write_slices<'a, W: AsyncWrite + Unpin>(
    io: &mut W,
    n: usize,
    part: impl Fn(usize) -> &'a [u8],
) -> std::io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < n {
        let mut written = if idx + 1 == n {
            io.write(&part(idx)[off..]).await?
        } else {
            let slices: Vec<IoSlice<'_>> = std::iter::once(&part(idx)[off..])
                .chain((idx + 1..n).map(&part))
                .take(64)
                .map(IoSlice::new)
                .collect();
            io.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while idx < n && written > 0 {
            let left = part(idx).len() - off;
            if written >= left {
                written -= left;
                idx += 1;
                off = 0;
            } else {
                off += written;
                written = 0;
            }
        }
    }
    io.flush().await
}

/// Runs a write, unless the stream is closed as slow meanwhile (a client
/// that stopped reading must not hold the task on a full socket).
async fn or_slow(
    mut write: std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
    handle: &StreamHandle,
) -> Result<(), Ended> {
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
/// before anything live. The stream's last words are `finish`'s.
pub async fn run<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    handle: &StreamHandle,
    first: Vec<Bytes>,
    s: &Settings,
    latency: &Histogram,
) -> Ended {
    if let Err(e) = or_slow(pin!(write_frames(io, &first)), handle).await {
        return e;
    }
    drop(first);
    // One heartbeat timer for the stream's life. A write only notes its
    // time; the timer, when it fires, is moved on to a heartbeat after the
    // last write. Re-arming it at every event would cost a timer-wheel
    // insertion and removal per delivery, on the fan-out's hot path.
    let mut last_write = Instant::now();
    let mut last_beat = last_write;
    // A stream with no keep-alive never wakes for one (the branch is off).
    let every = s
        .beat
        .as_ref()
        .map_or(Duration::from_secs(3600), |b| b.every);
    let mut beat = pin!(sleep_until(later(last_write, every)));
    let mut expiry = pin!(async {
        match s.expires {
            Some(at) => sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    let mut probe = [0u8; 8];
    let mut batch: Vec<Arc<Event>> = Vec::new();
    let ended = loop {
        tokio::select! {
            biased;
            r = handle.next(&mut batch, BATCH) => match r {
                Ok(()) => {
                    // A GRIP close ends the stream after what came before it.
                    let closing = batch.iter().position(|e| e.closes());
                    if let Some(at) = closing {
                        batch.truncate(at);
                    }
                    let frame = |i: usize| batch[i].bytes(s.chunked);
                    if let Err(e) = or_slow(pin!(write_slices(io, batch.len(), frame)), handle).await {
                        return e;
                    }
                    // Once per write (not per event: the histogram's
                    // atomics would cost the fan-out more than they tell),
                    // for its oldest event, the one that waited longest.
                    if let Some(oldest) = batch.first() {
                        latency.observe(oldest.published.elapsed().as_secs_f64());
                    }
                    // A burst's room is not kept by an idle stream.
                    if batch.capacity() > 4 {
                        batch = Vec::new();
                    } else {
                        batch.clear();
                    }
                    last_write = Instant::now();
                    if closing.is_some() {
                        break Ended::Closed(Close::Disconnect {
                            reason: "closed by the app".into(),
                            reconnect: false,
                        });
                    }
                }
                Err(close) => break Ended::Closed(close),
            },
            _ = &mut beat, if s.beat.is_some() => {
                let Some(b) = &s.beat else { continue };
                let from = if b.interval { last_beat } else { last_write };
                if later(from, b.every) <= Instant::now() {
                    let frame = std::slice::from_ref(&b.frame);
                    if or_slow(pin!(write_frames(io, frame)), handle).await.is_err() {
                        return Ended::Client;
                    }
                    last_write = Instant::now();
                    last_beat = last_write;
                }
                let from = if b.interval { last_beat } else { last_write };
                beat.as_mut().reset(later(from, b.every));
            }
            r = io.read(&mut probe) => match r {
                Ok(0) | Err(_) => return Ended::Client,
                Ok(_) => {}
            },
            _ = &mut expiry => break Ended::Expired,
        }
    };
    ended
}

/// The last words of a stream that sidecast ends, then the end of the body.
/// Apart from `run`, so that the stream is accounted for (unsubscribed,
/// counted as closed) before the client can see its end: whoever reads the
/// metrics after the end of a stream finds it there.
pub async fn finish<W: AsyncWrite + Unpin>(io: &mut W, ended: &Ended, s: &Settings) {
    let retry = jittered(s.retry);
    let last: Option<bytes::BytesMut> = match ended {
        Ended::Client | Ended::Closed(Close::Slow) => None,
        // The app's format: only the end of the body.
        _ if s.held => Some(bytes::BytesMut::new()),
        Ended::Expired => {
            let mut f = notice(
                "sidecast.expired",
                &serde_json::json!({"reason": "token expired"}),
                None,
            );
            f.extend_from_slice(format!("retry: {retry}\n\n").as_bytes());
            Some(f)
        }
        Ended::Closed(Close::Disconnect { reason, reconnect }) => {
            // The app often ends every stream of a topic at once: the
            // jittered `retry:` spreads the browsers' return, as after a
            // drain, instead of all of them coming back on the same tick.
            let mut f = notice(
                "sidecast.disconnect",
                &serde_json::json!({"reason": reason, "reconnect": reconnect}),
                None,
            );
            f.extend_from_slice(format!("retry: {retry}\n\n").as_bytes());
            Some(f)
        }
        Ended::Closed(Close::Revoked) | Ended::Closed(Close::Shutdown) => {
            Some(format!("retry: {retry}\n\n").as_bytes().into())
        }
    };
    if let Some(text) = last {
        let mut frames = Vec::with_capacity(2);
        if !text.is_empty() {
            frames.push(control(&text, s.chunked));
        }
        if s.chunked {
            frames.push(Bytes::from_static(b"0\r\n\r\n"));
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), write_frames(io, &frames)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), io.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open stream is one such future: it must stay small (idle
    /// streams are what a pod holds by the thousand).
    #[test]
    fn the_stream_task_stays_small() {
        let h = StreamHandle::new(
            1,
            None,
            Box::new([]),
            None,
            crate::events::frame::Reader::Sse,
            4,
        );
        let (mut io, _peer) = tokio::io::duplex(64);
        let s = Settings {
            beat: Some(Beat::sse(Duration::from_secs(1), true)),
            retry: Duration::from_secs(1),
            chunked: true,
            expires: None,
            held: false,
        };
        let latency = Histogram::new([1.0]);
        let task = run(&mut io, &h, Vec::new(), &s, &latency);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the stream future is {size} bytes");
    }

    #[tokio::test]
    async fn writes_batches_and_single_events_whole() {
        let (mut a, mut b) = tokio::io::duplex(16);
        let parts: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("part {i};")))
            .collect();
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = b.read_to_end(&mut got).await;
            got
        });
        write_frames(&mut a, &parts).await.unwrap();
        write_frames(&mut a, &parts[..1]).await.unwrap();
        drop(a);
        let mut want = expected;
        want.extend_from_slice(&parts[0]);
        assert_eq!(reader.await.unwrap(), want);
    }

    /// Reads what the stream wrote so far, without waiting.
    fn drain(peer: &mut tokio::io::DuplexStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let mut rb = tokio::io::ReadBuf::new(&mut buf);
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            match std::pin::Pin::new(&mut *peer).poll_read(&mut cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    out.extend_from_slice(rb.filled())
                }
                _ => return String::from_utf8(out).unwrap(),
            }
        }
    }

    /// The heartbeat is due `heartbeat` after the last write, not on a
    /// fixed clock: an event resets it, although the timer is armed once.
    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_comes_a_heartbeat_after_the_last_write() {
        let h = Arc::new(StreamHandle::new(
            1,
            None,
            Box::new([]),
            None,
            crate::events::frame::Reader::Sse,
            4,
        ));
        let (mut io, mut peer) = tokio::io::duplex(4096);
        let s = Settings {
            beat: Some(Beat::sse(Duration::from_secs(10), false)),
            retry: Duration::from_secs(1),
            chunked: false,
            expires: None,
            held: false,
        };
        let stream = {
            let h = h.clone();
            let latency = Histogram::new([1.0]);
            tokio::spawn(async move { run(&mut io, &h, Vec::new(), &s, &latency).await })
        };
        let step = |secs: u64| tokio::time::sleep(Duration::from_secs(secs));
        step(6).await;
        let new = crate::events::frame::NewEvent {
            topics: vec![crate::topic::Topic::parse("t").unwrap()],
            data: "x".into(),
            name: None,
            user: None,
            retry: None,
            idempotency_key: None,
            grip: None,
        };
        h.push(&Arc::new(Event::new(1, "e1", &new)));
        tokio::task::yield_now().await;
        assert_eq!(drain(&mut peer), "id: e1\ndata: x\n\n");
        // 10 s after the start, but only 4 s after the event: no beat yet.
        step(5).await;
        assert_eq!(drain(&mut peer), "");
        // 10 s after the event: the beat.
        step(6).await;
        assert_eq!(drain(&mut peer), ":\n\n");
        // And every 10 s while nothing else is written.
        step(10).await;
        assert_eq!(drain(&mut peer), ":\n\n");
        h.close(Close::Shutdown);
        assert_eq!(stream.await.unwrap(), Ended::Closed(Close::Shutdown));
    }

    /// A held stream's handle, with room for 8 events.
    fn held_handle(id: u64) -> Arc<StreamHandle> {
        use crate::events::frame::Reader;
        Arc::new(StreamHandle::new(
            id,
            None,
            Box::new([]),
            None,
            Reader::Held,
            8,
        ))
    }

    /// Runs stream `h` on `io` with `s` in a task of its own.
    fn spawn_run(
        h: &Arc<StreamHandle>,
        mut io: tokio::io::DuplexStream,
        s: Settings,
    ) -> tokio::task::JoinHandle<Ended> {
        let h = h.clone();
        tokio::spawn(async move {
            let latency = Histogram::new([1.0]);
            run(&mut io, &h, Vec::new(), &s, &latency).await
        })
    }

    fn held(beat: Option<Beat>) -> Settings {
        Settings {
            beat,
            retry: Duration::from_secs(1),
            chunked: true,
            expires: None,
            held: true,
        }
    }

    fn grip_item(stream: crate::events::frame::StreamPart) -> Arc<Event> {
        use crate::events::frame::{GripItem, NewEvent};
        let new = NewEvent {
            topics: vec![crate::topic::Topic::parse("t").unwrap()],
            data: String::new(),
            name: None,
            user: None,
            retry: None,
            idempotency_key: None,
            grip: Some(Arc::new(GripItem {
                stream: Some(stream),
                response: None,
            })),
        };
        Arc::new(Event::new(1, "e1", &new))
    }

    /// A GRIP keep-alive in `interval` mode comes on a fixed clock, however
    /// busy the stream; with no keep-alive a held stream stays silent.
    #[tokio::test(start_paused = true)]
    async fn a_grip_keep_alive_in_interval_mode_ignores_writes_and_none_is_silence() {
        use crate::events::frame::StreamPart;
        let h = held_handle(1);
        let (io, mut peer) = tokio::io::duplex(4096);
        let stream = spawn_run(
            &h,
            io,
            held(Some(Beat {
                every: Duration::from_secs(10),
                frame: Bytes::from_static(b"2\r\nka\r\n"),
                interval: true,
            })),
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        h.push(&grip_item(StreamPart::Content(b"x".to_vec())));
        tokio::task::yield_now().await;
        assert_eq!(drain(&mut peer), "1\r\nx\r\n");
        // 10 s after the start, 4 s after the item: an interval beat is due.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(drain(&mut peer), "2\r\nka\r\n");
        h.close(Close::Shutdown);
        assert_eq!(stream.await.unwrap(), Ended::Closed(Close::Shutdown));

        let quiet = held_handle(2);
        let (io, mut peer) = tokio::io::duplex(4096);
        let stream = spawn_run(&quiet, io, held(None));
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        assert_eq!(drain(&mut peer), "", "no keep-alive asked: nothing written");
        quiet.close(Close::Shutdown);
        assert_eq!(stream.await.unwrap(), Ended::Closed(Close::Shutdown));
    }

    /// A GRIP close ends a held stream after the items queued before it,
    /// and a held stream's end is the last chunk alone: no SSE of
    /// sidecast's in the app's format.
    #[tokio::test]
    async fn a_grip_close_ends_a_held_stream_with_the_last_chunk_only() {
        use crate::events::frame::{Reader, StreamPart};
        let h = StreamHandle::new(1, None, Box::new([]), None, Reader::Held, 8);
        h.push(&grip_item(StreamPart::Content(b"a".to_vec())));
        h.push(&grip_item(StreamPart::Close));
        h.push(&grip_item(StreamPart::Content(b"never".to_vec())));
        let (mut io, mut peer) = tokio::io::duplex(4096);
        let s = held(None);
        let latency = Histogram::new([1.0]);
        let ended = run(&mut io, &h, Vec::new(), &s, &latency).await;
        assert!(
            matches!(ended, Ended::Closed(Close::Disconnect { .. })),
            "{ended:?}"
        );
        finish(&mut io, &ended, &s).await;
        drop(io);
        let mut got = String::new();
        peer.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "1\r\na\r\n0\r\n\r\n");
    }
}
