//! The HTTP side of a subscription, between the public listener and the
//! delivery core: `request` reads what an events request asks for and who
//! sends it (auth by the configured mode), `serve` answers it and hands a
//! stream to the hub, `poll` answers a long-poll, and `recheck` asks forward
//! auth again about open streams. The core (`events`) stays free of HTTP.

pub mod poll;
pub mod recheck;
pub mod request;
pub mod serve;
