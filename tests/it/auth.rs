//! Subscriber and publisher auth with HS256 tokens made by an independent
//! signer: where a token is read from, every way one is refused (and that
//! the refusal never echoes it), grants, per-user events, expiry during a
//! stream, the publish listener's tokens, and `sidecast token`.
use crate::support;
use crate::support::scrape;

use serde_json::{json, Value};
use support::http::{request, Response};
use support::jwt::{self, now};
use support::sse::Sse;
use support::{Sidecast, SECRET, WAIT};

fn token(claims: &Value) -> String {
    jwt::hs256(SECRET.as_bytes(), claims)
}

/// A GET on the public listener; the whole response of a refusal.
async fn get(sc: &Sidecast, path: &str, headers: &[(&str, &str)]) -> Response {
    request(&sc.public, "GET", path, headers, b"").await
}

async fn get_bearer(sc: &Sidecast, path: &str, tok: &str) -> Response {
    let auth = format!("Bearer {tok}");
    get(sc, path, &[("Authorization", &auth)]).await
}

/// Asserts a `401` with `WWW-Authenticate: Bearer error="..."` and a JSON
/// body whose `error` is `code`, echoing nothing of `tok`.
fn assert_401(r: &Response, code: &str, tok: &str) {
    assert_eq!(r.status, 401, "{code}: {}", r.text());
    let www = r.header("www-authenticate").expect("WWW-Authenticate");
    assert!(
        www.starts_with("Bearer ") && www.contains("error=\""),
        "{code}: {www}"
    );
    let body = r.json();
    assert_eq!(body["error"], code, "{}", r.text());
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.text()
    );
    if !tok.is_empty() {
        // Neither the whole token nor any of its parts.
        for part in tok.split('.').filter(|p| p.len() > 3) {
            assert!(!r.text().contains(part), "{code}: body echoes the token");
            assert!(!www.contains(part), "{code}: header echoes the token");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_sources_header_query_cookie() {
    let (_up, sc) = support::start_with(|o| o.auth = "cookie = \"sess\"".into()).await;
    let tok = sc.token("alice", &["news"]);

    let s = Sse::open_token(&sc.public, "/events?topic=news", &tok).await;
    assert_eq!(s.status(), 200, "Authorization: Bearer");
    let s = Sse::open(&sc.public, &format!("/events?topic=news&token={tok}"), &[]).await;
    assert_eq!(s.status(), 200, "?token=");
    let s = Sse::open(
        &sc.public,
        &format!("/events?access_token={tok}&topic=news"),
        &[],
    )
    .await;
    assert_eq!(s.status(), 200, "?access_token=");
    let cookie = format!("other=1; sess={tok}; more=2");
    let mut s = Sse::open(&sc.public, "/events?topic=news", &[("Cookie", &cookie)]).await;
    assert_eq!(s.status(), 200, "the configured cookie");
    s.next_block(WAIT).await.expect("retry block");
    sc.publish_one("news", "via cookie").await;
    assert_eq!(
        s.next_event().await.unwrap().data.as_deref(),
        Some("via cookie")
    );

    // The default cookie name is not read when another is configured.
    let cookie = format!("sidecast_token={tok}");
    let r = get(&sc, "/events?topic=news", &[("Cookie", &cookie)]).await;
    assert_401(&r, "missing", &tok);
    // A scheme other than Bearer is refused, not ignored.
    let r = get(
        &sc,
        "/events?topic=news",
        &[("Authorization", "Basic YWxpY2U6cHc=")],
    )
    .await;
    assert_401(&r, "malformed", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_never_reach_the_log() {
    let (up, sc) = support::start_with(|o| {
        // A proxy route to a closed port: the upstream-down path logs too. The
        // most verbose level: no library's debug line may print a token either.
        o.extra = "[[routes]]\nprefix = \"/dead\"\nupstream = \"http://127.0.0.1:1\"\n\
                      [log]\nlevel = \"trace\"\n"
            .into();
    })
    .await;
    let tok = sc.token("alice", &["news"]);
    let sig = tok.rsplit('.').next().unwrap().to_owned();

    let mut s = Sse::open(&sc.public, &format!("/events?topic=news&token={tok}"), &[]).await;
    assert_eq!(s.status(), 200);
    s.next_block(WAIT).await.unwrap();
    drop(s);
    let r = get(
        &sc,
        &format!("/events?topic=secret&access_token={tok}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 403);
    let bad = "garbage-query-token-4711";
    let r = get(&sc, &format!("/events?topic=news&token={bad}"), &[]).await;
    assert_eq!(r.status, 401);

    // Proxied: 200, an upstream error status, an unreachable upstream, and
    // a parameter name percent-encoded (`%74oken` decodes to `token`).
    let r = get(&sc, &format!("/echo?a=1&token={tok}&b=2"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits("/echo"), 1);
    let r = get(&sc, &format!("/status/500?access_token={tok}"), &[]).await;
    assert_eq!(r.status, 500);
    let r = get(&sc, &format!("/dead/x?token={tok}"), &[]).await;
    assert_eq!(r.status, 502);
    let r = get(&sc, &format!("/echo?%74oken={tok}"), &[]).await;
    assert_eq!(r.status, 200);
    // A malformed target is refused without logging its query either.
    let r = get(&sc, &format!("echo?token={bad}"), &[]).await;
    assert_eq!(r.status, 400);

    // Every line these requests write, before looking for a token in them:
    // sidecast logs a request after answering it. Four access lines, the
    // stream's two, and the refused head's debug line.
    sc.log_lines("proxied", 4).await;
    sc.log_lines("REDACTED", 4).await;
    let log = sc
        .log_with(&[
            "stream opened",
            "stream closed",
            "a=1",
            "refused a request head",
        ])
        .await;
    assert!(!log.contains(&sig), "a token reached the log:\n{log}");
    assert!(!log.contains(bad), "a token reached the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_401_with_a_reason_and_counted() {
    let (_up, sc) = support::start_with(|o| {
        o.auth =
            "issuer = \"https://issuer.test\"\naudience = [\"api\", \"other\"]\nleeway = \"0s\""
                .into()
    })
    .await;
    let base = || {
        json!({"sub": "alice", "topics": ["news"], "exp": now() + 600,
               "iss": "https://issuer.test", "aud": "api"})
    };
    let with = |k: &str, v: Value| {
        let mut c = base();
        c[k] = v;
        c
    };
    // A good token, so that what follows is refused for its one flaw.
    let good = token(&base());
    let s = Sse::open_token(&sc.public, "/events?topic=news", &good).await;
    assert_eq!(s.status(), 200);
    drop(s);
    let mut aud_list = base();
    aud_list["aud"] = json!(["x", "other"]);
    let s = Sse::open_token(&sc.public, "/events?topic=news", &token(&aud_list)).await;
    assert_eq!(s.status(), 200, "one audience of a list is enough");
    drop(s);

    let r = get(&sc, "/events?topic=news", &[]).await;
    assert_401(&r, "missing", "");

    let cases: Vec<(&str, String)> = vec![
        ("malformed", "not-a-token".into()),
        ("malformed", "a.b.c".into()),
        (
            "bad_signature",
            jwt::hs256(b"another-secret-0123456789abcdef0123", &base()),
        ),
        ("bad_signature", {
            // A valid token with its claims changed after signing.
            let t = good.clone();
            let parts: Vec<&str> = t.split('.').collect();
            let forged = token(&with("topics", json!(["**"])));
            let forged_claims = forged.split('.').nth(1).unwrap().to_owned();
            format!("{}.{}.{}", parts[0], forged_claims, parts[2])
        }),
        ("expired", token(&with("exp", json!(now() - 30)))),
        ("not_yet_valid", token(&with("nbf", json!(now() + 600)))),
        ("issuer", token(&with("iss", json!("https://evil.test")))),
        ("audience", token(&with("aud", json!("someone-else")))),
        ("algorithm", jwt::unsigned(&base())),
        ("algorithm", {
            // `none` spelled differently, with a signature attached.
            jwt::sign_with_header(SECRET.as_bytes(), &json!({"alg": "None"}), &base())
        }),
        ("algorithm", {
            // HS512 is not among the algorithms configured... (default:
            // the HS family, so use a name outside every family).
            jwt::sign_with_header(SECRET.as_bytes(), &json!({"alg": "XS256"}), &base())
        }),
        ("malformed", {
            let mut c = base();
            c.as_object_mut().unwrap().remove("exp");
            token(&c)
        }),
    ];
    let mut counts: std::collections::HashMap<&str, f64> = Default::default();
    for (code, tok) in &cases {
        let r = get_bearer(&sc, "/events?topic=news", tok).await;
        assert_401(&r, code, tok);
        // The query and the cookie are read the same way.
        let r = get(&sc, &format!("/events?topic=news&token={tok}"), &[]).await;
        assert_401(&r, code, tok);
        *counts.entry(code).or_default() += 2.0;
    }
    *counts.entry("missing").or_default() += 1.0;
    for (code, n) in counts {
        let series = format!("sidecast_auth_failures_total{{reason=\"{code}\"}}");
        assert_eq!(
            scrape::metric(&sc.admin, &series).await,
            Some(n),
            "{series}"
        );
    }

    // A valid token that does not grant the topic: 403.
    let r = get_bearer(&sc, "/events?topic=sports", &good).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "forbidden");
    assert!(r.text().contains("sports"), "{}", r.text());
    assert_eq!(
        scrape::metric(
            &sc.admin,
            "sidecast_auth_failures_total{reason=\"forbidden\"}"
        )
        .await,
        Some(1.0)
    );
}

/// The statuses of opening each topic with one token.
async fn statuses(sc: &Sidecast, tok: &str, topics: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for t in topics {
        let path = format!("/events?topic={}", t.replace('%', "%25"));
        let s = Sse::open_token(&sc.public, &path, tok).await;
        out.push(s.status());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_from_a_custom_claim_with_wildcards() {
    let (_up, sc) = support::start_with(|o| o.auth = "topics_claim = \"perms\"".into()).await;
    let tok = token(&json!({
        "sub": "alice", "exp": now() + 600,
        "perms": ["a/**", "b/*", "c/*/d", "e/%7c"],
        "topics": ["x"],
    }));
    let topics = [
        "a/b", "a/b/c", "a", "b/x", "b", "b/x/y", "c/1/d", "c/d", "c/1/2/d", "e/%7C", "x",
    ];
    let want = [200, 200, 403, 200, 403, 403, 200, 403, 403, 200, 403];
    assert_eq!(statuses(&sc, &tok, &topics).await, want, "{topics:?}");
    // Several topics: every one must be granted.
    let s = Sse::open_token(&sc.public, "/events?topic=a/b&topic=b/c", &tok).await;
    assert_eq!(s.status(), 200);
    let r = get_bearer(&sc, "/events?topic=a/b&topic=x", &tok).await;
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("topic x"),
        "names the topic: {}",
        r.text()
    );
    // A claim that is not a list of patterns is a malformed token.
    let bad = token(&json!({"sub": "a", "exp": now() + 600, "perms": [1, 2]}));
    let r = get_bearer(&sc, "/events?topic=a/b", &bad).await;
    assert_401(&r, "malformed", &bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_events_reach_their_user_only() {
    let (_up, sc) = support::start().await;
    let mut alice = Sse::open_token(
        &sc.public,
        "/events?topic=chat",
        &sc.token("alice", &["chat"]),
    )
    .await;
    let mut bob = Sse::open_token(
        &sc.public,
        "/events?topic=chat",
        &sc.token("bob", &["chat"]),
    )
    .await;
    assert_eq!((alice.status(), bob.status()), (200, 200));
    alice.next_block(WAIT).await.unwrap();
    bob.next_block(WAIT).await.unwrap();

    let (st, body) = sc
        .publish(json!({"topic": "chat", "data": "for alice", "user": "alice"}))
        .await;
    assert_eq!(st, 202, "{body}");
    let private_id = body["ids"][0].as_str().unwrap().to_owned();
    let ev = alice.next_event().await.unwrap();
    assert_eq!(ev.data.as_deref(), Some("for alice"));
    assert_eq!(ev.id.as_deref(), Some(private_id.as_str()));

    let public_id = sc.publish_one("chat", "for all").await;
    let ev = bob.next_event().await.unwrap();
    assert_eq!(
        (ev.data.as_deref(), ev.id.as_deref()),
        (Some("for all"), Some(public_id.as_str())),
        "bob's first event is the untargeted one"
    );
    assert_eq!(
        alice.next_event().await.unwrap().data.as_deref(),
        Some("for all")
    );

    // Replay keeps the rule: bob replaying everything sees only the public one.
    let mut again = Sse::open(
        &sc.public,
        "/events?topic=chat&lastEventId=earliest",
        &[(
            "Authorization",
            &format!("Bearer {}", sc.token("bob", &["chat"])),
        )],
    )
    .await;
    let ev = again.next_event().await.unwrap();
    assert_eq!(ev.id.as_deref(), Some(public_id.as_str()));
    // A long-poll by alice after the start sees hers first.
    let r = get_bearer(
        &sc,
        "/events?topic=chat&mode=poll&lastEventId=earliest",
        &sc.token("alice", &["chat"]),
    )
    .await;
    let body = r.json();
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [private_id.as_str(), public_id.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_stream_ends_it() {
    let (_up, sc) = support::start_with(|o| o.auth = "leeway = \"0s\"".into()).await;
    let exp = now() + 2;
    let tok = token(&json!({"sub": "alice", "topics": ["news"], "exp": exp}));
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &tok).await;
    assert_eq!(s.status(), 200);
    let blocks = s.until_end(WAIT).await;
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(s.eof, "the response ended");
    assert!(
        ended >= exp as f64 && ended < exp as f64 + 2.0,
        "ended at {ended}, expiry {exp}"
    );
    let n = blocks.len();
    assert!(n >= 3, "{blocks:?}");
    let expired = &blocks[n - 2];
    assert_eq!(expired.event.as_deref(), Some("sidecast.expired"));
    assert_eq!(expired.id, None, "no id: lastEventId must survive");
    let data: Value = serde_json::from_str(expired.data.as_deref().unwrap()).unwrap();
    assert_eq!(data, json!({"reason": "token expired"}));
    let last = &blocks[n - 1];
    assert!(last.retry.is_some() && last.data.is_none(), "{last:?}");
    assert_eq!(
        scrape::metric(
            &sc.admin,
            "sidecast_streams_closed_total{reason=\"expired\"}"
        )
        .await,
        Some(1.0)
    );
    // And the same token no longer opens a stream.
    let r = get_bearer(&sc, "/events?topic=news", &tok).await;
    assert_401(&r, "expired", &tok);
}

const PUBLISH_TOKEN: &str = "static-publish-token-0123456789abcdef";

async fn publish_with(sc: &Sidecast, auth: Option<&str>, body: &Value) -> Response {
    let a = auth.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &a {
        h.push(("Authorization", a));
    }
    request(
        &sc.publish_url(),
        "POST",
        "/publish",
        &h,
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_need_the_static_token_or_a_publish_claim() {
    let (_up, sc) = support::start_with(|o| o.require_publish_token(PUBLISH_TOKEN)).await;
    let mut s = Sse::open_token(
        &sc.public,
        "/events?topic=orders/1",
        &sc.token("u", &["orders/**"]),
    )
    .await;
    s.next_block(WAIT).await.unwrap();
    let one = json!({"topic": "orders/1", "data": "x"});

    let r = publish_with(&sc, None, &one).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = publish_with(&sc, Some("static-publish-token-wrong"), &one).await;
    assert_eq!(r.status, 401);
    assert!(!r.text().contains("static-publish-token-wrong"));

    let r = publish_with(
        &sc,
        Some(PUBLISH_TOKEN),
        &json!({"topic": "orders/1", "data": "static"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        s.next_event().await.unwrap().data.as_deref(),
        Some("static")
    );

    let publisher =
        token(&json!({"sub": "app", "exp": now() + 600, "publish": ["orders/**", "audit"]}));
    let r = publish_with(
        &sc,
        Some(&publisher),
        &json!([
            {"topic": "orders/1", "data": "jwt"},
            {"topics": ["orders/2", "audit"], "data": "both"},
        ]),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(s.next_event().await.unwrap().data.as_deref(), Some("jwt"));

    // One topic not granted: 403 naming it, and nothing of the batch is published.
    let r = publish_with(
        &sc,
        Some(&publisher),
        &json!([
            {"topic": "orders/1", "data": "must not arrive"},
            {"topics": ["orders/1", "news"], "data": "nor this"},
        ]),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("news"), "{}", r.text());
    // A subscriber's token (no publish claim), or an expired publisher: 401.
    let r = publish_with(&sc, Some(&sc.token("u", &["orders/**"])), &one).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let old = token(&json!({"sub": "app", "exp": now() - 60, "publish": ["orders/**"]}));
    let r = publish_with(&sc, Some(&old), &one).await;
    assert_eq!(r.status, 401, "{}", r.text());

    let r = publish_with(
        &sc,
        Some(PUBLISH_TOKEN),
        &json!({"topic": "orders/1", "data": "after"}),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        s.next_event().await.unwrap().data.as_deref(),
        Some("after"),
        "the refused batch published nothing"
    );
    // `/disconnect` and `/topics` take the same tokens.
    let r = request(&sc.publish_url(), "GET", "/topics", &[], b"").await;
    assert_eq!(r.status, 401);
}

fn token_claims(t: &str) -> Value {
    use base64::Engine;
    let payload = t.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecast_token_mints_a_working_token() {
    let (_up, sc) = support::start_with(|o| o.auth = "topics_claim = \"perms\"".into()).await;
    let cfg = sc.dir.join("sidecar.toml");
    let run = scrape::sidecast(
        &[
            "token", "--sub", "auth0|42", "--topic", "news/**", "--topic", "chat", "--ttl", "15m",
        ],
        &cfg,
        &[("SIDECAST_JWT_SECRET", SECRET)],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stdout);
    let tok = lines[0];
    let claims = token_claims(tok);
    assert_eq!(claims["sub"], "auth0|42");
    assert_eq!(claims["perms"], json!(["news/**", "chat"]));
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp.abs_diff(now() + 900) <= 5, "ttl 15m: exp {exp}");

    let mut s = Sse::open_token(&sc.public, "/events?topic=news/x&topic=chat", tok).await;
    assert_eq!(s.status(), 200);
    s.next_block(WAIT).await.unwrap();
    sc.publish_one("news/x", "minted").await;
    assert_eq!(
        s.next_event().await.unwrap().data.as_deref(),
        Some("minted")
    );
    let r = get_bearer(&sc, "/events?topic=news", tok).await;
    assert_eq!(r.status, 403, "news/** does not grant news");

    // No secret: a clear error naming the variable, non-zero, nothing printed.
    let run = scrape::sidecast(&["token", "--sub", "a", "--topic", "x"], &cfg, &[]);
    assert_ne!(run.code, Some(0));
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("SIDECAST_JWT_SECRET"), "{}", run.stderr);
    // A bad pattern and a bad ttl are refused too.
    let run = scrape::sidecast(
        &["token", "--sub", "a", "--topic", "a/**/b"],
        &cfg,
        &[("SIDECAST_JWT_SECRET", SECRET)],
    );
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("--topic"), "{}", run.stderr);
    let run = scrape::sidecast(
        &["token", "--sub", "a", "--topic", "x", "--ttl", "soon"],
        &cfg,
        &[("SIDECAST_JWT_SECRET", SECRET)],
    );
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("--ttl"), "{}", run.stderr);
}
