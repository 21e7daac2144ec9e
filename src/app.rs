//! Start-up: `main` calls [`run`], which wires the layers together and
//! runs until a signal. Signals are installed, every listener is bound (a
//! bad address fails with nothing half running), the listeners and the
//! background loops (each started beside what it maintains) run, `/readyz`
//! turns 200, and only then is "sidecast listening" logged. A signal hands
//! over to `shutdown::drain`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::auth::jwks::Jwks;
use crate::config::{Config, MaxStreams};
use crate::events::hub::{Hub, HubLimits};
use crate::http1::head::HeadLimits;
use crate::http_server::{serve, Listener};
use crate::lifecycle::Lifecycle;
use crate::listener::cores::Cores;
use crate::listener::{accept_loop, proxy_app, Public};
use crate::logging::LevelHandle;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::shutdown::drain;
use crate::state::{Runtime, Shared};
use crate::subscribe::recheck::{spawn_rechecks, Rechecks};

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

/// Binds the Unix socket. Its mode is set between `bind` and `listen`, so
/// no client can connect while it still has the umask's mode. A stale
/// socket file from a dead process is replaced; a live one (something
/// answers on it) is an error, and so is anything at the path that is not a
/// socket (a regular file, a directory, a link), which is left as it was.
fn bind_unix(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => bail!(
            "publish_socket {shown}: the path exists and is not a socket; \
             remove it or choose another path"
        ),
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("publish_socket {shown}: another process is listening on it");
            }
            std::fs::remove_file(path).with_context(|| {
                format!("publish_socket {shown}: cannot remove the stale socket")
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("publish_socket {shown}: cannot inspect the path"))
        }
    }
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
        .with_context(|| format!("publish_socket {shown}: cannot create a socket"))?;
    let addr = SockAddr::unix(path)
        .with_context(|| format!("publish_socket {shown}: not a usable socket path"))?;
    socket
        .bind(&addr)
        .with_context(|| format!("publish_socket {shown}: cannot bind"))?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("publish_socket {shown}: cannot set mode {mode:o}"));
    }
    socket
        .listen(1024)
        .and_then(|()| socket.set_nonblocking(true))
        .with_context(|| format!("publish_socket {shown}: cannot listen"))?;
    let std_listener: std::os::unix::net::UnixListener = socket.into();
    UnixListener::from_std(std_listener)
        .with_context(|| format!("publish_socket {shown}: cannot listen"))
}

/// The stream limit `max_streams = "auto"` stands for here, logged when it
/// is the one in force.
fn auto_max_streams(config: &Config) -> usize {
    let nofile = crate::limits::raise_nofile();
    let mem = crate::limits::memory_limit();
    let n = crate::limits::auto_max_streams(nofile, mem);
    if config.events.max_streams == MaxStreams::Auto {
        tracing::info!(
            max_streams = n,
            open_file_limit = nofile,
            memory_bytes = mem,
            bytes_per_stream = crate::limits::BYTES_PER_STREAM,
            "max_streams = \"auto\" resolved"
        );
    }
    n
}

/// The signals sidecast handles, registered before it says it listens: a
/// signal that came earlier would otherwise kill it with the default action.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Signals> {
        let sig = |k| signal(k).context("cannot install a signal handler");
        Ok(Signals {
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
            hup: sig(SignalKind::hangup())?,
        })
    }
}

/// Runs the sidecar until a signal ends it.
pub async fn run(config: Config, levels: LevelHandle) -> anyhow::Result<()> {
    let signals = Signals::register()?;
    let auto = auto_max_streams(&config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let metrics = Arc::new(Metrics::new());
    let listen = config.listen.clone();
    let max_streams = match config.events.max_streams {
        MaxStreams::Fixed(n) => n,
        MaxStreams::Auto => auto,
    };
    let hub = Arc::new(Hub::new(
        HubLimits::new(&config, max_streams),
        metrics.clone(),
    ));
    let cluster = match &config.cluster.redis {
        Some(url) => Some(crate::cluster::Cluster::new(
            url,
            hub.clone(),
            metrics.clone(),
            config.cluster.wait_replicas,
        )?),
        None => None,
    };
    let startup_timeout = config.cluster.startup_timeout;
    let jwks = Arc::new(Jwks::new());
    if let Some(url) = &config.auth.jwks_url {
        let n = jwks
            .load(url)
            .await
            .map_err(|e| anyhow::anyhow!("auth.jwks_url: the first fetch failed: {e}"))?;
        tracing::info!(keys = n, "JWKS fetched");
    }
    let shared = Arc::new(Shared {
        runtime: ArcSwap::from_pointee(Runtime::with_keys(Arc::new(config), jwks.keys())),
        hub,
        metrics: metrics.clone(),
        lifecycle: Lifecycle::default(),
        auto_max_streams: auto,
        forward: crate::auth::forward::ForwardAuth::new(metrics.clone()),
        jwks,
        cluster: cluster.clone(),
    });
    // Runs with no URL too: a reload may set one.
    let s = shared.clone();
    shared.jwks.spawn_refresh(move || {
        let auth = &s.runtime().config.auth;
        (auth.jwks_url.clone(), auth.jwks_refresh)
    });

    shared
        .metrics
        .declare_routes(shared.runtime().routes.labels());
    // Every listener is bound before any serves, so that a bad address
    // fails start-up with nothing half running.
    let public_listener = bind_tcp(listen.public, "listen.public")?;
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
    let public_addr = public_listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let publish_addr = publish_tcp.as_ref().and_then(|l| l.local_addr().ok());

    let app = proxy_app(shared.clone());
    let limits = HeadLimits {
        head_timeout: listen.head_timeout,
        keepalive: listen.keepalive,
        max_head_bytes: listen.max_head_bytes,
    };
    // The admin and publish listeners serve until the process exits: the
    // app may still publish while its own requests drain, and `/readyz`
    // must answer (503) to the end.
    let never = tokio::sync::watch::channel(false).1;
    {
        let s = shared.clone();
        tokio::spawn(serve(
            Listener::Tcp(admin),
            move |req| crate::admin::handle(s.clone(), req),
            never.clone(),
        ));
    }
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
    let rechecks = Arc::new(Rechecks::default());
    let public = Arc::new(Public {
        shared: shared.clone(),
        app,
        rechecks: rechecks.clone(),
        limits,
    });
    // One runtime per core the process may use (a container's CPU limit
    // included), each serving the connections handed to it.
    let cores = Cores::start(std::thread::available_parallelism().map_or(1, |n| n.get()))?;
    let public_threads = cores.len();
    let accepting = tokio::spawn(accept_loop(public_listener, public, cores));
    shared.hub.spawn_sweep();
    let Signals {
        mut term,
        mut int,
        hup,
    } = signals;
    crate::reload::spawn_watch(shared.clone(), levels, hup);
    spawn_rechecks(rechecks, shared.clone());
    if let Some(c) = cluster {
        // Not ready until local history is filled from Redis, or
        // startup_timeout has passed.
        let rx = c.spawn_link();
        if tokio::time::timeout(startup_timeout, rx).await.is_err() {
            tracing::warn!(
                ?startup_timeout,
                "history not loaded from Redis yet; serving anyway"
            );
        }
    }
    // Listeners are up, the configuration is loaded (and, in cluster mode,
    // history filled or startup_timeout passed): ready, before the line
    // that says so, so that whoever waits for that line finds /readyz 200.
    shared.lifecycle.set_ready(true);
    tracing::info!(
        public = %public_addr,
        publish = %publish_addr.map_or("off".into(), |a| a.to_string()),
        publish_socket = %listen.publish_socket.as_ref().map_or("off".into(), |p| p.display().to_string()),
        admin = %admin_addr,
        public_threads,
        "sidecast listening"
    );

    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tokio::spawn(async move {
        let second = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = second, "second signal: exiting at once");
        crate::logging::flush();
        std::process::exit(1);
    });
    drain(&shared, signal, accepting).await;
    if let Some(p) = &listen.publish_socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
