//! The PyPI format's metrics (see `docs/metrics.md`): requests and latency per route and
//! status (labels never carry project or file names).

use crate::formats::routes::RequestMetrics;

pub const METRICS: RequestMetrics = RequestMetrics {
    requests: "arca_pypi_requests_total",
    duration: "arca_pypi_request_duration_seconds",
    client: "PyPI",
};
