//! The publisher: COUNT events at RATE per second, one event per request,
//! each carrying its phase, sequence number and send time, in sidecast's
//! `POST /publish` body, nchan's, or GRIP's `POST /publish/` body (Pushpin's
//! publish API, and sidecast's own since it speaks GRIP). Requests are
//! written one at a time in sequence order, each at its scheduled time, so
//! a subscriber's out-of-order count is the system's.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::args::Args;
use crate::hist::Hist;
use crate::http::{read_head, Dechunk};
use crate::json::{quote, Obj};
use crate::sse::{payload, Mark};
use crate::sys::{cpu_seconds, now_us};

pub const FLAGS: &[&str] = &[
    "kind",
    "addr",
    "host",
    "path",
    "topic",
    "phase",
    "count",
    "rate",
    "pad",
    "timeout-ms",
    "max-errors",
    "max-conns",
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sidecast,
    Nchan,
    /// GRIP's publish body, an `http-stream` item: what Pushpin takes, and
    /// sidecast's `POST /publish/` too.
    Grip,
}

struct Config {
    kind: Kind,
    addr: SocketAddr,
    host: String,
    path: String,
    topic: String,
    phase: u32,
    count: u32,
    rate: f64,
    pad: usize,
    timeout: Duration,
    max_errors: u64,
    max_conns: usize,
}

fn config(a: &Args) -> Result<Config, String> {
    let kind = match a.str("kind", None)?.as_str() {
        "sidecast" => Kind::Sidecast,
        "nchan" => Kind::Nchan,
        "grip" | "pushpin" => Kind::Grip,
        k => {
            return Err(format!(
                "--kind: expected sidecast, nchan, grip or pushpin (the same as grip), got {k:?}"
            ))
        }
    };
    let addr: SocketAddr = a
        .str("addr", None)?
        .parse()
        .map_err(|_| "--addr: expected IP:PORT".to_string())?;
    let rate: f64 = a.num("rate", None)?;
    if rate.is_nan() || rate <= 0.0 {
        return Err("--rate: expected events per second > 0".into());
    }
    Ok(Config {
        kind,
        host: a.str("host", Some(&addr.to_string()))?,
        addr,
        path: a.str("path", None)?,
        topic: a.str("topic", Some("bench"))?,
        phase: a.num("phase", None)?,
        count: a.num("count", None)?,
        rate,
        pad: a.num("pad", Some(0))?,
        timeout: Duration::from_millis(a.num("timeout-ms", Some(10_000))?),
        max_errors: a.num("max-errors", Some(20))?,
        max_conns: a.num::<usize>("max-conns", Some(32))?.max(1),
    })
}

/// The request that publishes `data` in each system's own publish API.
fn request(cfg: &Config, data: &str) -> Vec<u8> {
    let (ctype, body) = match cfg.kind {
        Kind::Sidecast => (
            "application/json",
            format!("{{\"topic\":{},\"data\":{}}}", quote(&cfg.topic), quote(data)),
        ),
        Kind::Nchan => ("text/plain", data.to_string()),
        // the item's content is SSE-shaped, so the subscribers' SSE reader
        // finds the mark in a GRIP-held stream as in an events stream
        Kind::Grip => (
            "application/json",
            format!(
                "{{\"items\":[{{\"channel\":{},\"formats\":{{\"http-stream\":{{\"content\":{}}}}}}}]}}",
                quote(&cfg.topic),
                quote(&format!("data: {data}\n\n"))
            ),
        ),
    };
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        cfg.path,
        cfg.host,
        body.len()
    )
    .into_bytes()
}

/// Sends one request and reads the whole response; returns its status and
/// whether the server closes the connection after it.
async fn exchange(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    req: &[u8],
) -> Result<(u16, bool), String> {
    tcp.write_all(req)
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let (head, used) = read_head(tcp, buf)
        .await
        .map_err(|e| format!("head: {e}"))?;
    buf.drain(..used);
    let mut chunk = [0u8; 4096];
    if head.chunked {
        let mut d = Dechunk::default();
        loop {
            let more = d.feed(buf, |_| {}).map_err(|e| e.to_string())?;
            buf.clear();
            if !more {
                break;
            }
            let n = tcp.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed in body".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        let want = head.content_length.unwrap_or(0);
        while buf.len() < want {
            let n = tcp.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed in body".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..want);
    }
    Ok((head.status, head.close))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A kept-alive publish connection and what was read past its last response.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    connects: u64,
    in_flight: usize,
    max_in_flight: usize,
    last_error: String,
    lat: Hist,
    /// Connections free for the next request, most recently used last.
    idle: Vec<Conn>,
    /// Which publishes are finished (answered or failed)...
    done: Vec<bool>,
    /// ...and how many from the first on are all finished.
    floor: u32,
}

impl Tally {
    fn finish(&mut self, seq: u32) {
        self.in_flight -= 1;
        self.done[seq as usize] = true;
        while self.done.get(self.floor as usize) == Some(&true) {
            self.floor += 1;
        }
    }
}

/// Sends one event on `conn` (opening one when `None`) and tallies the
/// outcome; a connection that is still good goes back to the idle pool.
async fn send_one(cfg: Rc<Config>, tally: Rc<RefCell<Tally>>, conn: Option<Conn>, seq: u32) {
    let fail = |t: &mut Tally, e: String| {
        t.errors += 1;
        t.last_error = e;
    };
    let mut conn = match conn {
        Some(c) => c,
        None => match timeout(cfg.timeout, connect(cfg.addr)).await {
            Ok(Ok(tcp)) => {
                tally.borrow_mut().connects += 1;
                Conn {
                    tcp,
                    buf: Vec::new(),
                }
            }
            Ok(Err(e)) => {
                let mut t = tally.borrow_mut();
                fail(&mut t, e);
                t.finish(seq);
                return;
            }
            Err(_) => {
                let mut t = tally.borrow_mut();
                fail(&mut t, "connect timeout".into());
                t.finish(seq);
                return;
            }
        },
    };
    let sent = now_us();
    let mark = Mark {
        phase: cfg.phase,
        seq,
        floor: tally.borrow().floor,
        sent_us: sent,
    };
    let req = request(&cfg, &payload(mark, cfg.pad));
    let outcome = timeout(cfg.timeout, exchange(&mut conn.tcp, &mut conn.buf, &req)).await;
    let mut t = tally.borrow_mut();
    t.finish(seq);
    match outcome {
        Ok(Ok((status, close))) => {
            if (200..300).contains(&status) {
                t.ok += 1;
                t.lat.record(now_us() - sent);
            } else {
                fail(&mut t, format!("status {status}"));
            }
            if !close {
                t.idle.push(conn);
            }
        }
        Ok(Err(e)) => fail(&mut t, e),
        Err(_) => fail(&mut t, "timeout".into()),
    }
}

/// Open loop: each event is sent at its scheduled time whatever the
/// responses to earlier ones are doing (a slow publish response must not
/// lower the offered rate, nor hide the delay it causes). An idle
/// connection is reused first, so a system that answers promptly sees one
/// connection and strictly sequential publishes; more (up to `max-conns`)
/// are opened only while earlier requests are still unanswered.
async fn publish(cfg: Rc<Config>) -> String {
    let cpu0 = cpu_seconds();
    let tally = Rc::new(RefCell::new(Tally {
        done: vec![false; cfg.count as usize],
        ..Tally::default()
    }));
    let mut max_lag = 0u64;
    let start = Instant::now();
    let start_us = now_us();
    for seq in 0..cfg.count {
        if tally.borrow().errors >= cfg.max_errors {
            break;
        }
        let due = start + Duration::from_secs_f64(seq as f64 / cfg.rate);
        sleep_until(due).await;
        // every connection busy: wait (bounded) for one to come free
        let give_up = Instant::now() + cfg.timeout;
        while tally.borrow().idle.is_empty()
            && tally.borrow().in_flight >= cfg.max_conns
            && Instant::now() < give_up
        {
            sleep(Duration::from_micros(200)).await;
        }
        max_lag = max_lag.max(Instant::now().duration_since(due).as_micros() as u64);
        let conn = {
            let mut t = tally.borrow_mut();
            t.in_flight += 1;
            t.max_in_flight = t.max_in_flight.max(t.in_flight);
            t.idle.pop()
        };
        tokio::task::spawn_local(send_one(cfg.clone(), tally.clone(), conn, seq));
        tokio::task::yield_now().await;
    }
    let give_up = Instant::now() + cfg.timeout;
    while tally.borrow().in_flight > 0 && Instant::now() < give_up {
        sleep(Duration::from_millis(1)).await;
    }
    let end_us = now_us();
    let secs = (end_us - start_us) as f64 / 1e6;
    let t = tally.borrow();
    Obj::new()
        .str("type", "published")
        .num("phase", cfg.phase)
        .num("count", cfg.count)
        .num("published", t.ok)
        .num("errors", t.errors)
        .num("connections", t.connects)
        .num("max_in_flight", t.max_in_flight)
        .str("last_error", &t.last_error)
        .float("rate", cfg.rate)
        .float(
            "achieved_rate",
            if secs > 0.0 { t.ok as f64 / secs } else { 0.0 },
        )
        .num("start_us", start_us)
        .num("end_us", end_us)
        .num("max_lag_us", max_lag)
        .num("publish_p50_us", t.lat.quantile(0.5))
        .num("publish_p99_us", t.lat.quantile(0.99))
        .num("publish_max_us", t.lat.max)
        .float("cpu_s", cpu_seconds() - cpu0)
        .done()
}

pub fn run(a: &Args) -> Result<(), String> {
    let cfg = config(a)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    let line = local.block_on(&rt, publish(Rc::new(cfg)));
    println!("{line}");
    Ok(())
}
