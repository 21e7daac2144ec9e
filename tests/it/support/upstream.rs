//! A real upstream app for tests, on a free loopback port: echo, chunked
//! streaming, large bodies, slow answers, WebSocket echo, and counters;
//! and a raw one that answers fixed bytes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Digest;

type Body = BoxBody<Bytes, Infallible>;

/// A running upstream.
pub struct Upstream {
    pub addr: String,
    /// Requests seen, by path.
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    /// `/gated` sends each chunk after the first only once the test
    /// [`release`](Upstream::release)s it.
    gate: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Lets `/gated` send its next chunk.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// Starts the app; `name` is echoed in an `X-Upstream` header.
    pub async fn start(name: &'static str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let h = hits.clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let (h, g) = (h.clone(), g.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, name, h.clone(), g.clone())
                    });
                    // As many header fields as sidecast passes on.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .max_headers(300)
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            gate,
            task,
        }
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(
    req: Request<Incoming>,
    name: &'static str,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let q = query(&req);
    let num = |k: &str, d: u64| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let resp = Response::builder().header("X-Upstream", name);
    let r = match path.as_str() {
        "/chunks" => {
            let (n, ms) = (num("n", 5), num("ms", 300));
            let stream = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk {i}\n")))),
                    i + 1,
                ))
            });
            resp.body(BodyExt::boxed(StreamBody::new(stream)))
        }
        // `n` chunks, each after the first held back until the test
        // releases it (bounded: a chunk not released in time ends the body).
        "/gated" => {
            let n = num("n", 5);
            let stream = futures_util::stream::unfold(0u64, move |i| {
                let gate = gate.clone();
                async move {
                    if i >= n {
                        return None;
                    }
                    if i > 0 {
                        let permit = tokio::time::timeout(super::WAIT, gate.acquire_owned()).await;
                        permit.ok()?.ok()?.forget();
                    }
                    Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk {i}\n")))),
                        i + 1,
                    ))
                }
            });
            resp.body(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/download" => {
            let n = num("bytes", 1 << 20) as usize;
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            resp.header("Content-Type", "application/octet-stream")
                .body(full(data))
        }
        // Reads the body as it comes, counting its bytes under the name
        // `bytes:/stream-upload` in `hits` (so that a test sees what reached
        // the app before the client sent the rest).
        "/stream-upload" => {
            let mut body = req.into_body();
            let mut n = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    n += d.len();
                    *hits
                        .lock()
                        .unwrap()
                        .entry("bytes:/stream-upload".to_owned())
                        .or_default() += d.len();
                }
            }
            resp.header("Content-Type", "application/json")
                .body(full(serde_json::json!({"len": n}).to_string()))
        }
        "/upload" => {
            let body = whole_body(req).await;
            let hash = hex(&sha2::Sha256::digest(&body));
            resp.header("Content-Type", "application/json").body(full(
                serde_json::json!({"len": body.len(), "sha256": hash}).to_string(),
            ))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(num("ms", 2000))).await;
            resp.body(full("slow done\n"))
        }
        "/ws" => return Ok(websocket(req).await),
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            resp.status(code).body(full(format!("app says {code}\n")))
        }
        _ => {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = whole_body(req).await;
            resp.header("Content-Type", "application/json").body(full(
                serde_json::json!({
                    "upstream": name,
                    "method": method,
                    "uri": uri,
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                })
                .to_string(),
            ))
        }
    };
    Ok(r.unwrap())
}

/// The request's body read to its end (empty when it breaks off).
async fn whole_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return Response::builder()
            .status(400)
            .body(full("not a websocket request"))
            .unwrap();
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        if let Ok(up) = hyper::upgrade::on(&mut req).await {
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                } else if msg.is_close() {
                    break;
                }
            }
        }
    });
    Response::builder()
        .status(101)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Accept", accept)
        .body(full(""))
        .unwrap()
}

/// Decodes JSON from an echo answer: the headers as (name, value) pairs.
pub fn echoed_header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .filter_map(|h| h[1].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// An app written as raw bytes, to send what an HTTP library would not
/// (interim heads, a short body, no HTTP at all). It reads each request up
/// to its blank line (bodies are not used) and answers `reply` as it is:
/// with `keep`, every request on the connection, which stays open;
/// without, the first one, and then it closes. Stops when dropped.
pub struct RawApp {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawApp {
    pub async fn start(reply: &'static [u8], keep: bool) -> RawApp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    loop {
                        while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..p + 4);
                            if s.write_all(reply).await.is_err() {
                                return;
                            }
                            if !keep {
                                let _ = s.shutdown().await;
                                return;
                            }
                        }
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                });
            }
        });
        RawApp { url, task }
    }
}
