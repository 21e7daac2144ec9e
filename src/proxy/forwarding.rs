//! Forwarding headers: what the app is told about the client. From a peer
//! in `trusted_proxies` (an ingress) the chain it sent is kept and the peer
//! appended; from any other peer every forwarding header is what sidecast
//! saw, so that no client can forge its address, scheme or host.
//!
//! The rules are decided once as a [`Plan`], which both pass-through paths
//! apply. Hop-by-hop headers are the business of `hop`.

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
fn joined<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let parts: Vec<&str> = values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What becomes of one forwarding header.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Sent on as the client sent it.
    Keep,
    /// Every value the client sent replaced by this one.
    Set(String),
    /// Removed.
    Remove,
}

/// The forwarding headers of one request, decided once and applied by
/// either pass-through path (pingora's header map, or the lean path's raw
/// header lines).
#[derive(Debug)]
pub struct Plan {
    pub xff: Action,
    pub proto: Action,
    pub host: Action,
    /// `Forwarded`, `X-Real-IP`, `X-Forwarded-Port`, `X-Forwarded-Prefix`.
    pub remove_forgeable: bool,
}

impl Plan {
    /// The action for a forwarding header (any case), `None` for any
    /// other header, which is kept.
    pub fn action(&self, name: &[u8]) -> Option<&Action> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("x-forwarded-for") {
            Some(&self.xff)
        } else if is("x-forwarded-proto") {
            Some(&self.proto)
        } else if is("x-forwarded-host") {
            Some(&self.host)
        } else if self.remove_forgeable && FORGEABLE.iter().any(|f| is(f)) {
            Some(&Action::Remove)
        } else {
            None
        }
    }
}

/// Decides the forwarding headers for a request from `peer`; `values(name)`
/// gives every value the client sent for a (lower-case) name.
pub fn plan<'a, I: Iterator<Item = &'a [u8]>>(
    values: impl Fn(&'static str) -> I,
    peer: Option<IpAddr>,
    trusted: bool,
) -> Plan {
    let host = values("host")
        .next()
        .and_then(|h| std::str::from_utf8(h).ok())
        .map(str::to_owned);
    let peer_s = peer
        .map(|p| p.to_canonical().to_string())
        .unwrap_or_default();
    let host_action = |kept: bool| match (&host, kept) {
        (_, true) => Action::Keep,
        (Some(h), false) => Action::Set(h.clone()),
        (None, false) => Action::Remove,
    };
    if trusted {
        let xff = match joined(values("x-forwarded-for")) {
            Some(prev) => format!("{prev}, {peer_s}"),
            None => peer_s,
        };
        Plan {
            xff: Action::Set(xff),
            proto: if joined(values("x-forwarded-proto")).is_some() {
                Action::Keep
            } else {
                Action::Set("http".into())
            },
            host: host_action(joined(values("x-forwarded-host")).is_some()),
            remove_forgeable: false,
        }
    } else {
        Plan {
            xff: Action::Set(peer_s),
            proto: Action::Set("http".into()),
            host: host_action(false),
            remove_forgeable: true,
        }
    }
}

/// Sets the forwarding headers of a request from `peer` (pingora's path).
pub fn forwarding(req: &mut RequestHeader, peer: Option<IpAddr>, trusted: bool) {
    let p = {
        let headers = &req.headers;
        plan(
            |n| headers.get_all(n).into_iter().map(|v| v.as_bytes()),
            peer,
            trusted,
        )
    };
    for (name, action) in [
        ("X-Forwarded-For", &p.xff),
        ("X-Forwarded-Proto", &p.proto),
        ("X-Forwarded-Host", &p.host),
    ] {
        match action {
            Action::Keep => {}
            Action::Set(v) => {
                let _ = req.insert_header(name, v.as_str());
            }
            Action::Remove => {
                req.remove_header(name);
            }
        }
    }
    if p.remove_forgeable {
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
