//! The REST gateway: OCP's documented paths and JSON over the service core.
//!
//! Handlers only translate: they extract (credentials, ids, body), call `Core`, and
//! return either `Data` or an `ApiError`. One middleware then wraps every answer, also
//! the framework's own (unknown route, wrong method, body too large, a panic), in OCP's
//! envelope with the request's trace id, timing and the advertised server.

pub mod cross_site;
pub mod error;
pub mod extract;
pub mod hosts;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod packages;
pub mod profiles;
pub mod routes;
pub mod tasks;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::{Extension, Router};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthLayer, Peer, Users};
use crate::service::Core;
use error::ApiError;
use extract::RequestContext;
use json::{Envelope, ErrorEnvelope, Meta};
pub use openapi::Failures;

/// Requests with a larger body are refused with 413; an agent package's upload is held
/// to `--max-package-bytes` instead.
pub const BODY_LIMIT: usize = 1 << 20;

pub static X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

#[derive(Clone)]
pub struct GatewayState {
    pub core: Core,
    pub users: Users,
    /// The controller's advertised address, the envelope's `server`.
    pub server: Arc<str>,
    /// Served over TLS: the controller's own origin is then `https://`.
    pub https: bool,
    /// What `GET /metrics` answers with; the gateway counts its requests into it.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A handler's successful answer, serialized into the envelope's `data`.
pub struct Data<T>(pub T);

pub type ApiResult<T> = Result<Data<T>, ApiError>;

/// `data`, already serialized, on its way to the envelope middleware.
#[derive(Clone)]
struct Payload(Box<RawValue>);

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        match serde_json::value::to_raw_value(&self.0) {
            Ok(raw) => {
                let mut response = StatusCode::OK.into_response();
                response.extensions_mut().insert(Payload(raw));
                response
            }
            Err(e) => {
                tracing::error!("serializing a response: {e}");
                ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR, "", "").into_response()
            }
        }
    }
}

/// Every route of docs/api.md, at its documented path and under `/api/v2`.
pub fn router(state: GatewayState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(hosts::batch_restart_agents))
        .routes(routes!(hosts::batch_stop_agents))
        .routes(routes!(hosts::batch_start_agents))
        .routes(routes!(hosts::restart_agent))
        .routes(routes!(hosts::stop_agent))
        .routes(routes!(hosts::start_agent))
        .routes(routes!(hosts::batch_upgrade_agents))
        .routes(routes!(hosts::upgrade_agent))
        .routes(routes!(hosts::restart_agent_process))
        .routes(routes!(hosts::stop_agent_process))
        .routes(routes!(hosts::start_agent_process))
        .routes(routes!(hosts::get_host_agent))
        .routes(routes!(hosts::list_host_agent_processes))
        .routes(routes!(hosts::tail_process_log))
        .routes(routes!(hosts::add_host, hosts::list_hosts))
        .routes(routes!(hosts::get_host, hosts::delete_host))
        .routes(routes!(tasks::list_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::retry_task))
        .routes(routes!(tasks::rollback_task))
        .routes(routes!(tasks::pause_task))
        .routes(routes!(tasks::resume_task))
        .routes(routes!(tasks::retry_subtask))
        .routes(routes!(tasks::skip_subtask))
        .routes(routes!(tasks::cancel_subtask))
        .routes(routes!(tasks::get_subtask_log))
        .routes(routes!(tasks::watch_task))
        .routes(routes!(profiles::get_current_user))
        .routes(routes!(packages::upload_package, packages::list_packages))
        .routes(routes!(packages::delete_package))
        .split_for_parts();
    let routes = routes::Routes::from_openapi(&doc);
    let document = match serde_json::to_vec(&doc) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            tracing::error!("serializing the OpenAPI document: {e}");
            Bytes::new()
        }
    };
    Router::new()
        .route("/api/v2/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(metrics::scrape))
        .merge(api.clone())
        .nest("/api/v2", api)
        // Explicit, so that it stays this router's once the console's routes are merged
        // in: an unknown path gets OCP's enveloped 404, with the layers below.
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(Extension(openapi::Document(document)))
        .layer(Extension(routes.clone()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(AuthLayer::new(state.users.clone()))
        .layer(axum::middleware::from_fn_with_state(
            cross_site::Guard {
                https: state.https,
                routes,
            },
            cross_site::guard,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            envelope,
        ))
        // Beside the API's layers, but in the envelope, for its 404s.
        .merge(
            crate::console::router().layer(axum::middleware::from_fn_with_state(
                state.clone(),
                envelope,
            )),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.http(),
            crate::metrics::count_http,
        ))
        .with_state(state)
}

/// Serves `router` on the connections `incoming` hands over (plaintext or TLS, held to
/// its limits) until `shutdown`, then lets requests in flight finish.
///
/// axum offers no setting for HTTP/2 pings, so a REST request over h2 gets none: the
/// idle timeout must stay above the longest request, 120 s for a process operation;
/// server-sent events write a keep-alive every 15 s.
pub async fn serve(
    incoming: trust::Incoming,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        GuardedListener(incoming),
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// The client's address, for the authentication layer as `ConnectInfo<Peer>`: failed
/// logins are throttled by it.
impl Connected<IncomingStream<'_, GuardedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// axum's view of the accepted connections, TLS handshake already done if any.
struct GuardedListener(trust::Incoming);

impl axum::serve::Listener for GuardedListener {
    type Io = trust::Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.accept().await {
            Some(accepted) => accepted,
            // The accept loop only ends with this listener; shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}

/// A request a page's script sent (`X-Requested-With: XMLHttpRequest`, as the console
/// and Spring Security have it): its 401 asks for no Basic credentials, or the browser
/// would put its own login dialog over the page that asks for them itself.
fn from_script(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("XMLHttpRequest"))
}

/// A panic below the envelope, caught by `CatchPanicLayer`: a bare 500, which the
/// envelope answers as any other bare status. Runs inside the request's span.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

async fn envelope(State(state): State<GatewayState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let trace_id: Arc<str> = crate::trace::accept(
        request
            .headers()
            .get(&X_TRACE_ID)
            .and_then(|v| v.to_str().ok()),
    )
    .into();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let scripted = from_script(request.headers());
    request.extensions_mut().insert(RequestContext {
        trace_id: trace_id.clone(),
    });
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let span = tracing::info_span!("http", trace_id = %trace_id, %method, %path);
    let upload_limit = packages::upload_limit(&state, &method, &path);
    let limit = upload_limit.unwrap_or(BODY_LIMIT as u64);
    let mut response = if declared_length.is_some_and(|n| n > limit) {
        // Refused before routing, so that routes which ignore their body refuse it too;
        // read what is still coming first, or the client gets a reset, not this answer.
        extract::linger(request.into_body().into_data_stream(), 0).await;
        match upload_limit {
            Some(limit) => packages::too_large(limit).into_response(),
            None => ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE, method.as_str(), &path)
                .into_response(),
        }
    } else {
        next.run(request).instrument(span.clone()).await
    };

    let meta = |status: StatusCode| Meta {
        successful: status.is_success(),
        timestamp: crate::time::format_millis(crate::model::now_millis()),
        duration: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        status: status.as_u16(),
        trace_id: trace_id.to_string(),
        server: state.server.to_string(),
    };
    let payload = response.extensions_mut().remove::<Payload>();
    let error = response.extensions_mut().remove::<ApiError>().or_else(|| {
        let status = response.status();
        (payload.is_none() && (status.is_client_error() || status.is_server_error()))
            .then(|| ApiError::from_status(status, method.as_str(), &path))
    });
    let body = match (payload, error) {
        (Some(Payload(data)), _) => Some(serde_json::to_vec(&Envelope {
            data: &*data,
            meta: meta(response.status()),
        })),
        (None, Some(error)) => {
            *response.status_mut() = error.status;
            span.in_scope(|| {
                if error.status.is_server_error() {
                    tracing::warn!(status = error.status.as_u16(), "{}", error.message);
                } else {
                    tracing::debug!(status = error.status.as_u16(), "{}", error.message);
                }
            });
            Some(serde_json::to_vec(&ErrorEnvelope {
                meta: meta(error.status),
                error: error.body(&path),
            }))
        }
        (None, None) => None,
    };
    match body {
        Some(Ok(bytes)) => {
            *response.body_mut() = Body::from(bytes);
            let headers = response.headers_mut();
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Some(Err(e)) => {
            span.in_scope(|| tracing::error!("serializing the envelope: {e}"));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            *response.body_mut() = Body::empty();
        }
        None => {}
    }
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(X_TRACE_ID.clone(), v);
    }
    if scripted {
        response.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_millis(),
            "served"
        );
    });
    response
}
