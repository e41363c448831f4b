//! What every format's routes share: the error type that answers in the format's own body,
//! the path split under the format's prefix, and the request metrics
//! (`arca_<format>_requests_total`, `arca_<format>_request_duration_seconds`, by route and
//! status; labels never carry names) with the middleware that records them.

use std::marker::PhantomData;
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// A format's error body.
pub trait ErrorBody {
    fn error_response(error: Error) -> Response;
}

/// An error of a format's route, answered in the body of `B`.
pub struct RouteError<B>(pub Error, PhantomData<B>);

impl<B> From<Error> for RouteError<B> {
    fn from(error: Error) -> Self {
        Self(error, PhantomData)
    }
}

impl<B: ErrorBody> IntoResponse for RouteError<B> {
    fn into_response(self) -> Response {
        B::error_response(self.0)
    }
}

/// Splits `{prefix}{repo}/{rest}` into the repository and the raw rest (`""` without one).
pub fn split_path<'p>(prefix: &str, path: &'p str) -> Option<(&'p str, &'p str)> {
    let rest = path.strip_prefix(prefix)?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// A format's request metrics.
pub struct RequestMetrics {
    /// `arca_<format>_requests_total`.
    pub requests: &'static str,
    /// `arca_<format>_request_duration_seconds`.
    pub duration: &'static str,
    /// The clients' name for the format, in descriptions (`PyPI`, `cargo`).
    pub client: &'static str,
}

impl RequestMetrics {
    pub fn describe(&self) {
        metrics::describe_counter!(
            self.requests,
            format!("{} requests answered, by route and status", self.client)
        );
        metrics::describe_histogram!(
            self.duration,
            metrics::Unit::Seconds,
            format!("{} request latency, by route and status", self.client)
        );
    }

    pub fn record(&self, route: &'static str, status: u16, seconds: f64) {
        let status = status.to_string();
        metrics::counter!(self.requests, "route" => route, "status" => status.clone()).increment(1);
        metrics::histogram!(self.duration, "route" => route, "status" => status).record(seconds);
    }

    /// Runs `next` and records the answer under the route `label` gives the request's method
    /// and path (the body of a format's `track` middleware).
    pub async fn track(
        &self,
        label: impl FnOnce(&Method, &str) -> &'static str,
        request: Request,
        next: Next,
    ) -> Response {
        let started = Instant::now();
        let route = label(request.method(), request.uri().path());
        let response = next.run(request).await;
        self.record(
            route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        response
    }
}
