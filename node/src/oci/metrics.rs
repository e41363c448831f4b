//! The registry's metrics (see `docs/metrics.md`): requests and latency per API operation,
//! and upload sessions. Labels stay low-cardinality: an operation name and a status code.

use metrics::{counter, gauge, histogram};

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
