//! The npm format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry package names or versions).

use metrics::{counter, histogram};

pub fn describe_metrics() {
    metrics::describe_counter!(
        "arca_npm_requests_total",
        "npm requests answered, by route and status"
    );
    metrics::describe_histogram!(
        "arca_npm_request_duration_seconds",
        metrics::Unit::Seconds,
        "npm request latency, by route and status"
    );
}

pub fn request(route: &'static str, status: u16, seconds: f64) {
    let status = status.to_string();
    counter!("arca_npm_requests_total", "route" => route, "status" => status.clone()).increment(1);
    histogram!("arca_npm_request_duration_seconds", "route" => route, "status" => status)
        .record(seconds);
}
