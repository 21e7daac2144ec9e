//! The publisher: COUNT events at RATE per second over one kept-alive
//! connection, one event per request, each carrying its phase, sequence
//! number and send time. One connection keeps the publish order the
//! sequence order, so a subscriber's out-of-order count is the system's.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

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
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sidecast,
    Nchan,
    Pushpin,
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
}

fn config(a: &Args) -> Result<Config, String> {
    let kind = match a.str("kind", None)?.as_str() {
        "sidecast" => Kind::Sidecast,
        "nchan" => Kind::Nchan,
        "pushpin" => Kind::Pushpin,
        k => {
            return Err(format!(
                "--kind: expected sidecast, nchan or pushpin, got {k:?}"
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
        Kind::Pushpin => (
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

async fn publish(cfg: &Config) -> String {
    let cpu0 = cpu_seconds();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    let mut lat = Hist::default();
    let (mut ok, mut errors, mut max_lag, mut connects) = (0u64, 0u64, 0u64, 0u64);
    let mut last_error = String::new();
    let start = Instant::now();
    let start_us = now_us();
    for seq in 0..cfg.count {
        if errors >= cfg.max_errors {
            break;
        }
        let due = start + Duration::from_secs_f64(seq as f64 / cfg.rate);
        sleep_until(due).await;
        max_lag = max_lag.max(Instant::now().duration_since(due).as_micros() as u64);
        if conn.is_none() {
            match timeout(cfg.timeout, connect(cfg.addr)).await {
                Ok(Ok(c)) => {
                    connects += 1;
                    conn = Some(c);
                    buf.clear();
                }
                Ok(Err(e)) => {
                    errors += 1;
                    last_error = e;
                    continue;
                }
                Err(_) => {
                    errors += 1;
                    last_error = "connect timeout".into();
                    continue;
                }
            }
        }
        let sent = now_us();
        let req = request(
            cfg,
            &payload(
                Mark {
                    phase: cfg.phase,
                    seq,
                    sent_us: sent,
                },
                cfg.pad,
            ),
        );
        let tcp = conn.as_mut().expect("connected above");
        match timeout(cfg.timeout, exchange(tcp, &mut buf, &req)).await {
            Ok(Ok((status, close))) => {
                if (200..300).contains(&status) {
                    ok += 1;
                    lat.record(now_us() - sent);
                } else {
                    errors += 1;
                    last_error = format!("status {status}");
                }
                if close {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                errors += 1;
                last_error = e;
                conn = None;
            }
            Err(_) => {
                errors += 1;
                last_error = "timeout".into();
                conn = None;
            }
        }
    }
    let end_us = now_us();
    let secs = (end_us - start_us) as f64 / 1e6;
    Obj::new()
        .str("type", "published")
        .num("phase", cfg.phase)
        .num("count", cfg.count)
        .num("published", ok)
        .num("errors", errors)
        .num("connections", connects)
        .str("last_error", &last_error)
        .float("rate", cfg.rate)
        .float(
            "achieved_rate",
            if secs > 0.0 { ok as f64 / secs } else { 0.0 },
        )
        .num("start_us", start_us)
        .num("end_us", end_us)
        .num("max_lag_us", max_lag)
        .num("publish_p50_us", lat.quantile(0.5))
        .num("publish_p99_us", lat.quantile(0.99))
        .num("publish_max_us", lat.max)
        .float("cpu_s", cpu_seconds() - cpu0)
        .done()
}

pub fn run(a: &Args) -> Result<(), String> {
    let cfg = config(a)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let line = rt.block_on(publish(&cfg));
    println!("{line}");
    Ok(())
}
