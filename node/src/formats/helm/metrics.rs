//! The Helm format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry chart names or versions).

use crate::formats::routes::RequestMetrics;

pub const METRICS: RequestMetrics = RequestMetrics {
    requests: "arca_helm_requests_total",
    duration: "arca_helm_request_duration_seconds",
    client: "Helm",
};
