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
//!
//! Public are the modules the binary uses (`app`, `config`, `limits`,
//! `logging`, `routes`, `token`) and those the tests reach into (`auth`,
//! `events::frame`, `http1::head`, `state::Runtime`, `topic`); the rest is
//! the crate's own.

pub(crate) mod admin;
pub mod app;
pub mod auth;
pub(crate) mod cluster;
pub mod config;
pub mod events;
pub(crate) mod grip;
pub(crate) mod grip_sig;
pub mod http1;
pub(crate) mod http_server;
pub(crate) mod keys;
pub(crate) mod lifecycle;
pub mod limits;
pub(crate) mod listener;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub(crate) mod publish;
pub(crate) mod reload;
pub mod routes;
pub(crate) mod shutdown;
pub mod state;
pub(crate) mod subscribe;
pub(crate) mod template;
pub mod token;
pub mod topic;
