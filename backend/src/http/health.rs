//! Liveness and readiness for orchestrators (`/healthz/live`, `/healthz/ready`, as Dex names them).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::no_store;
use super::AppState;

/// How long the store may take to show it can take a write before Postern reports itself not ready.
const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// `GET /healthz/live`: the process serves requests (restart it if this fails).
pub async fn live() -> Response {
    no_store(Json(json!({ "status": "live" })).into_response())
}

/// `GET /healthz/ready`: the store answers, so sign-ins can complete (send traffic elsewhere while it
/// does not; no restart needed, it turns ready again by itself).
pub async fn ready(State(state): State<AppState>) -> Response {
    // On a task of its own, so that a probe outliving the deadline finishes rather than being cut off
    // in the middle of a database call.
    let store = state.store.clone();
    let probe = tokio::spawn(async move { store.ping().await });
    let reason = match tokio::time::timeout(STORE_DEADLINE, probe).await {
        Ok(Ok(Ok(()))) => return no_store(Json(json!({ "status": "ready" })).into_response()),
        Ok(Err(_)) => "the database check failed",
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "not ready: the store failed");
            "the database failed"
        }
        Err(_) => {
            tracing::warn!("not ready: the store did not answer in time");
            "the database did not answer in time"
        }
    };
    no_store(
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": reason }))).into_response(),
    )
}
