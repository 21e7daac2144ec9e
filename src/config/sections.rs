//! The sections of `sidecar.toml` as checked types: what the rest of
//! sidecast reads. The readers (`sections_*`, called from `mod.rs`) build
//! them; this file holds the types alone, so that they import it and it
//! imports none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::template::{PathTemplate, TopicTemplate};
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
    /// Honour the app's GRIP hold headers (the default of proxy routes).
    pub grip: bool,
    /// The variable that holds the `Grip-Sig` key, when one is named.
    pub grip_sig_key_env: Option<String>,
    /// Its value: every proxied request is signed with it.
    pub grip_sig_key: Option<Secret>,
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
    pub keys: Vec<crate::keys::Key>,
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
        /// `None`: `[upstream] grip`.
        grip: Option<bool>,
    },
}

/// One `[[history]]` entry.
#[derive(Clone, Debug)]
pub struct HistoryPolicy {
    pub pattern: Pattern,
    pub size: usize,
    pub ttl: Duration,
}
