//! Reload: on SIGHUP, and when the configuration file or a key file it
//! names changes on disk (a Kubernetes ConfigMap swaps a symlink: the
//! resolved target changes, which counts). A valid file is swapped in whole;
//! an invalid one is logged and counted, and the old one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::Signal;

use crate::config::{Config, Listen};
use crate::logging::LevelHandle;
use crate::state::{Runtime, Shared};

/// What identifies a file's content on disk without reading it.
type Stamp = Option<(PathBuf, SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    Some((real, m.modified().ok()?, m.len(), m.ino()))
}

fn watched(config: &Config) -> Vec<PathBuf> {
    let a = &config.auth;
    std::iter::once(config.source.clone())
        .chain(a.secret_file.clone())
        .chain(a.public_key_file.clone())
        .chain(a.jwks_file.clone())
        .collect()
}

/// The `[listen]` keys that differ: they apply only at the next start.
fn listen_changes(old: &Listen, new: &Listen) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut cmp = |name, same: bool| {
        if !same {
            out.push(name)
        }
    };
    cmp("public", old.public == new.public);
    cmp("publish", old.publish == new.publish);
    cmp("publish_socket", old.publish_socket == new.publish_socket);
    cmp(
        "publish_socket_mode",
        old.publish_socket_mode == new.publish_socket_mode,
    );
    cmp("admin", old.admin == new.admin);
    cmp("head_timeout", old.head_timeout == new.head_timeout);
    cmp("keepalive", old.keepalive == new.keepalive);
    cmp("max_head_bytes", old.max_head_bytes == new.max_head_bytes);
    out
}

/// Applies a new configuration; returns whether it was valid.
pub fn reload(shared: &Shared, levels: &LevelHandle, why: &str) -> bool {
    let old = shared.runtime();
    let config = match Config::load(&old.config.source) {
        Ok(c) => c,
        Err(e) => {
            shared.metrics.reload(false);
            for line in &e.lines {
                tracing::error!(trigger = why, "config reload refused: {line}");
            }
            tracing::error!(trigger = why, "the previous configuration stays in force");
            return false;
        }
    };
    let changed = listen_changes(&old.config.listen, &config.listen);
    if !changed.is_empty() {
        tracing::warn!(
            keys = %changed.join(", "),
            "[listen] changed: listen settings need a restart; ignored until then"
        );
    }
    let rt = Runtime::with_keys(Arc::new(config), old.fetched.clone());
    let max = shared.max_streams(&rt.config);
    shared
        .hub
        .set_limits(crate::events::hub::HubLimits::new(&rt.config, max));
    levels.set(&rt.config.log.level);
    let keep = rt.key_ids();
    let revoked = shared.hub.revoke(|id| keep.iter().any(|k| &**k == id));
    for w in &rt.config.warnings {
        tracing::warn!("{w}");
    }
    shared.metrics.declare_routes(rt.routes.labels());
    shared.runtime.store(Arc::new(rt));
    shared.metrics.reload(true);
    tracing::info!(
        trigger = why,
        revoked_streams = revoked,
        "configuration reloaded"
    );
    true
}

/// Watches for SIGHUP (`hup`, registered by the caller before start-up
/// ends, so that an early signal cannot kill the process) and for changes
/// on disk, polling once a second.
pub async fn watch(shared: Arc<Shared>, levels: LevelHandle, mut hup: Signal) {
    let stamps = |shared: &Shared| -> Vec<Stamp> {
        watched(&shared.runtime().config)
            .iter()
            .map(|p| stamp(p))
            .collect()
    };
    let mut last = stamps(&shared);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = tick.tick() => {
                let now = stamps(&shared);
                if now == last {
                    continue;
                }
                "file change"
            }
        };
        reload(&shared, &levels, why);
        last = stamps(&shared);
    }
}
