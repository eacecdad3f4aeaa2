//! Every operation the controller offers, the same on both faces, and who may call it:
//! the one table that the faces, the core's admission and the permission tests read.
//!
//! An operation's name is its gRPC method and its REST operationId, so a face finds the
//! row of what it serves by name and a new operation is one row here and one line per
//! face.

use crate::auth::{AuthError, Permission, Principal};
use crate::model::Task;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Callers who hold this permission.
    Holds(Permission),
    /// Any authenticated caller is admitted; the core then shows a task only to
    /// TASK_VIEWER and to the task's creator (SPEC section 5), once it has read it.
    TaskReader,
}

macro_rules! operations {
    ($($name:ident => $access:expr,)*) => {
        /// One operation of the controller's API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ApiOperation {
            $($name,)*
        }

        impl ApiOperation {
            pub const ALL: &'static [ApiOperation] = &[$(ApiOperation::$name,)*];

            /// The gRPC method and the REST operationId.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ApiOperation::$name => stringify!($name),)*
                }
            }

            pub const fn access(self) -> Access {
                use Access::*;
                use Permission::*;
                match self {
                    $(ApiOperation::$name => $access,)*
                }
            }
        }
    };
}

operations! {
    BatchRestartAgents => Holds(HostManager),
    BatchStopAgents => Holds(HostManager),
    BatchStartAgents => Holds(HostManager),
    RestartAgent => Holds(HostManager),
    StopAgent => Holds(HostManager),
    StartAgent => Holds(HostManager),
    RestartAgentProcess => Holds(HostManager),
    StopAgentProcess => Holds(HostManager),
    StartAgentProcess => Holds(HostManager),
    GetHostAgent => Holds(HostViewer),
    ListHostAgentProcesses => Holds(HostViewer),
    AddHost => Holds(HostManager),
    ListHosts => Holds(HostViewer),
    GetHost => Holds(HostViewer),
    DeleteHost => Holds(HostManager),
    ListTasks => Holds(TaskViewer),
    GetTask => TaskReader,
    RetryTask => Holds(TaskManager),
    RollbackTask => Holds(TaskManager),
    RetrySubtask => Holds(TaskManager),
    SkipSubtask => Holds(TaskManager),
    CancelSubtask => Holds(TaskManager),
    GetSubtaskLog => TaskReader,
    WatchTask => TaskReader,
}

impl ApiOperation {
    pub fn from_name(name: &str) -> Option<ApiOperation> {
        ApiOperation::ALL
            .iter()
            .copied()
            .find(|op| op.name() == name)
    }

    /// Whether `principal` may call this operation; for a task read, whether it may
    /// ask at all (the task itself is judged by [`Caller::may_read`]).
    pub fn permits(self, principal: &Principal) -> bool {
        match self.access() {
            Access::Holds(p) => principal.has(p),
            Access::TaskReader => true,
        }
    }
}

/// Who asks, under which trace id their request runs, and what they may do: the proof
/// that a request was admitted, which every operation of the core takes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub trace_id: String,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.principal.name
    }

    /// SPEC: TASK_VIEWER reads every task, and the creator of a task may always read it.
    pub fn may_read(&self, task: &Task) -> bool {
        self.principal.has(Permission::TaskViewer) || task.creator == self.principal.name
    }
}

/// The one check of a request against the table: `authenticated` is what the
/// authentication layer found, for both faces.
pub fn admit(
    operation: ApiOperation,
    authenticated: Result<Principal, AuthError>,
    trace_id: String,
) -> Result<Caller, AuthError> {
    let principal = authenticated?;
    if let Access::Holds(permission) = operation.access() {
        principal.require(permission)?;
    }
    Ok(Caller {
        principal,
        trace_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Permissions;

    fn principal(permissions: &[Permission]) -> Principal {
        Principal {
            name: "ann".to_string(),
            permissions: permissions.iter().copied().collect::<Permissions>(),
        }
    }

    #[test]
    fn names_are_unique_and_found_again() {
        for op in ApiOperation::ALL {
            assert_eq!(ApiOperation::from_name(op.name()), Some(*op));
        }
        assert_eq!(ApiOperation::from_name("restartAgent"), None);
    }

    #[test]
    fn admission_follows_the_table() {
        for op in ApiOperation::ALL {
            let nobody = admit(*op, Ok(principal(&[])), "t".into());
            match op.access() {
                Access::Holds(p) => {
                    assert!(
                        matches!(nobody, Err(AuthError::Forbidden { permission, .. }) if permission == p),
                        "{op:?}"
                    );
                    let holder = admit(*op, Ok(principal(&[p])), "t".into()).expect("admitted");
                    assert_eq!((holder.name(), holder.trace_id.as_str()), ("ann", "t"));
                }
                Access::TaskReader => assert!(nobody.is_ok(), "{op:?}"),
            }
            assert_eq!(
                admit(*op, Err(AuthError::Unauthenticated), "t".into()).unwrap_err(),
                AuthError::Unauthenticated
            );
        }
    }
}
