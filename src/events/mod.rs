//! The delivery core: framing each event once, the hub with its history,
//! per-stream queues and the lean stream writer. It knows nothing of HTTP
//! requests or auth (the `subscribe` layer above hands it a subscription),
//! so that what it guarantees (order, no silent gaps) is tested alone.

pub mod frame;
pub(crate) mod hub;
pub(crate) mod queue;
pub(crate) mod stream;
