//! Typed configuration, read from `sidecar.toml` in two stages: a spanned
//! TOML tree, then a checked [`Config`] with named defaults. Every problem of
//! a file is collected (with file, line, column and key) before any listener
//! binds, and nothing secret is ever echoed.

mod reader;
mod sections;
mod sections_auth;
mod sections_ops;
mod sections_routes;
mod sections_serve;
mod show;
mod values;

use std::path::{Path, PathBuf};

pub use sections::*;

use reader::{Diag, Table};

/// The problems of one configuration file, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .lines.join("\n"))]
pub struct ConfigError {
    pub lines: Vec<String>,
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            lines: vec![format!(
                "{}: cannot read the configuration file: {e}",
                path.display()
            )],
        })?;
        Config::parse(path, &src)
    }

    /// Parses and checks configuration text; `path` names it in errors and
    /// anchors relative file names.
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut d = Diag::new(&file, src);
        let doc = match toml::de::DeTable::parse(src) {
            Ok(doc) => doc,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let msg = e
                    .message()
                    .lines()
                    .next()
                    .unwrap_or("invalid TOML")
                    .to_owned();
                d.error(&span, "", msg);
                return Err(ConfigError {
                    lines: d.into_lines(),
                });
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut root = Table::new(Some(doc.get_ref()), String::new(), doc.span());
        let config = read(&mut d, &mut root, path, &base);
        root.finish(&mut d);
        if d.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                lines: d.into_lines(),
            })
        }
    }

    /// The settings in force, secrets masked, as `sidecast check` prints them.
    pub fn effective(&self) -> String {
        show::effective(self)
    }
}

/// Where the configuration is read from when no `--config` is given.
pub fn default_path() -> PathBuf {
    std::env::var_os("SIDECAST_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("sidecar.toml"))
}

/// Reads the table `key` of the file with `read`.
fn section<'t, 'i, T>(
    d: &mut Diag,
    root: &mut Table<'t, 'i>,
    key: &'static str,
    read: impl FnOnce(&mut Diag, &mut Table<'t, 'i>) -> T,
) -> T {
    let mut t = root.table(d, key);
    read(d, &mut t)
}

/// Reads every section; then the warnings that need more than one key.
fn read(d: &mut Diag, root: &mut Table, source: &Path, base: &Path) -> Config {
    let listen = section(d, root, "listen", sections_serve::read_listen);
    let upstream = section(d, root, "upstream", sections_serve::read_upstream);
    let events = section(d, root, "events", sections_serve::read_events);
    let auth = section(d, root, "auth", |d, t| sections_auth::read_auth(d, t, base));
    let publish = section(d, root, "publish", sections_ops::read_publish);
    let log = section(d, root, "log", sections_ops::read_log);
    let shutdown = section(d, root, "shutdown", sections_ops::read_shutdown);
    let cluster = section(d, root, "cluster", sections_ops::read_cluster);
    let routes = sections_routes::read_routes(d, root, &events, &auth);
    let history = sections_routes::read_history(d, root, &events);
    let mut config = Config {
        source: source.to_path_buf(),
        listen,
        upstream,
        events,
        auth,
        publish,
        log,
        shutdown,
        cluster,
        routes,
        history,
        warnings: Vec::new(),
    };
    config.warnings = warnings(&config);
    config
}

fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if c.events.queue >= c.events.history {
        w.push(format!(
            "events.queue ({}) >= events.history ({}): a stream dropped as slow could miss more events than replay holds",
            c.events.queue, c.events.history
        ));
    }
    if let Some(a) = c.listen.publish {
        if !a.ip().is_loopback() && !c.publish.require_token {
            w.push(format!(
                "listen.publish ({a}) is not on loopback and publish.require_token is false: anyone who reaches it can publish"
            ));
        }
    }
    w
}
