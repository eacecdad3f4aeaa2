//! Counting the REST gateway's requests by route template, never by raw path, so that
//! a client inventing paths (`/compute/hosts/1`, `/compute/hosts/2`, ...) cannot grow
//! the exposition without bound.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The one route label of every request no route matched.
pub const UNMATCHED: &str = "unmatched";
/// The one method label of every method outside HTTP's standard ones.
pub const OTHER_METHOD: &str = "OTHER";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Default)]
pub struct HttpRequests(Family<HttpLabels, Counter>);

impl HttpRequests {
    pub(super) fn family(&self) -> Family<HttpLabels, Counter> {
        self.0.clone()
    }

    pub fn record(&self, method: &Method, matched: Option<&str>, status: StatusCode) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route_label(matched).to_string(),
            status: status.as_u16(),
        };
        self.0.get_or_create(&labels).inc();
    }

    #[cfg(test)]
    fn count(&self, method: &Method, route: &str, status: StatusCode) -> u64 {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.to_string(),
            status: status.as_u16(),
        };
        self.0.get(&labels).map_or(0, |c| c.get())
    }
}

/// The route template the router matched (`/compute/hosts/{hostId}`, under
/// `/api/v2` too when the request came that way), or [`UNMATCHED`].
pub fn route_label(matched: Option<&str>) -> &str {
    matched.unwrap_or(UNMATCHED)
}

/// HTTP's standard methods, each its own label.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// Extension methods (any token is a valid HTTP method) share one label.
pub fn method_label(method: &Method) -> &'static str {
    METHODS
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or(OTHER_METHOD)
}

/// The gateway's outermost middleware: counts each answer with the status the client
/// gets, envelope errors and the router's own 404s and 405s included.
pub async fn count_http(
    State(requests): State<HttpRequests>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    requests.record(
        &method,
        matched.as_ref().map(MatchedPath::as_str),
        response.status(),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    fn router(requests: HttpRequests) -> Router {
        let api = Router::new()
            .route("/compute/hosts/{hostId}", get(|| async { "host" }))
            .route(
                "/compute/hosts/{hostId}/agent/restart",
                post(|| async { "task" }),
            );
        Router::new()
            .merge(api.clone())
            .nest("/api/v2", api)
            .layer(axum::middleware::from_fn_with_state(requests, count_http))
    }

    async fn send(router: &Router, method: &str, path: &str) -> StatusCode {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("answer")
            .status()
    }

    #[tokio::test]
    async fn requests_count_under_their_route_template_and_unknown_paths_share_one() {
        let requests = HttpRequests::default();
        let router = router(requests.clone());
        for id in 1..=5 {
            assert_eq!(
                send(&router, "GET", &format!("/compute/hosts/{id}")).await,
                StatusCode::OK
            );
        }
        send(&router, "GET", "/api/v2/compute/hosts/9").await;
        for path in ["/nope", "/compute/hosts/1/nope", "/x/y/z/123"] {
            assert_eq!(send(&router, "GET", path).await, StatusCode::NOT_FOUND);
        }
        send(&router, "BREW", "/compute/hosts/1/agent/restart").await;

        let host = "/compute/hosts/{hostId}";
        assert_eq!(requests.count(&Method::GET, host, StatusCode::OK), 5);
        assert_eq!(
            requests.count(
                &Method::GET,
                "/api/v2/compute/hosts/{hostId}",
                StatusCode::OK
            ),
            1
        );
        assert_eq!(
            requests.count(&Method::GET, UNMATCHED, StatusCode::NOT_FOUND),
            3
        );
        let brew = Method::from_bytes(b"BREW").expect("method");
        assert_eq!(method_label(&brew), OTHER_METHOD);
        assert_eq!(
            requests.count(
                &brew,
                "/compute/hosts/{hostId}/agent/restart",
                StatusCode::METHOD_NOT_ALLOWED
            ),
            1
        );
        // Nothing else: 5 + 1 + 3 + 1 requests, in four series, no raw path.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("requests", "", requests.family());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            series.len(),
            4,
            "one series per route and status: {series:?}"
        );
        assert!(!text.contains("/compute/hosts/1"), "{text}");
    }

    #[test]
    fn every_standard_method_keeps_its_name() {
        for name in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
        ] {
            let method = Method::from_bytes(name.as_bytes()).expect("method");
            assert_eq!(method_label(&method), name);
        }
    }
}
