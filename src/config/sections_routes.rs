//! `[[routes]]` and `[[history]]`: entries checked one by one, then against
//! each other (two events routes must never match the same path).

use super::reader::{self as r, Diag, Table};
use super::sections::{Auth, AuthMode, Events, HistoryPolicy, RouteSpec};
use super::values::{nonzero_duration as nonzero, target};
use crate::template::{PathTemplate, TopicTemplate};
use crate::topic::Pattern;

pub(super) fn read_routes(
    d: &mut Diag,
    root: &mut Table,
    events: &Events,
    auth: &Auth,
) -> Vec<RouteSpec> {
    let mut out = Vec::new();
    let mut seen: Vec<(PathTemplate, String)> =
        vec![(PathTemplate::exact(&events.path), "events.path".to_owned())];
    for mut t in root.array_of_tables(d, "routes") {
        let events_kind = t.has("path") || t.has("topics");
        let proxy_kind = t.has("prefix") || t.has("upstream") || t.has("strip_prefix");
        if events_kind == proxy_kind {
            d.error(
                &t.span(),
                &t.key_path(""),
                "a route is either an events route (path + topics) or a proxy route (prefix + upstream), not both or neither",
            );
            // Read the keys anyway so that they are not reported as unknown.
            for k in [
                "path",
                "topics",
                "prefix",
                "upstream",
                "strip_prefix",
                "grip",
            ] {
                let _ = t.raw(k);
            }
            t.finish(d);
            continue;
        }
        if events_kind {
            if let Some(spec) = read_events_route(d, &mut t, auth, &mut seen) {
                out.push(spec);
            }
        } else if let Some(spec) = read_proxy_route(d, &mut t) {
            out.push(spec);
        }
        t.finish(d);
    }
    out
}

fn read_events_route(
    d: &mut Diag,
    t: &mut Table,
    auth: &Auth,
    seen: &mut Vec<(PathTemplate, String)>,
) -> Option<RouteSpec> {
    let path = t.get_spanned(d, "path", |v| {
        PathTemplate::parse(&r::string(v)?).map_err(|e| e.to_string().into())
    });
    let topics_raw = t.get_spanned(d, "topics", r::strings);
    if path.is_none() && !t.has("path") {
        d.error(
            &t.span(),
            &t.key_path("path"),
            "an events route needs path, such as \"/orders/{id}/events\"",
        );
    }
    if topics_raw.is_none() && !t.has("topics") {
        d.error(
            &t.span(),
            &t.key_path("topics"),
            "an events route needs topics, such as [\"orders/{id}\"]",
        );
    }
    let (path, path_span) = path?;
    let (raw, topics_span) = topics_raw?;
    if raw.is_empty() {
        d.error(
            &topics_span,
            &t.key_path("topics"),
            "expected at least one topic template",
        );
        return None;
    }
    let mut topics = Vec::new();
    for s in &raw {
        match TopicTemplate::parse(s, &path) {
            Ok(tt) => {
                if tt.uses_claims() && !auth.required {
                    d.error(&topics_span, &t.key_path("topics"), format!(
                        "{s:?} uses the subscriber's identity, which cannot be filled with auth.required = false"
                    ));
                } else if auth.mode == AuthMode::Forward {
                    if let Some(c) = tt.claim_names().next() {
                        d.error(&topics_span, &t.key_path("topics"), format!(
                            "{s:?}: {{{c}}} is neither a placeholder of path nor {{sub}}; forward auth has no token claims to fill it"
                        ));
                    }
                }
                topics.push(tt)
            }
            Err(e) => d.error(
                &topics_span,
                &t.key_path("topics"),
                format!("bad topic template: {e}"),
            ),
        }
    }
    if let Some((_, other)) = seen.iter().find(|(p, _)| p.overlaps(&path)) {
        d.error(
            &path_span,
            &t.key_path("path"),
            format!(
                "{} matches the same paths as {other}; each path must reach one events route",
                path.as_str()
            ),
        );
        return None;
    }
    seen.push((path.clone(), t.key_path("path")));
    (topics.len() == raw.len()).then_some(RouteSpec::Events { path, topics })
}

fn read_proxy_route(d: &mut Diag, t: &mut Table) -> Option<RouteSpec> {
    let prefix = t.get(d, "prefix", |v| {
        let p = r::string(v)?;
        if p.starts_with('/') && !p.contains(['?', '#', ' ']) {
            Ok(p)
        } else {
            Err(format!(
                "expected a path prefix starting with '/', such as \"/reports/\", found {p:?}"
            )
            .into())
        }
    });
    let target = t.get(d, "upstream", target);
    let strip_prefix = t.get(d, "strip_prefix", r::boolean).unwrap_or(false);
    let grip = t.get(d, "grip", r::boolean);
    if !t.has("prefix") {
        d.error(
            &t.span(),
            &t.key_path("prefix"),
            "a proxy route needs prefix, such as \"/reports/\"",
        );
    }
    if !t.has("upstream") {
        d.error(
            &t.span(),
            &t.key_path("upstream"),
            "a proxy route needs upstream, such as \"http://127.0.0.1:4000\"",
        );
    }
    Some(RouteSpec::Proxy {
        prefix: prefix?,
        target: target?,
        strip_prefix,
        grip,
    })
}

pub(super) fn read_history(d: &mut Diag, root: &mut Table, events: &Events) -> Vec<HistoryPolicy> {
    let mut out = Vec::new();
    for mut t in root.array_of_tables(d, "history") {
        let pattern = t.get(d, "pattern", |v| {
            Pattern::parse(&r::string(v)?).map_err(|e| e.to_string().into())
        });
        if !t.has("pattern") {
            d.error(
                &t.span(),
                &t.key_path("pattern"),
                "a history policy needs pattern, such as \"prices/**\"",
            );
        }
        let size = t.get_spanned(d, "size", |v| r::integer(v).map(|n| n as usize));
        let ttl = t.get(d, "ttl", nonzero);
        if let (Some((0, span)), true) = (&size, t.has("ttl")) {
            d.error(
                span,
                &t.key_path("size"),
                "size = 0 keeps nothing, so a ttl means nothing: remove ttl, or set size above 0",
            );
        }
        t.finish(d);
        if let Some(pattern) = pattern {
            out.push(HistoryPolicy {
                pattern,
                size: size.map_or(events.history, |(s, _)| s),
                ttl: ttl.unwrap_or(events.history_ttl),
            });
        }
    }
    out
}
