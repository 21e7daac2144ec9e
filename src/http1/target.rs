//! The request target and its authority. Heads the listener passes on are
//! read again by pingora, whose checks are stricter than HTTP's grammar
//! alone; a head pingora would refuse must be refused here first, with
//! sidecast's own `400`, or the client would meet the proxy library's error
//! page instead.

use std::borrow::Cow;

use pingora::http::RequestHeader;

/// The longest target the `http` crate (and so pingora) takes.
pub const MAX_LEN: usize = u16::MAX as usize - 2;

/// Why a request target (or its `Host`) is refused: the text is the
/// message of the `400`, with the target's secrets redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("userinfo in the Host header")]
    HostUserinfo,
    #[error("the target \"*\" is for OPTIONS only")]
    Asterisk,
    #[error("request target must start with '/' or be an absolute http URL: {0:?}")]
    Form(String),
    /// Refused by pingora's own checks, which would refuse it later.
    #[error("request target {target:?}: {why}")]
    Refused { target: String, why: String },
    #[error("invalid Host header")]
    Host,
}

/// Checks the request target against the method and `Host`: origin form
/// (`/path?query`) for every method; `*` for `OPTIONS` only; absolute form
/// (`http://host/path`) when it names the same authority as `Host`.
pub fn check(method: &str, target: &str, host: Option<&[u8]>) -> Result<(), TargetError> {
    if host.is_some_and(|h| h.contains(&b'@')) {
        return Err(TargetError::HostUserinfo);
    }
    if target.starts_with('/') {
        return Ok(());
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(())
        } else {
            Err(TargetError::Asterisk)
        };
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(TargetError::Form(redact_target(target).into_owned()));
    }
    // Absolute form is rare from clients of a sidecar: its finer rules
    // (userinfo, ambiguous ports, Host agreement) are pingora's own.
    let refused = |e: Box<pingora::Error>| TargetError::Refused {
        target: redact_target(target).into_owned(),
        why: e.context_str().to_owned(),
    };
    let mut req = RequestHeader::build(method, target.as_bytes(), Some(1)).map_err(refused)?;
    if let Some(h) = host {
        req.append_header("host", h)
            .map_err(|_| TargetError::Host)?;
    }
    pingora::protocols::http::authority::validate_request_authority(&req).map_err(refused)
}

/// The path of a target: `/a/b` for `/a/b?q` and for `http://h/a/b?q`.
pub fn path(target: &str) -> &str {
    let no_query = target.split('?').next().unwrap_or("");
    if no_query.starts_with('/') {
        return no_query;
    }
    match no_query.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => no_query,
    }
}

/// A request target fit for a log line: a token in a URL must never reach
/// one. The value of every query parameter whose name contains `token`
/// (case-insensitively, after percent-decoding; `&` and `;` both separate
/// parameters, as some servers take either) is replaced, and so is anything
/// shaped like a JWT wherever it stands, path included. Over-redacting a
/// harmless `tokens_left=3` costs less than missing one spelling.
pub fn redact_target(target: &str) -> Cow<'_, str> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let query_hit = query.is_some_and(|q| q.split(['&', ';']).any(is_token_param));
    if !query_hit && !has_jwt(target) {
        return target.into();
    }
    let mut out = redact_jwts(path).into_owned();
    if let Some(q) = query {
        out.push('?');
        let mut rest = q;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            let part = &rest[..end];
            if is_token_param(part) {
                let name = part.split_once('=').map_or(part, |(k, _)| k);
                out.push_str(name);
                out.push_str("=REDACTED");
            } else {
                out.push_str(&redact_jwts(part));
            }
            match rest[end..].chars().next() {
                Some(sep) => {
                    out.push(sep);
                    rest = &rest[end + 1..];
                }
                None => break,
            }
        }
    }
    out.into()
}

/// Whether a query parameter (`name=value`, as sent) names a token: its
/// name decoded as a form decoder would (`%74oken`, `token+`), lower-cased.
fn is_token_param(part: &str) -> bool {
    let name = part.split_once('=').map_or(part, |(k, _)| k);
    let decoded: String = form_urlencoded::parse(name.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    decoded.to_ascii_lowercase().contains("token")
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The JWTs in `s`: `(start, end)` of each run shaped like one — a JSON
/// header (`eyJ`, base64url of `{"`), then two more base64url segments
/// joined by dots. Percent-escaped dots (`%2E`) count as dots.
fn jwt_spans(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while let Some(off) = s[i..].find("eyJ") {
        let start = i + off;
        let (mut j, mut dots, mut seg) = (start, 0, 0usize);
        let mut segs = [0usize; 3];
        while j < b.len() {
            if is_b64url(b[j]) {
                seg += 1;
                j += 1;
            } else if b[j] == b'.' || b[j..].starts_with(b"%2E") || b[j..].starts_with(b"%2e") {
                if dots == 2 {
                    break;
                }
                segs[dots] = seg;
                dots += 1;
                seg = 0;
                j += if b[j] == b'.' { 1 } else { 3 };
            } else {
                break;
            }
        }
        if dots == 2 {
            segs[2] = seg;
        }
        if dots == 2 && segs[0] >= 4 && segs[1] >= 1 {
            spans.push((start, j));
            i = j;
        } else {
            i = start + 3;
        }
    }
    spans
}

fn has_jwt(s: &str) -> bool {
    !jwt_spans(s).is_empty()
}

fn redact_jwts(s: &str) -> Cow<'_, str> {
    let spans = jwt_spans(s);
    if spans.is_empty() {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (a, b) in spans {
        out.push_str(&s[at..a]);
        out.push_str("REDACTED");
        at = b;
    }
    out.push_str(&s[at..]);
    out.into()
}

trait ContextStr {
    fn context_str(&self) -> String;
}

impl ContextStr for pingora::Error {
    fn context_str(&self) -> String {
        self.context
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_else(|| self.etype().as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(check("GET", "/a?b", Some(b"h")).is_ok());
        assert!(check("GET", "/a", Some(b"u@h")).is_err());
        assert!(check("OPTIONS", "*", Some(b"h")).is_ok());
        assert!(check("GET", "*", Some(b"h")).is_err());
        assert!(check("GET", "http://h/a", Some(b"h")).is_ok());
        assert!(check("GET", "HTTP://h:8080/a", Some(b"h:8080")).is_ok());
        assert!(check("GET", "http://h/a", Some(b"other")).is_err());
        assert!(check("GET", "http://u@h/a", Some(b"u@h")).is_err());
        assert!(check("GET", "a/b", Some(b"h")).is_err());
        assert!(check("OPTIONS", "abc", Some(b"h")).is_err());
        assert_eq!(path("/a/b?q"), "/a/b");
        assert_eq!(path("http://h/a/b?q"), "/a/b");
        assert_eq!(path("http://h?q"), "/");
        assert_eq!(path("*"), "*");
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    #[test]
    fn redacts_every_token_spelling() {
        for (target, want) in [
            ("/e?topic=a&token=abc.def", "/e?topic=a&token=REDACTED"),
            ("/e?access_token=x", "/e?access_token=REDACTED"),
            ("/e?topic=a", "/e?topic=a"),
            (
                "/e?%74oken=x&a=1&access%5Ftoken=y&token",
                "/e?%74oken=REDACTED&a=1&access%5Ftoken=REDACTED&token=REDACTED",
            ),
            ("/e?tokens=x", "/e?tokens=REDACTED"),
            ("/e?Token=x", "/e?Token=REDACTED"),
            ("/e?a=1;token=x", "/e?a=1;token=REDACTED"),
            ("/e?token+=x", "/e?token+=REDACTED"),
            ("/e?a=1&amp;token=x", "/e?a=1&amp;token=REDACTED"),
            ("/e?ACCESS_TOKEN=x", "/e?ACCESS_TOKEN=REDACTED"),
            ("/e?id_Token=x;b=2", "/e?id_Token=REDACTED;b=2"),
        ] {
            assert_eq!(redact_target(target), want, "{target}");
        }
    }

    #[test]
    fn redacts_jwts_anywhere() {
        let t = format!("/api/{JWT}/x?auth={JWT}&q=1");
        assert_eq!(redact_target(&t), "/api/REDACTED/x?auth=REDACTED&q=1");
        let t = format!("/a?x=Bearer%20{}", JWT.replace('.', "%2E"));
        assert_eq!(redact_target(&t), "/a?x=Bearer%20REDACTED");
        // Not a JWT: too few segments, or no JSON header.
        for t in ["/a?x=eyJhbGci.only", "/a/b.c.d", "/eyJ"] {
            assert_eq!(redact_target(t), t);
        }
    }
}
