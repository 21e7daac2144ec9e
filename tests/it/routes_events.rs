//! Events routes from path templates: topics from the path and from the
//! token, grants, percent-escapes, replay, long-poll and CORS on a route,
//! `sidecast check`'s refusals and route table, reload, and metrics.
use crate::support;
use crate::support::scrape;

use serde_json::{json, Value};
use support::http::{request, Response};
use support::jwt::{self, now};
use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast, SECRET, WAIT};

const ROUTES: &str = r#"
[[routes]]
path = "/orders/{id}/events"
topics = ["orders/{id}"]

[[routes]]
path = "/me/events"
topics = ["user/{sub}"]

[[routes]]
path = "/teams/events"
topics = ["team/{team}", "announcements"]
"#;

fn token(claims: Value) -> String {
    jwt::hs256(SECRET.as_bytes(), &claims)
}

fn grant(sub: &str, topics: &[&str]) -> String {
    token(json!({"sub": sub, "topics": topics, "exp": now() + 600}))
}

async fn start(up: &Upstream) -> Sidecast {
    let mut o = Opts::new(&up.url());
    o.events = "cors_origins = [\"https://app.example\"]".into();
    o.extra = ROUTES.into();
    Sidecast::start(&o)
}

async fn refused(sc: &Sidecast, path: &str, tok: &str) -> Response {
    let auth = format!("Bearer {tok}");
    request(&sc.public, "GET", path, &[("Authorization", &auth)], b"").await
}

/// Opens a stream and reads past its opening `retry:`.
async fn stream(sc: &Sidecast, path: &str, tok: &str) -> Sse {
    let mut s = Sse::open_token(&sc.public, path, tok).await;
    assert_eq!(s.status(), 200, "{path}");
    assert_eq!(
        s.head.header("content-type"),
        Some("text/event-stream"),
        "{path} is served by sidecast, not proxied"
    );
    let first = s.next_block(WAIT).await.unwrap();
    assert!(first.retry.is_some());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_route_streams_exactly_its_topic() {
    let up = Upstream::start("app").await;
    let sc = start(&up).await;
    let tok = grant("alice", &["orders/*"]);
    let mut s = stream(&sc, "/orders/42/events", &tok).await;
    let a = sc.publish_one("orders/42", "one").await;
    sc.publish_one("orders/43", "other order").await;
    sc.publish_one("orders/42/items", "deeper").await;
    sc.publish_one("orders", "shallower").await;
    let b = sc.publish_one("orders/42", "two").await;
    let got = s.events(2).await;
    let ids: Vec<_> = got.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids, [a, b]);
    assert_eq!(
        scrape::metric(
            &sc.admin,
            "sidecast_streams_open{route=\"/orders/{id}/events\"}"
        )
        .await,
        Some(1.0)
    );

    // No grant for it: 403, counted.
    let r = refused(&sc, "/orders/42/events", &grant("bob", &["news"])).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("orders/42"), "{}", r.text());
    // No token at all: 401.
    let r = request(&sc.public, "GET", "/orders/42/events", &[], b"").await;
    assert_eq!(r.status, 401);
    // Another method, or a path the template does not match, goes upstream.
    let r = request(&sc.public, "POST", "/orders/42/events", &[], b"x").await;
    assert_eq!((r.status, up.hits("/orders/42/events")), (200, 1));
    let r = request(&sc.public, "GET", "/orders/42/events/x", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits("/orders/42/events/x"), 1);
    // HEAD: the same status and headers, no stream.
    let auth = format!("Bearer {tok}");
    let r = request(
        &sc.public,
        "HEAD",
        "/orders/42/events",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_routes_need_no_grant_but_need_the_claim() {
    let up = Upstream::start("app").await;
    let sc = start(&up).await;
    // No grants at all: the route grants the subscriber's own topic.
    let tok = token(json!({"sub": "auth0|42", "exp": now() + 600}));
    let mut s = stream(&sc, "/me/events", &tok).await;
    sc.publish_one("user/auth0%7C43", "not mine").await;
    let mine = sc.publish_one("user/auth0%7C42", "mine").await;
    let ev = s.next_event().await.unwrap();
    assert_eq!(
        (ev.id.as_deref(), ev.data.as_deref()),
        (Some(mine.as_str()), Some("mine"))
    );
    // A user named like a wildcard gets the encoded name, no more.
    let star = token(json!({"sub": "*", "exp": now() + 600}));
    let mut st = stream(&sc, "/me/events", &star).await;
    sc.publish_one("user/auth0%7C42", "for 42").await;
    let own = sc.publish_one("user/%2A", "for star").await;
    assert_eq!(
        st.next_event().await.unwrap().id.as_deref(),
        Some(own.as_str())
    );
    // No sub: 403.
    let r = refused(&sc, "/me/events", &token(json!({"exp": now() + 600}))).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // A {team} claim: without it 403 naming it; with it, the team's topic
    // and the route's fixed topic (which needs a grant).
    let r = refused(&sc, "/teams/events", &grant("a", &["announcements"])).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("team"), "{}", r.text());
    let no_grant = token(json!({"sub": "a", "team": "red", "exp": now() + 600}));
    let r = refused(&sc, "/teams/events", &no_grant).await;
    assert_eq!(
        r.status,
        403,
        "a fixed topic still needs a grant: {}",
        r.text()
    );
    assert!(r.text().contains("announcements"), "{}", r.text());
    let tok =
        token(json!({"sub": "a", "team": "red", "topics": ["announcements"], "exp": now() + 600}));
    let mut s = stream(&sc, "/teams/events", &tok).await;
    sc.publish_one("team/blue", "blue").await;
    let a = sc.publish_one("team/red", "red").await;
    let b = sc.publish_one("announcements", "all").await;
    let ids: Vec<_> = s
        .events(2)
        .await
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(ids, [a, b]);
    // A claim that is not a string does not fill a template.
    let tok = token(
        json!({"sub": "a", "team": ["red"], "topics": ["announcements"], "exp": now() + 600}),
    );
    let r = refused(&sc, "/teams/events", &tok).await;
    assert_eq!(r.status, 403, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_escapes_are_upper_cased_and_bad_segments_refused() {
    let up = Upstream::start("app").await;
    let sc = start(&up).await;
    let tok = grant("a", &["orders/*"]);
    let mut s = stream(&sc, "/orders/a%2fb/events", &tok).await;
    let id = sc.publish_one("orders/a%2Fb", "escaped").await;
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(id.as_str())
    );
    // The topic is the same however the escape is written.
    let mut t = stream(&sc, "/orders/a%2Fb/events", &tok).await;
    let id = sc.publish_one("orders/a%2fb", "again").await;
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        t.next_event().await.unwrap().id.as_deref(),
        Some(id.as_str())
    );
    // A segment that makes no topic: 400.
    let r = refused(&sc, "/orders/a%2/events", &tok).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = refused(&sc, "/orders/a!b/events", &tok).await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_poll_and_cors_work_on_routes() {
    let up = Upstream::start("app").await;
    let sc = start(&up).await;
    let tok = grant("a", &["orders/*"]);
    let e1 = sc.publish_one("orders/7", "1").await;
    let e2 = sc.publish_one("orders/7", "2").await;
    sc.publish_one("orders/8", "elsewhere").await;
    let e3 = sc.publish_one("orders/7", "3").await;

    let auth = format!("Bearer {tok}");
    let mut s = Sse::open(
        &sc.public,
        "/orders/7/events",
        &[("Authorization", &auth), ("Last-Event-ID", &e1)],
    )
    .await;
    assert_eq!(s.status(), 200);
    let ids: Vec<_> = s
        .events(2)
        .await
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(ids, [e2.clone(), e3.clone()]);

    let r = refused(
        &sc,
        &format!("/orders/7/events?mode=poll&lastEventId={e1}"),
        &tok,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [e2, e3.clone()]);
    assert_eq!(r.header("last-event-id"), Some(e3.as_str()));

    let r = request(
        &sc.public,
        "OPTIONS",
        "/orders/7/events",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Last-Event-ID"));
    let s = Sse::open(
        &sc.public,
        "/orders/7/events",
        &[("Authorization", &auth), ("Origin", "https://app.example")],
    )
    .await;
    assert_eq!(
        s.head.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        s.head.header("access-control-allow-credentials"),
        Some("true")
    );
    let r = request(
        &sc.public,
        "GET",
        "/orders/7/events",
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_route_while_streams_go_on() {
    let up = Upstream::start("app").await;
    let sc = start(&up).await;
    let tok = grant("a", &["orders/*", "news/*"]);
    let mut s = stream(&sc, "/orders/1/events", &tok).await;
    // Before the reload, /news/1/events is the app's.
    let r = refused(&sc, "/news/1/events", &tok).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(up.hits("/news/1/events"), 1);

    let cfg = sc.dir.join("sidecar.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    scrape::replace_file(
        &cfg,
        format!("{text}\n[[routes]]\npath = \"/news/{{id}}/events\"\ntopics = [\"news/{{id}}\"]\n"),
    );
    scrape::metric_reaches(
        &sc.admin,
        "sidecast_config_reloads_total{result=\"ok\"}",
        1.0,
    )
    .await;
    let mut n = stream(&sc, "/news/1/events", &tok).await;
    let a = sc.publish_one("orders/1", "old route").await;
    let b = sc.publish_one("news/1", "new route").await;
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(a.as_str())
    );
    assert_eq!(
        n.next_event().await.unwrap().id.as_deref(),
        Some(b.as_str())
    );
    assert_eq!(
        scrape::metric(
            &sc.admin,
            "sidecast_streams_open{route=\"/news/{id}/events\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(up.hits("/news/1/events"), 1, "no longer proxied");

    // A bad rewrite is refused; the routes in force stay.
    scrape::replace_file(&cfg, format!("{text}\n[[routes]]\npath = \"/x/{{id}}\"\n"));
    scrape::metric_reaches(
        &sc.admin,
        "sidecast_config_reloads_total{result=\"failed\"}",
        1.0,
    )
    .await;
    let _n2 = stream(&sc, "/news/2/events", &tok).await;
    let c = sc.publish_one("orders/1", "still").await;
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(c.as_str())
    );
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_bad_routes_naming_each() {
    let bad = r#"
[[routes]]
prefix = "/a/"
path = "/a/{id}"
topics = ["a/{id}"]
upstream = "http://127.0.0.1:4000"

[[routes]]
strip_prefix = true

[[routes]]
path = "/orders/{id}/events"
topics = ["orders/{id}"]

[[routes]]
path = "/orders/{other}/events"
topics = ["x/{other}"]

[[routes]]
path = "/events"
topics = ["y"]

[[routes]]
path = "/me/events"
topics = ["user/{sub}"]

[[routes]]
prefix = "/reports/"
upstream = "ftp://127.0.0.1:4000"

[[routes]]
prefix = "/more/"
upstream = "not a url"

[[routes]] # empty
"#;
    let dir = support::temp_dir("badroutes");
    let cfg = dir.join("sidecar.toml");
    let mut o = Opts::new("http://127.0.0.1:9");
    o.auth = "required = false".into();
    o.extra = bad.into();
    let text = o.toml();
    std::fs::write(&cfg, &text).unwrap();
    let run = scrape::sidecast(&["check"], &cfg, &[("SIDECAST_JWT_SECRET", SECRET)]);
    assert_ne!(run.code, Some(0));
    let err = &run.stderr;
    let f = cfg.display().to_string();
    // Each problem on its own line: FILE:LINE:COL: KEY: message.
    let expect = [
        (
            "routes[0]",
            line_of(&text, "prefix = \"/a/\"") - 1,
            "either",
        ),
        (
            "routes[1].prefix",
            line_of(&text, "strip_prefix = true") - 1,
            "needs prefix",
        ),
        (
            "routes[1].upstream",
            line_of(&text, "strip_prefix = true") - 1,
            "needs upstream",
        ),
        (
            "routes[3].path",
            line_of(&text, "/orders/{other}/events"),
            "same paths",
        ),
        (
            "routes[4].path",
            line_of(&text, "path = \"/events\""),
            "same paths",
        ),
        (
            "routes[5].topics",
            line_of(&text, "user/{sub}"),
            "auth.required = false",
        ),
        ("routes[6].upstream", line_of(&text, "ftp://"), "only http"),
        (
            "routes[7].upstream",
            line_of(&text, "not a url"),
            "not a URL",
        ),
        ("routes[8]", line_of(&text, "# empty"), "neither"),
    ];
    for (key, line, says) in expect {
        let found = err
            .lines()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("no error for {key}:\n{err}"));
        let prefix = format!("{f}:");
        let rest = found
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{found}"));
        let mut parts = rest.splitn(3, ':');
        let l: usize = parts.next().unwrap().parse().unwrap();
        let c: usize = parts.next().unwrap().parse().unwrap();
        assert!(c >= 1, "{found}");
        assert_eq!(l, line, "{key}: {found}");
        assert!(found.contains(says), "{key}: {found}");
    }
    for key in ["routes[2]:", "routes[2].path:", "routes[2].topics:"] {
        assert!(
            !err.contains(&format!(": {key}")),
            "a good route is blamed: {err}"
        );
    }
    assert_eq!(
        err.matches("problem(s)").count(),
        1,
        "one run reports all: {err}"
    );
    assert!(run.stdout.is_empty() || !run.stdout.contains("valid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_route_table_in_match_order() {
    let dir = support::temp_dir("table");
    let cfg = dir.join("sidecar.toml");
    let mut o = Opts::new("http://127.0.0.1:3000");
    o.extra = format!(
        "{ROUTES}\n[[routes]]\nprefix = \"/r\"\nupstream = \"http://127.0.0.1:4000\"\n\
         [[routes]]\nprefix = \"/r/long/\"\nupstream = \"http://127.0.0.1:4001\"\nstrip_prefix = true\n"
    );
    std::fs::write(&cfg, o.toml()).unwrap();
    let run = scrape::sidecast(&["check"], &cfg, &[("SIDECAST_JWT_SECRET", SECRET)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = &run.stdout;
    let order = [
        "/orders/{id}/events",
        "/me/events",
        "/teams/events",
        "events /events",
        "/r/long/",
        "/r*",
        "http://127.0.0.1:3000",
    ];
    let mut at = 0;
    for want in order {
        let pos = out[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want} missing or out of order in:\n{out}"));
        at += pos + want.len();
    }
    assert!(
        out.contains("orders/{id}") && out.contains("user/{sub}"),
        "{out}"
    );
}
