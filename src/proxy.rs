//! Pass-through: pingora's proxy logic (upstream pools, streaming both ways,
//! upgrades, timeouts), with sidecast's routing, forwarding headers and
//! error answers. The hooks stay thin; the rules are plain functions.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorSource;

use crate::auth::redact_target;
use crate::metrics::ClassLabel;
use crate::routes::strip;
use crate::state::Shared;

pub struct Proxy {
    pub shared: Arc<Shared>,
}

/// Per-request state.
pub struct Ctx {
    started: Instant,
    route: Arc<str>,
    strip: Option<String>,
    sidecast_error: Option<&'static str>,
}

/// Headers a client may not set for an upstream unless it comes from a
/// trusted proxy.
const FORGEABLE: [&str; 4] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// Hop-by-hop headers (RFC 9110 7.6.1) that never travel upstream; pingora
/// itself handles `Connection`, `Transfer-Encoding` and `Upgrade`.
const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "proxy-authorization",
];

/// Sets the forwarding headers for a request from `peer`.
pub fn forwarding(req: &mut RequestHeader, peer: Option<IpAddr>, trusted: bool) {
    let host = req
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let peer_s = peer.map(|p| p.to_string()).unwrap_or_default();
    if trusted {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer_s}"),
            _ => peer_s,
        };
        let _ = req.insert_header("X-Forwarded-For", xff);
        if !req.headers.contains_key("x-forwarded-proto") {
            let _ = req.insert_header("X-Forwarded-Proto", "http");
        }
        if !req.headers.contains_key("x-forwarded-host") {
            if let Some(h) = host {
                let _ = req.insert_header("X-Forwarded-Host", h);
            }
        }
    } else {
        let _ = req.insert_header("X-Forwarded-For", peer_s);
        let _ = req.insert_header("X-Forwarded-Proto", "http");
        match host {
            Some(h) => {
                let _ = req.insert_header("X-Forwarded-Host", h);
            }
            None => {
                req.remove_header("x-forwarded-host");
            }
        }
        for h in FORGEABLE {
            req.remove_header(h);
        }
    }
}

/// Removes hop-by-hop headers and those the `Connection` header names
/// (but `Upgrade`, which pingora needs to pass a WebSocket through).
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    let named: Vec<String> = req
        .headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "upgrade" && t != "close" && t != "keep-alive")
        .collect();
    for h in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        req.remove_header(h);
    }
}

fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            route: Arc::from("upstream"),
            strip: None,
            sidecast_error: None,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let rt = self.shared.runtime();
        let up = &rt.config.upstream;
        let path = session.req_header().uri.path();
        let target = match rt.routes.proxy_for(path) {
            Some(i) => {
                let r = &rt.routes.proxy[i];
                ctx.route = Arc::from(r.prefix.as_str());
                ctx.strip = r.strip_prefix.then(|| r.prefix.clone());
                &r.target
            }
            None => &up.target,
        };
        let mut peer = HttpPeer::new(target.addr, false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.timeout);
        peer.options.write_timeout = Some(up.timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let rt = self.shared.runtime();
        let trusted = peer.is_some_and(|ip| {
            rt.config
                .upstream
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&ip))
        });
        strip_hop_by_hop(req);
        forwarding(req, peer, trusted);
        if let Some(prefix) = &ctx.strip {
            let pq = req
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let new = strip(prefix, &pq);
            if let Ok(uri) = new.parse::<http::Uri>() {
                req.set_uri(uri);
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _p: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        ctx.sidecast_error = Some("upstream-unreachable");
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (code, kind) = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => (*code, None),
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError,
            ) => (502, Some("upstream-unreachable")),
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                (504, Some("upstream-timeout"))
            }
            (ErrorSource::Upstream, _) => {
                (502, Some(ctx.sidecast_error.unwrap_or("upstream-error")))
            }
            (
                ErrorSource::Downstream,
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ) => (0, None),
            (ErrorSource::Downstream, _) => (400, None),
            _ => (500, None),
        };
        ctx.sidecast_error = kind.or(ctx.sidecast_error);
        if code > 0 && session.response_written().is_none() {
            let body = Bytes::from(format!(
                "{} {}\n",
                code,
                crate::listener::respond::reason(code)
            ));
            if let Ok(mut resp) = ResponseHeader::build(code, Some(4)) {
                let _ = resp.insert_header("Content-Type", "text/plain; charset=utf-8");
                let _ = resp.insert_header("Content-Length", body.len().to_string());
                let _ =
                    resp.insert_header("Sidecast-Error", ctx.sidecast_error.unwrap_or("sidecast"));
                let _ = resp.insert_header("Connection", "close");
                let _ = session.write_response_header(Box::new(resp), false).await;
                let _ = session.write_response_body(Some(body), true).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _s: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let m = &self.shared.metrics;
        if status > 0 {
            m.proxy_requests
                .get_or_create(&ClassLabel {
                    class: class(status).to_owned(),
                    route: ctx.route.to_string(),
                })
                .inc();
        }
        let elapsed = ctx.started.elapsed();
        m.upstream_duration.observe(elapsed.as_secs_f64());
        let req = session.req_header();
        let peer = session
            .client_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            target: "sidecast::access",
            method = %req.method,
            uri = %redact_target(&req.uri.to_string()),
            status,
            route = %ctx.route,
            duration_ms = elapsed.as_millis() as u64,
            peer = %peer,
            error = e.map(|e| e.etype().as_str()).unwrap_or(""),
            sidecast_error = ctx.sidecast_error.unwrap_or(""),
            "proxied"
        );
    }
}
