//! OCP's conventions for what its task pages show and this controller has no other
//! source for, declared once for both faces.

/// Every task is started by an operator, none by a schedule.
pub const TASK_TYPE: &str = "MANUAL";
/// No task comes from a stored task definition.
pub const NO_TASK_DEFINITION: i64 = -1;
/// Every subtask is a plain step, as OCP's Java tasks are.
pub const NODE_TYPE: &str = "JAVA_TASK";
/// The context key that says whether the task may be rolled back.
pub const PROHIBIT_ROLLBACK: &str = "prohibit_rollback";
/// The context key that marks a task that ended by its rollback: it ends SUCCESSFUL,
/// as OCP reports it, and this tells clients it did not do its work.
pub const ROLLED_BACK: &str = "rolled_back";
/// The context list of a batch task's host ids, as strings.
pub const HOST_IDS: &str = "host_ids";
/// The context key of an upgrade task's target version.
pub const AGENT_VERSION: &str = "agent_version";
/// The context key prefix, followed by a host id, of the version that host's agent
/// ran when the upgrade task was made: what its rollback goes back to.
pub const FROM_VERSION: &str = "from_version:";
