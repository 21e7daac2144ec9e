//! The route table of one configuration: events routes from path templates
//! (`template`), proxy routes by prefix, in match order. Pure functions, so
//! that matching and precedence are tested without a socket.

use std::sync::Arc;

use crate::config::{Config, RouteSpec, Target};
use crate::template::{PathTemplate, TopicTemplate};

/// What a request head is routed to.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// An events route (`index` into the events routes), or `[events] path`
    /// when `index` is `None`, with the bound path segments.
    Events {
        index: Option<usize>,
        params: Vec<(&'a str, &'a str)>,
    },
    /// To the proxy; `index` into the proxy routes, `None` for `[upstream]`.
    Proxy { index: Option<usize> },
}

/// An events route as matched at run time.
#[derive(Debug)]
pub struct EventsRoute {
    pub path: PathTemplate,
    pub topics: Vec<TopicTemplate>,
    /// The label in metrics and logs.
    pub label: Arc<str>,
}

/// A proxy route.
#[derive(Debug)]
pub struct ProxyRoute {
    pub prefix: String,
    pub target: Target,
    pub strip_prefix: bool,
    /// The app's GRIP hold headers are honoured (the route's `grip`, else
    /// `[upstream] grip`).
    pub grip: bool,
}

/// The routes of one configuration, in match order.
#[derive(Debug)]
pub struct RouteTable {
    pub events: Vec<EventsRoute>,
    pub events_path: String,
    pub events_label: Arc<str>,
    /// Longest prefix first.
    pub proxy: Vec<ProxyRoute>,
    /// Some route honours GRIP holds (their streams are labelled
    /// [`GRIP_LABEL`]).
    pub grip: bool,
}

/// The route label of the streams and responses the app holds with GRIP.
pub const GRIP_LABEL: &str = "grip";

impl RouteTable {
    pub fn new(config: &Config) -> RouteTable {
        let mut events = Vec::new();
        let mut proxy = Vec::new();
        for r in &config.routes {
            match r {
                RouteSpec::Events { path, topics } => events.push(EventsRoute {
                    label: path.as_str().into(),
                    path: path.clone(),
                    topics: topics.clone(),
                }),
                RouteSpec::Proxy {
                    prefix,
                    target,
                    strip_prefix,
                    grip,
                } => proxy.push(ProxyRoute {
                    prefix: prefix.clone(),
                    target: target.clone(),
                    strip_prefix: *strip_prefix,
                    grip: grip.unwrap_or(config.upstream.grip),
                }),
            }
        }
        proxy.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let grip = config.upstream.grip || proxy.iter().any(|r| r.grip);
        RouteTable {
            grip,
            events,
            events_label: config.events.path.as_str().into(),
            events_path: config.events.path.clone(),
            proxy,
        }
    }

    /// The events routes' labels in metrics and logs, `[events] path` first.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&*self.events_label)
            .chain(self.events.iter().map(|r| &*r.label))
            .chain(self.grip.then_some(GRIP_LABEL))
    }

    /// Routes a request: `GET`, `HEAD` and `OPTIONS` try the events routes,
    /// then `[events] path`; everything else goes to the proxy routes by
    /// longest prefix, else to `[upstream]`.
    pub fn route<'a>(&'a self, method: &str, path: &'a str) -> Route<'a> {
        if matches!(method, "GET" | "HEAD" | "OPTIONS") {
            for (i, r) in self.events.iter().enumerate() {
                if let Some(params) = r.path.matches(path) {
                    return Route::Events {
                        index: Some(i),
                        params,
                    };
                }
            }
            if path == self.events_path {
                return Route::Events {
                    index: None,
                    params: Vec::new(),
                };
            }
        }
        Route::Proxy {
            index: self.proxy_for(path),
        }
    }

    /// The proxy route for a path: longest prefix at a segment boundary.
    pub fn proxy_for(&self, path: &str) -> Option<usize> {
        self.proxy
            .iter()
            .position(|r| prefix_matches(&r.prefix, path))
    }

    /// The route table in match order, as `sidecast check` prints it.
    pub fn describe(&self, upstream: &str) -> String {
        let mut out = String::from("routes, in match order (GET/HEAD/OPTIONS only for events):\n");
        let mut n = 1;
        for r in &self.events {
            let topics: Vec<&str> = r.topics.iter().map(|t| t.as_str()).collect();
            out.push_str(&format!(
                "  {n}. events {} -> topics {}\n",
                r.path.as_str(),
                topics.join(", ")
            ));
            n += 1;
        }
        out.push_str(&format!(
            "  {n}. events {} -> topics from ?topic=\n",
            self.events_path
        ));
        n += 1;
        for r in &self.proxy {
            out.push_str(&format!(
                "  {n}. proxy  {}* -> {}{}\n",
                r.prefix,
                r.target.url,
                if r.strip_prefix {
                    " (prefix stripped)"
                } else {
                    ""
                }
            ));
            n += 1;
        }
        out.push_str(&format!("  {n}. proxy  /* -> {upstream}\n"));
        out
    }
}

/// `/reports` takes `/reports` and `/reports/x`, not `/reportsX`; `/reports/`
/// takes what starts with it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// The path sent upstream by a route with `strip_prefix`: always starts
/// with `/` (`/reports/x?q` -> `/x?q`, `/reports` -> `/`).
pub fn strip(prefix: &str, path_and_query: &str) -> String {
    let rest = path_and_query
        .strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or(path_and_query);
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(prefix_matches("/reports", "/reports"));
        assert!(prefix_matches("/reports", "/reports/x"));
        assert!(!prefix_matches("/reports", "/reportsX"));
        assert!(prefix_matches("/reports/", "/reports/x"));
        assert!(!prefix_matches("/reports/", "/reports"));
        assert_eq!(strip("/reports", "/reports/x?q"), "/x?q");
        assert_eq!(strip("/reports", "/reports"), "/");
        assert_eq!(strip("/reports", "/reports?q=1"), "/?q=1");
        assert_eq!(strip("/reports/", "/reports/x"), "/x");
    }
}
