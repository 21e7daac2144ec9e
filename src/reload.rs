//! Reload: on SIGHUP, and when the configuration file or a key file it
//! names changes on disk (a Kubernetes ConfigMap swaps a symlink: the
//! resolved target changes, which counts). A valid file is swapped in whole;
//! an invalid one is logged and counted, and the old one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::Signal;

use crate::auth::jwks::FetchError;
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

/// The names of the pairs whose values differ.
fn differing(pairs: &[(&'static str, bool)]) -> Vec<&'static str> {
    pairs
        .iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| *name)
        .collect()
}

/// The `[listen]` keys that differ: they apply only at the next start.
fn listen_changes(old: &Listen, new: &Listen) -> Vec<&'static str> {
    differing(&[
        ("public", old.public == new.public),
        ("publish", old.publish == new.publish),
        ("publish_socket", old.publish_socket == new.publish_socket),
        (
            "publish_socket_mode",
            old.publish_socket_mode == new.publish_socket_mode,
        ),
        ("admin", old.admin == new.admin),
        ("head_timeout", old.head_timeout == new.head_timeout),
        ("keepalive", old.keepalive == new.keepalive),
        ("max_head_bytes", old.max_head_bytes == new.max_head_bytes),
    ])
}

/// What else a reload cannot change: the Redis link is made once at
/// start-up, and so is the log writer (its level reloads).
fn start_up_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.cluster, &new.cluster);
    differing(&[
        ("cluster.redis", o.redis == n.redis),
        (
            "cluster.startup_timeout",
            o.startup_timeout == n.startup_timeout,
        ),
        ("cluster.wait_replicas", o.wait_replicas == n.wait_replicas),
        ("log.format", old.log.format == new.log.format),
    ])
}

/// Logs and counts a refused reload; the old configuration stays.
fn refuse(shared: &Shared, why: &str, lines: &[String]) -> bool {
    shared.metrics.reload(false);
    for line in lines {
        tracing::error!(trigger = why, "config reload refused: {line}");
    }
    tracing::error!(trigger = why, "the previous configuration stays in force");
    false
}

/// The key set a new configuration's `jwks_url` puts in force, when it
/// differs from the old one's: fetched now, so that a URL set or changed by
/// a reload is checked as it is at start-up (a reload whose fetch fails is
/// refused), and a URL removed takes its keys with it (streams they
/// authenticated are revoked, as for any key that goes). `None`: the URL
/// is unchanged and the keys in force stay.
async fn jwks_change(
    shared: &Shared,
    old: &Config,
    new: &Config,
) -> Result<Option<Vec<crate::keys::Key>>, FetchError> {
    if old.auth.jwks_url == new.auth.jwks_url {
        return Ok(None);
    }
    match &new.auth.jwks_url {
        None => Ok(Some(Vec::new())),
        Some(url) => shared.jwks.fetch(url).await.map(Some),
    }
}

/// Applies a new configuration; returns whether it was valid.
pub async fn reload(shared: &Shared, levels: &LevelHandle, why: &str) -> bool {
    let old = shared.runtime();
    let config = match Config::load(&old.config.source) {
        Ok(c) => c,
        Err(e) => return refuse(shared, why, &e.lines),
    };
    let fetched = match jwks_change(shared, &old.config, &config).await {
        Ok(f) => f,
        Err(e) => {
            let line = format!("auth.jwks_url: the fetch failed: {e}");
            return refuse(shared, why, &[line]);
        }
    };
    let changed = listen_changes(&old.config.listen, &config.listen);
    if !changed.is_empty() {
        tracing::warn!(
            keys = %changed.join(", "),
            "[listen] changed: listen settings need a restart; ignored until then"
        );
    }
    let changed = start_up_changes(&old.config, &config);
    if !changed.is_empty() {
        tracing::warn!(
            keys = %changed.join(", "),
            "[cluster] or [log] format changed: these settings need a restart; ignored until then"
        );
    }
    if let Some(keys) = fetched {
        tracing::info!(
            keys = keys.len(),
            "auth.jwks_url changed: its key set is in force"
        );
        shared.jwks.install(config.auth.jwks_url.as_deref(), keys);
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
///
/// The files are stamped here, before the task is spawned: stamped when
/// the task first ran, a change made in between (the task may start after
/// the listeners, under load) would be taken for the state loaded at
/// start-up and never applied. Likewise each reload keeps the stamps taken
/// before it read the files, so a change made while it reads is seen at the
/// next tick.
pub fn spawn_watch(shared: Arc<Shared>, levels: LevelHandle, hup: Signal) {
    let last = stamps(&shared);
    tokio::spawn(watch(shared, levels, hup, last));
}

fn stamps(shared: &Shared) -> (Vec<PathBuf>, Vec<Stamp>) {
    let paths = watched(&shared.runtime().config);
    let stamps = paths.iter().map(|p| stamp(p)).collect();
    (paths, stamps)
}

async fn watch(
    shared: Arc<Shared>,
    levels: LevelHandle,
    mut hup: Signal,
    mut last: (Vec<PathBuf>, Vec<Stamp>),
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (why, now) = tokio::select! {
            _ = hup.recv() => ("SIGHUP", stamps(&shared)),
            _ = tick.tick() => {
                let now = stamps(&shared);
                if now == last {
                    continue;
                }
                ("file change", now)
            }
        };
        reload(&shared, &levels, why).await;
        // A reload that names other files is stamped anew: the old set's
        // stamps would differ from the new set's at every tick.
        let after = stamps(&shared);
        last = if after.0 == now.0 { now } else { after };
    }
}
