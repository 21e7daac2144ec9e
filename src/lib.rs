//! sidecast: a reverse-proxy sidecar that adds Server-Sent Events to an
//! existing HTTP API.
//!
//! Layout, following the data:
//! - `listener`: the public accept loop and request-head reader; events
//!   routes go to `events::serve`, everything else to `proxy` (pingora).
//! - `publish`: the publish listener (TCP, Unix socket) → `events::hub`,
//!   which frames each event once and queues it to every stream.
//! - `events`: framing, the hub and its history, the lean stream writer,
//!   long-polling.
//! - `auth`: tokens, JWT keys, grants. `routes`, `topic`: pure rules.
//! - `config`: typed `sidecar.toml`; `reload` swaps it in; `app` starts and
//!   drains; `admin` serves health and metrics.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod events;
pub mod http_server;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod publish;
pub mod reload;
pub mod routes;
pub mod state;
pub mod token;
pub mod topic;
