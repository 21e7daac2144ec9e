//! GRIP (the Generic Realtime Intermediary Protocol that Pushpin speaks):
//! the app answers a proxied request with `Grip-Hold`, and sidecast holds
//! the client's connection open on the app's channels instead of passing
//! the response through. A channel is a topic: what is published to it,
//! in GRIP's format or sidecast's own, goes through the one hub.
//!
//! `instruct` reads the app's hold headers (pure); `hold` serves a held
//! stream or response on the client's connection. The relay decides when
//! a response is a hold; the publish API turns GRIP items into events.

pub mod hold;
pub mod instruct;
