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

/// Readiness: the node knows a Raft leader, so writes can be committed and reads are current.
pub async fn readyz(State(state): State<AppState>) -> Result<Response> {
    let metrics = state.service.raft.raft().metrics().borrow().clone();
    match metrics.current_leader {
        Some(leader) => Ok((
            StatusCode::OK,
            Json(json!({
                "status": "ready",
                "node_id": metrics.id,
                "leader": leader,
                "term": metrics.current_term,
                "applied_index": metrics.last_applied.map(|l| l.index).unwrap_or(0),
            })),
        )
            .into_response()),
        None => Err(Error::NotReady {
            reason: "no raft leader is known yet".into(),
        }),
    }
}
