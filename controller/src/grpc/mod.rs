//! The controller's gRPC face: `ocp.v1.HostAgentService`, `ocp.v1.TaskService`,
//! `ocp.v1.ProfileService` and `ocp.v1.AgentPackageService`, thin translations onto the
//! service core.

mod agent_package;
mod convert;
mod host_agent;
mod profile;
mod task;

use tonic::{Code, Status};

use crate::auth::{AuthError, Credentials};
use crate::model::PageRequest;
use crate::rollout::RolloutField;
use crate::service::{self, ApiOperation, Caller, CoreError, Field};

pub use agent_package::AgentPackageGrpc;
pub use host_agent::HostAgentGrpc;
pub use profile::ProfileGrpc;
pub use task::TaskGrpc;

/// The services the gRPC port serves and reflection advertises, besides reflection
/// itself (v1 and v1alpha).
pub const SERVICES: [&str; 5] = [
    "ocp.v1.HostAgentService",
    "ocp.v1.TaskService",
    "ocp.v1.ProfileService",
    "ocp.v1.AgentPackageService",
    "grpc.health.v1.Health",
];

/// The one mapping of core errors to gRPC status codes.
impl From<CoreError> for Status {
    fn from(e: CoreError) -> Status {
        let code = match &e {
            CoreError::Denied(denied) => return auth_status(denied),
            CoreError::InvalidArgument { .. }
            | CoreError::InvalidRollout(_)
            | CoreError::PackageTooLarge { .. } => Code::InvalidArgument,
            CoreError::UploadInterrupted(_) => Code::Aborted,
            CoreError::HostNotFound(_)
            | CoreError::HostsNotFound { .. }
            | CoreError::ProcessNotFound { .. }
            | CoreError::NoProcessLog { .. }
            | CoreError::SubtaskNotFound { .. }
            | CoreError::TaskNotFound(_)
            | CoreError::PackageNotFound(_) => Code::NotFound,
            CoreError::IllegalState(_)
            | CoreError::RollbackProhibited(_)
            | CoreError::PackageInUse { .. } => Code::FailedPrecondition,
            CoreError::HostExists { .. }
            | CoreError::PackageConflict { .. }
            | CoreError::HostBusy { .. }
            | CoreError::HostJustReleased(_) => Code::AlreadyExists,
            CoreError::AgentUnavailable { .. } => Code::Unavailable,
            CoreError::TooManyWatches { .. } => Code::ResourceExhausted,
            CoreError::WatchLost { .. } => Code::Unavailable,
            CoreError::AgentRefused { code, .. } => match code {
                Code::NotFound | Code::FailedPrecondition => Code::FailedPrecondition,
                Code::DeadlineExceeded => Code::DeadlineExceeded,
                _ => Code::Aborted,
            },
            CoreError::Store(_) => {
                tracing::error!("{e}");
                return Status::internal("the controller's store failed; see its log");
            }
            // Logged where the core found it.
            CoreError::Misrouted { .. } => {
                return Status::internal("the controller failed; see its log");
            }
        };
        let message = match &e {
            CoreError::InvalidArgument { field, message, .. } => {
                format!("{}: {message}", field_name(*field))
            }
            CoreError::InvalidRollout(problems) => problems
                .iter()
                .map(|p| format!("{}: {}", field_name(Field::Rollout(p.field)), p.message))
                .collect::<Vec<_>>()
                .join("; "),
            e => e.to_string(),
        };
        Status::new(code, message)
    }
}

/// The core's fields as the proto's messages name them.
fn field_name(field: Field) -> &'static str {
    match field {
        Field::HostAddress => "inner_ip_address",
        Field::AgentPort => "agent_port",
        Field::HostName => "name",
        Field::HostId => "host_id",
        Field::HostIds => "host_ids",
        Field::ProcessId => "agent_process_id",
        Field::TaskId => "id",
        Field::SubtaskId => "subtask_id",
        Field::EventSeq => "after_seq",
        Field::TaskStatus => "status",
        Field::CreatedAfter => "created_after",
        Field::CreatedBefore => "created_before",
        Field::HostStatus => "status",
        Field::Keyword => "keyword",
        Field::Sort => "sort",
        Field::LogLines => "lines",
        Field::Rollout(field) => match field {
            RolloutField::BatchSize => "rollout.batch_size",
            RolloutField::MaxFailedHosts => "rollout.max_failed_hosts",
            RolloutField::PauseSeconds => "rollout.pause_seconds",
            RolloutField::MinHealthySeconds => "rollout.min_healthy_seconds",
            RolloutField::PauseAfterFirstBatch => "rollout.pause_after_first_batch",
        },
        Field::PackageVersion => "version",
        Field::PackageSha256 => "sha256",
        Field::PackageContent => "chunk",
        Field::PackageId => "id",
        Field::AgentVersion => "version",
        Field::HostAgentVersion => "agent_version",
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        auth_status(&e)
    }
}

fn auth_status(e: &AuthError) -> Status {
    match e {
        AuthError::Unauthenticated => Status::unauthenticated(e.to_string()),
        AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
        AuthError::Throttled { retry_after, .. } => {
            let mut status = Status::resource_exhausted(e.to_string());
            status
                .metadata_mut()
                .insert("retry-after", (*retry_after).into());
            status
        }
        // Logged where it arose, with its cause, which is not the caller's to read.
        AuthError::Internal(_) => {
            Status::internal("the controller failed to check the credentials; see its log")
        }
    }
}

/// Admits the call to `operation` by the core's table. The credentials are the call's
/// `authorization: Basic ...` metadata, which the layer took, the same as on REST; the
/// trace id is its `x-trace-id` when that has OCP's form.
async fn admit<T>(operation: ApiOperation, request: &tonic::Request<T>) -> Result<Caller, Status> {
    let trace = request
        .metadata()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok());
    let authenticated = Credentials::principal(request.extensions()).await;
    Ok(service::admit(
        operation,
        authenticated,
        crate::trace::accept(trace),
    )?)
}

/// proto3 cannot tell an absent number from 0, so 0 is absent: the model's default.
fn page_request(page: u32, size: u32) -> Result<PageRequest, Status> {
    let given = |n: u32| (n != 0).then_some(n);
    PageRequest::new(given(page), given(size)).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::SERVICES;
    use crate::metrics::{Metrics, UNKNOWN_METHOD};
    use crate::service::ApiOperation;

    #[test]
    fn every_operation_is_counted_under_its_own_method_label() {
        let requests = Metrics::new(&SERVICES).grpc();
        for op in ApiOperation::ALL {
            let known = SERVICES.iter().any(|s| {
                let path = format!("/{s}/{}", op.name());
                *requests.method(&path) != *UNKNOWN_METHOD
            });
            assert!(known, "{} is served but has no label", op.name());
        }
    }
}
