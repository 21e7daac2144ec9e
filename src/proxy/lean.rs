//! The lean pass-through path, for plain requests: HTTP/1.1, an
//! origin-form target, no body or a `Content-Length` one, no `Upgrade`, no
//! `Expect`. That is nearly every API call, and on it a proxy's cost is a
//! few header copies and two syscalls each way; pingora's general path
//! costs several times that (it parses the head again, clones and
//! re-encodes it, copies every body chunk, and spawns a task per upstream
//! check-in). Everything else (uploads of unknown length, WebSocket,
//! `Expect: 100-continue`, HTTP/1.0 clients) still goes to pingora.
//!
//! The request head is the one the listener already read: its header lines
//! are copied as the client sent them, less the hop-by-hop ones, with the
//! forwarding headers decided by the same plan as pingora's path. The
//! response head is read with httparse and its lines copied as the app
//! sent them (`Date` and `Server` included), less the hop-by-hop ones; the
//! body is relayed as it came, chunked or not, never buffered whole: each
//! read from the app is one write to the client. The bytes of a pipelined
//! request that follow this one stay in the listener's buffer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::failure::{self, Failure, GRIP_502, TIMEOUT_504, UNREACHABLE_502, UPSTREAM_502};
use super::forwarding::{is_trusted, plan, Action};
use super::pool;
use super::{GripSig, Routed};
use crate::grip::hold::{self, Begun, Held};
use crate::grip::instruct::{self, BadInstruction, Instruction};
use crate::http1::chunked::{self, ChunkScan};
use crate::http1::head::Head;
use crate::http1::hop::Nominated;
use crate::state::Shared;
use crate::subscribe::serve::After;

/// The access log's error for a response body silent past
/// `body_idle_timeout`.
const BODY_IDLE: &str = "BodyIdleTimeout";

/// Room for a response head and the first body bytes of a small response.
const READ_SIZE: usize = 16 * 1024;
/// The most response header fields read, as for requests.
const MAX_RESPONSE_HEADERS: usize = crate::http1::head::MAX_HEADERS;

/// HTTP/1.1 in origin form, without a chunked body or `Expect`: what both
/// lean paths need.
fn plain(head: &Head) -> bool {
    head.minor == 1
        && head.target.starts_with('/')
        && head.header("transfer-encoding").is_none()
        && head.header("expect").is_none()
}

/// Whether a request may take the lean path.
pub fn eligible(head: &Head) -> bool {
    plain(head) && head.header("upgrade").is_none()
}

/// The request's `Content-Length` (the head reader refused a bad one).
fn content_length(head: &Head) -> u64 {
    head.header_str("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The header lines of a raw request head (after the request line), as
/// `(name, value)` slices, lines ending in CRLF or LF.
fn header_lines(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some((&l[..colon], l[colon + 1..].trim_ascii()))
        })
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client as the forwarding headers see it.
#[derive(Clone, Copy)]
struct Client {
    addr: SocketAddr,
    /// A trusted proxy: its forwarding headers are kept.
    trusted: bool,
}

/// Writes the request head sent upstream into `out`.
fn request_head(
    out: &mut Vec<u8>,
    raw: &[u8],
    head: &Head,
    target: &str,
    client: Client,
    upgrade: bool,
    grip: &GripSig,
) {
    let Client {
        addr: peer,
        trusted,
    } = client;
    let lines = || header_lines(raw);
    let nominated = Nominated::from_values(
        lines()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
            .map(|(_, v)| v),
    );
    let fwd = plan(
        |name| {
            lines()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)
        },
        Some(peer.ip()),
        trusted,
    );
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in lines() {
        // An upgrade keeps its `Upgrade` header; its `Connection` is
        // written anew below.
        let kept_upgrade = upgrade && name.eq_ignore_ascii_case(b"upgrade");
        if (nominated.drops(name, false) && !kept_upgrade)
            || fwd.action(name).is_some_and(|a| *a != Action::Keep)
            || (grip.strip && name.eq_ignore_ascii_case(b"grip-sig"))
        {
            continue;
        }
        line(out, name, value);
    }
    for (name, action) in [
        ("X-Forwarded-For", &fwd.xff),
        ("X-Forwarded-Proto", &fwd.proto),
        ("X-Forwarded-Host", &fwd.host),
    ] {
        if let Action::Set(v) = action {
            line(out, name.as_bytes(), v.as_bytes());
        }
    }
    if let Some(token) = &grip.token {
        line(out, b"Grip-Sig", token.as_bytes());
    }
    if upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the app closes: the client's connection closes after it too.
    Close,
}

/// A parsed response head, already written for the client into `out`.
struct RespHead {
    len: usize,
    status: u16,
    framing: Framing,
    /// The app lets its connection be reused.
    reusable: bool,
    /// The app asked for a GRIP hold (on a route with `grip` on): `out`
    /// holds the status line and the headers the client may get, without
    /// framing and without the blank line.
    hold: Option<Result<Instruction, BadInstruction>>,
}

/// Parses a response head from `buf` and writes the client's head into
/// `out`; `None` when more bytes are needed, `Err` when the app's head is
/// not HTTP (answered as a bad upstream).
fn response_head(
    buf: &[u8],
    out: &mut Vec<u8>,
    is_head: bool,
    close_client: bool,
    grip: Option<usize>,
) -> Result<Option<RespHead>, httparse::Error> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut many;
    let mut resp = httparse::Response::new(&mut slots);
    let status = match resp.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            many = vec![httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            resp = httparse::Response::new(&mut many);
            resp.parse(buf)
        }
        other => other,
    }?;
    let httparse::Status::Complete(len) = status else {
        return Ok(None);
    };
    let code = resp.code.unwrap_or(502);
    let headers = &*resp.headers;
    let nominated = Nominated::from_values(
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .map(|h| h.value),
    );
    let value = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let chunked = value("transfer-encoding").next_back().map(|v| {
        v.rsplit(|&b| b == b',')
            .next()
            .unwrap_or_default()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    });
    let length = value("content-length")
        .next()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let framing = if is_head || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::None
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    let http10 = resp.version == Some(0);
    let reusable = framing != Framing::Close
        && if http10 {
            nominated.has("keep-alive")
        } else {
            !nominated.close()
        };
    // Only the app's response, on a route with GRIP on, can ask for a
    // hold; a HEAD's answer has no body to hold.
    let hold = grip.filter(|_| !is_head && code >= 200).and_then(|max| {
        instruct::parse(
            code,
            headers.iter().map(|h| (h.name.as_bytes(), h.value)),
            max,
        )
        .transpose()
    });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    if hold.is_some() {
        // The hold decides the framing; the app's length (of its initial
        // content only) and every GRIP header stay with sidecast.
        for h in headers {
            let name = h.name.as_bytes();
            if nominated.drops(name, false)
                || instruct::is_grip_header(name)
                || name.eq_ignore_ascii_case(b"content-length")
            {
                continue;
            }
            line(out, name, h.value);
        }
        return Ok(Some(RespHead {
            len,
            status: code,
            framing,
            reusable,
            hold,
        }));
    }
    for h in headers {
        let name = h.name.as_bytes();
        // A length beside chunked framing is void (RFC 9112 §6.3).
        let void_length =
            framing == Framing::Chunked && name.eq_ignore_ascii_case(b"content-length");
        // On a GRIP route the app's `Grip-*` headers are for sidecast,
        // held or not (a HEAD's answer, a response without a hold).
        if nominated.drops(name, true)
            || void_length
            || (grip.is_some() && instruct::is_grip_header(name))
        {
            continue;
        }
        line(out, name, h.value);
    }
    if (close_client || framing == Framing::Close) && !(100..200).contains(&code) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(RespHead {
        len,
        status: code,
        framing,
        reusable,
        hold: None,
    }))
}

/// How a relay or a tunnel ended, for the access log.
struct Relayed {
    /// The status the client got (0: none).
    status: u16,
    error: &'static str,
    sidecast_error: &'static str,
    keep_client: bool,
    /// The app asked for a GRIP hold: the relay hands the connection over.
    held: Option<Box<Held>>,
}

/// The request head sent upstream for `head` (the first `head.len` bytes
/// of `buf`), with room for `body` bytes more, and the address it goes to:
/// the route's target, the prefix stripped when the route says so, the
/// forwarding headers kept only from a trusted proxy.
fn upstream_request(
    buf: &[u8],
    head: &Head,
    routed: &Routed,
    peer: SocketAddr,
    upgrade: bool,
    body: usize,
) -> (SocketAddr, Vec<u8>) {
    let up = &routed.runtime().config.upstream;
    let trusted = is_trusted(Some(peer.ip()), &up.trusted_proxies);
    let target = routed.upstream_target(&head.target);
    let mut req = Vec::with_capacity(head.len + 128 + body);
    request_head(
        &mut req,
        &buf[..head.len],
        head,
        &target,
        Client {
            addr: peer,
            trusted,
        },
        upgrade,
        &routed.grip_sig(),
    );
    (routed.target().addr, req)
}

/// Counts and logs a request that the relay or the tunnel ended.
fn record(
    shared: &Shared,
    routed: &Routed,
    head: &Head,
    peer: SocketAddr,
    started: Instant,
    ended: &Relayed,
) {
    crate::proxy::record(
        shared,
        routed.runtime(),
        crate::proxy::Access {
            method: &head.method,
            target: &head.target,
            status: ended.status,
            route: routed.label(),
            started,
            peer: &peer.to_string(),
            error: ended.error,
            sidecast_error: ended.sidecast_error,
        },
    );
}

/// Relays one plain request to its upstream and the response back. `buf`
/// holds the request head (and maybe body bytes and pipelined requests):
/// this request's bytes are taken from it, the rest is left for the next
/// head. Returns what the client's connection does next: another request,
/// close, or carry a stream the app held with GRIP.
pub async fn relay<C: AsyncRead + AsyncWrite + Unpin>(
    io: &mut C,
    buf: &mut Vec<u8>,
    head: &Head,
    peer: SocketAddr,
    routed: &Routed,
    shared: &Shared,
) -> After {
    let started = Instant::now();
    let up = &routed.runtime().config.upstream;
    let length = content_length(head);
    let in_buf = (buf.len() - head.len).min(usize::try_from(length).unwrap_or(usize::MAX));
    let (addr, mut req) = upstream_request(buf, head, routed, peer, false, in_buf);
    req.extend_from_slice(&buf[head.len..head.len + in_buf]);
    buf.drain(..head.len + in_buf);
    let body_left = length - in_buf as u64;
    let timeouts = Timeouts {
        connect: up.connect_timeout,
        head: up.timeout,
        idle: up.body_idle_timeout,
    };
    let close_client = !head.keep_alive() || shared.lifecycle.is_draining();
    let ended = exchange(
        io,
        &req,
        body_left,
        addr,
        timeouts,
        Answering {
            is_head: head.method == "HEAD",
            close_client,
            grip: routed.grip_holds(),
        },
    )
    .await;
    let (Ok(mut ended) | Err(mut ended)) = ended;
    let mut stream = None;
    if let Some(held) = ended.held.take() {
        match hold::begin(io, *held, shared, routed.runtime(), !close_client).await {
            Begun::Served(served) => {
                ended.status = served.status;
                ended.keep_client = served.keep_client;
            }
            // The access line is the exchange with the app, written as the
            // hold begins; the stream's own lines follow it.
            Begun::Stream(opened) => stream = Some(opened),
        }
    }
    if ended.error == BODY_IDLE {
        shared.metrics.upstream_body_timeouts.inc();
    }
    record(shared, routed, head, peer, started, &ended);
    match stream {
        Some(opened) => After::Stream(opened),
        None if ended.keep_client && !close_client => After::KeepAlive,
        None => After::Close,
    }
}

/// The `[upstream]` timeouts of one exchange: connecting, the response
/// head (and the client's body), and a silent response body.
#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    head: Duration,
    idle: Duration,
}

/// What the client's request asks of the answer.
#[derive(Clone, Copy)]
struct Answering {
    /// A `HEAD`: the answer has no body.
    is_head: bool,
    /// The client's connection closes after this answer.
    close_client: bool,
    /// The route honours the app's GRIP hold headers, with at most this
    /// many channels.
    grip: Option<usize>,
}

fn failed(f: Failure, error: &'static str) -> Relayed {
    Relayed {
        status: f.status,
        error,
        sidecast_error: f.code,
        keep_client: false,
        held: None,
    }
}

/// Answers `f` to the client (nothing of the response was sent yet).
async fn answer<C: AsyncWrite + Unpin>(
    io: &mut C,
    f: Failure,
    head_only: bool,
    error: &'static str,
) -> Relayed {
    let _ = failure::reply(f).send(io, 1, false, head_only).await;
    failed(f, error)
}

/// Sends the request (on a pooled connection, or a new one when that
/// fails before any answer and the request can be sent again) and relays
/// the response. `Err` carries an early end already answered.
async fn exchange<C: AsyncRead + AsyncWrite + Unpin>(
    io: &mut C,
    req: &[u8],
    body_left: u64,
    addr: SocketAddr,
    timeouts: Timeouts,
    answering: Answering,
) -> Result<Relayed, Relayed> {
    let Answering {
        is_head,
        close_client,
        grip,
    } = answering;
    let mut rbuf = pool::buffer(READ_SIZE);
    let mut reused = pool::checkout(addr);
    let (mut conn, deadline) = loop {
        let (mut conn, was_pooled) = match reused.take() {
            Some(c) => (c, true),
            None => match pool::connect(addr, timeouts.connect).await {
                Ok(c) => (c, false),
                Err(_) => return Err(answer(io, UNREACHABLE_502, is_head, "ConnectError").await),
            },
        };
        let sent = conn.write_all(req).await;
        let sent = match sent {
            Ok(()) if body_left > 0 => stream_body(io, &mut conn, body_left, timeouts.head).await,
            other => other.map_err(|_| "WriteError"),
        };
        if let Err(e) = sent {
            // A pooled connection the app had closed: the request was not
            // taken, and it is whole in memory, so a new connection may
            // carry it. A client that stopped sending its body ends here.
            if was_pooled && body_left == 0 {
                continue;
            }
            let f = if e == "ClientBody" {
                Failure {
                    status: 400,
                    code: "bad-request",
                }
            } else {
                UPSTREAM_502
            };
            return Err(answer(io, f, is_head, e).await);
        }
        let deadline = tokio::time::Instant::now() + timeouts.head;
        // The first read tells whether a pooled connection was still alive.
        rbuf.clear();
        match tokio::time::timeout_at(deadline, conn.read_buf(&mut rbuf)).await {
            Ok(Ok(n)) if n > 0 => break (conn, deadline),
            Ok(_) if was_pooled && body_left == 0 => continue,
            Ok(_) => return Err(answer(io, UPSTREAM_502, is_head, "ConnectionClosed").await),
            Err(_) => return Err(answer(io, TIMEOUT_504, is_head, "ResponseHeaderTimedout").await),
        }
    };
    // The response head, and any interim heads before it.
    let mut out = Vec::with_capacity(512);
    let mut resp = loop {
        out.clear();
        match response_head(&rbuf, &mut out, is_head, close_client, grip) {
            Ok(Some(h)) if (100..200).contains(&h.status) => {
                // An interim answer (103 Early Hints, 100 Continue) goes on
                // to the HTTP/1.1 client as it came.
                if io.write_all(&out).await.is_err() {
                    return Err(failed(
                        Failure {
                            status: 0,
                            code: "",
                        },
                        "WriteError",
                    ));
                }
                rbuf.drain(..h.len);
                if !rbuf.is_empty() {
                    continue;
                }
            }
            Ok(Some(h)) => break h,
            Ok(None) if rbuf.len() >= 64 * 1024 => {
                return Err(answer(io, UPSTREAM_502, is_head, "InvalidHTTPHeader").await)
            }
            Ok(None) => {}
            Err(_) => return Err(answer(io, UPSTREAM_502, is_head, "InvalidHTTPHeader").await),
        }
        read_head_more(io, &mut conn, &mut rbuf, deadline, is_head).await?;
    };
    if let Some(hold) = resp.hold.take() {
        let instruction = match hold {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(target: "sidecast::grip", error = %e, "the app's hold instructions cannot be followed: answered 502");
                return Err(answer(io, GRIP_502, is_head, "GripInstruction").await);
            }
        };
        let body = read_whole(&mut conn, &mut rbuf, &resp, timeouts.idle).await;
        pool::give_back(rbuf, READ_SIZE);
        let (body, clean) = match body {
            Ok(b) => b,
            Err(error) => return Err(answer(io, UPSTREAM_502, is_head, error).await),
        };
        if clean && resp.reusable {
            pool::checkin(addr, conn);
        }
        return Ok(Relayed {
            status: resp.status,
            error: "",
            sidecast_error: "",
            keep_client: false,
            held: Some(Box::new(Held {
                instruction,
                status: resp.status,
                head: out,
                body,
            })),
        });
    }
    let body = relay_body(io, &mut conn, &mut rbuf, &mut out, &resp, timeouts.idle).await;
    pool::give_back(rbuf, READ_SIZE);
    let status = resp.status;
    match body {
        Ok(clean) => {
            if clean && resp.reusable {
                pool::checkin(addr, conn);
            }
            Ok(Relayed {
                status,
                error: "",
                sidecast_error: "",
                keep_client: resp.framing != Framing::Close,
                held: None,
            })
        }
        Err(error) => Ok(Relayed {
            status,
            error,
            sidecast_error: "",
            keep_client: false,
            held: None,
        }),
    }
}

/// Reads more of the app's response head into `rbuf`, by `deadline`; when
/// the app closes first (`502`) or is late (`504`), the answer is sent and
/// the end returned.
async fn read_head_more<C: AsyncWrite + Unpin>(
    io: &mut C,
    conn: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    head_only: bool,
) -> Result<(), Relayed> {
    match tokio::time::timeout_at(deadline, conn.read_buf(rbuf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(_) => Err(answer(io, UPSTREAM_502, head_only, "ConnectionClosed").await),
        Err(_) => Err(answer(io, TIMEOUT_504, head_only, "ResponseHeaderTimedout").await),
    }
}

/// Streams the rest of a `Content-Length` request body from the client to
/// the app, reading no byte past it (what follows is the next request).
async fn stream_body<C: AsyncRead + Unpin>(
    io: &mut C,
    conn: &mut TcpStream,
    mut left: u64,
    wait: Duration,
) -> Result<(), &'static str> {
    let mut piece = vec![0u8; READ_SIZE];
    while left > 0 {
        let want = piece.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match tokio::time::timeout(wait, io.read(&mut piece[..want])).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err("ClientBody"),
        };
        conn.write_all(&piece[..n])
            .await
            .map_err(|_| "WriteError")?;
        left -= n as u64;
    }
    Ok(())
}

/// Writes the response head (in `out`) and relays the body; `Ok(true)` when
/// the body ended exactly where its framing says (the app's connection may
/// be reused), `Err` with the log's error name when it broke off.
async fn relay_body<C: AsyncWrite + Unpin>(
    io: &mut C,
    conn: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    resp: &RespHead,
    idle: Duration,
) -> Result<bool, &'static str> {
    let mut scan = ChunkScan::default();
    let mut left = match resp.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    // Takes the part of `bytes` that belongs to the body; whether the body
    // is complete, and whether bytes came past its end.
    let mut take = |bytes: &[u8]| -> Result<(usize, bool), &'static str> {
        match resp.framing {
            Framing::None => Ok((0, true)),
            Framing::Length(_) => {
                let n = (bytes.len() as u64).min(left);
                left -= n;
                Ok((n as usize, left == 0))
            }
            Framing::Chunked => {
                let n = scan.feed(bytes).map_err(|_| "InvalidChunk")?;
                Ok((n, scan.done()))
            }
            Framing::Close => Ok((bytes.len(), false)),
        }
    };
    // The head and the first body bytes in one write.
    let first = &rbuf[resp.len..];
    let (n, mut done) = take(first)?;
    let mut clean = n == first.len();
    out.extend_from_slice(&first[..n]);
    io.write_all(out).await.map_err(|_| "WriteError")?;
    while !done {
        rbuf.clear();
        let read = tokio::time::timeout(idle, conn.read_buf(rbuf)).await;
        let got = match read {
            Err(_) => return Err(BODY_IDLE),
            Ok(Err(_)) => return Err("ReadError"),
            Ok(Ok(0)) if resp.framing == Framing::Close => break,
            Ok(Ok(0)) => return Err("ConnectionClosed"),
            Ok(Ok(n)) => n,
        };
        let (n, end) = take(&rbuf[..got])?;
        done = end;
        clean &= n == got;
        io.write_all(&rbuf[..n]).await.map_err(|_| "WriteError")?;
    }
    io.flush().await.map_err(|_| "WriteError")?;
    Ok(clean && resp.framing != Framing::Close)
}

/// The most of a held response's body (its initial content) read.
const MAX_HELD_BODY: usize = 1 << 20;

/// Reads a held response's body whole (it is the initial content, or the
/// answer at a response hold's timeout), de-chunked; whether it ended
/// exactly where its framing says (the app's connection may be reused).
async fn read_whole(
    conn: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    resp: &RespHead,
    idle: Duration,
) -> Result<(Vec<u8>, bool), &'static str> {
    let mut raw = rbuf[resp.len..].to_vec();
    let mut scan = ChunkScan::default();
    let mut scanned = 0;
    loop {
        let end = match resp.framing {
            Framing::None => Some(0),
            Framing::Length(n) => (raw.len() as u64 >= n).then_some(n as usize),
            Framing::Chunked => {
                let n = scan.feed(&raw[scanned..]).map_err(|_| "InvalidChunk")?;
                scanned += n;
                scan.done().then_some(scanned)
            }
            Framing::Close => None,
        };
        if let Some(end) = end {
            let clean = end == raw.len();
            raw.truncate(end);
            let body = if resp.framing == Framing::Chunked {
                chunked::decode(&raw).map_err(|_| "InvalidChunk")?
            } else {
                raw
            };
            return Ok((body, clean));
        }
        if raw.len() > MAX_HELD_BODY {
            return Err("HeldBodyTooLarge");
        }
        rbuf.clear();
        match tokio::time::timeout(idle, conn.read_buf(rbuf)).await {
            Err(_) => return Err(BODY_IDLE),
            Ok(Err(_)) => return Err("ReadError"),
            Ok(Ok(0)) if resp.framing == Framing::Close => return Ok((raw, false)),
            Ok(Ok(0)) => return Err("ConnectionClosed"),
            Ok(Ok(_)) => raw.extend_from_slice(rbuf),
        }
    }
}

/// Whether a request is an upgrade sidecast tunnels itself: HTTP/1.1,
/// origin form, `Upgrade` named, no body.
pub fn tunnels(head: &Head) -> bool {
    plain(head) && head.header("upgrade").is_some() && content_length(head) == 0
}

/// An upgrade (WebSocket): the request goes to the app on a connection of
/// its own; a `101` is sent back and from then on the two connections are
/// joined, byte for byte, until either side closes, with no timeout (a
/// quiet WebSocket is not a late one). Any other answer is relayed like a
/// plain response and the client's connection closed after it. pingora's
/// relay of upgrades dropped connections under load (a first frame racing
/// its switch to the upgraded mode), which is why sidecast does this
/// itself.
pub async fn tunnel<C: AsyncRead + AsyncWrite + Unpin>(
    io: &mut C,
    buf: &mut Vec<u8>,
    head: &Head,
    peer: SocketAddr,
    routed: &Routed,
    shared: &Shared,
) {
    let started = Instant::now();
    let up = &routed.runtime().config.upstream;
    let (addr, req) = upstream_request(buf, head, routed, peer, true, 0);
    buf.drain(..head.len);
    let waits = (up.connect_timeout, up.timeout);
    let ended = upgrade(io, buf, &req, addr, waits, routed.grip_holds()).await;
    let (Ok(ended) | Err(ended)) = ended;
    record(shared, routed, head, peer, started, &ended);
}

async fn upgrade<C: AsyncRead + AsyncWrite + Unpin>(
    io: &mut C,
    early: &mut Vec<u8>,
    req: &[u8],
    addr: SocketAddr,
    (connect, wait): (Duration, Duration),
    grip: Option<usize>,
) -> Result<Relayed, Relayed> {
    let mut conn = match pool::connect(addr, connect).await {
        Ok(c) => c,
        Err(_) => return Err(answer(io, UNREACHABLE_502, false, "ConnectError").await),
    };
    if conn.write_all(req).await.is_err() {
        return Err(answer(io, UPSTREAM_502, false, "WriteError").await);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut rbuf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(512);
    let resp = loop {
        read_head_more(io, &mut conn, &mut rbuf, deadline, false).await?;
        out.clear();
        match response_head(&rbuf, &mut out, false, true, grip) {
            Ok(Some(h)) if h.status == 101 => break h,
            Ok(Some(h)) if (100..200).contains(&h.status) => {
                rbuf.drain(..h.len);
            }
            // A declined upgrade is a plain answer: on a GRIP route its
            // hold cannot be followed (the request is not a plain one),
            // and is never passed on as if it were the whole answer.
            Ok(Some(h)) if h.hold.is_some() => {
                tracing::warn!(target: "sidecast::grip", "the app asked for a GRIP hold on an upgrade request, which cannot be held: answered 502");
                return Err(answer(io, GRIP_502, false, "GripInstruction").await);
            }
            Ok(Some(h)) => {
                // The app declined the upgrade: its answer, then close.
                let r = relay_body(io, &mut conn, &mut rbuf, &mut out, &h, wait).await;
                return Ok(Relayed {
                    status: h.status,
                    error: r.err().unwrap_or(""),
                    sidecast_error: "",
                    keep_client: false,
                    held: None,
                });
            }
            Ok(None) => {}
            Err(_) => return Err(answer(io, UPSTREAM_502, false, "InvalidHTTPHeader").await),
        }
    };
    // The 101 as the app sent it: its Connection and Upgrade are the
    // handshake.
    out.clear();
    out.extend_from_slice(&rbuf[..resp.len]);
    out.extend_from_slice(&rbuf[resp.len..]);
    if io.write_all(&out).await.is_err() {
        return Ok(Relayed {
            status: 101,
            error: "WriteError",
            sidecast_error: "",
            keep_client: false,
            held: None,
        });
    }
    if !early.is_empty() {
        let _ = conn.write_all(early).await;
        early.clear();
    }
    let joined = tokio::io::copy_bidirectional(io, &mut conn).await;
    Ok(Relayed {
        status: 101,
        error: if joined.is_err() {
            "UpgradedClosed"
        } else {
            ""
        },
        sidecast_error: "",
        keep_client: false,
        held: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        crate::http1::head::parse(raw.as_bytes(), 16384)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn plain_requests_are_eligible() {
        assert!(eligible(&head("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")));
        assert!(eligible(&head(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
        )));
        for raw in [
            "GET /a HTTP/1.0\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(!eligible(&head(raw)), "{raw}");
        }
    }

    #[test]
    fn the_request_head_keeps_case_and_drops_hop_by_hop() {
        let raw = "GET /a?b HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: V\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\r\n";
        let h = head(raw);
        let mut out = Vec::new();
        let peer: SocketAddr = "10.0.0.1:5".parse().unwrap();
        request_head(
            &mut out,
            raw.as_bytes(),
            &h,
            "/a?b",
            Client {
                addr: peer,
                trusted: false,
            },
            false,
            &GripSig::default(),
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "GET /a?b HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: V\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n"
        );
    }

    #[test]
    fn the_response_head_keeps_the_apps_headers() {
        let raw = b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: app\r\nConnection: x-foo\r\nX-Foo: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok";
        let mut out = Vec::new();
        let h = response_head(raw, &mut out, false, false, None)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.reusable);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: app\r\nContent-Length: 2\r\n\r\n"
        );
        let raw = b"HTTP/1.0 200 OK\r\n\r\nbody";
        let mut out = Vec::new();
        let h = response_head(raw, &mut out, false, false, None)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("Connection: close\r\n\r\n"));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let mut out = Vec::new();
        let h = response_head(raw, &mut out, false, false, None)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!String::from_utf8(out).unwrap().contains("Content-Length"));
    }
}
