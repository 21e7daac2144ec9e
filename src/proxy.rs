//! Pass-through: pingora's proxy logic (upstream pools, streaming both ways,
//! upgrades, hop-by-hop headers), with sidecast's routing, forwarding
//! headers, response-header deadline and error answers. The hooks stay
//! thin; the rules are plain functions in the submodules.

pub mod deadline;
pub mod failure;
pub mod forwarding;
pub mod lean;
mod pool;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;

use crate::config::Target;
use crate::http1::target::redact_target;
use crate::metrics::ClassLabel;
use crate::routes::{strip, ProxyRoute};
use crate::state::{Runtime, Shared};
use deadline::HeaderDeadline;
use failure::{classify, Failure};
use forwarding::{forwarding, is_trusted};

pub struct Proxy {
    pub shared: Arc<Shared>,
}

/// A request routed to the proxy: the runtime it was routed with and the
/// proxy route it matched. The listener loads the runtime and routes a
/// head once; the relay, the tunnel and pingora's hooks read the route
/// and every setting from this, so that a reload in the middle of a
/// request cannot serve it from two route tables. (The route is held as
/// its index beside the runtime that owns it: pingora's per-request state
/// cannot borrow.)
#[derive(Clone)]
pub struct Routed {
    rt: Arc<Runtime>,
    index: Option<usize>,
}

tokio::task_local! {
    /// The route of the request pingora is serving. pingora makes its
    /// per-request state (`new_ctx`) with no access to the request, on the
    /// task that polls `process_new_http`, which the listener runs inside
    /// [`Routed::scope`].
    static ROUTED: Routed;
}

impl Routed {
    /// `index` is the proxy route of `rt`'s table the request matched
    /// (`None`: `[upstream]`).
    pub fn new(rt: Arc<Runtime>, index: Option<usize>) -> Routed {
        Routed { rt, index }
    }

    /// A request's route in pingora's per-request state: the listener's,
    /// or (for hooks that run outside its scope) routed now, once.
    fn of<'c>(slot: &'c mut Option<Routed>, shared: &Shared, path: &str) -> &'c Routed {
        slot.get_or_insert_with(|| {
            let rt = shared.runtime();
            let index = rt.routes.proxy_for(path);
            Routed { rt, index }
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The proxy route, `None` for `[upstream]`.
    pub fn route(&self) -> Option<&ProxyRoute> {
        self.index.map(|i| &self.rt.routes.proxy[i])
    }

    /// Where the request goes.
    pub fn target(&self) -> &Target {
        self.route()
            .map_or(&self.rt.config.upstream.target, |r| &r.target)
    }

    /// Whether the app's GRIP hold headers are honoured on this route.
    pub fn grip(&self) -> bool {
        self.route()
            .map_or(self.rt.config.upstream.grip, |r| r.grip)
    }

    /// `Some(max channels)` when GRIP holds are honoured on this route:
    /// at most `[events] max_topics` channels, as for a subscriber.
    pub fn grip_holds(&self) -> Option<usize> {
        self.grip().then_some(self.rt.config.events.max_topics)
    }

    /// What a request sent upstream carries of `Grip-Sig`.
    pub fn grip_sig(&self) -> GripSig {
        let token = self.rt.grip_sig.as_ref().map(|s| s.token());
        GripSig {
            // A client's own is never passed on where it could be taken
            // for sidecast's: with a key, or with GRIP on.
            strip: token.is_some() || self.grip(),
            token,
        }
    }

    /// The route's label in metrics and the access log.
    pub fn label(&self) -> &str {
        self.route().map_or("upstream", |r| r.prefix.as_str())
    }

    /// The target sent upstream: the route's prefix stripped when it says
    /// so.
    pub fn upstream_target<'t>(&self, target: &'t str) -> std::borrow::Cow<'t, str> {
        match self.route() {
            Some(r) if r.strip_prefix => strip(&r.prefix, target).into(),
            _ => target.into(),
        }
    }

    /// Runs `fut` (one request through pingora) with this as its route.
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        ROUTED.scope(self, fut)
    }
}

/// `Grip-Sig` on a request sent upstream.
#[derive(Debug, Default)]
pub struct GripSig {
    /// The client's `Grip-Sig` is removed.
    pub strip: bool,
    /// sidecast's, to add.
    pub token: Option<Arc<str>>,
}

/// Per-request state.
pub struct Ctx {
    started: Instant,
    /// The listener's route for this request (routed by the hooks
    /// themselves only when they run outside its scope).
    routed: Option<Routed>,
    /// Connecting failed (pingora's `fail_to_connect` saw it).
    connect_failed: bool,
    sidecast_error: Option<&'static str>,
    /// The upstream's authority, for a request that came without `Host`
    /// (HTTP/1.0 allows that; the HTTP/1.1 request sent upstream needs one).
    host: Option<String>,
    /// The app asked for a GRIP hold on a request this path cannot hold.
    grip_refused: bool,
}

/// `host:port` of an upstream URL, as written.
fn authority(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    uri.authority().map(|a| a.as_str().to_owned())
}

/// An HTTP/1.0 client cannot read chunked encoding (RFC 9112 §6.1): a
/// response without a length is sent to it as is and ends by closing.
/// Returns whether the connection must close after it.
pub fn frame_for_http10(req_version: http::Version, resp: &mut ResponseHeader) -> bool {
    if req_version != http::Version::HTTP_10 || !resp.headers.contains_key("transfer-encoding") {
        return false;
    }
    resp.remove_header("transfer-encoding");
    resp.remove_header("content-length");
    true
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

/// One proxied request as the metrics count it and the access log says it.
pub struct Access<'a> {
    pub method: &'a str,
    /// As the client sent it; logged with secrets redacted.
    pub target: &'a str,
    /// `0` when no response reached the client (not counted by class).
    pub status: u16,
    pub route: &'a str,
    pub started: Instant,
    pub peer: &'a str,
    /// Pingora's error type, or what the lean relay saw; `""` for none.
    pub error: &'a str,
    /// The `Sidecast-Error` code of sidecast's own answer; `""` for none.
    pub sidecast_error: &'a str,
}

/// Counts and logs one proxied request (`rt`: the runtime it was routed
/// with). Both pass-through paths call it, and the listener too, for the
/// `504` it writes itself when response headers are late.
pub fn record(shared: &Shared, rt: &Runtime, a: Access<'_>) {
    let Access {
        method,
        target,
        status,
        route,
        started,
        peer,
        error,
        sidecast_error,
    } = a;
    let m = &shared.metrics;
    if status > 0 {
        m.proxy_requests
            .get_or_create(&ClassLabel {
                class: class(status).to_owned(),
                route: route.to_owned(),
            })
            .inc();
    }
    let elapsed = started.elapsed();
    m.upstream_duration.observe(elapsed.as_secs_f64());
    if !rt.config.log.access {
        return;
    }
    tracing::info!(
        target: "sidecast::access",
        method,
        uri = %redact_target(target),
        status,
        route,
        duration_ms = elapsed.as_millis() as u64,
        peer,
        error,
        sidecast_error,
        "proxied"
    );
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            routed: ROUTED.try_with(Routed::clone).ok(),
            connect_failed: false,
            sidecast_error: None,
            host: None,
            grip_refused: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        // HTTP/1.0 has no `100 Continue` (RFC 9110 §10.1.1: the
        // expectation is ignored), and no 1xx may reach an HTTP/1.0 client,
        // which would take it for the final answer: the listener makes the
        // session drop interim answers, and without `Expect` here none is
        // asked of the upstream either.
        if session.req_header().version == http::Version::HTTP_10 {
            session
                .req_header_mut()
                .remove_header(&http::header::EXPECT);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let routed = Routed::of(
            &mut ctx.routed,
            &self.shared,
            session.req_header().uri.path(),
        );
        let up = &routed.runtime().config.upstream;
        let target = routed.target();
        if session
            .req_header()
            .headers
            .get(http::header::HOST)
            .is_none()
        {
            ctx.host = authority(&target.url);
        }
        let mut peer = HttpPeer::new(target.addr, false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        // Response headers are timed by the listener's HeaderDeadline.
        // pingora's read timeout restarts with every read, so it is the
        // body's idle timeout (it also bounds the wait for the head: the
        // smaller of the two cuts first). An upgraded connection may be
        // silent for as long as its two ends like.
        peer.options.read_timeout = if !HeaderDeadline::in_scope() {
            Some(up.timeout)
        } else if session.is_upgrade_req() {
            None
        } else {
            Some(up.body_idle_timeout)
        };
        peer.options.write_timeout = Some(up.timeout);
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::standard();
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // A retried connect that succeeded: later failures are not the
        // connect's.
        ctx.connect_failed = false;
        Ok(())
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
        let host = ctx.host.take();
        let routed = Routed::of(
            &mut ctx.routed,
            &self.shared,
            session.req_header().uri.path(),
        );
        let trusted = is_trusted(peer, &routed.runtime().config.upstream.trusted_proxies);
        forwarding(req, peer, trusted);
        let sig = routed.grip_sig();
        if sig.strip {
            req.remove_header("grip-sig");
        }
        if let Some(token) = sig.token {
            req.insert_header("Grip-Sig", &*token)?;
        }
        if let Some(host) = host {
            req.insert_header(http::header::HOST, host)?;
        }
        if routed.route().is_some_and(|r| r.strip_prefix) {
            let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = routed.upstream_target(pq).parse::<http::Uri>() {
                req.set_uri(uri);
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if end_of_stream {
            let routed = Routed::of(
                &mut ctx.routed,
                &self.shared,
                session.req_header().uri.path(),
            );
            HeaderDeadline::arm_current(routed.runtime().config.upstream.timeout);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        crate::http1::hop::strip_response(resp);
        if !resp.status.is_informational() {
            crate::http1::downstream::keep_app_date(
                resp.headers.get(http::header::DATE).map(|v| v.as_bytes()),
            );
        }
        // An interim answer (100 Continue) is not the response head; a 101
        // is: what follows is the upgraded connection.
        if !resp.status.is_informational() || resp.status == 101 {
            HeaderDeadline::answered_current();
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // A hold needs the connection itself, which only the lean relay
        // has: a request it does not take (HTTP/1.0, a chunked upload,
        // `Expect`) cannot be held, and is told so rather than given the
        // initial content as if it were the whole answer.
        let path = session.req_header().uri.path().to_owned();
        let grip = Routed::of(&mut ctx.routed, &self.shared, &path).grip();
        if grip
            && session.req_header().method != http::Method::HEAD
            && !resp.status.is_informational()
            && resp.headers.contains_key("grip-hold")
        {
            tracing::warn!(target: "sidecast::grip", method = %session.req_header().method, path = %redact_target(&path), "the app asked for a GRIP hold on a request that cannot be held (only plain HTTP/1.1 requests can: no chunked upload, no Expect): answered 502");
            ctx.grip_refused = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(502),
                "GRIP hold on a request that cannot be held",
            ));
        }
        if grip {
            let names: Vec<http::HeaderName> = resp
                .headers
                .keys()
                .filter(|n| crate::grip::instruct::is_grip_header(n.as_str().as_bytes()))
                .cloned()
                .collect();
            for n in names {
                resp.remove_header(&n);
            }
        }
        if frame_for_http10(session.req_header().version, resp) {
            session.set_keepalive(None);
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
        ctx.connect_failed = true;
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let Failure { status, code } = if ctx.grip_refused {
            failure::GRIP_502
        } else {
            classify(e.esource(), e.etype(), ctx.connect_failed)
        };
        if session.response_written().is_some()
            && matches!(e.etype(), ErrorType::ReadTimedout)
            && matches!(e.esource(), ErrorSource::Upstream)
        {
            // The head was sent, then the body went silent past
            // body_idle_timeout: the client's connection is closed.
            self.shared.metrics.upstream_body_timeouts.inc();
        }
        if status > 0 {
            ctx.sidecast_error = Some(code);
        }
        if status > 0 && session.response_written().is_none() {
            let body = Bytes::from(failure::body(status));
            if let Ok(mut resp) = ResponseHeader::build(status, Some(4)) {
                let _ = resp.insert_header("Content-Type", "text/plain; charset=utf-8");
                let _ = resp.insert_header("Content-Length", body.len().to_string());
                let _ = resp.insert_header("Sidecast-Error", code);
                // pingora writes `Connection` from its keep-alive state.
                session.set_keepalive(None);
                let _ = session.write_response_header(Box::new(resp), false).await;
                let _ = session.write_response_body(Some(body), true).await;
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _s: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let peer = session
            .client_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let routed = Routed::of(&mut ctx.routed, &self.shared, req.uri.path());
        record(
            &self.shared,
            routed.runtime(),
            Access {
                method: req.method.as_str(),
                target: &req.uri.to_string(),
                status,
                route: routed.label(),
                started: ctx.started,
                peer: &peer,
                error: e.map(|e| e.etype().as_str()).unwrap_or(""),
                sidecast_error: ctx.sidecast_error.unwrap_or(""),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http10_gets_no_chunks() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("Transfer-Encoding", "chunked").unwrap();
        assert!(!frame_for_http10(http::Version::HTTP_11, &mut r));
        assert!(r.headers.contains_key("transfer-encoding"));
        assert!(frame_for_http10(http::Version::HTTP_10, &mut r));
        assert!(!r.headers.contains_key("transfer-encoding"));
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("Content-Length", "5").unwrap();
        assert!(!frame_for_http10(http::Version::HTTP_10, &mut r));
        assert!(r.headers.contains_key("content-length"));
    }
}
