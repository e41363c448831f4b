//! The Maven format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry groupIds, artifactIds or file names).

use metrics::{counter, histogram};

pub fn describe_metrics() {
    metrics::describe_counter!(
        "arca_maven_requests_total",
        "Maven requests answered, by route and status"
    );
    metrics::describe_histogram!(
        "arca_maven_request_duration_seconds",
        metrics::Unit::Seconds,
        "Maven request latency, by route and status"
    );
}

pub fn request(route: &'static str, status: u16, seconds: f64) {
    let status = status.to_string();
    counter!("arca_maven_requests_total", "route" => route, "status" => status.clone())
        .increment(1);
    histogram!("arca_maven_request_duration_seconds", "route" => route, "status" => status)
        .record(seconds);
}
