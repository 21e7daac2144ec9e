//! The sections of `sidecar.toml`, their defaults, and the checks that need
//! more than one key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::reader::{Diag, Table};
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
    /// A response body silent this long has its request ended and the
    /// client's connection closed (the status is already sent).
    pub body_idle_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    /// Plain requests take sidecast's own relay; `false` sends every
    /// request through pingora's general path.
    pub fast_path: bool,
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
    /// One access line per proxied request (target `sidecast::access`).
    pub access: bool,
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

pub(super) fn read(d: &mut Diag, root: &mut Table, source: &Path, base: &Path) -> Config {
    let mut t_listen = root.table(d, "listen");
    let listen = super::sections_serve::read_listen(d, &mut t_listen);
    let mut t_upstream = root.table(d, "upstream");
    let upstream = super::sections_serve::read_upstream(d, &mut t_upstream);
    let mut t_events = root.table(d, "events");
    let events = super::sections_serve::read_events(d, &mut t_events);
    let mut t_auth = root.table(d, "auth");
    let auth = super::sections_auth::read_auth(d, &mut t_auth, base);
    let mut t_publish = root.table(d, "publish");
    let publish = super::sections_ops::read_publish(d, &mut t_publish);
    let mut t_log = root.table(d, "log");
    let log = super::sections_ops::read_log(d, &mut t_log);
    let mut t_shutdown = root.table(d, "shutdown");
    let shutdown = super::sections_ops::read_shutdown(d, &mut t_shutdown);
    let mut t_cluster = root.table(d, "cluster");
    let cluster = super::sections_ops::read_cluster(d, &mut t_cluster);
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

pub(super) use super::values::{nonzero_duration as nonzero, path_value as file_path, target};
