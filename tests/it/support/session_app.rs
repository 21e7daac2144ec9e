//! A legacy app with sessions for forward-auth tests: `/login?user=NAME`
//! sets a session cookie, `/logout` ends it, and "who am I" endpoints answer
//! the way existing apps do. Every call is counted.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Default)]
pub struct State {
    /// Session id → user.
    pub sessions: HashMap<String, String>,
    /// Topics the app refuses (its 403).
    pub forbidden: HashSet<String>,
    pub hits: HashMap<String, usize>,
    /// The last `Sidecast-Topics`, `X-Original-URI`, `X-Forwarded-For` seen.
    pub last_topics: Option<String>,
    pub last_uri: Option<String>,
    pub last_xff: Option<String>,
    /// When set, `/api/me` answers with this status.
    pub fail_with: Option<u16>,
    /// When set, `/api/me` waits this long first.
    pub delay: Option<Duration>,
    /// When set, sent as `Sidecast-Grants`.
    pub grants: Option<String>,
}

pub struct SessionApp {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SessionApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resp(status: u16) -> hyper::http::response::Builder {
    Response::builder().status(status)
}

fn session_of(req: &Request<Incoming>) -> Option<String> {
    let cookie = req.headers().get("cookie")?.to_str().ok()?;
    cookie
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == "sid")
        .map(|(_, v)| v.to_owned())
}

impl SessionApp {
    pub async fn start() -> SessionApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        SessionApp { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Logs `user` in; the cookie header value to send.
    pub fn login(&self, user: &str) -> String {
        let sid = format!("s{:016x}", fastrand_u64());
        self.state
            .lock()
            .unwrap()
            .sessions
            .insert(sid.clone(), user.to_owned());
        format!("sid={sid}")
    }

    pub fn logout(&self, cookie: &str) {
        let sid = cookie.trim_start_matches("sid=");
        self.state.lock().unwrap().sessions.remove(sid);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let (delay, fail) = {
        let mut s = st.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        if path.starts_with("/api/me") {
            s.last_topics = req
                .headers()
                .get("sidecast-topics")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            s.last_uri = req
                .headers()
                .get("x-original-uri")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            s.last_xff = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        (s.delay, s.fail_with)
    };
    if path.starts_with("/api/me") {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if let Some(code) = fail {
            return Ok(resp(code)
                .body(Full::new(Bytes::from("app failure")))
                .unwrap());
        }
        let s = st.lock().unwrap();
        let Some(user) = session_of(&req).and_then(|sid| s.sessions.get(&sid).cloned()) else {
            return Ok(resp(401)
                .body(Full::new(Bytes::from("not logged in")))
                .unwrap());
        };
        let topics = s.last_topics.clone().unwrap_or_default();
        if topics.split(',').any(|t| s.forbidden.contains(t)) {
            return Ok(resp(403).body(Full::new(Bytes::from("forbidden"))).unwrap());
        }
        let mut r = resp(200).header("Content-Type", "application/json");
        if let Some(g) = &s.grants {
            r = r.header("Sidecast-Grants", g.as_str());
        }
        if path == "/api/me" {
            r = r.header("Sidecast-User", user.as_str());
        }
        let body = serde_json::json!({"user": {"id": user, "name": "Someone"}}).to_string();
        return Ok(r.body(Full::new(Bytes::from(body))).unwrap());
    }
    Ok(resp(200).body(Full::new(Bytes::from("app page"))).unwrap())
}
