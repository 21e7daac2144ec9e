//! The request target and its authority. Heads the listener passes on are
//! read again by pingora, whose checks are stricter than HTTP's grammar
//! alone; a head pingora would refuse must be refused here first, with
//! sidecast's own `400`, or the client would meet the proxy library's error
//! page instead.

use pingora::http::RequestHeader;

/// The longest target the `http` crate (and so pingora) takes.
pub const MAX_LEN: usize = u16::MAX as usize - 2;

/// Checks the request target against the method and `Host`: origin form
/// (`/path?query`) for every method; `*` for `OPTIONS` only; absolute form
/// (`http://host/path`) when it names the same authority as `Host`.
pub fn check(method: &str, target: &str, host: Option<&[u8]>) -> Result<(), String> {
    if host.is_some_and(|h| h.contains(&b'@')) {
        return Err("userinfo in the Host header".into());
    }
    if target.starts_with('/') {
        return Ok(());
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(())
        } else {
            Err("the target \"*\" is for OPTIONS only".into())
        };
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(format!(
            "request target must start with '/' or be an absolute http URL: {:?}",
            crate::auth::redact_target(target)
        ));
    }
    // Absolute form is rare from clients of a sidecar: its finer rules
    // (userinfo, ambiguous ports, Host agreement) are pingora's own.
    let mut req = RequestHeader::build(method, target.as_bytes(), Some(1))
        .map_err(|e| format!("request target {target:?}: {}", e.context_str()))?;
    if let Some(h) = host {
        req.append_header("host", h)
            .map_err(|_| "invalid Host header".to_owned())?;
    }
    pingora_core::protocols::http::authority::validate_request_authority(&req)
        .map_err(|e| format!("request target {target:?}: {}", e.context_str()))
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
}
