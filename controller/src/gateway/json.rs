//! The JSON documents of OCP's host-agent API, field for field as its pages show them.
//!
//! A value OCP would have as null is left out rather than sent as null or "", because
//! that is what the seeds do (a PENDING subtask has no `executor` or `startTime`, a
//! batch task no `hostId`, a RUNNING task no `finishTime`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::model::{AgentProcess, Host, Page, Subtask, Task, TaskContext, TaskEvent, ocp};
use crate::rollout::{BatchSize, Problem, RolloutField, RolloutInput};
use crate::service::{
    CurrentUser, HostAgentView, allowed_subtask_operations, allowed_task_operations,
};
use crate::time::format_millis;

/// Every answer, success or failure, travels in this envelope.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    pub data: T,
    #[serde(flatten)]
    pub meta: Meta,
}

/// A failed request: no `data`, and `error` says what to fix.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEnvelope {
    #[serde(flatten)]
    pub meta: Meta,
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub successful: bool,
    /// When the server completed the request: RFC 3339, milliseconds, server's offset.
    #[schema(example = "2021-09-03T14:20:26.257+08:00")]
    pub timestamp: String,
    /// Milliseconds spent on the request.
    pub duration: u64,
    /// The HTTP status.
    pub status: u16,
    /// 16 lowercase hex digits; also the `X-Trace-Id` response header.
    #[schema(example = "135b61d1965d4be3")]
    pub trace_id: String,
    /// The controller's advertised address.
    pub server: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// OCP's error code: 10001 illegal argument, 10002 not found, 20000 task does not
    /// exist, 30001 unauthenticated, 30002 too many failed logins, 30014 not permitted,
    /// 40000 agent state or host busy.
    pub code: i32,
    pub message: String,
    /// The request path the error is about.
    pub target: Option<String>,
    pub sub_errors: Vec<SubError>,
}

/// One offending field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubError {
    pub field: String,
    /// The value as it was sent: any JSON value.
    pub rejected_value: serde_json::Value,
    pub message: String,
}

/// Body of the batch routes. The documented example spells the field `hostids`;
/// both spellings are accepted as the same field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchHostsRequest {
    /// Distinct existing host ids, at most 10,000 (`MAX_BATCH_HOSTS`): a longer batch is
    /// refused with 400 (10001) before any host is looked up.
    #[serde(alias = "hostids")]
    #[schema(example = json!([1001, 1002]), min_items = 1, max_items = 10_000)]
    pub host_ids: Vec<i64>,
    /// Goes through the hosts in batches instead of stage by stage (docs/rolling.md).
    #[serde(default, deserialize_with = "object_or_null")]
    pub rollout: Option<RolloutRequest>,
}

/// Body of `batchUpgradeAgents`: the batch routes' body, with the version to install.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchUpgradeRequest {
    /// Distinct existing host ids, at most 10,000, as for the other batch routes.
    #[serde(alias = "hostids")]
    #[schema(example = json!([1001, 1002]), min_items = 1, max_items = 10_000)]
    pub host_ids: Vec<i64>,
    /// A version uploaded as an agent package (`POST /api/v2/agent/packages`).
    #[schema(example = "4.3.0")]
    pub version: String,
    /// Goes through the hosts in batches instead of stage by stage (docs/rolling.md).
    #[serde(default, deserialize_with = "object_or_null")]
    pub rollout: Option<RolloutRequest>,
}

/// Body of one host's agent upgrade.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeRequest {
    /// A version uploaded as an agent package (`POST /api/v2/agent/packages`).
    #[schema(example = "4.3.0")]
    pub version: String,
}

/// A field that holds a JSON object, or null for none. serde's derived structs also
/// take an array of their fields in order, which made `"rollout": []` a rolling task
/// with every default; this takes the object's keys only, through the same access, so
/// an error inside it still names its field (`rollout.batchSize`).
fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectOrNull<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_any(ObjectOrNull(std::marker::PhantomData))
}

/// How a batch goes through its hosts in batches. Every field is optional: one host at
/// a time, no failure tolerated, no pause and no health wait by default. Fields are read
/// as JSON values and checked together, so that one answer names every bad field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutRequest {
    /// Hosts per batch: a count (1 or more) or a share of the hosts ("25%", rounded up).
    #[schema(value_type = Option<BatchSizeJson>, example = json!("25%"))]
    #[serde(default)]
    pub batch_size: Value,
    /// Failed hosts tolerated: the next batch starts while failed hosts <= this.
    #[schema(value_type = Option<i64>, example = 0)]
    #[serde(default)]
    pub max_failed_hosts: Value,
    /// Seconds to wait between two batches, 0 to 86,400.
    #[schema(value_type = Option<i64>, example = 0)]
    #[serde(default)]
    pub pause_seconds: Value,
    /// Seconds a host's basic processes must stay up after Start all, 0 to 3,600.
    #[schema(value_type = Option<i64>, example = 0)]
    #[serde(default)]
    pub min_healthy_seconds: Value,
    /// A canary: the task pauses after the first batch until resumed.
    #[schema(value_type = Option<bool>, example = false)]
    #[serde(default)]
    pub pause_after_first_batch: Value,
    /// Ignored: what a task's `rollout` reads back, so that it may be sent again as is.
    #[schema(value_type = Option<i64>)]
    #[serde(default)]
    pub hosts_per_batch: Value,
}

/// A batch size: a number of hosts or a string ("25%", "3").
#[derive(Debug, Deserialize, Serialize, Clone, ToSchema)]
#[serde(untagged)]
pub enum BatchSizeJson {
    Hosts(i64),
    Text(String),
}

impl From<&RolloutRequest> for RolloutInput {
    fn from(r: &RolloutRequest) -> Self {
        let mut unreadable = Vec::new();
        let mut unreadable_as = |field, value: &Value, what: &str| {
            unreadable.push(Problem {
                field,
                rejected: value.to_string(),
                message: format!("must be {what}, got {value}"),
            });
        };
        let batch_size = match &r.batch_size {
            Value::Null => None,
            Value::Number(n) => Some(n.to_string()),
            Value::String(text) => Some(text.clone()),
            other => {
                unreadable_as(
                    RolloutField::BatchSize,
                    other,
                    "a number of hosts or a percentage string",
                );
                None
            }
        };
        let mut whole = |field, value: &Value| match value {
            Value::Null => None,
            Value::Number(n) if n.as_i64().is_some() => n.as_i64(),
            other => {
                unreadable_as(field, other, "a whole number");
                None
            }
        };
        let max_failed_hosts = whole(RolloutField::MaxFailedHosts, &r.max_failed_hosts);
        let pause_seconds = whole(RolloutField::PauseSeconds, &r.pause_seconds);
        let min_healthy_seconds = whole(RolloutField::MinHealthySeconds, &r.min_healthy_seconds);
        let pause_after_first_batch = match &r.pause_after_first_batch {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => {
                unreadable_as(RolloutField::PauseAfterFirstBatch, other, "true or false");
                None
            }
        };
        RolloutInput {
            batch_size,
            max_failed_hosts,
            pause_seconds,
            min_healthy_seconds,
            pause_after_first_batch,
            unreadable,
        }
    }
}

/// A rolling task's rollout, as validated, with the batch size it came to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutJson {
    /// A number of hosts, or a percentage string.
    #[schema(example = json!("25%"))]
    pub batch_size: BatchSizeJson,
    pub max_failed_hosts: u32,
    pub pause_seconds: u32,
    pub min_healthy_seconds: u32,
    pub pause_after_first_batch: bool,
    /// Hosts in each batch (the last one may have fewer).
    pub hosts_per_batch: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddHostRequest {
    #[schema(example = "10.0.0.11")]
    pub inner_ip_address: String,
    #[schema(example = 62888)]
    pub agent_port: u32,
    /// Defaults to the address.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    pub total_elements: i64,
    pub total_pages: i64,
    /// 1-based.
    pub number: u32,
    pub size: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageOf<T> {
    pub contents: Vec<T>,
    pub page: PageInfo,
}

impl<T> PageOf<T> {
    pub fn from_page<M>(page: &Page<M>, each: impl Fn(&M) -> T) -> PageOf<T> {
        PageOf {
            contents: page.contents.iter().map(each).collect(),
            page: PageInfo {
                total_elements: page.total_elements,
                total_pages: page.total_pages(),
                number: page.number,
                size: page.size,
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostJson {
    pub id: i64,
    pub name: String,
    pub inner_ip_address: String,
    pub agent_port: u16,
    /// NEW, ONLINE or OFFLINE.
    pub status: String,
    /// Why the agent could not be reached at its last check (a refused certificate, no
    /// answer); null once it answered. Not in OCP's Host.
    pub status_reason: Option<String>,
    /// The version its agent last reported running; empty until the agent first answered.
    /// Not in OCP's Host: it lets a list show which hosts an upgrade has yet to reach
    /// without a call per host.
    pub agent_version: String,
    pub create_time: String,
    pub update_time: String,
}

impl From<&Host> for HostJson {
    fn from(h: &Host) -> Self {
        HostJson {
            id: h.id,
            name: h.name.clone(),
            inner_ip_address: h.inner_ip_address.clone(),
            agent_port: h.agent_port,
            status: h.status.to_string(),
            status_reason: h.status_reason.clone(),
            agent_version: h.agent.version.clone(),
            create_time: format_millis(h.create_time),
            update_time: format_millis(h.update_time),
        }
    }
}

/// OCP's HostAgentProcess, all fourteen fields.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostAgentProcessJson {
    pub id: i64,
    pub host_id: i64,
    pub alias: String,
    pub pid: i32,
    pub user: String,
    pub start_command: String,
    /// Listening ports, comma-separated.
    pub ports: String,
    /// Seconds alive.
    pub elapsed_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// STARTED or STOPPED.
    pub status: String,
    pub operable: bool,
    pub log_file_pattern: String,
    pub create_time: String,
    pub update_time: String,
}

impl From<&AgentProcess> for HostAgentProcessJson {
    fn from(p: &AgentProcess) -> Self {
        let s = &p.snapshot;
        HostAgentProcessJson {
            id: p.id,
            host_id: p.host_id,
            alias: s.alias.clone(),
            pid: s.wire_pid(),
            user: s.user.clone(),
            start_command: s.start_command.clone(),
            ports: s.ports.clone(),
            elapsed_time: s.elapsed_time,
            last_active_time: s.last_active_time.map(format_millis),
            status: s.status.clone(),
            operable: s.operable,
            log_file_pattern: s.log_file_pattern.clone(),
            create_time: format_millis(p.create_time),
            update_time: format_millis(p.update_time),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostAgentJson {
    /// One agent per host: the agent is known by its host's id.
    pub id: i64,
    pub host_id: i64,
    pub host_inner_ip_address: String,
    pub version: String,
    pub install_home: String,
    pub log_home: String,
    /// STARTED, STOPPED, or UNKNOWN before the agent was first reached.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_available_time: Option<String>,
    pub processes: Vec<HostAgentProcessJson>,
    pub create_time: String,
    pub update_time: String,
}

impl From<&HostAgentView> for HostAgentJson {
    fn from(view: &HostAgentView) -> Self {
        let h = &view.host;
        HostAgentJson {
            id: h.id,
            host_id: h.id,
            host_inner_ip_address: h.inner_ip_address.clone(),
            version: h.agent.version.clone(),
            install_home: h.agent.install_home.clone(),
            log_home: h.agent.log_home.clone(),
            status: h.agent.status.clone(),
            last_available_time: h.last_available_time.map(format_millis),
            processes: view.processes.iter().map(Into::into).collect(),
            create_time: format_millis(h.create_time),
            update_time: format_millis(h.update_time),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskContextJson {
    /// `host_ids`: the task's hosts, as strings.
    pub list_map: BTreeMap<String, Vec<String>>,
    /// `prohibit_rollback`, and `host_id` on single-host tasks.
    pub string_map: BTreeMap<String, String>,
    pub parallel: bool,
    pub parallel_idx: i32,
}

impl From<&TaskContext> for TaskContextJson {
    fn from(c: &TaskContext) -> Self {
        TaskContextJson {
            list_map: c.list_map.clone(),
            string_map: c.string_map.clone(),
            parallel: c.parallel,
            parallel_idx: c.parallel_idx,
        }
    }
}

/// A task without its subtasks, as task lists show it (OCP's BasicTaskInstance).
/// Whether it may be rolled back is `context.stringMap.prohibit_rollback`, which is
/// where the seeds carry it; a rolled-back task has `stringMap.rolled_back = "true"`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicTaskJson {
    pub id: i64,
    pub name: String,
    pub creator: String,
    pub executor: String,
    /// Only on single-host tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<i64>,
    /// EXECUTE, RETRY, ROLLBACK, SKIP, ROLLBACK_SKIP or CANCEL.
    pub operation: String,
    /// RUNNING, FAILED or SUCCESSFUL.
    pub status: String,
    /// Always MANUAL.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always -1: these tasks come from no stored definition.
    pub task_definition_id: i64,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    pub context: TaskContextJson,
    /// Only on rolling tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutJson>,
    /// Only on rolling tasks: held before its next batch until resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// This controller's addition: the task operations its state admits now, by the
    /// rule the controller checks when one is asked for (the caller's permission aside):
    /// RETRY and ROLLBACK of a FAILED task (no RETRY of a failed rollback, no ROLLBACK
    /// under `prohibit_rollback`), PAUSE of a RUNNING rolling task, RESUME of a paused one.
    #[schema(example = json!(["RETRY", "ROLLBACK"]))]
    pub allowed_operations: Vec<String>,
}

/// A DAG task with its subtasks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskJson {
    #[serde(flatten)]
    pub task: BasicTaskJson,
    pub subtasks: Vec<SubtaskJson>,
}

impl From<&Task> for BasicTaskJson {
    fn from(t: &Task) -> Self {
        BasicTaskJson {
            id: t.id,
            name: t.name.clone(),
            creator: t.creator.clone(),
            executor: t.executor.clone(),
            host_id: t.host_id,
            operation: t.operation.to_string(),
            status: t.status.to_string(),
            kind: ocp::TASK_TYPE.to_string(),
            task_definition_id: ocp::NO_TASK_DEFINITION,
            start_time: format_millis(t.start_time),
            finish_time: t.finish_time.map(format_millis),
            context: (&t.ocp_context()).into(),
            rollout: t.rollout.map(|r| RolloutJson {
                batch_size: match r.batch_size {
                    BatchSize::Hosts(n) => BatchSizeJson::Hosts(i64::from(n)),
                    BatchSize::Percent(_) => BatchSizeJson::Text(r.batch_size.to_string()),
                },
                max_failed_hosts: r.max_failed_hosts,
                pause_seconds: r.pause_seconds,
                min_healthy_seconds: r.min_healthy_seconds,
                pause_after_first_batch: r.pause_after_first_batch,
                hosts_per_batch: r.hosts_per_batch(t.host_count()),
            }),
            paused: t.rollout.map(|_| t.paused),
            allowed_operations: words(allowed_task_operations(t)),
        }
    }
}

impl From<&Task> for TaskJson {
    fn from(t: &Task) -> Self {
        TaskJson {
            task: t.into(),
            subtasks: t.subtasks.iter().map(|s| SubtaskJson::of(t, s)).collect(),
        }
    }
}

/// A subtask's log: timestamped lines of what the step did, each agent call with its
/// trace id, and every error in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubtaskLogJson {
    pub log: String,
}

/// The signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentUserJson {
    pub username: String,
    /// HOST_VIEWER, HOST_MANAGER, TASK_VIEWER, TASK_MANAGER: every one held, implied ones
    /// included.
    #[schema(example = json!(["HOST_VIEWER", "HOST_MANAGER"]))]
    pub permissions: Vec<String>,
}

impl From<&CurrentUser> for CurrentUserJson {
    fn from(user: &CurrentUser) -> Self {
        CurrentUserJson {
            username: user.username.clone(),
            permissions: user
                .permissions
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
        }
    }
}

/// The last lines of an agent process's log file, oldest first, as its agent read them
/// just now: whole lines, at most the file's last 4 MiB.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessLogJson {
    pub log: String,
}

/// One server-sent event of a task's stream, as its fields arrive on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskEventSse {
    /// The event's seq: what `Last-Event-ID` resumes after.
    pub id: String,
    /// Always `transition`.
    pub event: String,
    /// A `TaskEventJson`, as JSON text.
    pub data: String,
}

/// One transition, as the task's event stream sends it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskEventJson {
    /// Resume after this one with `?after=` or `Last-Event-ID`.
    pub seq: i64,
    pub task_id: i64,
    /// Absent on the task's own transitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtask_id: Option<i64>,
    /// The subtask's status after the transition (PENDING, READY, RUNNING, CANCELING,
    /// FAILED or SUCCESSFUL), or the task's (RUNNING, FAILED or SUCCESSFUL) on its own.
    pub status: String,
    pub operation: String,
    pub time: String,
    pub message: String,
    /// The subtask's name, e.g. "Stop all OCP agent processes"; absent on the task's own
    /// transitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host the subtask acts on; absent on a barrier ("Wait node") and on the task's
    /// own transitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<i64>,
    /// Only on the event that says a controller took the task over (its previous owner
    /// stopped renewing its lease): that controller's advertised address, the task's
    /// `executor` from then on. The message reads "taken over by" the same address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.0.0.12")]
    pub taken_over_by: Option<String>,
}

impl From<&TaskEvent> for TaskEventJson {
    fn from(e: &TaskEvent) -> Self {
        TaskEventJson {
            seq: e.seq,
            task_id: e.task_id,
            subtask_id: e.change.subtask_id(),
            status: e.change.status().to_string(),
            operation: e.operation.to_string(),
            time: format_millis(e.at),
            message: e.message.clone(),
            name: e.subtask.as_ref().map(|s| s.name.clone()),
            host_id: e.subtask.as_ref().and_then(|s| s.host_id),
            taken_over_by: e.change.taken_over_by().map(str::to_string),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskJson {
    pub id: i64,
    pub series_id: i32,
    pub name: String,
    pub description: String,
    /// A stable identifier of the step's implementation.
    pub class_name: String,
    /// Always JAVA_TASK.
    pub node_type: String,
    pub operation: String,
    /// PENDING, READY, RUNNING, CANCELING, FAILED or SUCCESSFUL.
    pub status: String,
    /// The host's index in the batch, -1 on barriers and single-host tasks.
    pub parallel_idx: i32,
    /// Seconds.
    pub timeout: i64,
    /// Attempts, from 1.
    pub run_time: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    pub prohibit_rollback: bool,
    pub upstreams: Vec<i64>,
    pub downstreams: Vec<i64>,
    /// This controller's addition: the subtask operations its state and its task's
    /// admit now, by the rule the controller checks when one is asked for: RETRY and
    /// SKIP of a FAILED subtask of a FAILED task (not of a failed rollback), CANCEL of
    /// a RUNNING one.
    #[schema(example = json!(["RETRY", "SKIP"]))]
    pub allowed_operations: Vec<String>,
    /// This controller's addition: the host a per-host step acts on (every step but the
    /// barriers, one subtask per host); absent on a barrier ("Wait node").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<i64>,
}

fn words(words: Vec<&'static str>) -> Vec<String> {
    words.into_iter().map(str::to_string).collect()
}

impl SubtaskJson {
    /// `s`, a subtask of `task`.
    fn of(task: &Task, s: &Subtask) -> Self {
        SubtaskJson {
            id: s.id,
            series_id: s.series_id,
            name: s.name.clone(),
            description: s.description.clone(),
            class_name: s.class_name.clone(),
            node_type: ocp::NODE_TYPE.to_string(),
            operation: s.operation.to_string(),
            status: s.status.to_string(),
            parallel_idx: s.parallel_idx,
            timeout: s.timeout_secs,
            run_time: s.run_time,
            executor: s.executor.clone(),
            start_time: s.start_time.map(format_millis),
            finish_time: s.finish_time.map(format_millis),
            prohibit_rollback: s.prohibit_rollback,
            upstreams: s.upstreams.clone(),
            downstreams: s.downstreams.clone(),
            allowed_operations: words(allowed_subtask_operations(task, s)),
            host_id: s.host_id,
        }
    }
}

/// An agent package, as the package routes answer with it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentPackageJson {
    pub id: i64,
    pub version: String,
    /// x86_64 or aarch64, read from the binary's ELF header.
    pub arch: String,
    /// The binary's SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// Bytes.
    pub size: i64,
    pub uploaded_by: String,
    pub upload_time: String,
}

impl From<&crate::model::AgentPackage> for AgentPackageJson {
    fn from(p: &crate::model::AgentPackage) -> Self {
        AgentPackageJson {
            id: p.id,
            version: p.version.clone(),
            arch: p.arch.to_string(),
            sha256: p.sha256.clone(),
            size: p.size,
            uploaded_by: p.uploaded_by.clone(),
            upload_time: format_millis(p.upload_time),
        }
    }
}
