//! The one mapping of failures to HTTP statuses and OCP error codes.
//!
//! Bad input is always a 4xx. Only what the caller cannot fix by changing the request
//! is a 5xx: an agent that cannot be reached (503), and the store or the checking of
//! credentials failing (500).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::json::{ErrorBody, SubError};
use crate::auth::AuthError;
use crate::rollout::RolloutField;
use crate::service::{CoreError, Field};

/// OCP's error codes, and the project's own where OCP documents none.
pub mod codes {
    /// Project choice: an unexpected server-side failure (the store, checking credentials).
    pub const INTERNAL: i32 = 10000;
    pub const ILLEGAL_ARGUMENT: i32 = 10001;
    pub const NOT_FOUND: i32 = 10002;
    pub const TASK_NOT_FOUND: i32 = 20000;
    /// The operation is not allowed in the task's or subtask's state.
    pub const ILLEGAL_TASK_STATE: i32 = 20003;
    pub const ROLLBACK_PROHIBITED: i32 = 20004;
    /// Project choice: missing or wrong credentials (HTTP 401).
    pub const UNAUTHENTICATED: i32 = 30001;
    /// Project choice: too many failed logins from the client's address (HTTP 429).
    pub const TOO_MANY_FAILED_LOGINS: i32 = 30002;
    /// Project choice: a user holds too many watches of tasks open (HTTP 429).
    pub const TOO_MANY_WATCHES: i32 = 30003;
    pub const NOT_PERMITTED: i32 = 30014;
    pub const AGENT_STATE: i32 = 40000;
}

/// A failed request, before the envelope middleware adds the request's trace id,
/// timing and path.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
    pub sub_errors: Vec<SubError>,
    /// Ask for Basic credentials (`WWW-Authenticate`).
    pub challenge: bool,
    /// Seconds to send as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: i32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            sub_errors: Vec::new(),
            challenge: false,
            retry_after: None,
        }
    }

    /// A 400 about one field, naming the value that was refused.
    pub fn invalid(field: &str, rejected: Value, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            sub_errors: vec![SubError {
                field: field.to_string(),
                rejected_value: rejected,
                message: message.clone(),
            }],
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::ILLEGAL_ARGUMENT,
                format!("{field}: {message}"),
            )
        }
    }

    /// What a bare status from the framework (no route, wrong method, body too large)
    /// means to a caller.
    pub fn from_status(status: StatusCode, method: &str, path: &str) -> ApiError {
        match status {
            StatusCode::NOT_FOUND => ApiError::new(
                status,
                codes::NOT_FOUND,
                format!("no route {method} {path}: see /api/v2/openapi.json for the routes"),
            ),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
                status,
                codes::ILLEGAL_ARGUMENT,
                format!(
                    "{path} does not accept {method}: see the Allow header or /api/v2/openapi.json"
                ),
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                status,
                codes::ILLEGAL_ARGUMENT,
                format!(
                    "the request body is larger than {} bytes",
                    super::BODY_LIMIT
                ),
            ),
            s if s.is_server_error() => ApiError::new(
                s,
                codes::INTERNAL,
                "the controller failed to handle the request; see its log under this traceId",
            ),
            s => ApiError::new(
                s,
                codes::ILLEGAL_ARGUMENT,
                format!(
                    "the request was refused: {}",
                    s.canonical_reason().unwrap_or("bad request")
                ),
            ),
        }
    }

    pub fn body(&self, target: &str) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            target: Some(target.to_string()),
            sub_errors: self.sub_errors.clone(),
        }
    }
}

/// The envelope middleware turns the error into the error envelope; the response
/// carries it as an extension until then.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ocp\", charset=\"UTF-8\""),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unauthenticated => ApiError {
                challenge: true,
                ..ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    codes::UNAUTHENTICATED,
                    e.to_string(),
                )
            },
            AuthError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, codes::NOT_PERMITTED, e.to_string())
            }
            AuthError::Throttled { retry_after, .. } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    codes::TOO_MANY_FAILED_LOGINS,
                    e.to_string(),
                )
            },
            // Logged where it arose, with its cause.
            AuthError::Internal(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                "the controller failed to check the credentials; see its log under this traceId",
            ),
        }
    }
}

/// The core's fields as OCP's JSON bodies, paths and query strings name them.
pub fn field_name(field: Field) -> &'static str {
    match field {
        Field::HostAddress => "innerIpAddress",
        Field::AgentPort => "agentPort",
        Field::HostName => "name",
        Field::HostId => "hostId",
        Field::HostIds => "hostIds",
        Field::ProcessId => "agentProcessId",
        Field::TaskId => "id",
        Field::SubtaskId => "subtaskId",
        Field::EventSeq => "after",
        Field::TaskStatus => "status",
        Field::CreatedAfter => "createdAfter",
        Field::CreatedBefore => "createdBefore",
        Field::HostStatus => "status",
        Field::Keyword => "keyword",
        Field::Sort => "sort",
        Field::LogLines => "lines",
        Field::Rollout(field) => match field {
            RolloutField::BatchSize => "rollout.batchSize",
            RolloutField::MaxFailedHosts => "rollout.maxFailedHosts",
            RolloutField::PauseSeconds => "rollout.pauseSeconds",
            RolloutField::MinHealthySeconds => "rollout.minHealthySeconds",
            RolloutField::PauseAfterFirstBatch => "rollout.pauseAfterFirstBatch",
        },
        Field::PackageVersion => "version",
        Field::PackageSha256 => "sha256",
        Field::PackageContent => "body",
        Field::PackageId => "id",
        Field::AgentVersion => "version",
        Field::HostAgentVersion => "agentVersion",
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let message = e.to_string();
        match e {
            CoreError::InvalidArgument {
                field,
                rejected,
                message,
            } => ApiError::invalid(field_name(field), Value::String(rejected), message),
            CoreError::InvalidRollout(problems) => {
                let sub_errors: Vec<SubError> = problems
                    .iter()
                    .map(|p| SubError {
                        field: field_name(Field::Rollout(p.field)).to_string(),
                        rejected_value: Value::String(p.rejected.clone()),
                        message: p.message.clone(),
                    })
                    .collect();
                let message = sub_errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError {
                    sub_errors,
                    ..ApiError::new(StatusCode::BAD_REQUEST, codes::ILLEGAL_ARGUMENT, message)
                }
            }
            CoreError::HostsNotFound { named, more } => {
                let mut sub_errors: Vec<SubError> = named
                    .iter()
                    .map(|id| SubError {
                        field: field_name(Field::HostIds).to_string(),
                        rejected_value: Value::from(*id),
                        message: format!("host {id} does not exist"),
                    })
                    .collect();
                if more > 0 {
                    sub_errors.push(SubError {
                        field: field_name(Field::HostIds).to_string(),
                        rejected_value: Value::Null,
                        message: format!(
                            "{} more hosts do not exist",
                            crate::service::thousands(more)
                        ),
                    });
                }
                ApiError {
                    sub_errors,
                    ..ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
                }
            }
            CoreError::HostNotFound(_)
            | CoreError::PackageNotFound(_)
            | CoreError::ProcessNotFound { .. }
            | CoreError::NoProcessLog { .. }
            | CoreError::SubtaskNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
            }
            CoreError::IllegalState(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, codes::ILLEGAL_TASK_STATE, message)
            }
            CoreError::RollbackProhibited(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, codes::ROLLBACK_PROHIBITED, message)
            }
            CoreError::TaskNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, codes::TASK_NOT_FOUND, message)
            }
            // The address is the conflicting argument: the caller must pick another.
            CoreError::HostExists { .. } | CoreError::PackageConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, codes::ILLEGAL_ARGUMENT, message)
            }
            CoreError::PackageInUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, codes::AGENT_STATE, message)
            }
            CoreError::PackageTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::ILLEGAL_ARGUMENT,
                message,
            ),
            CoreError::UploadInterrupted(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, codes::ILLEGAL_ARGUMENT, message)
            }
            CoreError::HostBusy { .. }
            | CoreError::HostJustReleased(_)
            | CoreError::AgentRefused { .. } => {
                ApiError::new(StatusCode::CONFLICT, codes::AGENT_STATE, message)
            }
            CoreError::AgentUnavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::AGENT_STATE, message)
            }
            CoreError::Denied(e) => e.into(),
            CoreError::Store(_) => {
                tracing::error!("{message}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    codes::INTERNAL,
                    "the controller's store failed; see its log under this traceId",
                )
            }
            CoreError::TooManyWatches { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::TOO_MANY_WATCHES,
                message,
            ),
            CoreError::WatchLost { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::INTERNAL, message)
            }
            // Logged where the core found it.
            CoreError::Misrouted { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                "the controller failed; see its log under this traceId",
            ),
        }
    }
}
