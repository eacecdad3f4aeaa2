//! Which operator operations a task and its subtasks admit in the state they are in:
//! the one rule the store checks in the transaction that performs an operation, and
//! what the faces offer as a task's and a subtask's `allowedOperations`, so that no
//! client has to copy it.
//!
//! Pure: it reads a task's row ([`TaskState`]) and a subtask's status, nothing else.

use crate::model::{Operation, SubtaskStatus, Task, TaskStatus};

/// An operator's operation on a whole task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskOperation {
    Retry,
    Rollback,
    Pause,
    Resume,
}

/// An operator's operation on one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubtaskOperation {
    Retry,
    Skip,
    Cancel,
}

impl TaskOperation {
    pub const ALL: [TaskOperation; 4] = [
        TaskOperation::Retry,
        TaskOperation::Rollback,
        TaskOperation::Pause,
        TaskOperation::Resume,
    ];

    /// As `allowedOperations` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskOperation::Retry => "RETRY",
            TaskOperation::Rollback => "ROLLBACK",
            TaskOperation::Pause => "PAUSE",
            TaskOperation::Resume => "RESUME",
        }
    }

    /// How a refusal names it.
    pub fn action(self) -> &'static str {
        match self {
            TaskOperation::Retry => "retry",
            TaskOperation::Rollback => "rollback",
            TaskOperation::Pause => "pause",
            TaskOperation::Resume => "resume",
        }
    }
}

impl SubtaskOperation {
    pub const ALL: [SubtaskOperation; 3] = [
        SubtaskOperation::Retry,
        SubtaskOperation::Skip,
        SubtaskOperation::Cancel,
    ];

    /// As `allowedOperations` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SubtaskOperation::Retry => "RETRY",
            SubtaskOperation::Skip => "SKIP",
            SubtaskOperation::Cancel => "CANCEL",
        }
    }

    /// How a refusal names it.
    pub fn action(self) -> &'static str {
        match self {
            SubtaskOperation::Retry => "retry",
            SubtaskOperation::Skip => "skip",
            SubtaskOperation::Cancel => "cancel",
        }
    }

    /// The status the subtask must be in.
    pub fn needs(self) -> SubtaskStatus {
        match self {
            SubtaskOperation::Retry | SubtaskOperation::Skip => SubtaskStatus::Failed,
            SubtaskOperation::Cancel => SubtaskStatus::Running,
        }
    }
}

/// What the rule reads of a task: its own row, not its subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskState {
    pub status: TaskStatus,
    pub operation: Operation,
    pub prohibit_rollback: bool,
    /// Created with a rollout.
    pub rolling: bool,
    pub paused: bool,
}

impl From<&Task> for TaskState {
    fn from(t: &Task) -> Self {
        TaskState {
            status: t.status,
            operation: t.operation,
            prohibit_rollback: t.prohibit_rollback,
            rolling: t.rollout.is_some(),
            paused: t.paused,
        }
    }
}

/// Why an operation does not apply to the task or subtask as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// The task is not in the status (or under the operation) this needs.
    Task { needed: &'static str },
    /// The subtask is not in the status this needs.
    Subtask { needed: SubtaskStatus },
    /// Pause and resume apply to rolling tasks only.
    NotRolling,
    /// The task was created with `prohibit_rollback`.
    RollbackProhibited,
}

/// Whether `op` applies to a task in `task`'s state. A pause of a paused task (or a
/// resume of one that runs) applies: the store accepts it and changes nothing.
pub fn check_task(op: TaskOperation, task: &TaskState) -> Result<(), Unfit> {
    match op {
        TaskOperation::Retry => reopens(task),
        TaskOperation::Rollback if task.prohibit_rollback => Err(Unfit::RollbackProhibited),
        TaskOperation::Rollback if task.status != TaskStatus::Failed => {
            Err(Unfit::Task { needed: "FAILED" })
        }
        TaskOperation::Rollback => Ok(()),
        TaskOperation::Pause | TaskOperation::Resume if !task.rolling => Err(Unfit::NotRolling),
        TaskOperation::Pause | TaskOperation::Resume
            if task.status != TaskStatus::Running || task.operation == Operation::Rollback =>
        {
            Err(Unfit::Task {
                needed: "RUNNING rolling (not rolling back)",
            })
        }
        TaskOperation::Pause | TaskOperation::Resume => Ok(()),
    }
}

/// Whether `op` applies to a subtask in `status` of a task in `task`'s state: the
/// subtask's status first, since it is what the operator pointed at.
pub fn check_subtask(
    op: SubtaskOperation,
    task: &TaskState,
    status: SubtaskStatus,
) -> Result<(), Unfit> {
    let needed = op.needs();
    if status != needed {
        return Err(Unfit::Subtask { needed });
    }
    match op {
        SubtaskOperation::Retry | SubtaskOperation::Skip => reopens(task),
        SubtaskOperation::Cancel => Ok(()),
    }
}

/// A FAILED task runs again (a retry, or a subtask's retry or skip) unless what failed
/// was its rollback.
fn reopens(task: &TaskState) -> Result<(), Unfit> {
    if task.status == TaskStatus::Failed && task.operation != Operation::Rollback {
        Ok(())
    } else {
        Err(Unfit::Task {
            needed: "FAILED (and not rolled back)",
        })
    }
}

/// The task's operations that apply and would change something, in [`TaskOperation::ALL`]'s
/// order: a pause is offered to a running rolling task, a resume to a paused one.
pub fn task_operations(task: &TaskState) -> Vec<TaskOperation> {
    TaskOperation::ALL
        .into_iter()
        .filter(|&op| check_task(op, task).is_ok())
        .filter(|&op| match op {
            TaskOperation::Pause => !task.paused,
            TaskOperation::Resume => task.paused,
            _ => true,
        })
        .collect()
}

/// The subtask's operations that apply, in [`SubtaskOperation::ALL`]'s order.
pub fn subtask_operations(task: &TaskState, status: SubtaskStatus) -> Vec<SubtaskOperation> {
    SubtaskOperation::ALL
        .into_iter()
        .filter(|&op| check_subtask(op, task, status).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: TaskStatus, operation: Operation) -> TaskState {
        TaskState {
            status,
            operation,
            prohibit_rollback: false,
            rolling: false,
            paused: false,
        }
    }

    fn words<T: Copy>(ops: Vec<T>, word: fn(T) -> &'static str) -> Vec<&'static str> {
        ops.into_iter().map(word).collect()
    }

    #[test]
    fn a_failed_task_is_retried_and_rolled_back() {
        let failed = task(TaskStatus::Failed, Operation::Execute);
        assert_eq!(
            words(task_operations(&failed), TaskOperation::as_str),
            ["RETRY", "ROLLBACK"]
        );
        let failed_retry = task(TaskStatus::Failed, Operation::Retry);
        assert_eq!(task_operations(&failed_retry), task_operations(&failed));
    }

    #[test]
    fn a_failed_rollback_is_rolled_back_again_but_not_retried() {
        let failed = task(TaskStatus::Failed, Operation::Rollback);
        assert_eq!(task_operations(&failed), [TaskOperation::Rollback]);
        assert_eq!(
            check_task(TaskOperation::Retry, &failed),
            Err(Unfit::Task {
                needed: "FAILED (and not rolled back)"
            })
        );
        assert_eq!(subtask_operations(&failed, SubtaskStatus::Failed), []);
    }

    #[test]
    fn prohibit_rollback_is_said_before_the_status() {
        let mut t = task(TaskStatus::Successful, Operation::Execute);
        t.prohibit_rollback = true;
        assert_eq!(
            check_task(TaskOperation::Rollback, &t),
            Err(Unfit::RollbackProhibited)
        );
        t.status = TaskStatus::Failed;
        assert_eq!(task_operations(&t), [TaskOperation::Retry]);
    }

    #[test]
    fn finished_and_running_plain_tasks_offer_nothing() {
        for status in [TaskStatus::Successful, TaskStatus::Running] {
            for operation in Operation::ALL {
                let t = task(status, *operation);
                assert_eq!(task_operations(&t), [], "{status} {operation}");
            }
        }
    }

    #[test]
    fn a_running_rolling_task_is_paused_and_a_paused_one_resumed() {
        let mut t = task(TaskStatus::Running, Operation::Execute);
        t.rolling = true;
        assert_eq!(task_operations(&t), [TaskOperation::Pause]);
        // The store accepts a pause of a paused task, as a no-op: it is not offered.
        t.paused = true;
        assert_eq!(check_task(TaskOperation::Pause, &t), Ok(()));
        assert_eq!(task_operations(&t), [TaskOperation::Resume]);
        t.operation = Operation::Rollback;
        assert_eq!(task_operations(&t), []);
        assert_eq!(
            check_task(TaskOperation::Resume, &t),
            Err(Unfit::Task {
                needed: "RUNNING rolling (not rolling back)"
            })
        );
        let plain = task(TaskStatus::Running, Operation::Execute);
        assert_eq!(
            check_task(TaskOperation::Pause, &plain),
            Err(Unfit::NotRolling)
        );
    }

    #[test]
    fn subtasks_follow_their_status_and_their_task() {
        let failed = task(TaskStatus::Failed, Operation::Execute);
        assert_eq!(
            words(
                subtask_operations(&failed, SubtaskStatus::Failed),
                SubtaskOperation::as_str
            ),
            ["RETRY", "SKIP"]
        );
        let running = task(TaskStatus::Running, Operation::Execute);
        assert_eq!(
            subtask_operations(&running, SubtaskStatus::Running),
            [SubtaskOperation::Cancel]
        );
        // A FAILED subtask of a task still running (its siblings go on): nothing yet.
        assert_eq!(subtask_operations(&running, SubtaskStatus::Failed), []);
        assert_eq!(
            check_subtask(SubtaskOperation::Skip, &failed, SubtaskStatus::Pending),
            Err(Unfit::Subtask {
                needed: SubtaskStatus::Failed
            })
        );
        for status in [
            SubtaskStatus::Pending,
            SubtaskStatus::Ready,
            SubtaskStatus::Canceling,
            SubtaskStatus::Successful,
        ] {
            assert_eq!(subtask_operations(&failed, status), [], "{status}");
        }
    }
}
