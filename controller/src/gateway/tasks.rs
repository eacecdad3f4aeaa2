//! `/tasks/instances/...`: the DAG tasks and the operator's operations on them.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::error::ApiError;
use super::extract::{PathIds, QueryParams};
use super::json::{
    BasicTaskJson, Envelope, PageOf, SubtaskLogJson, TaskEventJson, TaskEventSse, TaskJson,
};
use super::{ApiResult, Data, Failures, GatewayState};
use crate::service::{ApiOperation, Caller, TaskQuery, log_text, task_filter};

/// A page of tasks without their subtasks, newest first unless `sort` says otherwise.
#[utoipa::path(operation_id = ApiOperation::ListTasks.name(),
    get, path = "/tasks/instances", tag = "tasks",
    params(("page" = Option<u32>, Query, description = "page number, from 1"),
        ("size" = Option<u32>, Query, description = "page size, 10 by default, at most 2000"),
        ("status" = Option<String>, Query, description = "RUNNING, FAILED or SUCCESSFUL"),
        ("name" = Option<String>, Query, description = "the task's name"),
        ("hostId" = Option<i64>, Query, description = "tasks that act on this host"),
        ("createdAfter" = Option<String>, Query, description = "RFC 3339: created at or after"),
        ("createdBefore" = Option<String>, Query, description = "RFC 3339: created at or before"),
        ("sort" = Option<String>, Query, description = "id, startTime, finishTime, name or status, with ,asc or ,desc (default id,desc)")),
    responses((status = 200, description = "the tasks", body = Envelope<PageOf<BasicTaskJson>>), Failures),
    security(("basic" = ["TASK_VIEWER"])))]
pub async fn list_tasks(
    State(state): State<GatewayState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<PageOf<BasicTaskJson>> {
    let query = query.only(&[
        "page",
        "size",
        "status",
        "name",
        "hostId",
        "createdAfter",
        "createdBefore",
        "sort",
    ])?;
    let page = query.page()?;
    let filter = task_filter(&TaskQuery {
        status: query.get("status"),
        name: query.get("name"),
        host_id: query.id("hostId")?,
        created_after: query.get("createdAfter"),
        created_before: query.get("createdBefore"),
        sort: query.get("sort"),
    })?;
    let tasks = state.core.list_tasks(&caller, &filter, page).await?;
    Ok(Data(PageOf::from_page(&tasks, |t| t.into())))
}

/// One task with its subtasks. TASK_VIEWER reads any task; its creator may always read it.
#[utoipa::path(operation_id = ApiOperation::GetTask.name(),
    get, path = "/tasks/instances/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "task id")),
    responses((status = 200, description = "the task", body = Envelope<TaskJson>,
        headers(("X-Task-Event-Seq" = i64, description = "the seq of the task's latest event when it was read: watch its events from there (`/events?after=`)"))), Failures),
    security(("basic" = ["TASK_VIEWER"])))]
pub async fn get_task(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> Result<Response, ApiError> {
    let task = state.core.get_task(&caller, ids.id("id")?).await?;
    let seq = HeaderValue::from(task.last_event_seq);
    Ok((
        [(X_TASK_EVENT_SEQ.clone(), seq)],
        Data(TaskJson::from(&task)),
    )
        .into_response())
}

pub static X_TASK_EVENT_SEQ: HeaderName = HeaderName::from_static("x-task-event-seq");

/// Runs every FAILED subtask of a FAILED task again (operation RETRY, runTime + 1).
#[utoipa::path(operation_id = ApiOperation::RetryTask.name(),
    post, path = "/tasks/instances/{id}/retry", tag = "tasks",
    params(("id" = i64, Path, description = "task id")),
    responses((status = 200, description = "the task, RUNNING again", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["TASK_MANAGER"])))]
pub async fn retry_task(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    let task = state.core.retry_task(&caller, ids.id("id")?).await?;
    Ok(Data((&task).into()))
}

/// Undoes what a FAILED task did, backwards through its DAG, and lets its hosts go. It
/// ends SUCCESSFUL with operation ROLLBACK (as OCP reports it) and
/// `context.stringMap.rolled_back = "true"`.
#[utoipa::path(operation_id = ApiOperation::RollbackTask.name(),
    post, path = "/tasks/instances/{id}/rollback", tag = "tasks",
    params(("id" = i64, Path, description = "task id")),
    responses((status = 200, description = "the task, RUNNING its rollback", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["TASK_MANAGER"])))]
pub async fn rollback_task(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    let task = state.core.rollback_task(&caller, ids.id("id")?).await?;
    Ok(Data((&task).into()))
}

/// Holds a RUNNING rolling task before its next batch; steps already running finish.
/// Its Wait node's log says it is paused, and the task reads `"paused": true`.
#[utoipa::path(operation_id = ApiOperation::PauseTask.name(),
    post, path = "/tasks/instances/{id}/pause", tag = "tasks",
    params(("id" = i64, Path, description = "task id")),
    responses((status = 200, description = "the task, paused", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["TASK_MANAGER"])))]
pub async fn pause_task(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    let task = state.core.pause_task(&caller, ids.id("id")?).await?;
    Ok(Data((&task).into()))
}

/// Lets a paused rolling task (paused by an operator or by `pauseAfterFirstBatch`) go
/// on with its next batch.
#[utoipa::path(operation_id = ApiOperation::ResumeTask.name(),
    post, path = "/tasks/instances/{id}/resume", tag = "tasks",
    params(("id" = i64, Path, description = "task id")),
    responses((status = 200, description = "the task, resumed", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["TASK_MANAGER"])))]
pub async fn resume_task(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    let task = state.core.resume_task(&caller, ids.id("id")?).await?;
    Ok(Data((&task).into()))
}

/// Runs one FAILED subtask again.
#[utoipa::path(operation_id = ApiOperation::RetrySubtask.name(),
    post, path = "/tasks/instances/{id}/subtasks/{subtaskId}/retry", tag = "tasks",
    params(("id" = i64, Path, description = "task id"), ("subtaskId" = i64, Path, description = "subtask id")),
    responses((status = 200, description = "the task", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["TASK_MANAGER"])))]
pub async fn retry_subtask(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    let (task_id, subtask_id) = (ids.id("id")?, ids.id("subtaskId")?);
    let task = state
        .core
        .retry_subtask(&caller, task_id, subtask_id)
        .await?;
    Ok(Data((&task).into()))
}

/// Counts a FAILED subtask as done (SUCCESSFUL, operation SKIP) so that the DAG goes on.
#[utoipa::path(operation_id = ApiOperation::SkipSubtask.name(),
    post, path = "/tasks/instances/{id}/subtasks/{subtaskId}/skip", tag = "tasks",
    params(("id" = i64, Path, description = "task id"), ("subtaskId" = i64, Path, description = "subtask id")),
    responses((status = 200, description = "the task", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["TASK_MANAGER"])))]
pub async fn skip_subtask(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    let (task_id, subtask_id) = (ids.id("id")?, ids.id("subtaskId")?);
    let task = state
        .core
        .skip_subtask(&caller, task_id, subtask_id)
        .await?;
    Ok(Data((&task).into()))
}

/// Cancels a RUNNING subtask: its agent call is dropped and it ends FAILED with operation
/// CANCEL; answers once that is recorded.
#[utoipa::path(operation_id = ApiOperation::CancelSubtask.name(),
    post, path = "/tasks/instances/{id}/subtasks/{subtaskId}/cancel", tag = "tasks",
    params(("id" = i64, Path, description = "task id"), ("subtaskId" = i64, Path, description = "subtask id")),
    responses((status = 200, description = "the task", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["TASK_MANAGER"])))]
pub async fn cancel_subtask(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    let (task_id, subtask_id) = (ids.id("id")?, ids.id("subtaskId")?);
    let task = state
        .core
        .cancel_subtask(&caller, task_id, subtask_id)
        .await?;
    Ok(Data((&task).into()))
}

/// What a subtask did: timestamped lines, each agent call with its trace id, every error.
#[utoipa::path(operation_id = ApiOperation::GetSubtaskLog.name(),
    get, path = "/tasks/instances/{id}/subtasks/{subtaskId}/log", tag = "tasks",
    params(("id" = i64, Path, description = "task id"), ("subtaskId" = i64, Path, description = "subtask id")),
    responses((status = 200, description = "the log", body = Envelope<SubtaskLogJson>), Failures),
    security(("basic" = ["TASK_VIEWER"])))]
pub async fn get_subtask_log(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<SubtaskLogJson> {
    let (task_id, subtask_id) = (ids.id("id")?, ids.id("subtaskId")?);
    let lines = state.core.subtask_log(&caller, task_id, subtask_id).await?;
    Ok(Data(SubtaskLogJson {
        log: log_text(&lines),
    }))
}

/// Where a watch resumes: `Last-Event-ID` (what EventSource sends on reconnect), else
/// `?after=`, else the start. Both are validated even when both are given, so a bad
/// `after` is never silently ignored behind a reconnecting client's header.
fn resume_after(query: QueryParams, headers: &HeaderMap) -> Result<i64, ApiError> {
    let after = query.only(&["after"])?.seq("after")?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::invalid(
                    "Last-Event-ID",
                    serde_json::Value::String(v.to_string()),
                    "must be an event seq",
                )
            })
        })
        .transpose()?;
    Ok(resume.unwrap_or(after))
}

/// Every transition of the task as server-sent events (`id:` the event's seq, `event:
/// transition`, `data:` a TaskEvent), from `?after=` or `Last-Event-ID`, ending once
/// the task is no longer RUNNING.
#[utoipa::path(operation_id = ApiOperation::WatchTask.name(),
    get, path = "/tasks/instances/{id}/events", tag = "tasks",
    params(("id" = i64, Path, description = "task id"),
        ("after" = Option<i64>, Query, description = "the last seq seen; 0 or absent: from the start"),
        ("Last-Event-ID" = Option<i64>, Header, description = "what EventSource sends on reconnect")),
    responses((status = 200, description = "text/event-stream: each event's data is a TaskEventJson", body = TaskEventSse, content_type = "text/event-stream"), Failures),
    security(("basic" = ["TASK_VIEWER"])))]
pub async fn watch_task(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let task_id = ids.id("id")?;
    let after = match resume_after(query, &headers) {
        Ok(after) => after,
        Err(e) => {
            // A caller who may not read the task learns that first, not what is wrong
            // with its resume point.
            state.core.may_watch(&caller, task_id).await?;
            return Err(e);
        }
    };
    let events = state.core.watch(&caller, task_id, after).await?;
    let stream = events.map(|item| {
        Ok::<Event, Infallible>(match item {
            Ok(e) => Event::default()
                .id(e.seq.to_string())
                .event("transition")
                .json_data(TaskEventJson::from(&e))
                .unwrap_or_else(|_| Event::default().event("error").data("unserializable event")),
            Err(e) => Event::default().event("error").data(e.to_string()),
        })
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
