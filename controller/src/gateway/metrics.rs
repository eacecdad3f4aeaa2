//! `GET /metrics`: the controller's Prometheus exposition, on the REST gateway's
//! listener (HTTPS too when it serves TLS).
//!
//! Unauthenticated, as exporters usually are: Prometheus scrapes without credentials,
//! and the exposition holds counts and durations only, no host address, task id or
//! user name; a deployment that must hide even those serves the gateway's port to its
//! operators only. Outside OCP's envelope, since Prometheus reads the exposition
//! format, not JSON.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::GatewayState;
use super::error::{ApiError, codes};
use crate::metrics::CONTENT_TYPE;

pub async fn scrape(State(state): State<GatewayState>) -> Response {
    match state.metrics.render(state.core.counts()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!("metrics: reading the store: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::INTERNAL,
                format!("reading the store for the metrics: {e}"),
            )
            .into_response()
        }
    }
}
