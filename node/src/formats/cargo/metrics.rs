//! The cargo format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry crate names or versions).

use crate::formats::routes::RequestMetrics;

pub const METRICS: RequestMetrics = RequestMetrics {
    requests: "arca_cargo_requests_total",
    duration: "arca_cargo_request_duration_seconds",
    client: "cargo",
};
