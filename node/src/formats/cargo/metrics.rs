//! The cargo format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry crate names or versions).

use metrics::{counter, histogram};

pub fn describe_metrics() {
    metrics::describe_counter!(
        "arca_cargo_requests_total",
        "cargo requests answered, by route and status"
    );
    metrics::describe_histogram!(
        "arca_cargo_request_duration_seconds",
        metrics::Unit::Seconds,
        "cargo request latency, by route and status"
    );
}

pub fn request(route: &'static str, status: u16, seconds: f64) {
    let status = status.to_string();
    counter!("arca_cargo_requests_total", "route" => route, "status" => status.clone())
        .increment(1);
    histogram!("arca_cargo_request_duration_seconds", "route" => route, "status" => status)
        .record(seconds);
}
