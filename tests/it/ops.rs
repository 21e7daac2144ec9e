//! The admin listener and the logs: `/healthz`, `/readyz` from start-up,
//! `/metrics` read by a Prometheus text parser with every family present
//! from start-up and moving as traffic flows; JSON logs with one access
//! line per proxied request and per stream; `RUST_LOG` over `[log] level`.
use crate::support;
use crate::support::ops;

use ops::Scrape;
use support::http::request;
use support::sse::Sse;
use support::WAIT;

/// Every family the README lists (Operating sidecast, metrics), with its type.
const FAMILIES: [(&str, &str); 16] = [
    ("sidecast_streams_open", "gauge"),
    ("sidecast_events_published_total", "counter"),
    ("sidecast_events_delivered_total", "counter"),
    ("sidecast_streams_closed_total", "counter"),
    ("sidecast_forward_auth_total", "counter"),
    ("sidecast_replays_total", "counter"),
    ("sidecast_resets_total", "counter"),
    ("sidecast_auth_failures_total", "counter"),
    ("sidecast_proxy_requests_total", "counter"),
    ("sidecast_upstream_duration_seconds", "histogram"),
    ("sidecast_delivery_latency_seconds", "histogram"),
    ("sidecast_config_reloads_total", "counter"),
    ("sidecast_publish_errors_total", "counter"),
    ("sidecast_accept_errors_total", "counter"),
    ("sidecast_upstream_body_timeouts_total", "counter"),
    ("sidecast_cluster_connected", "gauge"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_from_start_up() {
    let (_up, sc) = support::start().await;
    let r = request(&sc.admin, "GET", "/readyz", &[], b"").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ready"))
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = request(&sc.admin, "GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200);
    let r = request(&sc.admin, "GET", "/nope", &[], b"").await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_there_from_start_up_in_both_formats() {
    let (_up, sc) = support::start().await;
    let m = Scrape::get(&sc.admin).await;
    assert_eq!(m.content_type, "text/plain; version=0.0.4; charset=utf-8");
    for (name, kind) in FAMILIES {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some(kind),
            "{name} in:\n{}",
            m.text
        );
        let type_line = format!("# TYPE {name} {kind}\n");
        assert!(m.text.contains(&type_line), "{type_line:?}");
    }
    // The reference parsers of Prometheus's Python client read the same
    // families (they name counters without `_total`).
    let want: Vec<(String, String)> = FAMILIES
        .iter()
        .map(|(n, k)| {
            (
                n.strip_suffix("_total").unwrap_or(n).to_owned(),
                k.to_string(),
            )
        })
        .collect();
    if let Some(mut got) = ops::python_families(&m.text, false) {
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want);
    }
    // A scraper that asks for OpenMetrics gets it, valid to the strict
    // OpenMetrics parser.
    let r = request(
        &sc.admin,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
        b"",
    )
    .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE sidecast_events_published counter\n"));
    assert!(text.contains("# UNIT sidecast_upstream_duration_seconds seconds\n"));
    if let Some(mut got) = ops::python_families(&text, true) {
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_streams_events_and_proxied_requests() {
    let (_up, sc) = support::start().await;
    let token = sc.token("alice", &["news"]);
    let before = Scrape::get(&sc.admin).await;
    let open0 = before.value("sidecast_streams_open", &[]);

    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
        s.next_block(WAIT).await.unwrap();
        streams.push(s);
    }
    let m = Scrape::get(&sc.admin).await;
    assert_eq!(m.value("sidecast_streams_open", &[]), open0 + 3.0);
    assert_eq!(
        m.value("sidecast_streams_open", &[("route", "/events")]),
        3.0,
        "{}",
        m.text
    );

    for i in 0..2 {
        sc.publish_one("news", &format!("e{i}")).await;
    }
    for s in &mut streams {
        s.events(2).await;
    }
    let m = Scrape::get(&sc.admin).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| m.value(name, labels) - before.value(name, labels);
    assert_eq!(moved("sidecast_events_published_total", &[]), 2.0);
    assert_eq!(moved("sidecast_events_delivered_total", &[]), 6.0);
    // Fan-out latency: one observation per write, so each stream's two
    // events took one or two; observed once the write returned, which may
    // be just after the client read them.
    let count = "sidecast_delivery_latency_seconds_count";
    support::eventually("every stream's writes are observed", || async {
        Scrape::get(&sc.admin).await.value(count, &[]) - before.value(count, &[]) >= 3.0
    })
    .await;
    let m2 = Scrape::get(&sc.admin).await;
    let writes = m2.value(count, &[]) - before.value(count, &[]);
    assert!(
        (3.0..=6.0).contains(&writes),
        "{writes} writes\n{}",
        m2.text
    );
    let waited = m2.value("sidecast_delivery_latency_seconds_sum", &[])
        - before.value("sidecast_delivery_latency_seconds_sum", &[]);
    assert!(
        waited > 0.0 && waited < writes * WAIT.as_secs_f64(),
        "{waited}"
    );

    drop(streams);
    support::eventually("the gauge goes back", || async {
        Scrape::get(&sc.admin)
            .await
            .value("sidecast_streams_open", &[])
            == open0
    })
    .await;
    let m = Scrape::get(&sc.admin).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| m.value(name, labels) - before.value(name, labels);
    assert_eq!(
        moved("sidecast_streams_closed_total", &[("reason", "client")]),
        3.0
    );

    // Refused credentials, by reason.
    let r = request(&sc.public, "GET", "/events?topic=news", &[], b"").await;
    assert_eq!(r.status, 401);

    // Proxied requests by class, and the upstream latency histogram.
    for (path, status) in [
        ("/api/a", 200),
        ("/status/404", 404),
        ("/status/503", 503),
        ("/slow?ms=300", 200),
    ] {
        assert_eq!(
            request(&sc.public, "GET", path, &[], b"").await.status,
            status
        );
    }
    let m = Scrape::get(&sc.admin).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| m.value(name, labels) - before.value(name, labels);
    assert_eq!(
        moved("sidecast_proxy_requests_total", &[("class", "2xx")]),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(
        moved("sidecast_proxy_requests_total", &[("class", "4xx")]),
        1.0
    );
    assert_eq!(
        moved("sidecast_proxy_requests_total", &[("class", "5xx")]),
        1.0
    );
    assert_eq!(
        m.histogram_count("sidecast_upstream_duration_seconds")
            - before.histogram_count("sidecast_upstream_duration_seconds"),
        4.0
    );
    let slow_bucket = m.bucket("sidecast_upstream_duration_seconds", "0.25");
    assert!(
        slow_bucket <= 3.0,
        "the 300 ms request is above 0.25 s: {slow_bucket}"
    );
    assert!(
        moved("sidecast_auth_failures_total", &[]) >= 1.0,
        "{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_object_per_line_with_access_lines() {
    let (_up, sc) = support::start_with(|o| o.extra = "[log]\nformat = \"json\"\n".into()).await;
    let token = sc.token("alice", &["news"]);
    let r = request(
        &sc.public,
        "GET",
        "/api/x?token=query-token-must-not-be-logged&b=1",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let mut s = Sse::open_token(&sc.public, "/events?topic=news", &token).await;
    s.next_block(WAIT).await.unwrap();
    drop(s);
    // The access line is written after the answer, the closing line after
    // the stream ends: wait for both.
    let log = sc
        .log_with(&["\"proxied\"", "stream opened", "stream closed"])
        .await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l.is_object() && l["level"].is_string() && l["timestamp"].is_string()));
    assert!(!log.contains("query-token-must-not-be-logged"), "{log}");
    let find = |message: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    let access = find("proxied");
    assert_eq!(access.len(), 1, "{log}");
    let a = access[0];
    assert_eq!(
        (a["method"].as_str(), a["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert!(a["uri"].as_str().unwrap().starts_with("/api/x?"), "{a}");
    assert_eq!(a["target"], "sidecast::access");
    assert!(a["duration_ms"].is_u64());
    let opened = find("stream opened");
    let closed = find("stream closed");
    assert_eq!((opened.len(), closed.len()), (1, 1), "{log}");
    assert_eq!(opened[0]["route"], "/events");
    assert_eq!(closed[0]["reason"], "client");
    assert!(closed[0]["duration_ms"].is_u64());
    assert_eq!(opened[0]["stream"], closed[0]["stream"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_wins_over_the_configured_level() {
    let (_up, sc) = support::start_with(|o| {
        // At "error" the start-up line would not even be printed.
        o.extra = "[log]\nlevel = \"error\"\n".into();
        o.env.push(("RUST_LOG".into(), "info".into()));
    })
    .await;
    let r = request(&sc.public, "GET", "/api/visible", &[], b"").await;
    assert_eq!(r.status, 200);
    sc.log_with(&["/api/visible"]).await;
}
