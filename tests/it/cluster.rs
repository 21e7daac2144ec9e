//! Cluster mode with a real redis-server and three sidecast processes.
use crate::support;

use serde_json::json;
use support::redis::{all_connected, cluster, replica, Redis};
use support::sse::Sse;
use support::{eventually, http, Opts, Sidecast};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_replica_and_replay_anywhere() {
    let Some((_redis, _up, [a, b, c])) = cluster(false).await else {
        return;
    };
    let alice = a.token("alice", &["room/**"]);
    let mut on_b = Sse::open_token(&b.public, "/events?topic=room/1", &alice).await;
    let mut on_c = Sse::open_token(&c.public, "/events?topic=room/1", &alice).await;
    let mut on_a = Sse::open_token(&a.public, "/events?topic=room/1", &alice).await;
    for s in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(s.next_block(support::WAIT).await.unwrap().retry, Some(3000));
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(a.publish_one("room/1", &format!("e{i}")).await);
    }
    for s in [&mut on_b, &mut on_c, &mut on_a] {
        let got = s.events(5).await;
        let got_ids: Vec<_> = got.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(got_ids, ids, "same ids, same order on every replica");
    }
    // The subscriber on A goes away; events follow; it comes back on C.
    let last_seen = ids.last().unwrap().clone();
    drop(on_a);
    let mut missed = Vec::new();
    for i in 5..9 {
        missed.push(b.publish_one("room/1", &format!("e{i}")).await);
    }
    let auth = format!("Bearer {alice}");
    let mut back = Sse::open(
        &c.public,
        "/events?topic=room/1",
        &[("Authorization", &auth), ("Last-Event-ID", &last_seen)],
    )
    .await;
    assert_eq!(
        back.next_block(support::WAIT).await.unwrap().retry,
        Some(3000)
    );
    let replayed: Vec<_> = back
        .events(4)
        .await
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(
        replayed, missed,
        "exactly the missed events, from another replica"
    );
    let live = a.publish_one("room/1", "live").await;
    assert_eq!(back.next_event().await.unwrap().id.unwrap(), live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_targeting_grants_disconnect_and_counts_across_replicas() {
    let Some((_redis, _up, [a, b])) = cluster(false).await else {
        return;
    };
    let alice = a.token("alice", &["inbox"]);
    let bob = a.token("bob", &["inbox"]);
    let mut al = Sse::open_token(&b.public, "/events?topic=inbox", &alice).await;
    let mut bo = Sse::open_token(&a.public, "/events?topic=inbox", &bob).await;
    al.next_block(support::WAIT).await.unwrap();
    bo.next_block(support::WAIT).await.unwrap();
    // A grant on one replica is checked on every replica alike.
    let nogrant = a.token("carol", &["other"]);
    assert_eq!(
        Sse::open_token(&b.public, "/events?topic=inbox", &nogrant)
            .await
            .status(),
        403
    );

    let (s, _) = a
        .publish(json!({"topic": "inbox", "data": "for alice", "user": "alice"}))
        .await;
    assert_eq!(s, 202);
    let all = a.publish_one("inbox", "for all").await;
    assert_eq!(
        al.next_event().await.unwrap().data.as_deref(),
        Some("for alice")
    );
    assert_eq!(
        al.next_event().await.unwrap().id.as_deref(),
        Some(all.as_str())
    );
    let first_for_bob = bo.next_event().await.unwrap();
    assert_eq!(
        first_for_bob.id.as_deref(),
        Some(all.as_str()),
        "bob never sees alice's event"
    );

    // Topic counts: this replica's streams and the cluster's.
    let info = http::request(&a.publish_url(), "GET", "/topics/inbox", &[], b"")
        .await
        .json();
    assert_eq!(info["streams"], 1);
    assert_eq!(info["cluster_streams"], 2);

    // A disconnect on replica A closes alice's streams on every replica,
    // and counts them all: one here, one on replica B.
    let mut al_a = Sse::open_token(&a.public, "/events?topic=inbox", &alice).await;
    al_a.next_block(support::WAIT).await.unwrap();
    let r = http::request(
        &a.publish_url(),
        "POST",
        "/disconnect",
        &[("Content-Type", "application/json")],
        br#"{"user":"alice","reason":"logout","reconnect":false}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["closed"], 2, "the sum over the replicas");
    for (on, s) in [("B", &mut al), ("A", &mut al_a)] {
        let rest = s.until_end(support::WAIT).await;
        let d = rest
            .iter()
            .find(|b| b.event.as_deref() == Some("sidecast.disconnect"))
            .unwrap_or_else(|| panic!("no disconnect event on replica {on}: {rest:?}"));
        let data: serde_json::Value = serde_json::from_str(d.data.as_deref().unwrap()).unwrap();
        assert_eq!(data, json!({"reason": "logout", "reconnect": false}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_refuses_publish_then_resumes_without_loss() {
    let Some((mut redis, up, [a, b])) = cluster(true).await else {
        return;
    };
    let tok = a.token("u", &["t"]);
    let mut s = Sse::open_token(&b.public, "/events?topic=t", &tok).await;
    s.next_block(support::WAIT).await.unwrap();
    let before = a.publish_one("t", "accepted before the outage").await;
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(before.as_str())
    );

    redis.kill();
    let r = http::request(
        &a.publish_url(),
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        br#"{"topic":"t","data":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "cluster_unavailable");
    let admin = a.admin.clone();
    eventually("readyz shows the cluster disconnected", || {
        let admin = admin.clone();
        async move {
            let r = http::request(&admin, "GET", "/readyz", &[], b"").await;
            r.status == 200 && r.json()["cluster"] == "disconnected"
        }
    })
    .await;
    let metrics = http::request(&a.admin, "GET", "/metrics", &[], b"")
        .await
        .text();
    assert!(
        metrics.contains("sidecast_cluster_connected 0"),
        "{metrics}"
    );

    redis.restart();
    all_connected(&[&a, &b]).await;
    let after = a.publish_one("t", "after").await;
    assert_eq!(
        s.next_event().await.unwrap().id.as_deref(),
        Some(after.as_str()),
        "the open stream goes on"
    );
    // Nothing accepted before the outage is lost: a fresh replica replays it.
    let c = replica(&up, &redis);
    let auth = format!("Bearer {tok}");
    let mut e = Sse::open(
        &c.public,
        "/events?topic=t&lastEventId=earliest",
        &[("Authorization", &auth)],
    )
    .await;
    e.next_block(support::WAIT).await.unwrap();
    let got: Vec<_> = e
        .events(2)
        .await
        .into_iter()
        .map(|x| x.id.unwrap())
        .collect();
    assert_eq!(got, vec![before, after]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_loss_gives_a_reset_not_a_wrong_replay() {
    let Some((mut redis, _up, [a])) = cluster(false).await else {
        return;
    };
    let old = a.publish_one("t", "before the loss").await;
    redis.restart(); // no persistence: the data set is gone
    all_connected(&[&a]).await;
    let newer = a.publish_one("t", "new data set").await;
    assert_ne!(
        old.rsplit_once('-').unwrap().0,
        newer.rsplit_once('-').unwrap().0,
        "a new epoch"
    );
    let tok = a.token("u", &["t"]);
    let auth = format!("Bearer {tok}");
    let mut s = Sse::open(
        &a.public,
        "/events?topic=t",
        &[("Authorization", &auth), ("Last-Event-ID", &old)],
    )
    .await;
    let blocks = [
        s.next_block(support::WAIT).await.unwrap(),
        s.next_block(support::WAIT).await.unwrap(),
    ];
    let reset = &blocks[1];
    assert_eq!(reset.event.as_deref(), Some("sidecast.reset"));
    let data: serde_json::Value = serde_json::from_str(reset.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["last_event_id"], old);
    assert_eq!(
        reset.id.as_deref(),
        Some(newer.as_str()),
        "the reset carries the newest id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_global_and_keys_share_the_hash_tag() {
    let Some((redis, _up, [a, b])) = cluster(false).await else {
        return;
    };
    let body = json!({"topic": "t", "data": "once", "idempotency_key": "order-42-paid"});
    let (s1, r1) = a.publish(body.clone()).await;
    let (s2, r2) = b.publish(body).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(
        r1["ids"], r2["ids"],
        "a retry on another replica answers the first id"
    );
    let hdr = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "req-7"),
    ];
    let x = http::request(
        &a.publish_url(),
        "POST",
        "/publish",
        &hdr,
        br#"[{"topic":"t","data":"1"},{"topic":"t","data":"2"}]"#,
    )
    .await;
    let y = http::request(
        &b.publish_url(),
        "POST",
        "/publish",
        &hdr,
        br#"[{"topic":"t","data":"1"},{"topic":"t","data":"2"}]"#,
    )
    .await;
    assert_eq!(x.json()["ids"], y.json()["ids"]);
    let len = redis.command(&["XLEN", "{sidecast}:log"]);
    assert_eq!(len.trim(), ":3", "published once each: {len}");
    let keys = redis.command(&["KEYS", "*"]);
    let names: Vec<&str> = keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    assert!(!names.is_empty());
    for k in names {
        assert!(
            k.starts_with("{sidecast}:"),
            "every key shares the hash tag: {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_holds_the_202_until_a_redis_replica_has_the_event() {
    let Some(primary) = Redis::required(false) else {
        return;
    };
    let (_up, sc) =
        support::start_with(|o| o.extra = primary.cluster_toml("wait_replicas = 1\n")).await;
    all_connected(&[&sc]).await;
    // No Redis replica yet: WAIT cannot be satisfied, so no 202.
    let r = http::request(
        &sc.publish_url(),
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        br#"{"topic":"t","data":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("wait_replicas"), "{}", r.text());
    // With a replica attached, the publish is acknowledged.
    let replica = Redis::replica_of(&primary);
    eventually("the replica is in sync", || async {
        primary
            .command(&["INFO", "replication"])
            .contains("connected_slaves:1")
    })
    .await;
    // The first WAIT after a full sync may still miss the replica's ack.
    let mut accepted = None;
    for _ in 0..5 {
        let (s, body) = sc
            .publish(
                json!({"topic": "t", "data": "acknowledged-by-a-replica", "idempotency_key": "k"}),
            )
            .await;
        if s == 202 {
            accepted = Some(body);
            break;
        }
    }
    let body = accepted.expect("a 202 once a replica acknowledges");
    let id = body["ids"][0].as_str().unwrap().to_owned();
    // The accepted event itself is on the replica. (The refused publish
    // was appended to the primary's log before its WAIT, so the log's
    // length on the replica says nothing about the one acknowledged.)
    let on_replica = replica.command(&["XRANGE", "{sidecast}:log", "-", "+"]);
    assert!(
        on_replica.contains("acknowledged-by-a-replica"),
        "the replica does not hold the acknowledged event {id}: {on_replica}"
    );
}

/// "Not ready until local history is loaded from Redis": a replica that
/// starts while Redis does not answer serves its admin listener with
/// `/readyz` 503, turns 200 only after Redis answers again, and then
/// already holds every event of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_backfill_from_redis() {
    let Some((redis, up, [a])) = cluster(false).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(a.publish_one("backfill/1", &format!("e{i}")).await);
    }

    // Redis stops answering every client for a while: a replica started
    // now cannot read the log.
    const PAUSE: std::time::Duration = std::time::Duration::from_secs(5);
    let paused = std::time::Instant::now();
    let reply = redis.command(&["CLIENT", "PAUSE", &PAUSE.as_millis().to_string(), "ALL"]);
    assert!(reply.starts_with("+OK"), "{reply}");

    // The admin port is chosen in advance, so that /readyz can be asked
    // while start-up waits (the start-up line comes once ready).
    let admin = format!("127.0.0.1:{}", support::free_port());
    let mut o = Opts::new(&up.url());
    o.extra = redis.cluster_toml("startup_timeout = \"60s\"\n");
    let dir = support::temp_dir("backfill");
    let cfg = dir.join("sidecar.toml");
    std::fs::write(
        &cfg,
        o.toml()
            .replace("admin = \"127.0.0.1:0\"", &format!("admin = \"{admin}\"")),
    )
    .unwrap();
    let env = o.env.clone();
    let starting = tokio::task::spawn_blocking(move || Sidecast::start_file(&cfg, &env));

    let (mut not_ready, mut first_ready) = (0, None);
    let deadline = paused + PAUSE + support::WAIT;
    while first_ready.is_none() && std::time::Instant::now() < deadline {
        match http::try_get(&admin, "/readyz").await.map(|r| r.status) {
            Some(503) => not_ready += 1,
            Some(200) => first_ready = Some(std::time::Instant::now()),
            Some(other) => panic!("/readyz answered {other}"),
            None => {} // not listening yet
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let first_ready = first_ready.expect("ready once Redis answers again");
    let b = starting.await.unwrap();
    assert!(
        not_ready > 0,
        "/readyz never said 503 while Redis was paused"
    );
    assert!(
        first_ready >= paused + PAUSE,
        "ready {:?} after Redis was paused for {PAUSE:?}: before it could read the log",
        first_ready - paused
    );
    // Ready means filled: the history holds the log, and replays from it.
    let (status, info) = support::delivery::topic_info(&b, "backfill/1").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["held"], 3, "{info}");
    assert_eq!(info["last_id"].as_str(), Some(ids[2].as_str()), "{info}");
    let token = b.token("alice", &["backfill/**"]);
    let auth = format!("Bearer {token}");
    let mut s = Sse::open(
        &b.public,
        "/events?topic=backfill/1",
        &[("Authorization", &auth), ("Last-Event-ID", &ids[0])],
    )
    .await;
    assert_eq!(s.next_block(support::WAIT).await.unwrap().retry, Some(3000));
    let replayed: Vec<_> = s
        .events(2)
        .await
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(replayed, ids[1..].to_vec());
}
