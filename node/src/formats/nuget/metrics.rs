//! The NuGet format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry package ids or versions).

use crate::formats::routes::RequestMetrics;

pub const METRICS: RequestMetrics = RequestMetrics {
    requests: "arca_nuget_requests_total",
    duration: "arca_nuget_request_duration_seconds",
    client: "NuGet",
};
