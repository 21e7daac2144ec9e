//! Prometheus metrics. Every family is registered at start-up so that its
//! `# TYPE` line is there before the first sample; hot paths touch plain
//! atomics (one add per event, not per stream).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub streams_open: Family<RouteLabel, Gauge>,
    pub events_published: Counter,
    pub events_delivered: Counter,
    pub streams_closed: Family<ReasonLabel, Counter>,
    pub forward_auth: Family<ResultLabel, Counter>,
    pub replays: Counter,
    pub resets: Counter,
    pub auth_failures: Family<ReasonLabel, Counter>,
    pub proxy_requests: Family<ClassLabel, Counter>,
    pub upstream_duration: Histogram,
    /// Fan-out latency: from an event's acceptance by the hub to the write
    /// of its frame to a stream's connection.
    pub delivery_latency: Histogram,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub publish_errors: Family<StatusLabel, Counter>,
    pub accept_errors: Counter,
    /// Proxied responses whose body went silent past
    /// `[upstream] body_idle_timeout`: the client's connection was closed.
    pub upstream_body_timeouts: Counter,
    pub cluster_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sidecast");
        let m = Metrics {
            streams_open: Family::default(),
            events_published: Counter::default(),
            events_delivered: Counter::default(),
            streams_closed: Family::default(),
            forward_auth: Family::default(),
            replays: Counter::default(),
            resets: Counter::default(),
            auth_failures: Family::default(),
            proxy_requests: Family::default(),
            upstream_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            delivery_latency: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            config_reloads: Family::default(),
            publish_errors: Family::default(),
            accept_errors: Counter::default(),
            upstream_body_timeouts: Counter::default(),
            cluster_connected: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "streams_open",
            "SSE streams open, by route",
            m.streams_open.clone(),
        );
        registry.register(
            "events_published",
            "Events accepted for publishing",
            m.events_published.clone(),
        );
        registry.register(
            "events_delivered",
            "Event deliveries queued to streams",
            m.events_delivered.clone(),
        );
        registry.register(
            "streams_closed",
            "Streams closed, by reason",
            m.streams_closed.clone(),
        );
        registry.register(
            "forward_auth",
            "Forward-auth outcomes",
            m.forward_auth.clone(),
        );
        registry.register(
            "replays",
            "Streams opened with a replay from history",
            m.replays.clone(),
        );
        registry.register(
            "resets",
            "Streams opened with sidecast.reset",
            m.resets.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused subscriber or publisher credentials, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "proxy_requests",
            "Proxied requests, by status class and route",
            m.proxy_requests.clone(),
        );
        registry.register_with_unit(
            "upstream_duration",
            "Time from request to the end of the upstream response",
            prometheus_client::registry::Unit::Seconds,
            m.upstream_duration.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "Time from an event's acceptance (published here or read from Redis) to \
             the write of its frame to a stream's connection; observed once per \
             write, for the oldest event it carries",
            prometheus_client::registry::Unit::Seconds,
            m.delivery_latency.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "publish_errors",
            "Refused publish-listener requests, by status",
            m.publish_errors.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts on the public listener",
            m.accept_errors.clone(),
        );
        registry.register(
            "upstream_body_timeouts",
            "Proxied responses cut off because their body was silent past body_idle_timeout",
            m.upstream_body_timeouts.clone(),
        );
        registry.register(
            "cluster_connected",
            "1 when connected to Redis (cluster mode)",
            m.cluster_connected.clone(),
        );
        let m = Metrics { registry, ..m };
        // Families without samples print nothing: give each its known label
        // sets at zero, so every `# TYPE` line is there from start-up.
        for reason in [
            "client",
            "slow",
            "expired",
            "revoked",
            "shutdown",
            "disconnect",
        ] {
            let _ = m.streams_closed.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for result in ["allowed", "denied", "unavailable"] {
            let _ = m.forward_auth.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        for reason in [
            "missing",
            "malformed",
            "bad_signature",
            "expired",
            "forbidden",
        ] {
            let _ = m.auth_failures.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for class in ["2xx", "3xx", "4xx", "5xx"] {
            let _ = m.proxy_requests.get_or_create(&ClassLabel {
                class: class.into(),
                route: "upstream".into(),
            });
        }
        for result in ["ok", "failed"] {
            let _ = m.config_reloads.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        for status in ["400", "401", "413", "415", "503"] {
            let _ = m.publish_errors.get_or_create(&StatusLabel {
                status: status.into(),
            });
        }
        m
    }

    /// The OpenMetrics text that prometheus-client writes, for a scraper
    /// that asks for it (`Accept: application/openmetrics-text`).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text format (0.0.4), served by default.
    ///
    /// prometheus-client writes only OpenMetrics, whose counter families are
    /// named without `_total` (`# TYPE sidecast_events_published counter`
    /// over the sample `sidecast_events_published_total`). A Prometheus
    /// text parser (the format a `curl`, most agents and Prometheus without
    /// content negotiation read) then finds samples of no declared family,
    /// and the documented family names are not in any `# TYPE`
    /// line. So the default answer is the same data in the older format.
    pub fn encode(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }

    /// The open-streams gauge of `route` (an events route's label, or
    /// `grip` for the app's holds).
    pub fn streams_open_on(&self, route: &str) -> Gauge {
        self.streams_open
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone()
    }

    /// Gives each events route its `sidecast_streams_open` series at 0, so
    /// that the gauge (and its `# TYPE` line) is there before the first
    /// stream, and a dashboard shows every route. Called at start-up and
    /// after each reload, with the route table's labels.
    pub fn declare_routes<'a>(&self, labels: impl IntoIterator<Item = &'a str>) {
        for label in labels {
            self.streams_open_on(label);
        }
    }

    pub fn closed(&self, reason: &str) {
        self.streams_closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn publish_error(&self, status: u16) {
        self.publish_errors
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4: counter
/// families take their `_total` name, `# UNIT` and `# EOF` lines and
/// counters' `_created` samples (which 0.0.4 has not) are left out.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, kind)| kind.trim() == "counter")
        .map(|(name, _)| name)
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if name
                .strip_suffix("_created")
                .is_some_and(|base| counters.contains(base))
            {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let m = Metrics::new();
        m.events_published.inc();
        let text = m.encode();
        assert!(text.contains("# TYPE sidecast_events_published_total counter\n"));
        assert!(text.contains("\nsidecast_events_published_total 1\n"));
        assert!(text.contains("# TYPE sidecast_upstream_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }
}
