//! `GET /api/v2/openapi.json`: the OpenAPI document, collected from the handlers'
//! `#[utoipa::path]` attributes and the served types' `ToSchema` derives as the router
//! is built, so it cannot drift from what is served.

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::json::{ErrorEnvelope, TaskEventJson};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ocp-controller REST gateway",
        description = "OCP's host-agent and task API. Every route is served both at the path shown \
            and under /api/v2. Every answer is an envelope {data, successful, timestamp, duration, \
            status, traceId, server}; a failure has no data and an error {code, message, target, \
            subErrors}. Authentication is HTTP Basic against the controller's users file. A request \
            body is JSON sent with Content-Type: application/json (415 otherwise), but for the \
            agent package upload's, the binary as application/octet-stream; routes \
            that document no body refuse one (400). A request that changes state (any method \
            but GET, HEAD and OPTIONS) carrying an Origin header other than the controller's \
            own, or Sec-Fetch-Site cross-site or same-site, is refused with 403.",
    ),
    paths(openapi_json),
    // The events route serves text, so no route names the JSON each event carries: it
    // is listed here, for clients to read what `data:` holds.
    components(schemas(ErrorEnvelope, TaskEventJson)),
    modifiers(&BasicAuth),
    tags(
        (name = "hosts", description = "host inventory and agent operations"),
        (name = "tasks", description = "DAG tasks"),
        (name = "profiles", description = "the signed-in user"),
        (name = "packages", description = "agent packages: the ocp-agent binaries upgrades push"),
    )
)]
pub struct ApiDoc;

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "basic",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
            );
    }
}

/// The failures every authenticated route can answer with.
#[derive(utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "only described in the OpenAPI document, never built"
)]
pub enum Failures {
    /// Illegal argument (10001): malformed JSON, a wrong type, an id that does not parse,
    /// a body sent to a route that takes none; `subErrors` names the field and the
    /// refused value.
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// Missing or wrong credentials (30001).
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// The user lacks the permission the route needs, or a request that changes state
    /// came from another origin than the controller's own (30014).
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
    /// No such host, process or package (10002), or task (20000).
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// The host is held by an unfinished task, or the agent refused (40000); or a host
    /// with that address already exists (10001); or the package's version already has
    /// other content for its architecture (10001), or an unfinished task uses the
    /// package (40000).
    #[response(status = 409)]
    Conflict(ErrorEnvelope),
    /// The request body is larger than 1 MiB; an agent package larger than
    /// --max-package-bytes (256 MiB by default).
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// A body sent without Content-Type: application/json, or an agent package without
    /// application/octet-stream (10001).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorEnvelope),
    /// Too many failed logins as this user from the client's address, or from that
    /// address in all (30002): retry after the seconds the `Retry-After` header gives.
    /// Or, on the events route, the user already holds `--max-watches-per-user` watches
    /// open (30003).
    #[response(status = 429)]
    TooMany(ErrorEnvelope),
    /// The host's agent cannot be reached (40000).
    #[response(status = 503)]
    Unavailable(ErrorEnvelope),
}

/// The serialized document, made once when the router is built.
#[derive(Clone)]
pub struct Document(pub Bytes);

/// This document. It is the one answer not wrapped in the envelope, so that OpenAPI
/// tools can read it as it is.
#[utoipa::path(get, path = "/api/v2/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json(Extension(Document(doc)): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc)
}
