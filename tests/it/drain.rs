//! The drain on SIGTERM and SIGINT, measured: `/readyz` 503 at once,
//! serving on for `delay`, then accepting stops, streams close spread over
//! half of `grace` with a jittered `retry:` and the chunked terminator, a
//! slow proxied request completes, the admin listener answers to the end,
//! and the process exits 0 within `delay + grace`. A second signal exits at
//! once.
//!
//! sidecast's own timings (when it stopped accepting, closed each stream,
//! finished draining) are read from its log's timestamps, taken where they
//! happen: what the test observes from outside is late by however long a
//! loaded machine takes to schedule it, so those observations only bound
//! order and order of magnitude.
use crate::support;
use crate::support::ops;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ops::{connects, readyz, start_with_shutdown, RawStream};
use support::upstream::Upstream;
use support::{Opts, Sidecast, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// When `/readyz` was asked, and its status (`None`: no answer).
type Answer = (Instant, Option<u16>);

/// Opens a stream and reads its first `retry:`.
async fn stream(sc: &Sidecast, token: &str) -> RawStream {
    let auth = format!("Bearer {token}");
    let mut s = RawStream::open(
        &sc.public,
        "/events?topic=news",
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
    )
    .await;
    s.read_until("the first retry", |b| {
        String::from_utf8_lossy(b).contains("retry: 1000\n\n")
    })
    .await;
    s
}

/// Waits for the process to exit without holding a runtime worker.
fn wait_exit(sc: &mut Sidecast, within: Duration) -> (Option<i32>, Instant) {
    let code = tokio::task::block_in_place(|| sc.wait_exit(within));
    (code, Instant::now())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The timestamp that starts a log line (`2026-05-09T18:13:01.123456Z`), in
/// seconds since that day's midnight.
fn stamp(line: &str) -> f64 {
    let time = line
        .split_whitespace()
        .next()
        .and_then(|t| t.split_once('T'))
        .map(|(_, t)| t.trim_end_matches('Z'))
        .unwrap_or_else(|| panic!("no timestamp: {line}"));
    let mut parts = time.split(':').map(|p| {
        p.parse::<f64>()
            .unwrap_or_else(|_| panic!("bad timestamp: {line}"))
    });
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

/// sidecast's own clock: seconds from its "shutting down" line to each line
/// that contains `what`, in log order.
fn since_signal(log: &str, what: &str) -> Vec<f64> {
    let start = log
        .lines()
        .find(|l| l.contains("shutting down"))
        .map(stamp)
        .unwrap_or_else(|| panic!("no shutting-down line:\n{log}"));
    log.lines()
        .filter(|l| l.contains(what))
        .map(|l| {
            let d = stamp(l) - start;
            if d < 0.0 {
                d + 86400.0 // past midnight
            } else {
                d
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_order() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    opts.events = "retry = \"1s\"".into();
    let (delay, grace) = (Duration::from_millis(2000), Duration::from_millis(4000));
    let mut sc = start_with_shutdown(&opts, "delay = \"2s\"\ngrace = \"4s\"");
    assert_eq!(
        readyz(&sc.admin).await.0,
        200,
        "ready once it says it listens"
    );
    let token = sc.token("alice", &["news"]);
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(stream(&sc, &token).await);
    }

    // A slow proxied request, in flight when the signal comes.
    let public = sc.public.clone();
    let slow = tokio::spawn(async move {
        let r = support::http::request(&public, "GET", "/slow?ms=1500", &[], b"").await;
        (r, Instant::now())
    });
    support::eventually("the slow request reaches the app", || async {
        up.hits("/slow") == 1
    })
    .await;

    // The admin listener, polled until the process is gone.
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let poller = {
        let (admin, answers) = (sc.admin.clone(), answers.clone());
        tokio::spawn(async move {
            loop {
                let r = support::http::try_get(&admin, "/readyz").await;
                let status = r.as_ref().map(|r| r.status);
                if let Some(r) = &r {
                    if r.status == 503 {
                        assert_eq!(r.json()["status"], "draining", "{}", r.text());
                    }
                }
                answers.lock().unwrap().push((Instant::now(), status));
                if status.is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let t0 = Instant::now();
    sc.signal("TERM");
    support::eventually("/readyz turns 503", || async {
        readyz(&sc.admin).await.0 == 503
    })
    .await;
    let t_unready = Instant::now();
    let (status, body) = readyz(&sc.admin).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("draining")));

    // Within the delay everything is still served: pass-through and a new
    // stream (which the drain closes with the others).
    let r = support::http::request(&sc.public, "GET", "/api/during-delay", &[], b"").await;
    assert_eq!(r.status, 200);
    let mut late = stream(&sc, &token).await;
    assert!(!late.text().contains("sidecast.unavailable"));
    let t_served = Instant::now();

    let ends: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let at = s.read_to_end(WAIT).await;
                (s, at)
            })
        })
        .collect();
    support::eventually("accepting stops", || async { !connects(&sc.public).await }).await;
    let t_refused = Instant::now();
    late.read_to_end(WAIT).await;

    let mut closed = Vec::new();
    let mut last_retries = Vec::new();
    for e in ends {
        let (s, at) = e.await.unwrap();
        // Each stream ends with a jittered retry and the chunked terminator.
        assert!(s.bytes.ends_with(b"\r\n0\r\n\r\n"), "{:?}", s.text());
        let retries = s.retries();
        assert_eq!(retries.len(), 2, "{}", s.body());
        assert!((1000..=3000).contains(&retries[1]), "{retries:?}");
        last_retries.push(retries[1]);
        closed.push(at);
    }
    closed.sort();
    last_retries.dedup();
    assert!(
        last_retries.len() > 1,
        "jittered, not one value: {last_retries:?}"
    );
    let (slow_response, slow_done) = slow.await.unwrap();
    assert_eq!(slow_response.status, 200, "{}", slow_response.text());
    // Observed from outside: exits, and not far later than delay + grace
    // (the bound itself is checked on sidecast's clock below).
    let (code, exited) = wait_exit(&mut sc, delay + grace + Duration::from_secs(5));
    poller.await.unwrap();

    let rel = |t: Instant| secs(t - t0);
    eprintln!(
        "unready {:.3}s, served in delay until {:.3}s, refused {:.3}s, streams closed {:?}, slow done {:.3}s, exit {:.3}s",
        rel(t_unready),
        rel(t_served),
        rel(t_refused),
        closed.iter().map(|t| format!("{:.3}", rel(*t))).collect::<Vec<_>>(),
        rel(slow_done),
        rel(exited)
    );
    assert_eq!(code, Some(0));
    // Readiness fails at once: well within the delay, while everything is
    // still served (the request and the stream above were accepted, so
    // before accepting stopped).
    assert!(
        t_unready < t0 + delay,
        "readiness failed {:.3}s after the signal",
        rel(t_unready)
    );
    assert!(t_unready <= t_served);
    assert!(t_served <= t_refused);
    // sidecast's own clock from here on.
    let log = sc.log_text();
    let (d, half) = (secs(delay), secs(grace) / 2.0);
    let stopped = since_signal(&log, "stopped accepting")[0];
    assert!(
        stopped >= d && stopped < d + 1.0,
        "accepting stopped {stopped:.3}s after the signal, the delay is {d}s"
    );
    let shut: Vec<f64> = since_signal(&log, "stream closed")
        .into_iter()
        .zip(log.lines().filter(|l| l.contains("stream closed")))
        .filter(|(_, l)| l.contains("reason=\"shutdown\"") || l.contains("reason=shutdown"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(shut.len(), 5, "five streams closed by the drain:\n{log}");
    assert!(
        shut[0] >= stopped,
        "a stream closed before accepting stopped: {shut:?}"
    );
    // Spread over the first half of grace: five streams at 0, 1/5 .. 4/5 of
    // it (nominally 1.6 s from the first to the last).
    assert!(
        shut[4] - shut[0] >= half * 0.4,
        "not spread over half of grace: {shut:?}"
    );
    assert!(
        shut[4] <= d + half + 1.0,
        "the last stream closed late: {shut:?}"
    );
    let drained = since_signal(&log, "drained");
    assert_eq!(drained.len(), 1, "drained before grace ended:\n{log}");
    assert!(
        drained[0] <= secs(delay + grace),
        "drained {:.3}s after the signal, past delay + grace",
        drained[0]
    );
    assert!(rel(slow_done) >= 1.4, "the slow request was cut short");
    // The admin listener answered (503) from the signal to the end: it
    // still answered after the public listener refused connections, and
    // stopped answering only when the process was gone.
    let answers = answers.lock().unwrap();
    let gone = answers
        .iter()
        .find(|(_, s)| s.is_none())
        .expect("polled to the end")
        .0;
    assert!(gone >= t_refused);
    assert!(
        answers.iter().any(|(t, s)| *t >= t_refused && s.is_some()),
        "the admin listener stopped answering when accepting stopped"
    );
    assert!(
        answers.iter().filter(|(_, s)| s.is_some()).count() >= 20,
        "polled throughout"
    );
    assert!(answers
        .iter()
        .filter(|(t, _)| *t > t_unready)
        .all(|(_, s)| *s != Some(200)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_like_sigterm() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    opts.events = "retry = \"1s\"".into();
    let mut sc = start_with_shutdown(&opts, "delay = \"500ms\"\ngrace = \"2s\"");
    let token = sc.token("alice", &["news"]);
    let mut s = stream(&sc, &token).await;
    sc.signal("INT");
    support::eventually("/readyz turns 503", || async {
        readyz(&sc.admin).await.0 == 503
    })
    .await;
    s.read_to_end(WAIT).await;
    assert!(s.bytes.ends_with(b"\r\n0\r\n\r\n"));
    assert!((1000..=3000).contains(s.retries().last().unwrap()));
    let (code, _) = wait_exit(&mut sc, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    // Within delay + grace, on sidecast's clock.
    let log = sc.log_text();
    let drained = since_signal(&log, "drained");
    assert!(
        drained.len() == 1 && drained[0] <= 2.5,
        "drained within 2.5 s of SIGINT: {drained:?}\n{log}"
    );
    assert!(
        log.contains("signal=\"SIGINT\"") || log.contains("signal=SIGINT"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let up = Upstream::start("app").await;
    let mut sc = start_with_shutdown(&Opts::new(&up.url()), "delay = \"20s\"\ngrace = \"20s\"");
    sc.signal("TERM");
    support::eventually("/readyz turns 503", || async {
        readyz(&sc.admin).await.0 == 503
    })
    .await;
    let t = Instant::now();
    sc.signal("TERM");
    let (code, exited) = wait_exit(&mut sc, Duration::from_secs(10));
    assert!(code.is_some(), "it exits by itself");
    assert_ne!(code, Some(0), "a forced exit is not a clean one");
    // At once: an order of magnitude before the 20 s delay would end.
    assert!(exited - t < Duration::from_secs(5), "{:?}", exited - t);
    // Log lines go through a writer thread: the last one is written out
    // before the forced exit, not lost with the thread.
    sc.log_with(&["second signal: exiting at once"]).await;
}

/// A client that never reads, and an idle kept-alive connection, do not
/// hold the exit: the idle one is closed as accepting stops, and the
/// process exits 0 by `delay + grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_read_and_idle_connections_do_not_hold_the_exit() {
    let up = Upstream::start("app").await;
    let mut opts = Opts::new(&up.url());
    opts.events = "retry = \"1s\"\nhistory_bytes = \"128MiB\"".into();
    let mut sc = start_with_shutdown(&opts, "delay = \"0s\"\ngrace = \"4s\"");
    let token = sc.token("alice", &["news"]);
    let stuck = stream(&sc, &token).await.into_inner();
    // Fill the socket buffers: ~24 MiB in 120 events, below the queue limit.
    let big = "x".repeat(200 * 1024);
    for _ in 0..30 {
        let batch: Vec<_> = (0..4)
            .map(|_| serde_json::json!({"topic": "news", "data": big}))
            .collect();
        let (status, body) = sc.publish(serde_json::Value::Array(batch)).await;
        assert_eq!(status, 202, "{body}");
    }

    // An idle kept-alive connection after one proxied request.
    let mut idle = tokio::net::TcpStream::connect(&sc.public).await.unwrap();
    idle.write_all(b"GET /api/keep HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n")
        || !String::from_utf8_lossy(&raw).contains("\"uri\"")
    {
        let n = tokio::time::timeout(WAIT, idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after one request: keep-alive expected");
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(support::http::parse_response(&raw).status, 200);

    sc.signal("TERM");
    // Closed as accepting stops, not held to the end of grace (4 s).
    let n = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more than the end");
    let (code, _) = wait_exit(&mut sc, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    // By delay + grace on sidecast's clock, whether or not the stuck stream
    // ended by itself.
    let log = sc.log_text();
    let end = since_signal(&log, "drained")
        .into_iter()
        .chain(since_signal(&log, "grace is over"))
        .next()
        .unwrap_or_else(|| panic!("neither drained nor out of grace:\n{log}"));
    // (The check of grace runs every 20 ms: a tick's lateness is allowed.)
    assert!(end <= 4.0 + 0.5, "{end:.3}s after the signal:\n{log}");
    drop(stuck);
}
