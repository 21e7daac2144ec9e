//! Proxy routes: a path prefix to another upstream, longest prefix first,
//! matched at a segment boundary, optionally stripped; events paths take
//! only GET, HEAD and OPTIONS, so an app's own `POST /events` reaches it.
use crate::support;

use support::http::request;
use support::sse::Sse;
use support::upstream::Upstream;
use support::{Opts, Sidecast, WAIT};

struct Setup {
    app: Upstream,
    reports: Upstream,
    archive: Upstream,
    sc: Sidecast,
}

async fn setup() -> Setup {
    let app = Upstream::start("app").await;
    let reports = Upstream::start("reports").await;
    let archive = Upstream::start("archive").await;
    let mut opts = Opts::new(&app.url());
    opts.extra = format!(
        "[[routes]]\nprefix = \"/reports\"\nupstream = \"{r}\"\n\
         [[routes]]\nprefix = \"/reports/archive\"\nupstream = \"{a}\"\n\
         [[routes]]\nprefix = \"/files/\"\nupstream = \"{r}\"\n\
         [[routes]]\nprefix = \"/strip\"\nupstream = \"{r}\"\nstrip_prefix = true\n\
         [[routes]]\nprefix = \"/cut/\"\nupstream = \"{a}\"\nstrip_prefix = true\n\
         [[routes]]\npath = \"/reports/{{id}}/events\"\ntopics = [\"reports/{{id}}\"]\n",
        r = reports.url(),
        a = archive.url(),
    );
    let sc = Sidecast::start(&opts);
    Setup {
        app,
        reports,
        archive,
        sc,
    }
}

/// Which upstream answered `method path`, and the URI it saw.
async fn who(sc: &Sidecast, method: &str, path: &str) -> (String, String) {
    let body: &[u8] = if method == "GET" { b"" } else { b"x" };
    let r = request(&sc.public, method, path, &[], body).await;
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    let echo = r.json();
    (
        echo["upstream"].as_str().unwrap_or("?").to_owned(),
        echo["uri"].as_str().unwrap_or("?").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_pick_the_upstream() {
    let s = setup().await;
    for (path, want) in [
        ("/reports", "reports"),
        ("/reports/", "reports"),
        ("/reports/x", "reports"),
        ("/reports?q=1", "reports"),
        ("/reportsX", "app"),
        ("/report", "app"),
        ("/reports/archive", "archive"),
        ("/reports/archive/2024/01", "archive"),
        ("/reports/archiveX", "reports"),
        ("/files/a.txt", "reports"),
        ("/files/", "reports"),
        ("/files", "app"),
        ("/filesX", "app"),
        ("/", "app"),
        ("/other/reports", "app"),
    ] {
        for method in ["GET", "POST"] {
            let (up, uri) = who(&s.sc, method, path).await;
            assert_eq!(up, want, "{method} {path}");
            assert_eq!(uri, path, "{method} {path}: the path is sent as it came");
        }
    }
    assert!(s.reports.hits("/reports/x") >= 2);
    assert_eq!(s.app.hits("/reports/x"), 0);
    assert_eq!(s.archive.hits("/reports/x"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_always_leaves_a_path() {
    let s = setup().await;
    for (path, want_up, want_uri) in [
        ("/strip/x?q=1", "reports", "/x?q=1"),
        ("/strip/a/b", "reports", "/a/b"),
        ("/strip", "reports", "/"),
        ("/strip?q=1", "reports", "/?q=1"),
        ("/strip/", "reports", "/"),
        ("/stripX", "app", "/stripX"),
        ("/cut/a/b?c=d", "archive", "/a/b?c=d"),
        ("/cut/", "archive", "/"),
        ("/cut", "app", "/cut"),
    ] {
        let (up, uri) = who(&s.sc, "GET", path).await;
        assert_eq!((up.as_str(), uri.as_str()), (want_up, want_uri), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_paths_take_only_get_head_and_options() {
    let s = setup().await;
    let token = s.sc.token("alice", &["reports/*", "news"]);

    // An events route under a proxy prefix: GET is sidecast's stream.
    let mut sse = Sse::open_token(&s.sc.public, "/reports/7/events", &token).await;
    assert_eq!(sse.status(), 200, "{:?}", sse.head.text());
    assert_eq!(sse.head.header("content-type"), Some("text/event-stream"));
    sse.next_block(WAIT).await.expect("retry block");
    let id = s.sc.publish_one("reports/7", "ready").await;
    let ev = sse.next_event().await.unwrap();
    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
    assert_eq!(s.reports.hits("/reports/7/events"), 0);

    // HEAD and OPTIONS stay with sidecast too.
    let auth = format!("Bearer {token}");
    let r = request(
        &s.sc.public,
        "HEAD",
        "/reports/7/events",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let r = request(&s.sc.public, "OPTIONS", "/reports/7/events", &[], b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(s.reports.hits("/reports/7/events"), 0);

    // Any other method reaches the route's upstream, or the app.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (up, uri) = who(&s.sc, method, "/reports/7/events").await;
        assert_eq!(
            (up.as_str(), uri.as_str()),
            ("reports", "/reports/7/events")
        );
        let (up, uri) = who(&s.sc, method, "/events?topic=news").await;
        assert_eq!((up.as_str(), uri.as_str()), ("app", "/events?topic=news"));
    }
    assert_eq!(s.reports.hits("/reports/7/events"), 4);
    assert_eq!(s.app.hits("/events"), 4);

    // `[events] path` is an exact match: what is below it is the app's.
    let (up, _) = who(&s.sc, "GET", "/events/history").await;
    assert_eq!(up, "app");
    // A deeper path than the template is not the events route.
    let (up, _) = who(&s.sc, "GET", "/reports/7/events/x").await;
    assert_eq!(up, "reports");
}

/// A proxy route has the same streaming, timeout, forwarding-header and
/// error rules as `[upstream]`, and its own label in metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_routes_follow_the_upstream_rules() {
    let app = Upstream::start("app").await;
    let reports = Upstream::start("reports").await;
    let down_addr = support::conn::closed_port();
    let mut opts = Opts::new(&app.url());
    opts.upstream_extra = "timeout = \"1s\"\ntrusted_proxies = []".into();
    opts.extra = format!(
        "[[routes]]\nprefix = \"/reports\"\nupstream = \"{}\"\nstrip_prefix = true\n\
         [[routes]]\nprefix = \"/down/\"\nupstream = \"http://{down_addr}\"\n",
        reports.url()
    );
    let sc = Sidecast::start(&opts);

    let r = request(&sc.public, "GET", "/down/x", &[], b"").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("sidecast-error"), Some("upstream-unreachable"));

    let r = request(&sc.public, "GET", "/reports/slow?ms=3000", &[], b"").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.header("sidecast-error"), Some("upstream-timeout"));

    let r = request(&sc.public, "GET", "/reports/chunks?n=3&ms=1500", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\n");
    assert_eq!(r.header("x-upstream"), Some("reports"));

    let r = request(
        &sc.public,
        "GET",
        "/reports/fwd",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Real-IP", "203.0.113.9"),
        ],
        b"",
    )
    .await;
    let echo = r.json();
    assert_eq!(echo["upstream"], "reports");
    assert_eq!(
        support::upstream::echoed_header(&echo, "x-forwarded-for"),
        vec!["127.0.0.1"]
    );
    assert!(support::upstream::echoed_header(&echo, "x-real-ip").is_empty());

    // WebSocket through a route.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tcp = tokio::net::TcpStream::connect(&sc.public).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/reports/ws", sc.public), tcp)
            .await
            .expect("handshake through the route");
    ws.send(Message::text("via route")).await.unwrap();
    let got = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("via route"));

    // Proxied requests are counted per route.
    let m = support::http::request(&sc.admin, "GET", "/metrics", &[], b"").await;
    let text = m.text();
    let line = |class: &str, route: &str| {
        text.lines().any(|l| {
            l.contains("proxy_requests")
                && l.contains(&format!("class=\"{class}\""))
                && l.contains(&format!("route=\"{route}\""))
        })
    };
    assert!(line("5xx", "/down/"), "{text}");
    assert!(line("5xx", "/reports"), "{text}");
    assert!(line("2xx", "/reports"), "{text}");
    assert_eq!(
        app.hits("/slow") + app.hits("/chunks") + app.hits("/fwd"),
        0
    );
}

mod props {
    use proptest::prelude::*;
    use sidecast::routes::{prefix_matches, strip};

    fn prefix() -> impl Strategy<Value = String> {
        (
            prop::collection::vec("[a-zA-Z0-9._~%-]{1,6}", 1..4),
            any::<bool>(),
        )
            .prop_map(|(segs, slash)| {
                let mut p = format!("/{}", segs.join("/"));
                if slash {
                    p.push('/');
                }
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn stripped_paths_start_with_a_slash(p in prefix(), rest in "[ -~]{0,20}") {
            let path = format!("{p}{rest}");
            prop_assert!(strip(&p, &path).starts_with('/'));
        }

        #[test]
        fn prefixes_match_at_segment_boundaries(
            p in prefix(),
            tail in "[a-zA-Z0-9]{1,5}",
            more in "(/[a-z]{0,4}){0,3}(\\?[a-z=]{0,6})?",
        ) {
            let bare = p.trim_end_matches('/');
            // `/reports` takes itself, `/reports/` does not.
            prop_assert_eq!(prefix_matches(&p, bare), !p.ends_with('/'));
            // Both take what is below them...
            let below = format!("{bare}/{tail}{more}");
            prop_assert!(prefix_matches(&p, &below));
            // ...and never a longer segment.
            let longer = format!("{bare}{tail}");
            prop_assert!(!prefix_matches(&p, &longer));
            // Stripping keeps what came after the prefix.
            prop_assert_eq!(strip(&p, &below), format!("/{tail}{more}"));
        }
    }
}
