//! Helpers for the delivery, publish and control tests: metrics scraping,
//! long-poll requests, raw publish requests, process memory, and a client
//! that connects and then never reads.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::http::{self, Response};
use super::sse::Sse;
use super::Sidecast;

/// The value of one sample of the admin `/metrics` (`name{labels}` exactly
/// as exposed), 0 when absent.
pub async fn metric(sc: &Sidecast, sample: &str) -> f64 {
    metric_sample(sc, sample).await.unwrap_or(0.0)
}

/// One sample's value, `None` when `/metrics` does not have it (a test that
/// checks a zero checks that it is there).
pub async fn metric_sample(sc: &Sidecast, sample: &str) -> Option<f64> {
    let r = http::request(&sc.admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
}

/// A request to the publish listener with a JSON body and extra headers.
pub async fn publish_with(
    sc: &Sidecast,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    http::request(&sc.publish_url(), method, path, headers, body).await
}

/// `POST /publish` with `Content-Type: application/json`.
pub async fn publish_json(sc: &Sidecast, body: &serde_json::Value) -> Response {
    publish_with(
        sc,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// The ids of a `202` answer.
pub fn ids_of(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect()
}

/// `GET /topics/NAME` on the publish listener: (status, body).
pub async fn topic_info(sc: &Sidecast, name: &str) -> (u16, serde_json::Value) {
    let r = publish_with(sc, "GET", &format!("/topics/{name}"), &[], b"").await;
    (r.status, r.json())
}

/// How many streams `/topics/NAME` counts (0 for a 404).
pub async fn streams_on(sc: &Sidecast, name: &str) -> u64 {
    let (status, v) = topic_info(sc, name).await;
    if status == 404 {
        return 0;
    }
    v["streams"].as_u64().expect("streams")
}

/// A long-poll answer.
pub struct Poll {
    pub status: u16,
    pub items: Vec<serde_json::Value>,
    /// The `Last-Event-ID` header: the id to send next time.
    pub next: String,
    pub response: Response,
}

/// `GET path` on the public listener with a token and extra headers,
/// answered as a long-poll.
pub async fn poll(sc: &Sidecast, path: &str, token: &str, headers: &[(&str, &str)]) -> Poll {
    let auth = format!("Bearer {token}");
    let mut h: Vec<(&str, &str)> = vec![("Authorization", &auth)];
    h.extend_from_slice(headers);
    let response = http::request(&sc.public, "GET", path, &h, b"").await;
    let items = match response.json() {
        serde_json::Value::Array(a) => a,
        other => {
            assert_ne!(response.status, 200, "a 200 poll answers an array: {other}");
            Vec::new()
        }
    };
    Poll {
        status: response.status,
        next: response
            .header("last-event-id")
            .unwrap_or_default()
            .to_owned(),
        items,
        response,
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Opens an events stream whose client never reads: a small receive buffer,
/// so that what sidecast sends piles up in sidecast's queue, not the
/// kernel's. The response stays unread in the socket.
pub async fn never_reading(addr: &str, path: &str, token: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut io = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.expect("send");
    io
}

/// Reads what a socket still holds until the peer's end (bounded), for a
/// client that comes back to read after it was dropped.
pub async fn read_rest(io: &mut TcpStream, within: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, io.read_to_end(&mut out)).await;
    out
}

/// The events (id, event, data) of a raw chunked SSE response.
pub fn events_of_raw(raw: &[u8]) -> Vec<super::sse::Block> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let body = http::dechunk(&raw[end..]);
    let mut text = String::from_utf8_lossy(&body).into_owned();
    super::sse::parse_blocks(&mut text)
        .into_iter()
        .filter(|b| b.data.is_some())
        .collect()
}

/// Reads the opening `retry:` block of a fresh stream and checks it.
pub async fn opening(s: &mut Sse) {
    assert_eq!(s.status(), 200);
    let b = s.next_block(super::WAIT).await.expect("retry block");
    assert!(b.retry.is_some(), "a stream opens with retry: {b:?}");
}

/// The next event, which must be a `sidecast.reset`: (its id, its data).
pub async fn expect_reset(s: &mut Sse) -> (String, serde_json::Value) {
    let b = s.next_event().await.expect("a reset event");
    assert_eq!(b.event.as_deref(), Some("sidecast.reset"), "{b:?}");
    let data: serde_json::Value =
        serde_json::from_str(b.data.as_deref().unwrap_or("")).expect("reset data is JSON");
    (b.id.expect("a reset carries an id"), data)
}
