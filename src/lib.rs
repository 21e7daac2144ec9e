//! sidecast: a reverse-proxy sidecar that adds Server-Sent Events to an
//! existing HTTP API.
//!
//! The modules are layers that import only downward (checked by
//! `scripts/check-layers`; drawn, with the path of a request and of an
//! event, in `docs/architecture.md`). From the bottom:
//! - `topic`, `template`, `keys`, `limits`, `metrics`, `lifecycle`: pure
//!   rules and plain values.
//! - `config`: typed `sidecar.toml`; `routes`, `logging`, `token`: what
//!   follows from a configuration alone.
//! - `http1`: head reading, target checks, sidecast's own replies.
//! - `events`: the delivery core (framing, the hub and its history, the
//!   lean stream writer), no HTTP.
//! - `auth`: tokens, JWT, JWKS, forward auth. `cluster`: the Redis link.
//! - `state`: what the listeners share.
//! - `subscribe`: the HTTP side of a subscription; `proxy`: pass-through;
//!   `publish`: the publish API.
//! - `listener`, `http_server`: the accept loops; `admin`, `reload`,
//!   `shutdown`: operating a running process; `app`: start-up.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod events;
pub mod http1;
pub mod http_server;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod publish;
pub mod reload;
pub mod routes;
pub mod shutdown;
pub mod state;
pub mod subscribe;
pub mod template;
pub mod token;
pub mod topic;
