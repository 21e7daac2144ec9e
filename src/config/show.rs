//! The effective settings as `sidecast check` prints them: every key with
//! the value in force, defaults included, and secrets masked.

use std::fmt::Write;
use std::time::Duration;

use super::sections::*;

fn dur(d: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", inner.join(", "))
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "(not set)".to_owned(), |v| format!("\"{v}\""))
}

pub(super) fn effective(c: &Config) -> String {
    let mut o = String::new();
    let l = &c.listen;
    let _ = writeln!(o, "[listen]");
    let _ = writeln!(o, "public = \"{}\"", l.public);
    let _ = writeln!(
        o,
        "publish = {}",
        l.publish
            .map_or("\"\" (off)".to_owned(), |a| format!("\"{a}\""))
    );
    let _ = writeln!(
        o,
        "publish_socket = {}",
        opt(&l.publish_socket.as_ref().map(|p| p.display()))
    );
    let _ = writeln!(o, "publish_socket_mode = \"{:04o}\"", l.publish_socket_mode);
    let _ = writeln!(o, "admin = \"{}\"", l.admin);
    let _ = writeln!(o, "head_timeout = {}", dur(l.head_timeout));
    let _ = writeln!(o, "keepalive = {}", dur(l.keepalive));
    let _ = writeln!(o, "max_head_bytes = {}", l.max_head_bytes);
    let u = &c.upstream;
    let _ = writeln!(
        o,
        "\n[upstream]\nurl = \"{}\"  # {}",
        u.target.url, u.target.addr
    );
    let _ = writeln!(
        o,
        "connect_timeout = {}\ntimeout = {}\nbody_idle_timeout = {}\nfast_path = {}\ngrip = {}",
        dur(u.connect_timeout),
        dur(u.timeout),
        dur(u.body_idle_timeout),
        u.fast_path,
        u.grip
    );
    match &u.grip_sig_key_env {
        Some(name) => {
            let _ = writeln!(o, "grip_sig_key_env = \"{name}\"  # value masked");
        }
        None => {
            let _ = writeln!(
                o,
                "# grip_sig_key_env: not set (proxied requests are not signed)"
            );
        }
    }
    let _ = writeln!(o, "trusted_proxies = {}", list(&u.trusted_proxies));
    let e = &c.events;
    let _ = writeln!(
        o,
        "\n[events]\npath = \"{}\"\nheartbeat = {}\nretry = {}",
        e.path,
        dur(e.heartbeat),
        dur(e.retry)
    );
    let _ = writeln!(
        o,
        "history = {}\nhistory_ttl = {}\nhistory_bytes = {}",
        e.history,
        dur(e.history_ttl),
        e.history_bytes
    );
    let _ = writeln!(o, "queue = {}", e.queue);
    let _ = writeln!(
        o,
        "max_streams = {}",
        match e.max_streams {
            MaxStreams::Auto => "\"auto\"".to_owned(),
            MaxStreams::Fixed(n) => n.to_string(),
        }
    );
    let _ = writeln!(
        o,
        "max_topics = {}\npoll_timeout = {}\ncors_origins = {}",
        e.max_topics,
        dur(e.poll_timeout),
        list(&e.cors_origins)
    );
    let a = &c.auth;
    let _ = writeln!(
        o,
        "\n[auth]\nrequired = {}\nmode = \"{}\"",
        a.required,
        match a.mode {
            AuthMode::Jwt => "jwt",
            AuthMode::Forward => "forward",
        }
    );
    let _ = writeln!(o, "secret_env = \"{}\"  # value masked", a.secret_env);
    let p = |p: &Option<std::path::PathBuf>| opt(&p.as_ref().map(|p| p.display()));
    let _ = writeln!(
        o,
        "secret_file = {}\npublic_key_file = {}\njwks_file = {}",
        p(&a.secret_file),
        p(&a.public_key_file),
        p(&a.jwks_file)
    );
    let _ = writeln!(
        o,
        "jwks_url = {}\njwks_refresh = {}",
        opt(&a.jwks_url),
        dur(a.jwks_refresh)
    );
    let algs: Vec<String> = match &a.algorithms {
        Some(v) => v.iter().map(|a| format!("{a:?}")).collect(),
        None => crate::keys::family_of(&a.keys)
            .iter()
            .map(|a| format!("{a:?}"))
            .collect(),
    };
    let _ = writeln!(
        o,
        "algorithms = {}{}",
        list(&algs),
        if a.algorithms.is_none() {
            "  # the family of the keys"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "issuer = {}\naudience = {}\nleeway = {}",
        opt(&a.issuer),
        list(&a.audience),
        dur(a.leeway)
    );
    let _ = writeln!(
        o,
        "cookie = \"{}\"\ntopics_claim = \"{}\"",
        a.cookie, a.topics_claim
    );
    let _ = writeln!(
        o,
        "forward = {}\nforward_headers = {}",
        opt(&a.forward),
        list(&a.forward_headers)
    );
    let _ = writeln!(
        o,
        "forward_user = \"{}\"",
        match &a.forward_user {
            ForwardUser::Header(h) => format!("header:{h}"),
            ForwardUser::Pointer(p) => p.clone(),
        }
    );
    let _ = writeln!(
        o,
        "forward_grants = {}\nforward_timeout = {}\nforward_cache = {}\nforward_recheck = {}",
        list(&a.forward_grants),
        dur(a.forward_timeout),
        dur(a.forward_cache),
        dur(a.forward_recheck)
    );
    let keys: Vec<String> = a
        .keys
        .iter()
        .map(|k| format!("{} ({:?})", k.source, k.algorithms))
        .collect();
    let _ = writeln!(
        o,
        "# keys loaded: {}",
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join("; ")
        }
    );
    let pb = &c.publish;
    let _ = writeln!(
        o,
        "\n[publish]\nmax_body_bytes = {}\ndedupe_window = {}\nrequire_token = {}",
        pb.max_body_bytes,
        dur(pb.dedupe_window),
        pb.require_token
    );
    let _ = writeln!(
        o,
        "token_env = \"{}\"  # value masked{}",
        pb.token_env,
        if pb.require_token && pb.token.is_none() {
            " (not set)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "\n[log]\nformat = \"{}\"\nlevel = \"{}\"\naccess = {}",
        match c.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        c.log.level,
        c.log.access
    );
    let _ = writeln!(
        o,
        "\n[shutdown]\ndelay = {}\ngrace = {}",
        dur(c.shutdown.delay),
        dur(c.shutdown.grace)
    );
    let redis = c.cluster.redis.as_ref().map(|u| mask_url(u));
    let _ = writeln!(
        o,
        "\n[cluster]\nredis = {}\nstartup_timeout = {}\nwait_replicas = {}",
        opt(&redis),
        dur(c.cluster.startup_timeout),
        c.cluster.wait_replicas
    );
    for h in &c.history {
        let _ = writeln!(
            o,
            "\n[[history]]\npattern = \"{}\"\nsize = {}\nttl = {}",
            h.pattern.as_str(),
            h.size,
            dur(h.ttl)
        );
    }
    o
}

/// A Redis URL with any password replaced.
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
