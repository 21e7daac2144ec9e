//! Forwarding headers: what the app is told about the client. From a peer
//! in `trusted_proxies` (an ingress) the chain it sent is kept and the peer
//! appended; from any other peer every forwarding header is what sidecast
//! saw, so that no client can forge its address, scheme or host.
//!
//! Hop-by-hop headers (`Connection` and what it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade` but for WebSocket, ...)
//! are removed by pingora's standard upstream request policy, which
//! `upstream_peer` sets explicitly.

use std::net::IpAddr;

use ipnet::IpNet;
use pingora::http::RequestHeader;

/// Headers a client may not set for an upstream unless it comes from a
/// trusted proxy.
const FORGEABLE: [&str; 4] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// Whether `peer` is one of `trusted` (an IPv4 peer seen on a dual-stack
/// socket as `::ffff:a.b.c.d` counts as `a.b.c.d`).
pub fn is_trusted(peer: Option<IpAddr>, trusted: &[IpNet]) -> bool {
    peer.is_some_and(|ip| {
        let ip = ip.to_canonical();
        trusted.iter().any(|n| n.contains(&ip))
    })
}

/// All values of a header joined as one list (`a, b`), or `None` when it
/// is absent, empty or not text.
fn joined(req: &RequestHeader, name: &str) -> Option<String> {
    let parts: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Sets the forwarding headers for a request from `peer`.
pub fn forwarding(req: &mut RequestHeader, peer: Option<IpAddr>, trusted: bool) {
    let host = req
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let peer_s = peer
        .map(|p| p.to_canonical().to_string())
        .unwrap_or_default();
    if trusted {
        let xff = match joined(req, "x-forwarded-for") {
            Some(prev) => format!("{prev}, {peer_s}"),
            None => peer_s,
        };
        let _ = req.insert_header("X-Forwarded-For", xff);
        if joined(req, "x-forwarded-proto").is_none() {
            let _ = req.insert_header("X-Forwarded-Proto", "http");
        }
        if joined(req, "x-forwarded-host").is_none() {
            match host {
                Some(h) => {
                    let _ = req.insert_header("X-Forwarded-Host", h);
                }
                None => {
                    req.remove_header("x-forwarded-host");
                }
            }
        }
    } else {
        let _ = req.insert_header("X-Forwarded-For", peer_s);
        let _ = req.insert_header("X-Forwarded-Proto", "http");
        match host {
            Some(h) => {
                let _ = req.insert_header("X-Forwarded-Host", h);
            }
            None => {
                req.remove_header("x-forwarded-host");
            }
        }
        for h in FORGEABLE {
            req.remove_header(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn all(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)));

    #[test]
    fn trusted_peers_extend_the_chain() {
        let mut r = req(&[
            ("Host", "h"),
            ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
            ("X-Forwarded-For", "3.3.3.3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example"),
            ("Forwarded", "for=1.1.1.1"),
        ]);
        forwarding(&mut r, PEER, true);
        assert_eq!(
            all(&r, "x-forwarded-for"),
            ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3"]
        );
        assert_eq!(all(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["app.example"]);
        assert_eq!(all(&r, "forwarded"), ["for=1.1.1.1"]);

        let mut r = req(&[("Host", "h"), ("X-Forwarded-For", " ")]);
        forwarding(&mut r, PEER, true);
        assert_eq!(all(&r, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["h"]);
    }

    #[test]
    fn other_peers_cannot_forge() {
        let mut r = req(&[
            ("Host", "h"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "3.3.3.3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
            ("Forwarded", "for=1.1.1.1"),
            ("X-Real-IP", "1.1.1.1"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Prefix", "/a"),
        ]);
        forwarding(&mut r, PEER, false);
        assert_eq!(all(&r, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["h"]);
        for h in FORGEABLE {
            assert!(all(&r, h).is_empty(), "{h}");
        }
        // HTTP/1.0 without Host: no forged host survives.
        let mut r = req(&[("X-Forwarded-Host", "evil")]);
        forwarding(&mut r, PEER, false);
        assert!(all(&r, "x-forwarded-host").is_empty());
    }

    #[test]
    fn trust_by_network() {
        let nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(is_trusted(Some("127.0.0.1".parse().unwrap()), &nets));
        assert!(is_trusted(Some("::ffff:127.0.0.2".parse().unwrap()), &nets));
        assert!(is_trusted(Some("::1".parse().unwrap()), &nets));
        assert!(!is_trusted(Some("10.0.0.1".parse().unwrap()), &nets));
        assert!(!is_trusted(None, &nets));
        assert!(!is_trusted(Some("127.0.0.1".parse().unwrap()), &[]));
        let mut r = req(&[("Host", "h")]);
        forwarding(&mut r, Some("::ffff:192.0.2.1".parse().unwrap()), false);
        assert_eq!(all(&r, "x-forwarded-for"), ["192.0.2.1"]);
    }
}
