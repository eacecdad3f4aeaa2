//! The controller's gRPC face: `ocp.v1.HostAgentService` and `ocp.v1.TaskService`,
//! thin translations onto the service core.

mod convert;
mod host_agent;
mod task;

use tonic::{Code, Status};

use crate::auth::{AuthError, Permission, Principal, Users};
use crate::model::PageRequest;
use crate::service::{Caller, CoreError};

pub use host_agent::HostAgentGrpc;
pub use task::TaskGrpc;

/// The one mapping of core errors to gRPC status codes.
impl From<CoreError> for Status {
    fn from(e: CoreError) -> Status {
        let code = match &e {
            CoreError::InvalidArgument { .. } => Code::InvalidArgument,
            CoreError::HostNotFound(_)
            | CoreError::HostsNotFound { .. }
            | CoreError::ProcessNotFound { .. }
            | CoreError::SubtaskNotFound { .. }
            | CoreError::TaskNotFound(_) => Code::NotFound,
            CoreError::IllegalState(_) | CoreError::RollbackProhibited(_) => {
                Code::FailedPrecondition
            }
            CoreError::HostExists { .. }
            | CoreError::HostBusy { .. }
            | CoreError::HostJustReleased(_) => Code::AlreadyExists,
            CoreError::AgentUnavailable { .. } => Code::Unavailable,
            CoreError::AgentRefused { code, .. } => match code {
                Code::NotFound | Code::FailedPrecondition => Code::FailedPrecondition,
                Code::DeadlineExceeded => Code::DeadlineExceeded,
                _ => Code::Aborted,
            },
            CoreError::Store(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!("{e}");
        }
        Status::new(code, e.to_string())
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::Unauthenticated => Status::unauthenticated(e.to_string()),
            AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
            AuthError::Throttled { retry_after, .. } => {
                let mut status = Status::resource_exhausted(e.to_string());
                status
                    .metadata_mut()
                    .insert("retry-after", retry_after.into());
                status
            }
        }
    }
}

/// Authenticates the call from its `authorization: Basic ...` metadata, the same
/// credentials as on REST, and checks `permission` when the RPC needs one. The caller's
/// trace id is its `x-trace-id` when that has OCP's form.
async fn authorize<T>(
    users: &Users,
    request: &tonic::Request<T>,
    permission: Option<Permission>,
) -> Result<(Principal, Caller), Status> {
    let metadata = request.metadata();
    let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
    let peer = request.remote_addr().map(|a| a.ip());
    let principal = users.authenticate(header, peer).await?;
    if let Some(p) = permission {
        principal.require(p)?;
    }
    let trace = metadata.get("x-trace-id").and_then(|v| v.to_str().ok());
    let caller = Caller {
        name: principal.name.clone(),
        trace_id: crate::trace::accept(trace),
    };
    Ok((principal, caller))
}

fn page_request(page: u32, size: u32) -> Result<PageRequest, Status> {
    let size = if size == 0 {
        PageRequest::DEFAULT_SIZE
    } else {
        size
    };
    if size > PageRequest::MAX_SIZE {
        return Err(Status::invalid_argument(format!(
            "size: must be at most {}, got {size}",
            PageRequest::MAX_SIZE
        )));
    }
    Ok(PageRequest {
        number: page.max(1),
        size,
    })
}
