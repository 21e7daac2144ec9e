//! The sections of `sidecar.toml`, their defaults, and the checks that need
//! more than one key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::reader::{self as r, Diag, Table};
use crate::routes::{PathTemplate, TopicTemplate};
use crate::topic::Pattern;

/// The whole checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from (reload watches it).
    pub source: PathBuf,
    pub listen: Listen,
    pub upstream: Upstream,
    pub events: Events,
    pub auth: Auth,
    pub publish: Publish,
    pub log: Log,
    pub shutdown: Shutdown,
    pub cluster: Cluster,
    pub routes: Vec<RouteSpec>,
    pub history: Vec<HistoryPolicy>,
    /// Not errors, but worth a line from `sidecast check` and at start-up.
    pub warnings: Vec<String>,
}

/// Start-up only: a change needs a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct Listen {
    pub public: SocketAddr,
    /// `None` when set to `""` (publish over the Unix socket only).
    pub publish: Option<SocketAddr>,
    pub publish_socket: Option<PathBuf>,
    pub publish_socket_mode: u32,
    pub admin: SocketAddr,
    pub head_timeout: Duration,
    pub keepalive: Duration,
    pub max_head_bytes: usize,
}

/// Where proxied requests go.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// As written, for logs and `check`.
    pub url: String,
    /// Resolved once at load; a reload resolves again.
    pub addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct Upstream {
    pub target: Target,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxStreams {
    Auto,
    Fixed(usize),
}

#[derive(Clone, Debug)]
pub struct Events {
    pub path: String,
    pub heartbeat: Duration,
    pub retry: Duration,
    pub history: usize,
    pub history_ttl: Duration,
    pub history_bytes: u64,
    pub queue: usize,
    pub max_streams: MaxStreams,
    pub max_topics: usize,
    pub poll_timeout: Duration,
    pub cors_origins: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Jwt,
    Forward,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardUser {
    Header(String),
    Pointer(String),
}

#[derive(Clone, Debug)]
pub struct Auth {
    pub required: bool,
    pub mode: AuthMode,
    pub secret_env: String,
    pub secret_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// `None`: the family of the keys configured.
    pub algorithms: Option<Vec<jsonwebtoken::Algorithm>>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: Duration,
    pub cookie: String,
    pub topics_claim: String,
    pub jwks_refresh: Duration,
    pub forward: Option<String>,
    pub forward_headers: Vec<String>,
    pub forward_user: ForwardUser,
    pub forward_grants: Vec<String>,
    pub forward_timeout: Duration,
    pub forward_cache: Duration,
    pub forward_recheck: Duration,
    /// Loaded from every key source but `jwks_url` (fetched at run time).
    pub keys: Vec<crate::auth::keys::Key>,
}

#[derive(Clone, Debug)]
pub struct Publish {
    pub max_body_bytes: usize,
    pub dedupe_window: Duration,
    pub require_token: bool,
    pub token_env: String,
    /// The value of `token_env` when `require_token` is on and it is set.
    pub token: Option<Secret>,
}

/// Bytes that are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Debug)]
pub struct Shutdown {
    pub delay: Duration,
    pub grace: Duration,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub redis: Option<String>,
    pub startup_timeout: Duration,
    pub wait_replicas: u32,
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug)]
pub enum RouteSpec {
    Events {
        path: PathTemplate,
        topics: Vec<TopicTemplate>,
    },
    Proxy {
        prefix: String,
        target: Target,
        strip_prefix: bool,
    },
}

/// One `[[history]]` entry.
#[derive(Clone, Debug)]
pub struct HistoryPolicy {
    pub pattern: Pattern,
    pub size: usize,
    pub ttl: Duration,
}

fn s(t: &str) -> String {
    t.to_owned()
}

fn addr(v: &toml::de::DeValue) -> Result<SocketAddr, String> {
    let text = r::string(v)?;
    text.parse().map_err(|_| {
        format!("expected an address such as \"127.0.0.1:8080\" or \"[::1]:8080\", found {text:?}")
    })
}

/// An address, or `""` for "off".
fn optional_addr(v: &toml::de::DeValue) -> Result<Option<SocketAddr>, String> {
    match r::string(v)?.as_str() {
        "" => Ok(None),
        _ => addr(v).map(Some),
    }
}

/// `http://host:port`, resolved now.
pub(super) fn target(v: &toml::de::DeValue) -> Result<Target, String> {
    let url = r::string(v)?;
    let expected = |why: &str| {
        format!("expected an upstream URL such as \"http://127.0.0.1:3000\", found {url:?} ({why})")
    };
    let uri: http::Uri = url.parse().map_err(|_| expected("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(expected(&format!(
                "scheme {other:?}: only http is supported"
            )))
        }
        None => return Err(expected("no scheme")),
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(expected("an upstream URL has no path or query"));
    }
    let host = uri.host().ok_or_else(|| expected("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| expected(&format!("cannot resolve {host:?}: {e}")))?
        .next()
        .ok_or_else(|| expected(&format!("{host:?} resolves to no address")))?;
    Ok(Target { url, addr })
}

pub(super) fn path_value(base: &Path, v: &toml::de::DeValue) -> Result<PathBuf, String> {
    let p = PathBuf::from(r::string(v)?);
    if p.as_os_str().is_empty() {
        return Err("expected a file path, found an empty string".into());
    }
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

fn positive(v: &toml::de::DeValue) -> Result<u64, String> {
    match r::integer(v)? {
        0 => Err("expected a positive integer, found 0".into()),
        n => Ok(n),
    }
}

pub(super) fn nonzero_duration(v: &toml::de::DeValue) -> Result<Duration, String> {
    let d = r::duration(v)?;
    if d.is_zero() {
        Err("expected a duration above zero".into())
    } else {
        Ok(d)
    }
}

pub(super) fn read(d: &mut Diag, root: &mut Table, source: &Path, base: &Path) -> Config {
    let mut t_listen = root.table(d, "listen");
    let listen = read_listen(d, &mut t_listen);
    let mut t_upstream = root.table(d, "upstream");
    let upstream = read_upstream(d, &mut t_upstream);
    let mut t_events = root.table(d, "events");
    let events = read_events(d, &mut t_events);
    let mut t_auth = root.table(d, "auth");
    let auth = super::sections_auth::read_auth(d, &mut t_auth, base);
    let mut t_publish = root.table(d, "publish");
    let publish = read_publish(d, &mut t_publish);
    let mut t_log = root.table(d, "log");
    let log = read_log(d, &mut t_log);
    let mut t_shutdown = root.table(d, "shutdown");
    let shutdown = read_shutdown(d, &mut t_shutdown);
    let mut t_cluster = root.table(d, "cluster");
    let cluster = read_cluster(d, &mut t_cluster);
    let routes = super::sections_routes::read_routes(d, root, &events, &auth);
    let history = super::sections_routes::read_history(d, root, &events);
    let mut config = Config {
        source: source.to_path_buf(),
        listen,
        upstream,
        events,
        auth,
        publish,
        log,
        shutdown,
        cluster,
        routes,
        history,
        warnings: Vec::new(),
    };
    config.warnings = warnings(&config);
    config
}

fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if c.events.queue >= c.events.history {
        w.push(format!(
            "events.queue ({}) >= events.history ({}): a stream dropped as slow could miss more events than replay holds",
            c.events.queue, c.events.history
        ));
    }
    if let Some(a) = c.listen.publish {
        if !a.ip().is_loopback() && !c.publish.require_token {
            w.push(format!(
                "listen.publish ({a}) is not on loopback and publish.require_token is false: anyone who reaches it can publish"
            ));
        }
    }
    w
}

macro_rules! take {
    ($t:expr, $d:expr, $key:literal, $parse:expr, $default:expr) => {
        $t.get($d, $key, $parse).unwrap_or_else(|| $default)
    };
}
pub(super) use take;

fn read_listen(d: &mut Diag, t: &mut Table) -> Listen {
    let mode = take!(
        t,
        d,
        "publish_socket_mode",
        |v| {
            let text = r::string(v)?;
            u32::from_str_radix(&text, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    format!("expected an octal file mode such as \"0660\", found {text:?}")
                })
        },
        0o660
    );
    let listen = Listen {
        public: take!(
            t,
            d,
            "public",
            addr,
            "0.0.0.0:8080".parse().expect("default")
        ),
        publish: take!(
            t,
            d,
            "publish",
            optional_addr,
            Some("127.0.0.1:8081".parse().expect("default"))
        ),
        publish_socket: t
            .get(d, "publish_socket", |v| {
                let p = r::string(v)?;
                Ok((!p.is_empty()).then(|| PathBuf::from(p)))
            })
            .flatten(),
        publish_socket_mode: mode,
        admin: take!(
            t,
            d,
            "admin",
            addr,
            "0.0.0.0:9090".parse().expect("default")
        ),
        head_timeout: take!(
            t,
            d,
            "head_timeout",
            nonzero_duration,
            Duration::from_secs(10)
        ),
        keepalive: take!(
            t,
            d,
            "keepalive",
            nonzero_duration,
            Duration::from_secs(620)
        ),
        max_head_bytes: take!(
            t,
            d,
            "max_head_bytes",
            |v| {
                let n = r::integer(v)?;
                if (1024..=1 << 20).contains(&n) {
                    Ok(n as usize)
                } else {
                    Err(format!("expected 1024 to 1048576 bytes, found {n}"))
                }
            },
            16384
        ),
    };
    t.finish(d);
    listen
}

fn read_upstream(d: &mut Diag, t: &mut Table) -> Upstream {
    let target = take!(
        t,
        d,
        "url",
        target,
        Target {
            url: s("http://127.0.0.1:3000"),
            addr: "127.0.0.1:3000".parse().expect("default"),
        }
    );
    let up = Upstream {
        target,
        connect_timeout: take!(
            t,
            d,
            "connect_timeout",
            nonzero_duration,
            Duration::from_secs(2)
        ),
        timeout: take!(t, d, "timeout", nonzero_duration, Duration::from_secs(60)),
        trusted_proxies: take!(
            t,
            d,
            "trusted_proxies",
            |v| {
                r::strings(v)?
                    .iter()
                    .map(|n| {
                        n.parse::<IpNet>()
                            .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                            .map_err(|_| {
                                format!(
                                    "expected CIDR networks such as \"10.0.0.0/8\", found {n:?}"
                                )
                            })
                    })
                    .collect()
            },
            vec![
                "127.0.0.0/8".parse().expect("default"),
                "::1/128".parse().expect("default")
            ]
        ),
    };
    t.finish(d);
    up
}

fn read_events(d: &mut Diag, t: &mut Table) -> Events {
    let path = take!(
        t,
        d,
        "path",
        |v| {
            let p = r::string(v)?;
            if p.starts_with('/') && !p.contains(['?', '#', ' ']) {
                Ok(p)
            } else {
                Err(format!(
                    "expected an absolute path such as \"/events\", found {p:?}"
                ))
            }
        },
        s("/events")
    );
    let events = Events {
        path,
        heartbeat: take!(t, d, "heartbeat", nonzero_duration, Duration::from_secs(15)),
        retry: take!(t, d, "retry", nonzero_duration, Duration::from_secs(3)),
        history: take!(t, d, "history", |v| r::integer(v).map(|n| n as usize), 1000),
        history_ttl: take!(
            t,
            d,
            "history_ttl",
            nonzero_duration,
            Duration::from_secs(3600)
        ),
        history_bytes: take!(t, d, "history_bytes", r::size, 64 << 20),
        queue: take!(t, d, "queue", |v| positive(v).map(|n| n as usize), 256),
        max_streams: take!(
            t,
            d,
            "max_streams",
            |v| match v {
                toml::de::DeValue::String(s) if s == "auto" => Ok(MaxStreams::Auto),
                toml::de::DeValue::Integer(_) => positive(v).map(|n| MaxStreams::Fixed(n as usize)),
                other => Err(format!(
                    "expected \"auto\" or a positive integer, found {}",
                    other.type_str()
                )),
            },
            MaxStreams::Auto
        ),
        max_topics: take!(t, d, "max_topics", |v| positive(v).map(|n| n as usize), 32),
        poll_timeout: take!(
            t,
            d,
            "poll_timeout",
            nonzero_duration,
            Duration::from_secs(25)
        ),
        cors_origins: take!(
            t,
            d,
            "cors_origins",
            |v| {
                let list = r::strings(v)?;
                for o in &list {
                    if o == "*" {
                        return Err("\"*\" is not allowed: list each origin, such as \"https://app.example.com\"".into());
                    }
                    if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/')
                    {
                        return Err(format!("expected origins such as \"https://app.example.com\" (scheme, host, optional port, no path), found {o:?}"));
                    }
                }
                Ok(list)
            },
            Vec::new()
        ),
    };
    t.finish(d);
    events
}

fn read_publish(d: &mut Diag, t: &mut Table) -> Publish {
    let mut p = Publish {
        max_body_bytes: take!(
            t,
            d,
            "max_body_bytes",
            |v| r::size(v).map(|n| n as usize),
            1 << 20
        ),
        dedupe_window: take!(t, d, "dedupe_window", r::duration, Duration::from_secs(300)),
        require_token: take!(t, d, "require_token", r::boolean, false),
        token_env: take!(t, d, "token_env", r::string, s("SIDECAST_PUBLISH_TOKEN")),
        token: None,
    };
    if p.require_token {
        p.token = std::env::var(&p.token_env)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| Secret(v.into_bytes()));
    }
    t.finish(d);
    p
}

fn read_log(d: &mut Diag, t: &mut Table) -> Log {
    let log = Log {
        format: take!(
            t,
            d,
            "format",
            |v| match r::string(v)?.as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(format!("expected \"text\" or \"json\", found {other:?}")),
            },
            LogFormat::Text
        ),
        level: take!(
            t,
            d,
            "level",
            |v| {
                let level = r::string(v)?;
                tracing_subscriber::EnvFilter::try_new(&level)
                .map(|_| level.clone())
                .map_err(|_| format!("expected a level such as \"info\" or \"sidecast=debug,warn\", found {level:?}"))
            },
            s("info")
        ),
    };
    t.finish(d);
    log
}

fn read_shutdown(d: &mut Diag, t: &mut Table) -> Shutdown {
    let sh = Shutdown {
        delay: take!(t, d, "delay", r::duration, Duration::ZERO),
        grace: take!(t, d, "grace", r::duration, Duration::from_secs(20)),
    };
    t.finish(d);
    sh
}

fn read_cluster(d: &mut Diag, t: &mut Table) -> Cluster {
    let c = Cluster {
        redis: t.get(d, "redis", |v| {
            let url = r::string(v)?;
            if url.starts_with("redis://") || url.starts_with("rediss://") {
                Ok(url)
            } else {
                Err("expected a Redis URL such as \"redis://127.0.0.1:6379\"".to_owned())
            }
        }),
        startup_timeout: take!(t, d, "startup_timeout", r::duration, Duration::from_secs(5)),
        wait_replicas: take!(
            t,
            d,
            "wait_replicas",
            |v| r::integer(v).map(|n| n as u32),
            0
        ),
    };
    t.finish(d);
    c
}

pub(super) use {nonzero_duration as nonzero, path_value as file_path};
