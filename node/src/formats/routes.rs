//! What every format's routes share: the error type that answers in the format's own body
//! (and the status, message and text body most of them use),
//! the path split under the format's prefix, and the request metrics
//! (`arca_<format>_requests_total`, `arca_<format>_request_duration_seconds`, by route and
//! status; labels never carry names) with the middleware that records them.

use std::marker::PhantomData;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The status and the client-facing message of an error of a package format's route: a
/// mirror's refusal of a write is a plain `403` naming the primary (no package client resends
/// a body to a redirect), and an internal error's details go to the log, not the client.
pub fn status_and_message(format: &str, error: Error) -> (StatusCode, String) {
    let status = match &error {
        Error::ReadOnlyMirror { .. } => StatusCode::FORBIDDEN,
        other => other.status(),
    };
    let message = if status.is_server_error() && matches!(error, Error::Internal(_)) {
        tracing::error!(%error, format, "request failed");
        "internal error; the server log has the details".to_string()
    } else {
        error.to_string()
    };
    (status, message)
}

/// A `text/plain` answer whose reason phrase is the message too (on one line, bounded): what
/// clients that print the status line show (Maven, twine, nuget).
pub fn text_response(status: StatusCode, message: &str) -> Response {
    let reason: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response();
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
        response.extensions_mut().insert(phrase);
    }
    response
}

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
