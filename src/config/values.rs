//! Value parsers shared by the sections: each takes one TOML value and
//! says what was expected when it is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{self as r, Expected};
use super::sections::Target;

pub(super) fn s(t: &str) -> String {
    t.to_owned()
}

pub(super) fn addr(v: &toml::de::DeValue) -> Result<SocketAddr, Expected> {
    let text = r::string(v)?;
    text.parse().map_err(|_| {
        format!("expected an address such as \"127.0.0.1:8080\" or \"[::1]:8080\", found {text:?}")
            .into()
    })
}

/// An address, or `""` for "off".
pub(super) fn optional_addr(v: &toml::de::DeValue) -> Result<Option<SocketAddr>, Expected> {
    match r::string(v)?.as_str() {
        "" => Ok(None),
        _ => addr(v).map(Some),
    }
}

/// `http://host:port`, resolved now.
pub(super) fn target(v: &toml::de::DeValue) -> Result<Target, Expected> {
    let url = r::string(v)?;
    let expected = |why: &str| -> Expected {
        format!("expected an upstream URL such as \"http://127.0.0.1:3000\", found {url:?} ({why})")
            .into()
    };
    let uri: http::Uri = url.parse().map_err(|_| expected("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(expected(&format!(
                "scheme {other:?}: only http is supported"
            )))
        }
        None => return Err(expected("no scheme")),
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(expected("an upstream URL has no path or query"));
    }
    let host = uri.host().ok_or_else(|| expected("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| expected(&format!("cannot resolve {host:?}: {e}")))?
        .next()
        .ok_or_else(|| expected(&format!("{host:?} resolves to no address")))?;
    Ok(Target { url, addr })
}

pub(super) fn path_value(base: &Path, v: &toml::de::DeValue) -> Result<PathBuf, Expected> {
    let p = PathBuf::from(r::string(v)?);
    if p.as_os_str().is_empty() {
        return Err("expected a file path, found an empty string".into());
    }
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

pub(super) fn positive(v: &toml::de::DeValue) -> Result<u64, Expected> {
    match r::integer(v)? {
        0 => Err("expected a positive integer, found 0".into()),
        n => Ok(n),
    }
}

pub(super) fn nonzero_duration(v: &toml::de::DeValue) -> Result<Duration, Expected> {
    let d = r::duration(v)?;
    if d.is_zero() {
        Err("expected a duration above zero".into())
    } else {
        Ok(d)
    }
}

/// One entry of `cors_origins`: an origin exactly as a browser sends it
/// (the match is byte for byte, so anything else could never match).
pub(super) fn origin(o: &str) -> Result<String, Expected> {
    if o == "*" {
        return Err(
            "\"*\" is not allowed (streams carry credentials): list each origin, such as \"https://app.example.com\"".into(),
        );
    }
    let expected = || {
        format!(
            "expected an origin such as \"https://app.example.com\" (scheme, lower-case host, optional port; no path, no trailing slash), found {o:?}"
        ).into()
    };
    let uri: http::Uri = o.parse().map_err(|_| expected())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let after_scheme = o.split_once("://").map_or("", |(_, rest)| rest);
    let bare = !after_scheme.is_empty() && !after_scheme.contains(['/', '?', '#']);
    let lower = !o.chars().any(|c| c.is_ascii_uppercase());
    let no_user = uri.authority().is_some_and(|a| !a.as_str().contains('@'));
    if scheme_ok && bare && lower && no_user {
        Ok(o.to_owned())
    } else {
        Err(expected())
    }
}

/// `[log] level`: a level, or `RUST_LOG`-style directives whose every
/// part ends in a level (`"warn,sidecast=debug"`). A bare word that is not
/// a level would be read by the filter as a target name and silently log
/// nothing useful, so it is refused.
pub(super) fn log_level(text: &str) -> Result<String, Expected> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let expected = || {
        format!("expected a level (trace, debug, info, warn, error, off) or directives such as \"warn,sidecast=debug\", found {text:?}").into()
    };
    let parts_ok = text.split(',').all(|part| {
        let level = part.rsplit('=').next().unwrap_or("").trim();
        LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level))
            && (part.contains('=') || !part.trim().is_empty())
    });
    if !parts_ok || text.trim().is_empty() {
        return Err(expected());
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|_| expected())
}
