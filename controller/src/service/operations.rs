//! Every operation the controller offers, the same on both faces, and who may call it:
//! the one table that the faces, the core's admission and the permission tests read.
//!
//! An operation's name is its gRPC method and its REST operationId, so a face finds the
//! row of what it serves by name and a new operation is one row here and one line per
//! face.

use super::CoreError;
use crate::agent_client::ProcessAction;
use crate::auth::{AuthError, Permission, Permissions, Principal};
use crate::model::{AgentAction, Task};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Callers who hold this permission.
    Holds(Permission),
    /// Any authenticated caller is admitted; the core then shows a task only to
    /// TASK_VIEWER and to the task's creator (docs/api.md#permissions), once it has read it.
    TaskReader,
    /// Any authenticated caller: the operation answers about the caller alone.
    SignedIn,
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
    BatchUpgradeAgents => Holds(HostManager),
    UpgradeAgent => Holds(HostManager),
    RestartAgentProcess => Holds(HostManager),
    StopAgentProcess => Holds(HostManager),
    StartAgentProcess => Holds(HostManager),
    GetHostAgent => Holds(HostViewer),
    ListHostAgentProcesses => Holds(HostViewer),
    TailProcessLog => Holds(HostViewer),
    AddHost => Holds(HostManager),
    ListHosts => Holds(HostViewer),
    GetHost => Holds(HostViewer),
    DeleteHost => Holds(HostManager),
    ListTasks => Holds(TaskViewer),
    GetTask => TaskReader,
    RetryTask => Holds(TaskManager),
    PauseTask => Holds(TaskManager),
    ResumeTask => Holds(TaskManager),
    RollbackTask => Holds(TaskManager),
    RetrySubtask => Holds(TaskManager),
    SkipSubtask => Holds(TaskManager),
    CancelSubtask => Holds(TaskManager),
    GetSubtaskLog => TaskReader,
    WatchTask => TaskReader,
    GetCurrentUser => SignedIn,
    UploadPackage => Holds(HostManager),
    ListPackages => Holds(HostViewer),
    DeletePackage => Holds(HostManager),
}

impl ApiOperation {
    pub fn from_name(name: &str) -> Option<ApiOperation> {
        ApiOperation::ALL
            .iter()
            .copied()
            .find(|op| op.name() == name)
    }

    /// The operation that does `action` to one host's agent.
    pub const fn single(action: AgentAction) -> ApiOperation {
        match action {
            AgentAction::Restart => ApiOperation::RestartAgent,
            AgentAction::Stop => ApiOperation::StopAgent,
            AgentAction::Start => ApiOperation::StartAgent,
            AgentAction::Upgrade => ApiOperation::UpgradeAgent,
        }
    }

    /// The operation that does `action` to the agents of several hosts at once.
    pub const fn batch(action: AgentAction) -> ApiOperation {
        match action {
            AgentAction::Restart => ApiOperation::BatchRestartAgents,
            AgentAction::Stop => ApiOperation::BatchStopAgents,
            AgentAction::Start => ApiOperation::BatchStartAgents,
            AgentAction::Upgrade => ApiOperation::BatchUpgradeAgents,
        }
    }

    /// The operation that does `action` to one process of a host.
    pub const fn process(action: ProcessAction) -> ApiOperation {
        match action {
            ProcessAction::Restart => ApiOperation::RestartAgentProcess,
            ProcessAction::Stop => ApiOperation::StopAgentProcess,
            ProcessAction::Start => ApiOperation::StartAgentProcess,
        }
    }
}

/// Who asks, under which trace id their request runs, and which operation they were
/// admitted to: made only by [`admit`], taken by every operation of the core, which
/// checks that it is the operation asked for. A face that admits one operation and
/// then asks for another is refused (500), not obeyed.
#[derive(Debug, Clone)]
pub struct Caller {
    principal: Principal,
    trace_id: String,
    operation: ApiOperation,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.principal.name
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// What the caller holds, the implied permissions included.
    pub fn permissions(&self) -> Permissions {
        self.principal.permissions
    }

    pub fn operation(&self) -> ApiOperation {
        self.operation
    }

    /// docs/api.md#permissions: TASK_VIEWER reads every task, and the creator of a task may always read it.
    pub(super) fn may_read(&self, task: &Task) -> bool {
        self.principal.has(Permission::TaskViewer) || task.creator == self.principal.name
    }

    /// The refusal of a task this caller may not read; without TASK_VIEWER a missing
    /// task is refused alike, so that whether a task exists is not revealed.
    pub(super) fn hidden(&self) -> CoreError {
        CoreError::Denied(AuthError::Forbidden {
            user: self.name().to_string(),
            permission: Permission::TaskViewer,
        })
    }

    pub(super) fn may_know_missing_tasks(&self) -> bool {
        self.principal.has(Permission::TaskViewer)
    }

    /// Whether this caller was admitted to `operation`: a face that admitted another
    /// one asked the core for the wrong thing, which is logged and refused.
    pub(super) fn admitted(&self, operation: ApiOperation) -> Result<(), CoreError> {
        if self.operation == operation {
            return Ok(());
        }
        tracing::error!(
            admitted = self.operation.name(),
            "a face asked the core for {} with a caller admitted to another operation",
            operation.name()
        );
        Err(CoreError::Misrouted {
            admitted: self.operation,
        })
    }
}

/// The one check of a request against the table: `authenticated` is what the
/// request's credentials turned out to be, for both faces.
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
        operation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(permissions: &[Permission]) -> Principal {
        Principal {
            name: "ann".to_string(),
            permissions: permissions.iter().copied().collect::<Permissions>(),
        }
    }

    #[test]
    fn each_action_has_its_own_operation_of_its_kind() {
        use std::collections::HashSet;
        let actions = [
            AgentAction::Restart,
            AgentAction::Stop,
            AgentAction::Start,
            AgentAction::Upgrade,
        ];
        let processes = [
            ProcessAction::Restart,
            ProcessAction::Stop,
            ProcessAction::Start,
        ];
        let ops: HashSet<ApiOperation> = actions
            .iter()
            .flat_map(|&a| [ApiOperation::single(a), ApiOperation::batch(a)])
            .chain(processes.iter().map(|&p| ApiOperation::process(p)))
            .collect();
        assert_eq!(ops.len(), 11);
        assert_eq!(
            ApiOperation::batch(AgentAction::Stop).name(),
            "BatchStopAgents"
        );
        assert_eq!(
            ApiOperation::process(ProcessAction::Start).name(),
            "StartAgentProcess"
        );
    }

    #[test]
    fn names_are_unique_and_found_again() {
        for op in ApiOperation::ALL {
            assert_eq!(ApiOperation::from_name(op.name()), Some(*op));
        }
        assert_eq!(ApiOperation::from_name("restartAgent"), None);
    }

    #[test]
    fn a_caller_is_only_good_for_the_operation_it_was_admitted_to() {
        let viewer = principal(&[Permission::HostViewer]);
        let caller = admit(ApiOperation::GetHost, Ok(viewer), "t".into()).expect("admitted");
        assert!(caller.admitted(ApiOperation::GetHost).is_ok());
        assert!(matches!(
            caller.admitted(ApiOperation::DeleteHost),
            Err(CoreError::Misrouted {
                admitted: ApiOperation::GetHost
            })
        ));
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
                    assert_eq!((holder.name(), holder.trace_id()), ("ann", "t"));
                    assert_eq!(holder.operation(), *op);
                }
                Access::TaskReader | Access::SignedIn => assert!(nobody.is_ok(), "{op:?}"),
            }
            assert_eq!(
                admit(*op, Err(AuthError::Unauthenticated), "t".into()).unwrap_err(),
                AuthError::Unauthenticated
            );
        }
    }
}
