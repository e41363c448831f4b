//! The registry's metrics (see `docs/metrics.md`): requests and latency per API operation,
//! and upload sessions. Labels stay low-cardinality: an operation name and a status code.

use metrics::{counter, gauge, histogram};

/// Describes the registry's metrics to the recorder (their help text on `/metrics`).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "arca_oci_requests_total",
        "Registry requests answered, by API operation and status"
    );
    metrics::describe_histogram!(
        "arca_oci_request_duration_seconds",
        metrics::Unit::Seconds,
        "Registry request latency, by API operation and status"
    );
    metrics::describe_gauge!(
        "arca_oci_upload_sessions",
        "Blob upload sessions held by this node"
    );
    metrics::describe_counter!(
        "arca_oci_upload_sessions_expired_total",
        "Upload sessions dropped after their expiry"
    );
    metrics::describe_counter!(
        "arca_oci_upload_sessions_refused_total",
        "Upload sessions refused because too many were open"
    );
}

/// Counts one answered registry request and its latency.
pub fn request(operation: &'static str, status: u16, seconds: f64) {
    let status = status.to_string();
    counter!("arca_oci_requests_total", "operation" => operation, "status" => status.clone())
        .increment(1);
    histogram!("arca_oci_request_duration_seconds", "operation" => operation, "status" => status)
        .record(seconds);
}

/// Upload sessions held by this node.
pub fn upload_sessions(count: usize) {
    gauge!("arca_oci_upload_sessions").set(count as f64);
}

pub fn upload_session_expired() {
    counter!("arca_oci_upload_sessions_expired_total").increment(1);
}

/// An upload session was refused: too many open.
pub fn upload_session_refused() {
    metrics::counter!("arca_oci_upload_sessions_refused_total").increment(1);
}
