//! The controller's domain: hosts, their agent processes, and DAG tasks.
//!
//! Enumerations carry OCP's own words (`RUNNING`, `EXECUTE`, ...) as their
//! string form, because both faces and the store speak them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::rollout::Rollout;

/// Unix milliseconds: the store's and the engine's notion of a moment.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $word)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord { kind: stringify!($name), word: s.to_string() }),
                }
            }
        }
    };
}

/// A word read from the store or a request that names no known value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} {word:?}")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub word: String,
}

words!(
    /// ONLINE/OFFLINE come from heartbeats; NEW until the first one.
    HostStatus { New = "NEW", Online = "ONLINE", Offline = "OFFLINE" }
);

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

words!(
    /// What a subtask does when it runs; `className` is derived from it.
    Step {
        PrepareRestart = "PREPARE_RESTART",
        PrepareStop = "PREPARE_STOP",
        PrepareStart = "PREPARE_START",
        RestartProxy = "RESTART_PROXY",
        StopAll = "STOP_ALL",
        StartAll = "START_ALL",
        Finish = "FINISH",
        Wait = "WAIT",
    }
);

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::PrepareRestart => "Prepare restart OCP agent",
            Step::PrepareStop => "Prepare stop OCP agent",
            Step::PrepareStart => "Prepare start OCP agent",
            Step::RestartProxy => "Restart pos proxy",
            Step::StopAll => "Stop all OCP agent processes",
            Step::StartAll => "Start all OCP agent processes",
            Step::Finish => "Finish OCP agent operation",
            Step::Wait => "Wait node",
        }
    }

    pub fn class_name(self) -> &'static str {
        match self {
            Step::PrepareRestart => "ocp.agent.PrepareRestartAgent",
            Step::PrepareStop => "ocp.agent.PrepareStopAgent",
            Step::PrepareStart => "ocp.agent.PrepareStartAgent",
            Step::RestartProxy => "ocp.agent.RestartPosProxy",
            Step::StopAll => "ocp.agent.StopAllProcesses",
            Step::StartAll => "ocp.agent.StartAllProcesses",
            Step::Finish => "ocp.agent.FinishAgentOperation",
            Step::Wait => "ocp.task.WaitNode",
        }
    }

    /// How many times the step calls its agent after a transient error (unavailable,
    /// deadline exceeded) before it fails, with a jittered doubling pause between calls.
    pub fn transient_retries(self) -> u32 {
        match self {
            Step::StopAll
            | Step::StartAll
            | Step::PrepareRestart
            | Step::PrepareStop
            | Step::PrepareStart => 8,
            Step::RestartProxy | Step::Finish => 5,
            Step::Wait => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: i64,
    pub name: String,
    pub inner_ip_address: String,
    pub agent_port: u16,
    pub status: HostStatus,
    pub last_available_time: Option<Millis>,
    pub agent: AgentSummary,
    pub create_time: Millis,
    pub update_time: Millis,
    /// Why its agent could not be reached at the last check; `None` once it answered.
    pub status_reason: Option<String>,
}

impl Host {
    /// The agent's gRPC endpoint, over TLS or not.
    pub fn agent_uri(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        if self.inner_ip_address.contains(':') {
            format!("{scheme}://[{}]:{}", self.inner_ip_address, self.agent_port)
        } else {
            format!("{scheme}://{}:{}", self.inner_ip_address, self.agent_port)
        }
    }
}

/// What the host's agent last said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSummary {
    pub version: String,
    pub install_home: String,
    pub log_home: String,
    /// STARTED, STOPPED, or UNKNOWN before the agent was first reached.
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub inner_ip_address: String,
    pub agent_port: u16,
}

/// One supervised process of a host, with the stable id the controller gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProcess {
    pub id: i64,
    pub host_id: i64,
    pub snapshot: ProcessSnapshot,
    pub create_time: Millis,
    pub update_time: Millis,
}

/// A process as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSnapshot {
    pub alias: String,
    pub pid: i64,
    pub user: String,
    pub start_command: String,
    /// Comma-separated, as OCP shows them.
    pub ports: String,
    pub elapsed_time: i64,
    pub last_active_time: Option<Millis>,
    /// STARTED or STOPPED.
    pub status: String,
    pub operable: bool,
    pub log_file_pattern: String,
}

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

/// What an operator asks of a host's agent as a whole: OCP's three agent operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    Restart,
    Stop,
    Start,
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
/// event cannot carry a task's status or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Task(TaskStatus),
    Subtask(i64, SubtaskStatus),
}

impl Change {
    pub fn subtask_id(self) -> Option<i64> {
        match self {
            Change::Task(_) => None,
            Change::Subtask(id, _) => Some(id),
        }
    }

    /// The status as OCP spells it.
    pub fn status(self) -> &'static str {
        match self {
            Change::Task(status) => status.as_str(),
            Change::Subtask(_, status) => status.as_str(),
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
}

/// OCP's conventions for what its task pages show and this controller has no other
/// source for, declared once for both faces.
pub mod ocp {
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

impl ProcessSnapshot {
    /// The pid in OCP's 32-bit field: a pid beyond it does not exist on Linux, and 0 is
    /// OCP's "no process".
    pub fn wire_pid(&self) -> i32 {
        i32::try_from(self.pid).unwrap_or(0)
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
}

/// A page request as both faces take it: 1-based, size bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub number: u32,
    pub size: u32,
}

/// A page number or size out of bounds; `field` is `page` or `size`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}, got {value}")]
pub struct PageRefused {
    pub field: &'static str,
    pub value: u32,
    pub message: String,
}

impl PageRequest {
    pub const DEFAULT_SIZE: u32 = 10;
    pub const MAX_SIZE: u32 = 2000;
    /// Pages are numbered like OCP's, in a signed 32-bit integer.
    pub const MAX_NUMBER: u32 = i32::MAX as u32;

    /// The paging rules of both faces: an absent number is page 1, an absent size is
    /// 10; present ones must be within bounds, never silently clamped.
    pub fn new(number: Option<u32>, size: Option<u32>) -> Result<PageRequest, PageRefused> {
        let number = number.unwrap_or(1);
        if !(1..=Self::MAX_NUMBER).contains(&number) {
            return Err(PageRefused {
                field: "page",
                value: number,
                message: format!("must be a page number from 1 to {}", Self::MAX_NUMBER),
            });
        }
        let size = size.unwrap_or(Self::DEFAULT_SIZE);
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(PageRefused {
                field: "size",
                value: size,
                message: format!("must be a page size from 1 to {}", Self::MAX_SIZE),
            });
        }
        Ok(PageRequest { number, size })
    }

    pub fn offset(self) -> i64 {
        i64::from(self.number.saturating_sub(1)) * i64::from(self.size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub contents: Vec<T>,
    pub total_elements: i64,
    pub number: u32,
    pub size: u32,
}

impl<T> Page<T> {
    pub fn total_pages(&self) -> i64 {
        if self.size == 0 {
            return 0;
        }
        (self.total_elements + i64::from(self.size) - 1) / i64::from(self.size)
    }
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub name: Option<String>,
    pub host_id: Option<i64>,
    /// Created at or after.
    pub created_from: Option<Millis>,
    /// Created at or before.
    pub created_to: Option<Millis>,
    pub sort: TaskSort,
}

words!(
    /// What a task list is ordered by; OCP's field names.
    TaskSortKey {
        Id = "id",
        StartTime = "startTime",
        FinishTime = "finishTime",
        Name = "name",
        Status = "status",
    }
);

impl TaskSortKey {
    pub fn column(self) -> &'static str {
        match self {
            TaskSortKey::Id => "id",
            TaskSortKey::StartTime => "start_time",
            TaskSortKey::FinishTime => "finish_time",
            TaskSortKey::Name => "name",
            TaskSortKey::Status => "status",
        }
    }
}

/// Newest first unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSort {
    pub key: TaskSortKey,
    pub ascending: bool,
}

impl Default for TaskSort {
    fn default() -> Self {
        TaskSort {
            key: TaskSortKey::Id,
            ascending: false,
        }
    }
}

impl FromStr for TaskSort {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<TaskSort, UnknownWord> {
        let (key, ascending) = sort_parts(s, TaskSort::default().ascending)?;
        Ok(TaskSort { key, ascending })
    }
}

/// `key` or `key,asc|desc`, as Spring-style OCP clients send `sort`; a bare key sorts
/// in the list's default direction, `default_ascending`.
fn sort_parts<K: FromStr<Err = UnknownWord>>(
    s: &str,
    default_ascending: bool,
) -> Result<(K, bool), UnknownWord> {
    let (key, ascending) = match s.split_once(',') {
        None => (s, default_ascending),
        Some((key, direction)) => match direction.trim().to_ascii_lowercase().as_str() {
            "asc" => (key, true),
            "desc" => (key, false),
            other => {
                return Err(UnknownWord {
                    kind: "sort direction",
                    word: other.to_string(),
                });
            }
        },
    };
    Ok((key.trim().parse()?, ascending))
}

/// Which hosts a host list shows, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Any of these; all when empty.
    pub statuses: Vec<HostStatus>,
    /// Found in the name or the inner IP address, ASCII letters in either case.
    pub keyword: Option<String>,
    pub sort: HostSort,
}

words!(
    /// What a host list is ordered by; the names of the host's JSON fields.
    HostSortKey {
        Id = "id",
        Name = "name",
        InnerIpAddress = "innerIpAddress",
        Status = "status",
        CreateTime = "createTime",
        UpdateTime = "updateTime",
    }
);

impl HostSortKey {
    pub fn column(self) -> &'static str {
        match self {
            HostSortKey::Id => "id",
            HostSortKey::Name => "name",
            HostSortKey::InnerIpAddress => "inner_ip_address",
            HostSortKey::Status => "status",
            HostSortKey::CreateTime => "create_time",
            HostSortKey::UpdateTime => "update_time",
        }
    }

    /// Text is ordered by its bytes, so that both stores list hosts alike whatever
    /// PostgreSQL's locale.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            HostSortKey::Name | HostSortKey::InnerIpAddress | HostSortKey::Status
        )
    }
}

/// Oldest host first unless asked otherwise, as the list always was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSort {
    pub key: HostSortKey,
    pub ascending: bool,
}

impl Default for HostSort {
    fn default() -> Self {
        HostSort {
            key: HostSortKey::Id,
            ascending: true,
        }
    }
}

impl FromStr for HostSort {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<HostSort, UnknownWord> {
        let (key, ascending) = sort_parts(s, HostSort::default().ascending)?;
        Ok(HostSort { key, ascending })
    }
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

    #[test]
    fn paging_defaults_absent_values_and_refuses_out_of_bounds() {
        assert_eq!(
            PageRequest::new(None, None),
            Ok(PageRequest {
                number: 1,
                size: PageRequest::DEFAULT_SIZE
            })
        );
        assert_eq!(
            PageRequest::new(Some(3), Some(2000)),
            Ok(PageRequest {
                number: 3,
                size: 2000
            })
        );
        for (number, size, field) in [
            (Some(0), None, "page"),
            (Some(i32::MAX as u32 + 1), None, "page"),
            (None, Some(0), "size"),
            (None, Some(2001), "size"),
        ] {
            assert_eq!(PageRequest::new(number, size).unwrap_err().field, field);
        }
        assert_eq!(
            PageRequest::new(None, Some(2001)).unwrap_err().to_string(),
            "size: must be a page size from 1 to 2000, got 2001"
        );
    }

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
