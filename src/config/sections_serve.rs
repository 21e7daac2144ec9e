//! `[listen]`, `[upstream]` and `[events]`: what the public listener serves
//! and how.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::reader::{self as r, take, Diag, Table};
use super::sections::{Events, Listen, MaxStreams, Secret, Target, Upstream};
use super::values::{addr, nonzero_duration, optional_addr, origin, positive, s, target};

pub(super) fn read_listen(d: &mut Diag, t: &mut Table) -> Listen {
    let mode = take!(
        t,
        d,
        "publish_socket_mode",
        |v| {
            let text = r::string(v)?;
            u32::from_str_radix(&text, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    format!("expected an octal file mode such as \"0660\", found {text:?}").into()
                })
        },
        0o660
    );
    let listen = Listen {
        public: take!(
            t,
            d,
            "public",
            addr,
            "0.0.0.0:8080".parse().expect("default")
        ),
        publish: take!(
            t,
            d,
            "publish",
            optional_addr,
            Some("127.0.0.1:8081".parse().expect("default"))
        ),
        publish_socket: t
            .get(d, "publish_socket", |v| {
                let p = r::string(v)?;
                Ok((!p.is_empty()).then(|| PathBuf::from(p)))
            })
            .flatten(),
        publish_socket_mode: mode,
        admin: take!(
            t,
            d,
            "admin",
            addr,
            "0.0.0.0:9090".parse().expect("default")
        ),
        head_timeout: take!(
            t,
            d,
            "head_timeout",
            nonzero_duration,
            Duration::from_secs(10)
        ),
        keepalive: take!(
            t,
            d,
            "keepalive",
            nonzero_duration,
            Duration::from_secs(620)
        ),
        max_head_bytes: take!(
            t,
            d,
            "max_head_bytes",
            |v| {
                let n = r::integer(v)?;
                if (1024..=1 << 20).contains(&n) {
                    Ok(n as usize)
                } else {
                    Err(format!("expected 1024 to 1048576 bytes, found {n}").into())
                }
            },
            16384
        ),
    };
    t.finish(d);
    listen
}

pub(super) fn read_upstream(d: &mut Diag, t: &mut Table) -> Upstream {
    let target = take!(
        t,
        d,
        "url",
        target,
        Target {
            url: s("http://127.0.0.1:3000"),
            addr: "127.0.0.1:3000".parse().expect("default"),
        }
    );
    let mut up = Upstream {
        target,
        connect_timeout: take!(
            t,
            d,
            "connect_timeout",
            nonzero_duration,
            Duration::from_secs(2)
        ),
        timeout: take!(t, d, "timeout", nonzero_duration, Duration::from_secs(60)),
        body_idle_timeout: take!(
            t,
            d,
            "body_idle_timeout",
            nonzero_duration,
            Duration::from_secs(60)
        ),
        trusted_proxies: t
            .get_list(d, "trusted_proxies", |n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("expected CIDR networks such as \"10.0.0.0/8\", found {n:?}").into()
                    })
            })
            .unwrap_or_else(|| {
                vec![
                    "127.0.0.0/8".parse().expect("default"),
                    "::1/128".parse().expect("default"),
                ]
            }),
        fast_path: take!(t, d, "fast_path", r::boolean, true),
        grip: take!(t, d, "grip", r::boolean, false),
        grip_sig_key_env: None,
        grip_sig_key: None,
    };
    if let Some((name, span)) = t.get_spanned(d, "grip_sig_key_env", r::env_name) {
        // Named but unset: an error, not a silent start without
        // signatures, because an app that checks them would then refuse
        // every request.
        match std::env::var(&name).ok().filter(|v| !v.is_empty()) {
            Some(v) => up.grip_sig_key = Some(Secret(v.into_bytes())),
            None => d.error(
                &span,
                &t.key_path("grip_sig_key_env"),
                format!("the environment variable {name} is not set (or empty): set it to the Grip-Sig key, or remove grip_sig_key_env"),
            ),
        }
        up.grip_sig_key_env = Some(name);
    }
    t.finish(d);
    up
}

pub(super) fn read_events(d: &mut Diag, t: &mut Table) -> Events {
    let path = take!(
        t,
        d,
        "path",
        |v| {
            let p = r::string(v)?;
            if p.starts_with('/') && !p.contains(['?', '#', ' ']) {
                Ok(p)
            } else {
                Err(format!("expected an absolute path such as \"/events\", found {p:?}").into())
            }
        },
        s("/events")
    );
    let events = Events {
        path,
        heartbeat: take!(t, d, "heartbeat", nonzero_duration, Duration::from_secs(15)),
        retry: take!(t, d, "retry", nonzero_duration, Duration::from_secs(3)),
        history: take!(t, d, "history", |v| r::integer(v).map(|n| n as usize), 1000),
        history_ttl: take!(
            t,
            d,
            "history_ttl",
            nonzero_duration,
            Duration::from_secs(3600)
        ),
        history_bytes: take!(t, d, "history_bytes", r::size, 64 << 20),
        queue: take!(t, d, "queue", |v| positive(v).map(|n| n as usize), 256),
        max_streams: take!(
            t,
            d,
            "max_streams",
            |v| match v {
                toml::de::DeValue::String(s) if s == "auto" => Ok(MaxStreams::Auto),
                toml::de::DeValue::Integer(_) => positive(v).map(|n| MaxStreams::Fixed(n as usize)),
                other => Err(format!(
                    "expected \"auto\" or a positive integer, found {}",
                    other.type_str()
                )
                .into()),
            },
            MaxStreams::Auto
        ),
        max_topics: take!(t, d, "max_topics", |v| positive(v).map(|n| n as usize), 32),
        poll_timeout: take!(
            t,
            d,
            "poll_timeout",
            nonzero_duration,
            Duration::from_secs(25)
        ),
        cors_origins: t.get_list(d, "cors_origins", origin).unwrap_or_default(),
    };
    t.finish(d);
    events
}
