//! The Maven format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry groupIds, artifactIds or file names).

use crate::formats::routes::RequestMetrics;

pub const METRICS: RequestMetrics = RequestMetrics {
    requests: "arca_maven_requests_total",
    duration: "arca_maven_request_duration_seconds",
    client: "Maven",
};
