//! HTTP/1 on the public listener, at the bottom of the request path:
//! reading a request head under limits, checking its target, the
//! hop-by-hop rules, the small answers sidecast writes itself, and the
//! connection as pingora sees it.
//! Nothing here knows of auth, events or routes, so every layer above can
//! use it and it can be tested with bytes alone.

pub(crate) mod chunked;
pub(crate) mod downstream;
pub mod head;
pub(crate) mod hop;
pub(crate) mod respond;
pub(crate) mod target;
