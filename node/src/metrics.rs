//! The node's metrics: one Prometheus recorder per process, rendered at `/metrics`.
//!
//! See `docs/metrics.md` for the full reference. Names follow `arca_<area>_<what>_<unit>`;
//! labels stay low-cardinality (route templates, never paths).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metadata::model::GlobalStats;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency_buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_duration_seconds".into()),
                        &latency_buckets,
                    )
                })
                .map(|b| b.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "a metrics recorder was already installed; /metrics may be empty"
                        );
                    }
                    handle
                }
                Err(e) => {
                    tracing::error!(error = %e, "metrics buckets rejected; using defaults");
                    let recorder = PrometheusBuilder::new().build_recorder();
                    let handle = recorder.handle();
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
            }
        })
        .clone()
}

/// Axum middleware: request counts and latency by route template, method and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    counter!("arca_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.clone())
        .increment(1);
    histogram!("arca_http_request_duration_seconds", "route" => route, "method" => method, "status" => status)
        .record(elapsed);
    response
}

/// The method as a metric label, from a closed set: hyper accepts any token as a method, and a
/// label taken from the request would let a client grow the number of series without bound.
fn method_label(method: &axum::http::Method) -> String {
    use axum::http::Method;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    if known.contains(method) {
        method.as_str().to_string()
    } else {
        "other".to_string()
    }
}

pub fn bytes_received(n: usize) {
    counter!("arca_http_received_bytes_total").increment(n as u64);
}

pub fn bytes_sent(n: usize) {
    counter!("arca_http_sent_bytes_total").increment(n as u64);
}

pub fn chunk_written(len: usize) {
    counter!("arca_storage_chunks_written_total").increment(1);
    counter!("arca_storage_chunk_written_bytes_total").increment(len as u64);
}

pub fn chunk_deduplicated(len: usize) {
    counter!("arca_storage_chunks_deduplicated_total").increment(1);
    counter!("arca_storage_chunk_deduplicated_bytes_total").increment(len as u64);
}

/// A large upload flushed the chunk column families to make its unlogged chunks durable.
pub fn chunk_flush() {
    counter!("arca_storage_chunk_flushes_total").increment(1);
}

pub fn chunk_deleted() {
    counter!("arca_storage_chunks_deleted_total").increment(1);
}

pub fn unindexed_chunk(what: &'static str) {
    counter!("arca_gc_unindexed_chunks_total", "action" => what).increment(1);
}

pub fn corrupt_chunk() {
    counter!("arca_storage_corrupt_chunks_total").increment(1);
}

/// Publishes the state machine's totals (called at scrape time).
pub fn set_storage_gauges(stats: &GlobalStats, stored_chunks: Option<u64>) {
    gauge!("arca_storage_repositories").set(stats.repositories as f64);
    gauge!("arca_storage_artifacts").set(stats.artifacts as f64);
    gauge!("arca_storage_blobs").set(stats.blobs as f64);
    gauge!("arca_storage_referenced_chunks").set(stats.chunks as f64);
    gauge!("arca_storage_logical_bytes").set(stats.logical_bytes as f64);
    gauge!("arca_storage_physical_bytes").set(stats.physical_bytes as f64);
    gauge!("arca_storage_dedup_saved_bytes")
        .set(stats.logical_bytes.saturating_sub(stats.physical_bytes) as f64);
    if let Some(stored) = stored_chunks {
        gauge!("arca_storage_stored_chunks").set(stored as f64);
    }
}
