//! `/api/v1/audit`: the audit log, filtered and paged, and its verification (cluster-admin).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::invalid;
use crate::api::AppState;
use crate::auth::audit;
use crate::error::{Error, Result};
use crate::metadata::model::format_ms;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// RFC 3339, or milliseconds since the epoch.
    since: Option<String>,
    principal: Option<String>,
    repo: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    /// The cursor a previous page returned.
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit`: records in order, filtered, a page at a time (`next` is the cursor).
pub async fn list_audit(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Response> {
    let since_ms = match &query.since {
        None => None,
        Some(text) => Some(match text.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| invalid(format!("since: {e}")))?
                .timestamp_millis(),
        }),
    };
    let filter = audit::Filter {
        since_ms,
        principal: query.principal,
        repo: query.repo,
        action: query.action,
        outcome: query.outcome,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let (records, next) = audit::list(
        &state.service.catalog,
        &filter,
        query.after.unwrap_or(0),
        limit,
    )?;
    let records: Vec<_> = records
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "time": format_ms(r.event.at_ms),
                "principal": r.event.principal,
                "token_id": r.event.token_id,
                "source": r.event.source,
                "region": r.event.region,
                "node": r.event.node,
                "action": r.event.action,
                "resource": r.event.resource,
                "repo": r.event.repo,
                "outcome": r.event.outcome,
                "request_id": r.event.request_id,
                "count": r.event.count,
                "prev": r.prev,
                "hash": r.hash,
            })
        })
        .collect();
    Ok(Json(json!({ "records": records, "next": next })).into_response())
}

/// `GET /api/v1/audit/verify`: recomputes the chain from the oldest kept record.
pub async fn verify_audit(State(state): State<AppState>) -> Result<Response> {
    let catalog = state.service.catalog.clone();
    let report = tokio::task::spawn_blocking(move || audit::verify(&catalog))
        .await
        .map_err(|e| Error::internal("verify the audit log", e))??;
    Ok(Json(report).into_response())
}
