//! The app in control, single node: `POST /disconnect`, `GET /topics`,
//! history on a first subscribe (`earliest`, `last=N`) and history policies
//! per topic pattern, with a reload.
use crate::support;

use serde_json::json;
use support::delivery::{ids_of, opening, publish_json, publish_with, streams_on, topic_info};
use support::http::Response;
use support::sse::Sse;
use support::upstream::Upstream;
use support::{eventually, Opts, Sidecast, WAIT};

async fn start(extra: &str) -> (Upstream, Sidecast) {
    support::start_with(|o| o.extra = extra.to_owned()).await
}

async fn open(sc: &Sidecast, user: &str, path: &str, headers: &[(&str, &str)]) -> Sse {
    let token = sc.token(
        user,
        &["x", "y", "orders/*", "t", "user/*", "chat", "prices/*"],
    );
    let auth = format!("Bearer {token}");
    let mut h = vec![("Authorization", auth.as_str())];
    h.extend_from_slice(headers);
    let mut s = Sse::open(&sc.public, path, &h).await;
    opening(&mut s).await;
    s
}

async fn disconnect(sc: &Sidecast, body: &str) -> Response {
    publish_with(
        sc,
        "POST",
        "/disconnect",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

/// Reads a stream to its end: it must be one `sidecast.disconnect` with
/// this data, and nothing after.
async fn ends_with_disconnect(s: &mut Sse, reason: &str, reconnect: bool) {
    let rest = s.until_end(WAIT).await;
    let events: Vec<_> = rest.iter().filter(|b| b.data.is_some()).collect();
    assert_eq!(events.len(), 1, "{rest:?}");
    assert_eq!(events[0].event.as_deref(), Some("sidecast.disconnect"));
    assert_eq!(events[0].id, None);
    let data: serde_json::Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(data, json!({"reason": reason, "reconnect": reconnect}));
    // A jittered `retry:` spreads the return of every stream cut at once.
    assert!(rest.iter().any(|b| b.retry.is_some()), "{rest:?}");
    assert!(s.eof, "the stream is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_by_user_by_topic_and_by_both() {
    let (_up, sc) = start("").await;
    let mut a1 = open(&sc, "alice", "/events?topic=x", &[]).await;
    let mut a2 = open(&sc, "alice", "/events?topic=y&topic=x", &[]).await;
    let mut bob = open(&sc, "bob", "/events?topic=x", &[]).await;
    let r = disconnect(
        &sc,
        r#"{"user": "alice", "reason": "logged out", "reconnect": false}"#,
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"closed": 2})));
    ends_with_disconnect(&mut a1, "logged out", false).await;
    ends_with_disconnect(&mut a2, "logged out", false).await;
    let id = sc.publish_one("x", "bob still listens").await;
    assert_eq!(bob.next_event().await.unwrap().id, Some(id));
    eventually("alice's streams are gone", || async {
        streams_on(&sc, "y").await == 0
    })
    .await;
    let r = disconnect(&sc, r#"{"user": "alice"}"#).await;
    assert_eq!(r.json(), json!({"closed": 0}));

    // By topic, with the defaults.
    let mut on_y = open(&sc, "carol", "/events?topic=y", &[]).await;
    let mut on_x = open(&sc, "carol", "/events?topic=x", &[]).await;
    let r = disconnect(&sc, r#"{"topic": "y"}"#).await;
    assert_eq!(r.json(), json!({"closed": 1}));
    ends_with_disconnect(&mut on_y, "disconnected", true).await;

    // By both: a stream must match the user and the topic.
    let mut carol_y = open(&sc, "carol", "/events?topic=y", &[]).await;
    let r = disconnect(&sc, r#"{"user": "carol", "topic": "x", "reason": "moved"}"#).await;
    assert_eq!(r.json(), json!({"closed": 1}));
    ends_with_disconnect(&mut on_x, "moved", true).await;
    let id = sc.publish_one("y", "carol on y").await;
    assert_eq!(carol_y.next_event().await.unwrap().id, Some(id.clone()));
    let id = sc.publish_one("x", "bob").await;
    assert_eq!(bob.next_event().await.unwrap().id, Some(id));
    let r = disconnect(&sc, r#"{"topic": "x"}"#).await;
    assert_eq!(r.json(), json!({"closed": 1}));
    ends_with_disconnect(&mut bob, "disconnected", true).await;
    eventually("five streams counted as disconnected", || async {
        support::delivery::metric(&sc, "sidecast_streams_closed_total{reason=\"disconnect\"}").await
            == 5.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_disconnect_bodies_name_the_field() {
    let (_up, sc) = start("").await;
    let mut s = open(&sc, "alice", "/events?topic=x", &[]).await;
    for (body, field) in [
        ("{", "body"),
        ("[]", "body"),
        ("\"alice\"", "body"),
        ("{}", "user"),
        (r#"{"user": 5}"#, "user"),
        (r#"{"user": ""}"#, "user"),
        (r#"{"topic": "a b"}"#, "topic"),
        (r#"{"topic": 1}"#, "topic"),
        (r#"{"user": "alice", "reason": 5}"#, "reason"),
        (r#"{"user": "alice", "reconnect": "no"}"#, "reconnect"),
        (r#"{"user": "alice", "everyone": true}"#, "everyone"),
    ] {
        let r = disconnect(&sc, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["field"], field, "{body}: {}", r.text());
    }
    let r = publish_with(
        &sc,
        "POST",
        "/disconnect",
        &[("Content-Type", "text/plain")],
        br#"{"user": "alice"}"#,
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(streams_on(&sc, "x").await, 1, "nothing was closed");
    let id = sc.publish_one("x", "still open").await;
    assert_eq!(s.next_event().await.unwrap().id, Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_info_rises_and_falls_with_streams_and_history() {
    let (_up, sc) = start("").await;
    assert_eq!(topic_info(&sc, "orders/42").await.0, 404);
    let s1 = open(&sc, "alice", "/events?topic=orders/42", &[]).await;
    let s2 = open(&sc, "bob", "/events?topic=orders/42&topic=x", &[]).await;
    let (status, v) = topic_info(&sc, "orders/42").await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"topic": "orders/42", "streams": 2, "last_id": null, "held": 0})
    );
    let a = sc.publish_one("orders/42", "1").await;
    let b = sc.publish_one("orders/42", "2").await;
    assert_ne!(a, b);
    let (_, v) = topic_info(&sc, "orders/42").await;
    assert_eq!(
        v,
        json!({"topic": "orders/42", "streams": 2, "last_id": b, "held": 2})
    );
    let list = publish_with(&sc, "GET", "/topics", &[], b"").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json(),
        json!({"topics": [
            {"topic": "orders/42", "streams": 2, "last_id": b, "held": 2},
            {"topic": "x", "streams": 1, "last_id": null, "held": 0},
        ]})
    );
    drop(s1);
    eventually("one stream left", || async {
        streams_on(&sc, "orders/42").await == 1
    })
    .await;
    drop(s2);
    eventually("no stream left", || async {
        streams_on(&sc, "orders/42").await == 0
    })
    .await;
    let (status, v) = topic_info(&sc, "orders/42").await;
    assert_eq!(
        (status, &v["held"]),
        (200, &json!(2)),
        "history keeps the topic: {v}"
    );
    assert_eq!(topic_info(&sc, "x").await.0, 404, "nothing left of x");
    let list = publish_with(&sc, "GET", "/topics", &[], b"").await.json();
    assert_eq!(list["topics"].as_array().unwrap().len(), 1, "{list}");
    // Names: bad ones are 400, percent-encoding is decoded once.
    for bad in ["a%20b", "a//b", "a/*", "", "%zz"] {
        let (status, v) = topic_info(&sc, bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["field"], "topic");
    }
    sc.publish_one("user/a", "slash").await;
    let (status, v) = topic_info(&sc, "user%2Fa").await;
    assert_eq!((status, &v["topic"]), (200, &json!("user/a")));
    let id = sc.publish_one("user/auth0%7C42", "escaped").await;
    let (status, v) = topic_info(&sc, "user/auth0%257C42").await;
    assert_eq!((status, &v["last_id"]), (200, &json!(id)));
    let (status, _) = topic_info(&sc, "user/auth0%7C42").await;
    assert_eq!(
        status, 400,
        "decoded once, that names user/auth0|42: not a topic name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_and_last_n_replay_then_live_for_the_user() {
    let (_up, sc) = start("").await;
    let mut alice_ids = Vec::new();
    for i in 0..5 {
        let r = publish_json(
            &sc,
            &json!([
                {"topic": "t", "data": format!("all {i}")},
                {"topic": "t", "data": format!("bob {i}"), "user": "bob"},
            ]),
        )
        .await;
        alice_ids.push(ids_of(&r)[0].clone());
    }
    for (path, header) in [
        ("/events?topic=t&lastEventId=earliest", None),
        ("/events?topic=t", Some(("Last-Event-ID", "earliest"))),
    ] {
        let h: Vec<(&str, &str)> = header.into_iter().collect();
        let mut s = open(&sc, "alice", path, &h).await;
        let got: Vec<String> = s
            .events(alice_ids.len())
            .await
            .into_iter()
            .map(|b| b.id.unwrap())
            .collect();
        assert_eq!(got, alice_ids, "{path}");
        let live = sc.publish_one("t", "live").await;
        assert_eq!(s.next_event().await.unwrap().id, Some(live.clone()));
        alice_ids.push(live);
    }
    let mut s = open(&sc, "alice", "/events?topic=t&last=3", &[]).await;
    let got: Vec<String> = s
        .events(3)
        .await
        .into_iter()
        .map(|b| b.id.unwrap())
        .collect();
    assert_eq!(got, alice_ids[alice_ids.len() - 3..].to_vec());
    let live = sc.publish_one("t", "live").await;
    assert_eq!(s.next_event().await.unwrap().id, Some(live));
    let mut bob = open(&sc, "bob", "/events?topic=t&last=3", &[]).await;
    let got: Vec<String> = bob
        .events(3)
        .await
        .into_iter()
        .map(|b| b.data.unwrap())
        .collect();
    assert_eq!(got, ["live", "live", "live"]);
    let mut bob = open(&sc, "bob", "/events?topic=t&last=4", &[]).await;
    let got: Vec<String> = bob
        .events(4)
        .await
        .into_iter()
        .map(|b| b.data.unwrap())
        .collect();
    assert_eq!(got, ["bob 4", "live", "live", "live"]);
    let r = support::http::get(
        &sc.public,
        "/events?topic=t&last=many",
        Some(&sc.token("a", &["t"])),
    )
    .await;
    assert_eq!(r.status, 400);
}

fn policy_config(up: &str, size: usize) -> String {
    let mut opts = Opts::new(up);
    opts.extra = format!("[[history]]\npattern = \"prices/**\"\nsize = {size}\n");
    opts.toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_policies_per_pattern_and_reload() {
    let up = Upstream::start("app").await;
    let dir = support::temp_dir("policy");
    let cfg = dir.join("sidecar.toml");
    std::fs::write(&cfg, policy_config(&up.url(), 1)).unwrap();
    let sc = Sidecast::start_file(&cfg, &Opts::new(&up.url()).env);
    for round in 0..11 {
        let batch: Vec<_> = (0..100)
            .map(|i| json!({"topic": "chat", "data": format!("{round}.{i}")}))
            .collect();
        ids_of(&publish_json(&sc, &json!(batch)).await);
    }
    for i in 0..5 {
        sc.publish_one("prices/eur", &format!("price {i}")).await;
    }
    assert_eq!(topic_info(&sc, "chat").await.1["held"], 1000);
    assert_eq!(topic_info(&sc, "prices/eur").await.1["held"], 1);
    let mut s = open(
        &sc,
        "alice",
        "/events?topic=prices/eur&lastEventId=earliest",
        &[],
    )
    .await;
    assert_eq!(
        s.next_event().await.unwrap().data.as_deref(),
        Some("price 4")
    );
    drop(s);

    std::fs::write(&cfg, policy_config(&up.url(), 3)).unwrap();
    let before =
        support::delivery::metric(&sc, "sidecast_config_reloads_total{result=\"ok\"}").await;
    sc.signal("HUP");
    eventually("the reload", || async {
        support::delivery::metric(&sc, "sidecast_config_reloads_total{result=\"ok\"}").await
            > before
    })
    .await;
    assert_eq!(
        topic_info(&sc, "prices/eur").await.1["held"],
        1,
        "held events stay"
    );
    for i in 5..10 {
        sc.publish_one("prices/eur", &format!("price {i}")).await;
    }
    assert_eq!(topic_info(&sc, "prices/eur").await.1["held"], 3);
    let mut s = open(
        &sc,
        "alice",
        "/events?topic=prices/eur&lastEventId=earliest",
        &[],
    )
    .await;
    let got: Vec<String> = s
        .events(3)
        .await
        .into_iter()
        .map(|b| b.data.unwrap())
        .collect();
    assert_eq!(got, ["price 7", "price 8", "price 9"]);
    assert_eq!(topic_info(&sc, "chat").await.1["held"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_poll_is_told_of_a_disconnect() {
    let (_up, sc) = start("").await;
    let token = sc.token("alice", &["x"]);
    let mark = sc.publish_one("x", "mark").await;
    let waiting = {
        let (public, token) = (sc.public.clone(), token.clone());
        tokio::spawn(async move {
            let auth = format!("Bearer {token}");
            support::http::request(
                &public,
                "GET",
                &format!("/events?topic=x&mode=poll&lastEventId={mark}"),
                &[("Authorization", &auth)],
                b"",
            )
            .await
        })
    };
    eventually("the poll waits", || async {
        streams_on(&sc, "x").await == 1
    })
    .await;
    let r = disconnect(
        &sc,
        r#"{"user": "alice", "reason": "banned", "reconnect": false}"#,
    )
    .await;
    assert_eq!(r.json(), json!({"closed": 1}));
    let r = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    let items = r.json();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
    assert_eq!(items[0]["event"], "sidecast.disconnect");
    let data: serde_json::Value = serde_json::from_str(items[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"reason": "banned", "reconnect": false}));
    let id = items[0]["id"].as_str().expect("the item has an id");
    assert_eq!(r.header("last-event-id"), Some(id), "{:?}", r.headers);
}
