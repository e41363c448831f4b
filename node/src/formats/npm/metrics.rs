//! The npm format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry package names or versions).

use crate::formats::routes::RequestMetrics;

pub const METRICS: RequestMetrics = RequestMetrics {
    requests: "arca_npm_requests_total",
    duration: "arca_npm_request_duration_seconds",
    client: "npm",
};
