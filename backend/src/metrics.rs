//! Prometheus metrics, served on a listen address of their own (`metrics.listen`, off by default).
//! Every label set is bounded: routes are route templates, statuses are classes, reasons and grant
//! types are Postern's own words; usernames never appear, client ids only when the operator opts in
//! (`metrics.client_ids`). Without `metrics.listen` no recorder is installed and every update is a no-op.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: sub-millisecond reads to multi-second queued sign-ins.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Whether client ids may be labels (`metrics.client_ids`).
static CLIENT_IDS: OnceLock<bool> = OnceLock::new();

/// Installs the Prometheus recorder; `client_ids` lets client ids be labels. Once per process.
pub fn install(client_ids: bool) -> anyhow::Result<PrometheusHandle> {
    let _ = CLIENT_IDS.set(client_ids);
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// The client id as a label value, or `-` unless the operator opted in.
pub fn client_label(client_id: &str) -> String {
    if CLIENT_IDS.get().copied().unwrap_or(false) {
        client_id.to_owned()
    } else {
        "-".to_owned()
    }
}

/// Serves `GET /metrics` on `listener` until the process ends; the recorder's upkeep runs alongside.
pub async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    axum::serve(listener, app).await?;
    Ok(())
}

/// Middleware: counts every request and its latency by route template, method and status class.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("(other)", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let labels = [("route", route), ("method", method), ("status", class.to_owned())];
    metrics::counter!("postern_http_requests_total", &labels).increment(1);
    metrics::histogram!("postern_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The help text of every metric Postern exports (the README lists them too).
fn describe() {
    describe_counter!("postern_http_requests_total", "HTTP requests answered, by route, method and status class");
    describe_histogram!(
        "postern_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route, method and status class"
    );
    describe_counter!("postern_logins_total", "Password sign-ins at the login API, by outcome and reason");
    describe_counter!("postern_tokens_issued_total", "Token responses issued, by grant type");
    describe_counter!("postern_code_replays_total", "Authorization codes redeemed twice (their grant revoked)");
    describe_counter!("postern_refresh_reuse_total", "Rotated refresh tokens used again (their family revoked)");
    describe_counter!("postern_throttled_total", "Attempts held back by a throttle, by throttle and reason");
    describe_counter!("postern_client_auth_failures_total", "Failed client authentications, by reason");
    describe_counter!("postern_audit_events_total", "Every audit event, by event");
    describe_gauge!("postern_argon2_queue_depth", "Password checks waiting for an argon2 slot");
    describe_histogram!(
        "postern_argon2_wait_seconds",
        Unit::Seconds,
        "Time a password check waited for an argon2 slot"
    );
    describe_histogram!("postern_argon2_duration_seconds", Unit::Seconds, "Time one argon2 hash or check took");
    describe_gauge!("postern_throttle_waiting", "Sign-in attempts queued behind others from the same network");
    describe_histogram!("postern_store_duration_seconds", Unit::Seconds, "Store (database) call latency, by operation");
    describe_counter!("postern_store_errors_total", "Store (database) calls that failed, by operation");
}
