//! Start-up, the listeners, and the drain. `main` calls [`run`]; the order
//! of a drain is the one Kubernetes needs: `/readyz` fails first, serving
//! goes on for `delay`, then accepting stops, streams are closed spread over
//! half of `grace` (each with a jittered `retry:`), proxied requests finish,
//! and the process exits within `delay + grace`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket, UnixListener};

use crate::config::{Config, MaxStreams};
use crate::events::hub::{Hub, Limits};
use crate::events::queue::Close;
use crate::http_server::{serve, Listener};
use crate::listener::head::Limits as HeadLimits;
use crate::listener::{accept_loop, proxy_app};
use crate::logging::LevelHandle;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::state::{Lifecycle, Runtime, Shared};

fn bind_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .with_context(|| format!("{what}: cannot create a socket"))?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("{what}: cannot listen on {addr}"))?;
    socket
        .listen(4096)
        .with_context(|| format!("{what}: cannot listen on {addr}"))
}

/// Binds the Unix socket: a stale file from a dead process is replaced, a
/// live one (something answers on it) is an error.
fn bind_unix(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "publish_socket {}: another process is listening on it",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| {
            format!(
                "publish_socket {}: cannot remove the stale socket",
                path.display()
            )
        })?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("publish_socket {}: cannot bind", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| {
        format!(
            "publish_socket {}: cannot set mode {mode:o}",
            path.display()
        )
    })?;
    Ok(l)
}

/// Runs the sidecar until a signal ends it.
pub async fn run(config: Config, levels: LevelHandle) -> anyhow::Result<()> {
    let nofile = crate::limits::raise_nofile();
    let max_streams = match config.events.max_streams {
        MaxStreams::Fixed(n) => n,
        MaxStreams::Auto => {
            let mem = crate::limits::memory_limit();
            let n = crate::limits::auto_max_streams(nofile, mem);
            tracing::info!(
                max_streams = n,
                open_file_limit = nofile,
                memory_bytes = mem,
                "max_streams = \"auto\""
            );
            n
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::new(Limits::new(&config, max_streams), metrics.clone()));
    let listen = config.listen.clone();
    let cluster = match &config.cluster.redis {
        Some(url) => Some(
            crate::cluster::Cluster::new(
                url,
                hub.clone(),
                metrics.clone(),
                config.cluster.wait_replicas,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        ),
        None => None,
    };
    let startup_timeout = config.cluster.startup_timeout;
    let shared = Arc::new(Shared {
        runtime: ArcSwap::from_pointee(Runtime::new(Arc::new(config), &[])),
        hub,
        metrics: metrics.clone(),
        lifecycle: Lifecycle::default(),
        max_streams,
        forward: crate::auth::forward::ForwardAuth::new(metrics.clone()),
        jwks: crate::auth::jwks::Jwks::new(),
        cluster: cluster.clone(),
    });
    if let Some(url) = shared.runtime().config.auth.jwks_url.clone() {
        let keys = shared
            .jwks
            .fetch(&url)
            .await
            .map_err(|e| anyhow::anyhow!("auth.jwks_url: the first fetch failed: {e}"))?;
        tracing::info!(keys = keys.len(), "JWKS fetched");
        shared
            .runtime
            .rcu(|rt| Arc::new(Runtime::new(rt.config.clone(), &keys)));
        tokio::spawn(crate::auth::jwks::refresh_loop(shared.clone()));
    }

    let public = bind_tcp(listen.public, "listen.public")?;
    let admin = bind_tcp(listen.admin, "listen.admin")?;
    let publish_tcp = listen
        .publish
        .map(|a| bind_tcp(a, "listen.publish"))
        .transpose()?;
    let publish_unix = listen
        .publish_socket
        .as_deref()
        .map(|p| bind_unix(p, listen.publish_socket_mode))
        .transpose()?;

    let app = proxy_app(shared.clone());
    let limits = HeadLimits {
        head_timeout: listen.head_timeout,
        keepalive: listen.keepalive,
        max_head_bytes: listen.max_head_bytes,
    };
    tracing::info!(
        public = %public.local_addr()?,
        publish = %publish_tcp.as_ref().and_then(|l| l.local_addr().ok()).map_or("off".into(), |a| a.to_string()),
        publish_socket = %listen.publish_socket.as_ref().map_or("off".into(), |p| p.display().to_string()),
        admin = %admin.local_addr()?,
        "sidecast listening"
    );
    let never = tokio::sync::watch::channel(false).1;
    let publisher = Publisher::new(shared.clone());
    if let Some(l) = publish_tcp {
        let p = publisher.clone();
        tokio::spawn(serve(
            Listener::Tcp(l),
            move |req| p.clone().handle(req),
            never.clone(),
        ));
    }
    if let Some(l) = publish_unix {
        let p = publisher.clone();
        tokio::spawn(serve(
            Listener::Unix(l),
            move |req| p.clone().handle(req),
            never.clone(),
        ));
    }
    {
        let s = shared.clone();
        tokio::spawn(serve(
            Listener::Tcp(admin),
            move |req| crate::admin::handle(s.clone(), req),
            never.clone(),
        ));
    }
    let accepting = tokio::spawn(accept_loop(public, shared.clone(), app, limits));
    {
        let hub = shared.hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                hub.sweep();
            }
        });
    }
    tokio::spawn(crate::reload::watch(shared.clone(), levels));
    {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let rt = s.runtime();
                if rt.config.auth.mode == crate::config::AuthMode::Forward {
                    s.forward
                        .recheck_due(&rt.config.auth, &rt.config.upstream.target)
                        .await;
                }
            }
        });
    }
    if let Some(c) = cluster {
        // Not ready until local history is filled from Redis, or
        // startup_timeout has passed.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(c.clone().run(tx));
        tokio::spawn(c.control_loop());
        if tokio::time::timeout(startup_timeout, rx).await.is_err() {
            tracing::warn!(
                ?startup_timeout,
                "history not loaded from Redis yet; serving anyway"
            );
        }
    }
    shared.lifecycle.set_ready(true);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::warn!("second signal: exiting at once");
        std::process::exit(1);
    });
    drain(&shared, signal).await;
    accepting.abort();
    Ok(())
}

async fn drain(shared: &Arc<Shared>, signal: &str) {
    let sh = shared.runtime().config.shutdown.clone();
    let started = tokio::time::Instant::now();
    shared.lifecycle.start_draining();
    tracing::info!(signal, delay = ?sh.delay, grace = ?sh.grace, "draining: /readyz now answers 503");
    tokio::time::sleep(sh.delay).await;
    shared.lifecycle.stop_accepting.send_replace(true);
    shared.lifecycle.shutdown_tx.send_replace(true);
    let grace_end = started + sh.delay + sh.grace;
    let streams = shared.hub.streams();
    let n = streams.len();
    tracing::info!(streams = n, "closing streams over half of grace");
    let spread = sh.grace / 2;
    let close_start = tokio::time::Instant::now();
    for (i, h) in streams.iter().enumerate() {
        let at = close_start + spread.mul_f64(i as f64 / n.max(1) as f64);
        tokio::time::sleep_until(at).await;
        h.close(Close::Shutdown);
    }
    // Streams end by themselves once told; wait for them and for proxied
    // requests in flight, until grace ends.
    loop {
        let left = shared.hub.open_streams() + shared.lifecycle.in_flight.load(Ordering::Relaxed);
        if left == 0 || tokio::time::Instant::now() >= grace_end {
            tracing::info!(left, "drained");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
