//! Events: framing, the hub with its history, streams and polls.

pub mod frame;
pub mod hub;
pub mod poll;
pub mod queue;
pub mod request;
pub mod serve;
pub mod stream;
