//! The admin listener: `/healthz` (alive), `/readyz` (serving, not
//! shutting down), `/metrics` (Prometheus text; OpenMetrics to a scraper
//! that asks for it).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::state::Shared;

fn resp(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json_ct = "application/json";
    Ok(match req.uri().path() {
        "/healthz" => resp(200, json_ct, json!({"status": "ok"}).to_string()),
        "/readyz" => {
            let l = &shared.lifecycle;
            let mut body = if l.is_stopping() {
                json!({"status": "draining"})
            } else if l.is_ready() {
                json!({"status": "ready"})
            } else {
                json!({"status": "starting"})
            };
            // Cluster mode is decided at start-up (a reload does not join
            // or leave Redis), so the link itself says whether there is one.
            if let Some(c) = &shared.cluster {
                let up = c.is_connected();
                body["cluster"] = json!(if up { "connected" } else { "disconnected" });
            }
            resp(
                if l.is_ready() { 200 } else { 503 },
                json_ct,
                body.to_string(),
            )
        }
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            if openmetrics {
                resp(
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    shared.metrics.encode_openmetrics(),
                )
            } else {
                resp(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    shared.metrics.encode(),
                )
            }
        }
        _ => resp(
            404,
            json_ct,
            json!({"error": "not_found", "message": "try /healthz, /readyz or /metrics"})
                .to_string(),
        ),
    })
}
