//! The subscriber side: holds N SSE streams in one single-threaded process
//! and measures what reaches them, phase by phase, as told on stdin:
//!
//! ```text
//! out: {"type":"ready", "established":N, ...}     once every stream is open or given up
//! in:  begin PHASE EXPECTED                        EXPECTED events per stream follow
//! out: {"type":"begun", ...}
//! in:  report PHASE WAIT_MS                        wait for them (at most WAIT_MS)...
//! out: {"type":"report", ...}                      ...and count what arrived
//! in:  stats                                       streams open now
//! in:  quit                                        (or end of input)
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout, Instant};

use crate::args::Args;
use crate::hist::Hist;
use crate::http::{read_head, Dechunk};
use crate::json::{counts, Obj};
use crate::sse::{parse_mark, Mark, Sse};
use crate::sys::{cpu_seconds, now_us, raise_nofile};

pub const FLAGS: &[&str] = &[
    "addr",
    "host",
    "path",
    "streams",
    "src-first",
    "src-count",
    "concurrency",
    "connect-timeout-ms",
    "connect-deadline-s",
    "attempts",
    "max-life-s",
    "read-buf",
];

struct Config {
    addr: SocketAddr,
    request: Vec<u8>,
    streams: usize,
    sources: Vec<Ipv4Addr>,
    concurrency: usize,
    connect_timeout: Duration,
    connect_deadline: Duration,
    attempts: u32,
    max_life: Duration,
    read_buf: usize,
}

fn config(a: &Args) -> Result<Config, String> {
    let addr: SocketAddr = a
        .str("addr", None)?
        .parse()
        .map_err(|_| "--addr: expected IP:PORT".to_string())?;
    let host = a.str("host", Some(&addr.to_string()))?;
    let path = a.str("path", None)?;
    let first: u8 = a.num("src-first", Some(10))?;
    let count: u8 = a.num("src-count", Some(8))?;
    if count == 0 || first as u16 + count as u16 > 255 {
        return Err("--src-first/--src-count: 127.0.0.FIRST .. FIRST+COUNT-1 must fit".into());
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\nUser-Agent: sidecast-bench\r\n\r\n"
    );
    Ok(Config {
        addr,
        request: request.into_bytes(),
        streams: a.num("streams", None)?,
        sources: (first..first + count)
            .map(|d| Ipv4Addr::new(127, 0, 0, d))
            .collect(),
        concurrency: a.num("concurrency", Some(64))?,
        connect_timeout: Duration::from_millis(a.num("connect-timeout-ms", Some(10_000))?),
        connect_deadline: Duration::from_secs(a.num("connect-deadline-s", Some(180))?),
        attempts: a.num("attempts", Some(3))?,
        max_life: Duration::from_secs(a.num("max-life-s", Some(3600))?),
        read_buf: a.num("read-buf", Some(8192))?,
    })
}

/// One stream's view of the current phase.
#[derive(Default)]
struct Track {
    open: bool,
    phase: u32,
    seen: Vec<u64>,
    got: u32,
    max_seq: Option<u32>,
    /// Highest `floor` of the events received: events numbered below it
    /// must not arrive any more.
    max_floor: u32,
}

/// Everything the streams and the controller share (one thread: RefCell).
#[derive(Default)]
struct State {
    tracks: Vec<Track>,
    connect_done: usize,
    established: usize,
    open: usize,
    connect_errors: BTreeMap<String, u64>,
    close_reasons: BTreeMap<String, u64>,
    // the phase being measured
    active: bool,
    phase: u32,
    expected: u32,
    at_begin_open: usize,
    complete: usize,
    closed_incomplete: usize,
    delivered: u64,
    duplicates: u64,
    /// Arrived after an event published once this one was accepted.
    out_of_order: u64,
    /// Arrived after a higher-numbered event published concurrently with it
    /// (not an ordering fault: the system never saw one before the other).
    reordered: u64,
    beyond: u64,
    stale: u64,
    unparsed: u64,
    first_recv: u64,
    last_recv: u64,
    hist: Hist,
    cpu_at_begin: f64,
}

impl State {
    fn on_mark(&mut self, i: usize, m: Mark, now: u64) {
        if !self.active || m.phase != self.phase {
            self.stale += 1;
            return;
        }
        if m.seq >= self.expected {
            self.beyond += 1;
            return;
        }
        let (phase, expected) = (self.phase, self.expected);
        let t = &mut self.tracks[i];
        if t.phase != phase {
            t.phase = phase;
            t.seen = vec![0; (expected as usize).div_ceil(64)];
            t.got = 0;
            t.max_seq = None;
            t.max_floor = 0;
        }
        let (w, b) = ((m.seq / 64) as usize, 1u64 << (m.seq % 64));
        if t.seen[w] & b != 0 {
            self.duplicates += 1;
            return;
        }
        t.seen[w] |= b;
        t.got += 1;
        if m.seq < t.max_floor {
            self.out_of_order += 1;
        } else if t.max_seq.is_some_and(|mx| m.seq < mx) {
            self.reordered += 1;
        }
        t.max_floor = t.max_floor.max(m.floor);
        t.max_seq = Some(t.max_seq.map_or(m.seq, |mx| mx.max(m.seq)));
        let done = t.got == expected;
        self.delivered += 1;
        if done {
            self.complete += 1;
        }
        self.hist.record(now.saturating_sub(m.sent_us));
        if self.first_recv == 0 {
            self.first_recv = now;
        }
        self.last_recv = now;
    }

    fn on_close(&mut self, i: usize, reason: String) {
        let t = &mut self.tracks[i];
        t.open = false;
        self.open -= 1;
        if self.active && !(t.phase == self.phase && t.got == self.expected) {
            self.closed_incomplete += 1;
        }
        *self.close_reasons.entry(reason).or_default() += 1;
    }

    /// Starts counting phase `p`, in which every open stream should get
    /// `e` events; what was counted before is forgotten.
    fn begin(&mut self, p: u32, e: u32) {
        self.active = true;
        self.phase = p;
        self.expected = e;
        self.at_begin_open = self.open;
        self.complete = 0;
        self.closed_incomplete = 0;
        self.delivered = 0;
        self.duplicates = 0;
        self.out_of_order = 0;
        self.reordered = 0;
        self.beyond = 0;
        self.stale = 0;
        self.unparsed = 0;
        self.first_recv = 0;
        self.last_recv = 0;
        self.hist = Hist::default();
        self.close_reasons.clear();
        self.cpu_at_begin = cpu_seconds();
    }

    fn settled(&self) -> bool {
        self.complete + self.closed_incomplete >= self.at_begin_open
    }
}

type Shared = Rc<RefCell<State>>;

/// Connects from `src`, sends the request, reads the response head.
async fn open(cfg: &Config, src: Ipv4Addr) -> Result<(TcpStream, Vec<u8>, bool), String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {}", e.kind()))?;
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind: {}", e.kind()))?;
    let mut tcp = sock
        .connect(cfg.addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    tcp.write_all(&cfg.request)
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut buf = Vec::with_capacity(1024);
    let (head, used) = read_head(&mut tcp, &mut buf)
        .await
        .map_err(|e| format!("head: {e}"))?;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    buf.drain(..used);
    Ok((tcp, buf, head.chunked))
}

async fn stream(cfg: Rc<Config>, st: Shared, sem: Rc<Semaphore>, i: usize) {
    let src = cfg.sources[i % cfg.sources.len()];
    let permit = sem.acquire().await;
    let mut opened = None;
    for attempt in 0..cfg.attempts.max(1) {
        if attempt > 0 {
            sleep(Duration::from_millis(200 * attempt as u64)).await;
        }
        match timeout(cfg.connect_timeout, open(&cfg, src)).await {
            Ok(Ok(o)) => {
                opened = Some(o);
                break;
            }
            Ok(Err(e)) => *st.borrow_mut().connect_errors.entry(e).or_default() += 1,
            Err(_) => {
                *st.borrow_mut()
                    .connect_errors
                    .entry("timeout".into())
                    .or_default() += 1
            }
        }
    }
    drop(permit);
    {
        let mut s = st.borrow_mut();
        s.connect_done += 1;
        if opened.is_some() {
            s.established += 1;
            s.open += 1;
            s.tracks[i].open = true;
        }
    }
    let Some((mut tcp, early, chunked)) = opened else {
        return;
    };
    let reason = read_events(&mut tcp, early, chunked, &cfg, &st, i).await;
    st.borrow_mut().on_close(i, reason);
}

/// Reads until the stream ends; returns why it ended.
async fn read_events(
    tcp: &mut TcpStream,
    early: Vec<u8>,
    chunked: bool,
    cfg: &Config,
    st: &Shared,
    i: usize,
) -> String {
    let mut sse = Sse::default();
    let mut dechunk = Dechunk::default();
    let mut marks: Vec<Option<Mark>> = Vec::new();
    let mut buf = vec![0u8; cfg.read_buf];
    let mut pending = early;
    loop {
        if !pending.is_empty() {
            let now = now_us();
            let mut on_event = |d: &[u8]| marks.push(parse_mark(d));
            let more = if chunked {
                match dechunk.feed(&pending, |b| sse.feed(b, &mut on_event)) {
                    Ok(m) => m,
                    Err(e) => return format!("chunked: {e}"),
                }
            } else {
                sse.feed(&pending, &mut on_event);
                true
            };
            if !marks.is_empty() {
                let mut s = st.borrow_mut();
                for m in marks.drain(..) {
                    match m {
                        Some(m) => s.on_mark(i, m, now),
                        None => s.unparsed += 1,
                    }
                }
            }
            if !more {
                return "end of body".into();
            }
        }
        let n = match tcp.read(&mut buf).await {
            Ok(0) => return "closed by server".into(),
            Ok(n) => n,
            Err(e) => return format!("read: {}", e.kind()),
        };
        pending.clear();
        pending.extend_from_slice(&buf[..n]);
    }
}

fn emit(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn report(st: &State, waited: Duration) -> String {
    let h = &st.hist;
    Obj::new()
        .str("type", "report")
        .num("phase", st.phase)
        .num("streams", st.at_begin_open)
        .num("open", st.open)
        .num("expected", st.expected as u64 * st.at_begin_open as u64)
        .num("delivered", st.delivered)
        .num("complete_streams", st.complete)
        .num("closed_incomplete", st.closed_incomplete)
        .num("duplicates", st.duplicates)
        .num("out_of_order", st.out_of_order)
        .num("reordered_concurrent", st.reordered)
        .num("beyond", st.beyond)
        .num("stale", st.stale)
        .num("unparsed", st.unparsed)
        .num("first_recv_us", st.first_recv)
        .num("last_recv_us", st.last_recv)
        .num("p50_us", h.quantile(0.50))
        .num("p99_us", h.quantile(0.99))
        .num("max_us", h.max)
        .raw("hist", &h.sparse_json())
        .float("cpu_s", cpu_seconds() - st.cpu_at_begin)
        .float("waited_s", waited.as_secs_f64())
        .raw("close_reasons", &counts(st.close_reasons.iter()))
        .done()
}

async fn control(cfg: Rc<Config>, st: Shared) {
    let deadline = Instant::now() + cfg.connect_deadline;
    let start = Instant::now();
    while st.borrow().connect_done < cfg.streams && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    {
        let s = st.borrow();
        emit(
            Obj::new()
                .str("type", "ready")
                .num("streams", cfg.streams)
                .num("established", s.established)
                .num("open", s.open)
                .num("gave_up", cfg.streams - s.connect_done)
                .float("connect_s", start.elapsed().as_secs_f64())
                .raw("connect_errors", &counts(s.connect_errors.iter()))
                .raw("close_reasons", &counts(s.close_reasons.iter()))
                .float("cpu_s", cpu_seconds())
                .done(),
        );
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["begin", p, e] => {
                let (Ok(p), Ok(e)) = (p.parse::<u32>(), e.parse::<u32>()) else {
                    emit(error(&line));
                    continue;
                };
                let mut s = st.borrow_mut();
                s.begin(p, e);
                let open = s.open;
                emit(
                    Obj::new()
                        .str("type", "begun")
                        .num("phase", p)
                        .num("open", open)
                        .done(),
                );
            }
            ["report", p, wait_ms] => {
                let (Ok(p), Ok(w)) = (p.parse::<u32>(), wait_ms.parse::<u64>()) else {
                    emit(error(&line));
                    continue;
                };
                let t0 = Instant::now();
                let until = t0 + Duration::from_millis(w);
                while !st.borrow().settled() && Instant::now() < until {
                    sleep(Duration::from_millis(5)).await;
                }
                let mut s = st.borrow_mut();
                if s.phase != p {
                    emit(error(&line));
                    continue;
                }
                emit(report(&s, t0.elapsed()));
                s.active = false;
            }
            ["stats"] => {
                let s = st.borrow();
                emit(
                    Obj::new()
                        .str("type", "stats")
                        .num("open", s.open)
                        .raw("close_reasons", &counts(s.close_reasons.iter()))
                        .float("cpu_s", cpu_seconds())
                        .done(),
                );
            }
            ["quit"] => return,
            _ => emit(error(&line)),
        }
    }
}

fn error(line: &str) -> String {
    Obj::new()
        .str("type", "error")
        .str("message", &format!("cannot do {line:?}"))
        .done()
}

pub fn run(a: &Args) -> Result<(), String> {
    let cfg = Rc::new(config(a)?);
    let limit = raise_nofile();
    if cfg.streams as u64 + 64 > limit {
        return Err(format!(
            "{} streams need more than this process's open-file limit {limit}",
            cfg.streams
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let st: Shared = Rc::new(RefCell::new(State::default()));
        st.borrow_mut().tracks = (0..cfg.streams).map(|_| Track::default()).collect();
        let sem = Rc::new(Semaphore::new(cfg.concurrency.max(1)));
        for i in 0..cfg.streams {
            tokio::task::spawn_local(stream(cfg.clone(), st.clone(), sem.clone(), i));
        }
        tokio::select! {
            _ = control(cfg.clone(), st.clone()) => {}
            _ = sleep(cfg.max_life) => emit(error("lifetime over")),
        }
    });
    // Exiting closes every socket at once; no need to unwind the tasks.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seq: u32, floor: u32) -> Mark {
        Mark {
            phase: 1,
            seq,
            floor,
            sent_us: 0,
        }
    }

    fn state(expected: u32) -> State {
        let mut st = State {
            tracks: vec![Track {
                open: true,
                ..Track::default()
            }],
            open: 1,
            ..State::default()
        };
        st.begin(1, expected);
        st
    }

    #[test]
    fn counts_duplicates_and_causal_order_apart_from_concurrent_swaps() {
        let mut st = state(5);
        // 0 and 1 were published concurrently (floor 0): a swap is no fault
        st.on_mark(0, mark(1, 0), 10);
        st.on_mark(0, mark(0, 0), 10);
        // 3 was sent after 2 was accepted (floor 3): 2 arriving late is
        st.on_mark(0, mark(3, 3), 10);
        st.on_mark(0, mark(2, 2), 10);
        st.on_mark(0, mark(2, 2), 10);
        st.on_mark(0, mark(4, 4), 10);
        st.on_mark(0, mark(9, 4), 10);
        assert_eq!(st.delivered, 5);
        assert_eq!(st.reordered, 1);
        assert_eq!(st.out_of_order, 1);
        assert_eq!(st.duplicates, 1);
        assert_eq!(st.beyond, 1);
        assert_eq!(st.complete, 1);
        assert!(st.settled());
    }

    #[test]
    fn a_stream_closed_before_completing_settles_the_phase() {
        let mut st = state(2);
        st.on_mark(0, mark(0, 0), 10);
        assert!(!st.settled());
        st.on_close(0, "closed by server".into());
        assert!(st.settled());
        assert_eq!(st.closed_incomplete, 1);
    }
}
