//! Keys from an identity provider's JWKS URL, served by a local HTTP server.
use crate::support;
use crate::support::scrape;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::rsa::RsaKey;
use support::sse::Sse;
use support::upstream::Upstream;
use support::{http, jwt, Opts, Sidecast};

/// A provider whose key set can change and which can go down (answers 503).
struct Provider {
    addr: String,
    keys: Arc<Mutex<serde_json::Value>>,
    down: Arc<Mutex<bool>>,
    hits: Arc<Mutex<usize>>,
}

impl Provider {
    async fn start(keys: serde_json::Value) -> Provider {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let keys = Arc::new(Mutex::new(keys));
        let down = Arc::new(Mutex::new(false));
        let hits = Arc::new(Mutex::new(0));
        let (k, d, h) = (keys.clone(), down.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (k, d, h) = (k.clone(), d.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let (k, d, h) = (k.clone(), d.clone(), h.clone());
                        async move {
                            *h.lock().unwrap() += 1;
                            let r = if *d.lock().unwrap() {
                                hyper::Response::builder()
                                    .status(503)
                                    .body(Full::new(Bytes::from("down")))
                            } else {
                                hyper::Response::builder()
                                    .header("Content-Type", "application/json")
                                    .body(Full::new(Bytes::from(k.lock().unwrap().to_string())))
                            };
                            Ok::<_, Infallible>(r.unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Provider {
            addr,
            keys,
            down,
            hits,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "topics": ["t"], "exp": jwt::now() + 600})
}

async fn status(sc: &Sidecast, token: &str) -> u16 {
    let s = Sse::open_token(&sc.public, "/events?topic=t", token).await;
    let st = s.status();
    drop(s.into_inner());
    st
}

fn start(up: &Upstream, provider: &Provider, extra: &str) -> Sidecast {
    let mut o = Opts::new(&up.url());
    o.env.clear();
    o.auth = format!("jwks_url = \"{}\"\n{extra}", provider.url());
    Sidecast::start(&o)
}

/// Two RSA keys, a provider that serves the first as kid `one`, and the
/// app; `None` when `openssl` is missing and the test may skip.
async fn two_keys_one_served() -> Option<(RsaKey, RsaKey, Provider, Upstream)> {
    if !support::require("openssl") {
        return None;
    }
    let dir = support::temp_dir("jwks");
    let k1 = RsaKey::generate(&dir, "k1");
    let k2 = RsaKey::generate(&dir, "k2");
    let provider = Provider::start(json!({"keys": [k1.jwk("one")]})).await;
    let up = Upstream::start("app").await;
    Some((k1, k2, provider, up))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_verify_rotate_and_survive_an_outage() {
    let Some((k1, k2, provider, up)) = two_keys_one_served().await else {
        return;
    };
    let sc = start(&up, &provider, "jwks_refresh = \"1s\"");
    assert_eq!(status(&sc, &k1.sign("one", &claims("alice"))).await, 200);

    // Rotation: a token with the new kid verifies without a restart.
    *provider.keys.lock().unwrap() = json!({"keys": [k1.jwk("one"), k2.jwk("two")]});
    assert_eq!(status(&sc, &k2.sign("two", &claims("alice"))).await, 200);

    // The provider goes down: the last good set keeps verifying.
    *provider.down.lock().unwrap() = true;
    let seen = *provider.hits.lock().unwrap();
    support::eventually("a refresh attempt while down", || async {
        *provider.hits.lock().unwrap() > seen + 1
    })
    .await;
    assert_eq!(status(&sc, &k1.sign("one", &claims("alice"))).await, 200);
    assert_eq!(status(&sc, &k2.sign("two", &claims("alice"))).await, 200);
    // An unknown kid is refused (401), not a crash.
    let r = http::get(
        &sc.public,
        "/events?topic=t",
        Some(&k2.sign("three", &claims("alice"))),
    )
    .await;
    assert_eq!(r.status, 401);
}

/// The key set is fetched at start; a token with an unknown `kid` fetches
/// it again (a rotation is picked up before the next refresh), but at most
/// once a minute: a second unknown `kid` right after fetches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_at_most_once_a_minute() {
    let Some((k1, k2, provider, up)) = two_keys_one_served().await else {
        return;
    };
    // A refresh far away: every fetch below is the start's or a kid's.
    let sc = start(&up, &provider, "jwks_refresh = \"1h\"");
    assert_eq!(*provider.hits.lock().unwrap(), 1, "fetched at start");
    assert_eq!(status(&sc, &k1.sign("one", &claims("alice"))).await, 200);
    assert_eq!(
        *provider.hits.lock().unwrap(),
        1,
        "a known kid fetches nothing"
    );

    *provider.keys.lock().unwrap() = json!({"keys": [k1.jwk("one"), k2.jwk("two")]});
    assert_eq!(status(&sc, &k2.sign("two", &claims("alice"))).await, 200);
    assert_eq!(
        *provider.hits.lock().unwrap(),
        2,
        "the unknown kid fetched once"
    );

    let r = http::get(
        &sc.public,
        "/events?topic=t",
        Some(&k2.sign("three", &claims("alice"))),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        *provider.hits.lock().unwrap(),
        2,
        "a second unknown kid within the minute fetches nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_jwk_never_verifies_an_hs256_token() {
    if !support::require("openssl") {
        return;
    }
    let dir = support::temp_dir("jwks");
    let k1 = RsaKey::generate(&dir, "k1");
    let jwk = k1.jwk("one");
    let provider = Provider::start(json!({"keys": [jwk.clone()]})).await;
    let up = Upstream::start("app").await;
    // Even with HS256 allowed, the key set says this key is RS256 only.
    let sc = start(&up, &provider, "algorithms = [\"RS256\", \"HS256\"]");
    let pem = std::fs::read(&k1.public).unwrap();
    for secret in [pem.as_slice(), jwk["n"].as_str().unwrap().as_bytes()] {
        let forged = jwt::sign_with_header(
            secret,
            &json!({"alg": "HS256", "typ": "JWT", "kid": "one"}),
            &claims("mallory"),
        );
        let r = http::get(&sc.public, "/events?topic=t", Some(&forged)).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    assert_eq!(status(&sc, &k1.sign("one", &claims("alice"))).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_fails_clearly_when_the_first_fetch_fails() {
    let provider = Provider::start(json!({"keys": []})).await;
    *provider.down.lock().unwrap() = true;
    let dir = support::temp_dir("jwks");
    let cfg = dir.join("sidecar.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\npublic = \"127.0.0.1:0\"\npublish = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[auth]\njwks_url = \"{}\"\n",
            provider.url()
        ),
    )
    .unwrap();
    // Bounded: a sidecast that started anyway would never end by itself.
    let out = tokio::task::block_in_place(|| scrape::sidecast(&[], &cfg, &[]));
    assert!(!out.success());
    let err = out.stderr;
    assert!(
        err.contains("auth.jwks_url") && err.contains("503"),
        "{err}"
    );
}

/// Rewrites `sc`'s config file in one step (a rename) and signals a reload.
fn reload_with(sc: &Sidecast, opts: &Opts) {
    let tmp = sc.dir.join("sidecar.toml.new");
    std::fs::write(&tmp, opts.toml()).unwrap();
    std::fs::rename(&tmp, sc.dir.join("sidecar.toml")).unwrap();
    sc.signal("HUP");
}

async fn reloads_reach(sc: &Sidecast, result: &str, n: f64) {
    let name = format!("sidecast_config_reloads_total{{result=\"{result}\"}}");
    scrape::metric_reaches(&sc.admin, &name, n).await;
}

/// `jwks_url` set by a reload is fetched then, and a reload whose URL does
/// not answer is refused, as at start-up; removed by a reload, it takes its
/// keys with it, and the streams they opened end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sets_and_removes_the_jwks_url() {
    let Some((k1, _, provider, up)) = two_keys_one_served().await else {
        return;
    };
    let mut o = Opts::new(&up.url());
    let sc = Sidecast::start(&o);
    let hs = sc.token("alice", &["t"]);
    let rs = k1.sign("one", &claims("alice"));
    assert_eq!(status(&sc, &rs).await, 401, "no URL: the provider's key");

    // A URL that does not answer: refused, and the old keys stay.
    let dead = format!("http://127.0.0.1:{}/jwks.json", support::free_port());
    o.auth = format!("jwks_url = \"{dead}\"");
    reload_with(&sc, &o);
    reloads_reach(&sc, "failed", 1.0).await;
    sc.log_with(&["config reload refused: auth.jwks_url: the fetch failed"])
        .await;
    assert_eq!(status(&sc, &hs).await, 200, "the old key after a refusal");
    assert_eq!(*provider.hits.lock().unwrap(), 0);

    // The provider's URL: fetched by the reload, in force at once (the
    // refresh is an hour away).
    o.auth = format!("jwks_url = \"{}\"\njwks_refresh = \"1h\"", provider.url());
    reload_with(&sc, &o);
    reloads_reach(&sc, "ok", 1.0).await;
    assert_eq!(*provider.hits.lock().unwrap(), 1, "fetched by the reload");
    let mut s = Sse::open_token(&sc.public, "/events?topic=t", &rs).await;
    assert_eq!(s.status(), 200);
    s.next_block(support::WAIT).await.expect("the stream opens");

    // Removed: its keys go, and the stream they opened ends.
    o.auth = String::new();
    reload_with(&sc, &o);
    reloads_reach(&sc, "ok", 2.0).await;
    s.until_end(support::WAIT).await;
    assert!(s.eof, "the stream of a removed key ends");
    assert_eq!(status(&sc, &rs).await, 401, "the URL's key is gone");
    assert_eq!(status(&sc, &hs).await, 200, "the secret is the key again");
}
