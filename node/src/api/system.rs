//! `/metrics`, `/healthz`, `/readyz`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::AppState;
use crate::error::{Error, Result};

pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.service.catalog.global_stats() {
        Ok(stats) => {
            crate::metrics::set_storage_gauges(&stats, state.service.chunks.estimated_count())
        }
        Err(e) => tracing::warn!(error = %e, "read storage totals for /metrics"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Liveness: the process is up and serving HTTP.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: this node knows a Raft leader, belongs to the region, and has caught up with the
/// log and with the chunks its metadata references.
pub async fn readyz(State(state): State<AppState>) -> Result<Response> {
    let region = &state.service.region;
    let (ready, reason) = crate::region::status::readiness(region).await;
    if !ready {
        return Err(Error::NotReady { reason });
    }
    if let Some(error) = crate::api::installing_error(&state) {
        return Err(error);
    }
    let status = crate::region::status::node_status(region).await;
    Ok((
        StatusCode::OK,
        Json(json!({
            "status": "ready",
            "node_id": status.node_id,
            "region": status.region,
            "role": status.role,
            "leader": status.leader_id,
            "term": status.term,
            "applied_index": status.applied_index,
            "resync_backlog": status.resync_backlog,
        })),
    )
        .into_response())
}
