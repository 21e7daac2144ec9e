//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so
//! a proxy removes them, and with them every header that a `Connection`
//! header names, in both directions. Names compare without regard to case
//! and without allocating: these checks run for every header of every
//! proxied request.

/// Hop-by-hop by definition. `Transfer-Encoding` is framing: a path that
/// relays the body as it came keeps it and frames by it.
const HOP: [&str; 6] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header is hop-by-hop by definition (framing included).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// The header names a set of `Connection` values nominates.
#[derive(Debug, Default)]
pub struct Nominated<'a>(Vec<&'a [u8]>);

impl<'a> Nominated<'a> {
    /// From every `Connection` value sent (comma-separated tokens).
    pub fn from_values(values: impl Iterator<Item = &'a [u8]>) -> Nominated<'a> {
        let mut names = Vec::new();
        for v in values {
            for t in v.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if !t.is_empty() {
                    names.push(t);
                }
            }
        }
        Nominated(names)
    }

    /// Whether `Connection` asks to close the connection.
    pub fn close(&self) -> bool {
        self.0.iter().any(|t| t.eq_ignore_ascii_case(b"close"))
    }

    /// Whether `Connection` names `token`.
    pub fn has(&self, token: &str) -> bool {
        self.0
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether a header of this name is dropped: hop-by-hop by definition
    /// (but for `Transfer-Encoding` when `keep_framing`), or nominated.
    pub fn drops(&self, name: &[u8], keep_framing: bool) -> bool {
        if keep_framing && name.eq_ignore_ascii_case(b"transfer-encoding") {
            return false;
        }
        is_hop_by_hop(name) || self.0.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Removes from a response for pingora's path what the upstream's
/// `Connection` names, and the hop-by-hop headers pingora does not rewrite
/// itself (`Keep-Alive`, `Proxy-Connection`, a stray `Upgrade`). A `101`
/// is left alone: its `Connection: upgrade` and `Upgrade` are the
/// handshake. Framing headers stay: pingora frames by them.
pub fn strip_response(resp: &mut pingora::http::ResponseHeader) {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let named: Vec<http::HeaderName> = resp
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| http::HeaderName::from_bytes(t.trim_ascii()).ok())
        .filter(|n| {
            !matches!(
                n.as_str(),
                "transfer-encoding" | "content-length" | "connection"
            )
        })
        .collect();
    for n in &named {
        resp.remove_header(n);
    }
    for n in ["keep-alive", "proxy-connection", "upgrade"] {
        resp.remove_header(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_hop_by_hop_and_nominated() {
        let n = Nominated::from_values([&b"x-foo, Keep-Alive"[..], b" close "].into_iter());
        assert!(n.close());
        assert!(n.drops(b"X-Foo", false));
        assert!(n.drops(b"connection", false));
        assert!(n.drops(b"TE", false));
        assert!(n.drops(b"Transfer-Encoding", false));
        assert!(!n.drops(b"Transfer-Encoding", true));
        assert!(!n.drops(b"x-bar", false));
        assert!(!n.drops(b"Date", false));
    }

    #[test]
    fn strips_a_response() {
        let mut r = pingora::http::ResponseHeader::build(200, None).unwrap();
        r.append_header("Connection", "x-foo, keep-alive").unwrap();
        r.append_header("X-Foo", "1").unwrap();
        r.append_header("Keep-Alive", "timeout=5").unwrap();
        r.append_header("Date", "Mon, 01 Jan 2024 00:00:00 GMT")
            .unwrap();
        strip_response(&mut r);
        assert!(r.headers.get("x-foo").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert!(r.headers.get("date").is_some());
        let mut r = pingora::http::ResponseHeader::build(101, None).unwrap();
        r.append_header("Connection", "upgrade").unwrap();
        r.append_header("Upgrade", "websocket").unwrap();
        strip_response(&mut r);
        assert!(r.headers.get("upgrade").is_some());
    }
}
