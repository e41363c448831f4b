//! The Helm format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry chart names or versions).

use metrics::{counter, histogram};

pub fn describe_metrics() {
    metrics::describe_counter!(
        "arca_helm_requests_total",
        "Helm requests answered, by route and status"
    );
    metrics::describe_histogram!(
        "arca_helm_request_duration_seconds",
        metrics::Unit::Seconds,
        "Helm request latency, by route and status"
    );
}

pub fn request(route: &'static str, status: u16, seconds: f64) {
    let status = status.to_string();
    counter!("arca_helm_requests_total", "route" => route, "status" => status.clone()).increment(1);
    histogram!("arca_helm_request_duration_seconds", "route" => route, "status" => status)
        .record(seconds);
}
