//! DAG tasks, their subtasks and transitions, as the store keeps them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Millis, Step, UnknownWord, ocp};
use crate::rollout::Rollout;

words!(TaskStatus {
    Running = "RUNNING",
    Failed = "FAILED",
    Successful = "SUCCESSFUL",
});

words!(SubtaskStatus {
    Pending = "PENDING",
    Ready = "READY",
    Running = "RUNNING",
    Canceling = "CANCELING",
    Failed = "FAILED",
    Successful = "SUCCESSFUL",
});

words!(Operation {
    Execute = "EXECUTE",
    Retry = "RETRY",
    Rollback = "ROLLBACK",
    Skip = "SKIP",
    RollbackSkip = "ROLLBACK_SKIP",
    Cancel = "CANCEL",
});

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskContext {
    pub list_map: BTreeMap<String, Vec<String>>,
    pub string_map: BTreeMap<String, String>,
    pub parallel: bool,
    pub parallel_idx: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: i64,
    pub name: String,
    pub creator: String,
    pub executor: String,
    pub host_id: Option<i64>,
    pub operation: Operation,
    pub status: TaskStatus,
    pub prohibit_rollback: bool,
    pub context: TaskContext,
    pub trace_id: String,
    pub start_time: Millis,
    pub finish_time: Option<Millis>,
    /// Set on rolling tasks: the batches, budget and pauses they go by.
    pub rollout: Option<Rollout>,
    /// A rolling task held before its next batch until an operator resumes it.
    pub paused: bool,
    /// The canary pause (`pauseAfterFirstBatch`) happened: it happens once, even if
    /// the controller restarts or the first barrier runs again.
    pub canary_held: bool,
    /// The seq of the task's latest event when it was read, in the same statement as
    /// its row and before its subtasks, so the read shows at least that much: where a
    /// watch goes on without replaying what the read shows. 0 when not read with it.
    pub last_event_seq: i64,
    pub subtasks: Vec<Subtask>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtask {
    pub id: i64,
    pub task_id: i64,
    pub series_id: i32,
    pub step: Step,
    pub name: String,
    pub description: String,
    pub class_name: String,
    /// The host a per-host step acts on; None for barriers.
    pub host_id: Option<i64>,
    pub operation: Operation,
    pub status: SubtaskStatus,
    pub parallel_idx: i32,
    pub timeout_secs: i64,
    pub run_time: i32,
    pub executor: Option<String>,
    pub start_time: Option<Millis>,
    pub finish_time: Option<Millis>,
    pub prohibit_rollback: bool,
    pub upstreams: Vec<i64>,
    pub downstreams: Vec<i64>,
}

/// What an operator asks of a host's agent as a whole: OCP's three agent operations,
/// and replacing the agent in place with another version (the version is in the
/// task's context, see [`crate::model::ocp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    Restart,
    Stop,
    Start,
    Upgrade,
}

/// A task as it is about to be stored: nodes in chain order, edges by node index.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub name: String,
    /// Set on single-host tasks.
    pub host_id: Option<i64>,
    /// Every host the task operates on, locked with its creation.
    pub host_ids: Vec<i64>,
    pub context: TaskContext,
    pub rollout: Option<Rollout>,
    pub nodes: Vec<NewSubtask>,
    pub edges: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct NewSubtask {
    pub step: Step,
    /// Seconds, as the plan sets them.
    pub timeout_secs: i64,
    pub host_id: Option<i64>,
    pub parallel_idx: i32,
    pub series_id: i32,
    pub status: SubtaskStatus,
}

/// What a transition changed: the task's status, or one subtask's, so that a subtask
/// event cannot carry a task's status or the other way round; or who drives the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Task(TaskStatus),
    Subtask(i64, SubtaskStatus),
    /// The controller advertised as `by` took the task over from one whose lease ran
    /// out, and drives it from now on. The task stays RUNNING.
    TakenOver {
        by: String,
    },
}

impl Change {
    pub fn subtask_id(&self) -> Option<i64> {
        match self {
            Change::Task(_) | Change::TakenOver { .. } => None,
            Change::Subtask(id, _) => Some(*id),
        }
    }

    /// The status as OCP spells it: a takeover happens only to a RUNNING task.
    pub fn status(&self) -> &'static str {
        match self {
            Change::Task(status) => status.as_str(),
            Change::Subtask(_, status) => status.as_str(),
            Change::TakenOver { .. } => TaskStatus::Running.as_str(),
        }
    }

    /// The controller that took the task over, on a takeover.
    pub fn taken_over_by(&self) -> Option<&str> {
        match self {
            Change::TakenOver { by } => Some(by),
            Change::Task(_) | Change::Subtask(..) => None,
        }
    }
}

/// One transition of a task or of one of its subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// Increasing: resume a watch after the last one seen.
    pub seq: i64,
    pub task_id: i64,
    pub change: Change,
    pub operation: Operation,
    pub at: Millis,
    pub message: String,
    /// On a subtask's events, what the subtask is, so that a watcher can say which step
    /// of which host changed without reading the task; None on the task's own.
    pub subtask: Option<EventSubtask>,
}

/// The subtask an event is about, as a watcher names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubtask {
    pub name: String,
    /// The host of a per-host step; None for a barrier.
    pub host_id: Option<i64>,
}

impl Task {
    /// Ended SUCCESSFUL by undoing its work.
    pub fn rolled_back(&self) -> bool {
        self.status == TaskStatus::Successful && self.operation == Operation::Rollback
    }

    /// How many hosts the task operates on.
    pub fn host_count(&self) -> usize {
        match self.host_id {
            Some(_) => 1,
            None => self.context.list_map.get(ocp::HOST_IDS).map_or(0, Vec::len),
        }
    }

    /// The context as OCP shows it: what the plan stored, plus what OCP spells as
    /// context entries but this controller keeps as the task's own fields.
    pub fn ocp_context(&self) -> TaskContext {
        let mut context = self.context.clone();
        context.string_map.insert(
            ocp::PROHIBIT_ROLLBACK.to_string(),
            self.prohibit_rollback.to_string(),
        );
        if self.rolled_back() {
            context
                .string_map
                .insert(ocp::ROLLED_BACK.to_string(), "true".to_string());
        }
        context
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtaskLogLine {
    pub at: Millis,
    pub trace_id: String,
    pub line: String,
}

/// Rows of the store counted by their words, as stored: (name, status, count) and
/// (status, count); what the metrics expose.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreCounts {
    pub tasks: Vec<(String, String, i64)>,
    /// Of the open tasks only.
    pub subtasks: Vec<(String, String, i64)>,
    pub hosts: Vec<(String, i64)>,
    /// Hosts by the agent version their last heartbeat reported ("" before the first).
    pub agent_versions: Vec<(String, i64)>,
}

/// A task with nothing in it but what a unit test sets.
#[cfg(test)]
impl Task {
    pub(crate) fn bare(id: i64, status: TaskStatus, operation: Operation) -> Task {
        Task {
            id,
            name: "t".to_string(),
            creator: "admin".to_string(),
            executor: "127.0.0.1".to_string(),
            host_id: None,
            operation,
            status,
            prohibit_rollback: false,
            context: TaskContext::default(),
            trace_id: String::new(),
            start_time: 0,
            finish_time: None,
            rollout: None,
            paused: false,
            canary_held: false,
            last_event_seq: 0,
            subtasks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: TaskStatus, operation: Operation, prohibit_rollback: bool) -> Task {
        Task {
            prohibit_rollback,
            ..Task::bare(1, status, operation)
        }
    }

    #[test]
    fn ocp_context_shows_the_rollback_fields_the_task_keeps() {
        let running = task(TaskStatus::Running, Operation::Execute, false).ocp_context();
        assert_eq!(running.string_map[ocp::PROHIBIT_ROLLBACK], "false");
        assert!(!running.string_map.contains_key(ocp::ROLLED_BACK));
        let pinned = task(TaskStatus::Running, Operation::Execute, true).ocp_context();
        assert_eq!(pinned.string_map[ocp::PROHIBIT_ROLLBACK], "true");
        let undone = task(TaskStatus::Successful, Operation::Rollback, false).ocp_context();
        assert_eq!(undone.string_map[ocp::ROLLED_BACK], "true");
        let failed_rollback = task(TaskStatus::Failed, Operation::Rollback, false).ocp_context();
        assert!(!failed_rollback.string_map.contains_key(ocp::ROLLED_BACK));
    }
}
