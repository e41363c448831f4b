//! `/api/v1/divergent`: the writes this region accepted as a primary after the fork point of
//! the region that replaced it, and their content, kept until an operator acknowledges them
//! (`arca cluster divergent ack`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::AppState;
use crate::error::{Error, Result};

/// Every divergent write, as `arca cluster divergent` lists them.
pub async fn list(State(state): State<AppState>) -> Result<Response> {
    let reply = crate::geo::status::divergent(&state.service.geo)?;
    let writes: Vec<serde_json::Value> = reply
        .writes
        .iter()
        .map(|w| {
            serde_json::json!({
                "epoch": w.epoch,
                "seq": w.seq,
                "at_ms": w.at_ms,
                "summary": w.summary,
                "recorded_at_ms": w.recorded_at_ms,
                "content_bytes": w.content_bytes,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "divergent": writes })).into_response())
}

/// The content of one divergent write (the file, blob or manifest it stored), streamed.
pub async fn content(State(state): State<AppState>, Path(seq): Path<String>) -> Result<Response> {
    let seq: u64 = seq.parse().map_err(|_| Error::InvalidRequest {
        message: format!("{seq:?} is not a change-log sequence number"),
    })?;
    let not_found = || Error::ArtifactNotFound {
        repo: "divergent".into(),
        path: seq.to_string(),
    };
    let write = state
        .service
        .catalog
        .divergent_write(seq)?
        .ok_or_else(not_found)?;
    let blob = write
        .command
        .as_ref()
        .and_then(|command| state.service.formats.content(command))
        .ok_or_else(not_found)?;
    let stream = state.service.open_blob(&blob, 0..blob.size).await?;
    let mut response = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&blob.sha256.to_hex()) {
        headers.insert(
            header::HeaderName::from_static(crate::formats::generic::api::CHECKSUM_SHA256),
            value,
        );
    }
    Ok(response)
}
