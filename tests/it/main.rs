//! The integration tests: one test crate, one module per area, all
//! starting the real `sidecast` binary (see `support`). One crate links
//! once and runs in one process, where 25 separate crates linked 25 test
//! binaries and each compiled its own copy of `support`. Test names read
//! `module::test` (`passthrough::request_reaches_the_app_as_sent`), so a
//! group runs by its prefix: `cargo test --test it -- passthrough::`.
//! CONTRACT.md beside this file maps every promise of the README to the
//! test that shows it.

mod support;

mod auth;
mod auth_keys;
mod cluster;
mod config;
mod contract_gaps;
mod control;
mod cors_limits;
mod cursor;
mod delivery;
mod drain;
mod forward_auth;
mod grip;
mod grip_cluster;
mod grip_raw;
mod jwks;
mod listener;
mod ops;
mod passthrough;
mod passthrough_rules;
mod prop_auth;
mod prop_head_frame;
mod publish;
mod reload;
mod resume_precedence;
mod routes_events;
mod routes_proxy;
mod security;
mod smoke;
