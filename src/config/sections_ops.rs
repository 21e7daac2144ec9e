//! `[publish]`, `[log]`, `[shutdown]` and `[cluster]`.

use std::time::Duration;

use super::reader::{self as r, take, Diag, Table};
use super::sections::{Cluster, Log, LogFormat, Publish, Secret, Shutdown};
use super::values::{log_level, s};

pub(super) fn read_publish(d: &mut Diag, t: &mut Table) -> Publish {
    let mut p = Publish {
        max_body_bytes: take!(
            t,
            d,
            "max_body_bytes",
            |v| r::size(v).map(|n| n as usize),
            1 << 20
        ),
        dedupe_window: take!(t, d, "dedupe_window", r::duration, Duration::from_secs(300)),
        require_token: take!(t, d, "require_token", r::boolean, false),
        token_env: take!(t, d, "token_env", r::env_name, s("SIDECAST_PUBLISH_TOKEN")),
        token: None,
    };
    if p.require_token {
        p.token = std::env::var(&p.token_env)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| Secret(v.into_bytes()));
    }
    t.finish(d);
    p
}

pub(super) fn read_log(d: &mut Diag, t: &mut Table) -> Log {
    let log = Log {
        format: take!(
            t,
            d,
            "format",
            |v| r::one_of(v, &[("text", LogFormat::Text), ("json", LogFormat::Json)]),
            LogFormat::Text
        ),
        level: take!(t, d, "level", |v| log_level(&r::string(v)?), s("info")),
        access: take!(t, d, "access", r::boolean, true),
    };
    t.finish(d);
    log
}

pub(super) fn read_shutdown(d: &mut Diag, t: &mut Table) -> Shutdown {
    let sh = Shutdown {
        delay: take!(t, d, "delay", r::duration, Duration::ZERO),
        grace: take!(t, d, "grace", r::duration, Duration::from_secs(20)),
    };
    t.finish(d);
    sh
}

pub(super) fn read_cluster(d: &mut Diag, t: &mut Table) -> Cluster {
    let c = Cluster {
        redis: t.get(d, "redis", |v| {
            let url = r::string(v)?;
            if url.starts_with("redis://") || url.starts_with("rediss://") {
                Ok(url)
            } else {
                Err("expected a Redis URL such as \"redis://127.0.0.1:6379\"".into())
            }
        }),
        startup_timeout: take!(t, d, "startup_timeout", r::duration, Duration::from_secs(5)),
        wait_replicas: take!(
            t,
            d,
            "wait_replicas",
            |v| r::integer(v).map(|n| n as u32),
            0
        ),
    };
    t.finish(d);
    c
}
