//! Tasks as the operator reads and acts on them: reading, retry, rollback, skip,
//! cancel, the subtask log, and watching a task's transitions.

use std::time::Duration;

use futures::Stream;

use super::errors::{Field, check_id};
use super::watch::WATCH_POLL;
use super::{ApiOperation, Caller, Core, CoreError};
use crate::engine::Start;
use crate::model::{
    Page, PageRequest, Subtask, SubtaskLogLine, SubtaskStatus, Task, TaskEvent, TaskFilter,
    TaskSort, TaskStatus, now_millis,
};
use crate::store::rules::{self, SubtaskOperation, TaskOperation};

/// How long a cancel waits for the controller driving the step to record its end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// How a FAILED task is reopened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskAction {
    /// Every FAILED subtask runs again (operation RETRY, one more attempt).
    Retry,
    /// What the FAILED task did is undone, backwards through its DAG, and its hosts are let
    /// go. It then ends SUCCESSFUL with operation ROLLBACK, as OCP reports it, which
    /// `Task::rolled_back` tells apart from a task that did its work.
    Rollback,
}

/// How a FAILED subtask is reopened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubtaskAction {
    /// It runs again.
    Retry,
    /// It counts as done (SUCCESSFUL, operation SKIP) and the DAG goes on.
    Skip,
}

impl Core {
    pub async fn get_task(&self, caller: &Caller, id: i64) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::GetTask)?;
        self.readable_task(caller, id).await
    }

    /// The task if this caller may read it. Without TASK_VIEWER, a missing task is
    /// refused like another's, so that whether a task exists is not revealed.
    async fn readable_task(&self, caller: &Caller, id: i64) -> Result<Task, CoreError> {
        match self.find_task(id).await {
            Ok(task) if caller.may_read(&task) => Ok(task),
            Ok(_) => Err(caller.hidden()),
            Err(CoreError::TaskNotFound(_)) if !caller.may_know_missing_tasks() => {
                Err(caller.hidden())
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn find_task(&self, id: i64) -> Result<Task, CoreError> {
        check_id(Field::TaskId, id)?;
        if let Some(task) = self.finished.get(id) {
            return Ok(task);
        }
        let epoch = self.finished.epoch();
        let task = self
            .store
            .get_task(id)
            .await?
            .ok_or(CoreError::TaskNotFound(id))?;
        self.finished.offer(&task, epoch);
        Ok(task)
    }

    pub async fn list_tasks(
        &self,
        caller: &Caller,
        filter: &TaskFilter,
        page: PageRequest,
    ) -> Result<Page<Task>, CoreError> {
        caller.admitted(ApiOperation::ListTasks)?;
        Ok(self.store.list_tasks(filter, page).await?)
    }

    /// Runs every FAILED subtask of a FAILED task again (operation RETRY).
    pub async fn retry_task(&self, caller: &Caller, task_id: i64) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::RetryTask)?;
        self.reopen_task(caller, task_id, TaskAction::Retry).await
    }

    /// Undoes what a FAILED task did, backwards through its DAG.
    pub async fn rollback_task(&self, caller: &Caller, task_id: i64) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::RollbackTask)?;
        self.reopen_task(caller, task_id, TaskAction::Rollback)
            .await
    }

    async fn reopen_task(
        &self,
        caller: &Caller,
        task_id: i64,
        action: TaskAction,
    ) -> Result<Task, CoreError> {
        check_id(Field::TaskId, task_id)?;
        let at = now_millis();
        let claim = self.engine.claim();
        let fence = match action {
            TaskAction::Retry => {
                self.store
                    .retry_task(task_id, caller.name(), at, &claim)
                    .await?
                    .1
            }
            TaskAction::Rollback => {
                self.store
                    .begin_rollback(task_id, caller.name(), at, &claim)
                    .await?
            }
        };
        // After the change: a read that started before it cannot cache the old task now.
        self.finished.forget(task_id);
        self.engine.drive(fence, Start::Fresh);
        self.find_task(task_id).await
    }

    /// Holds a RUNNING rolling task before its next batch; what runs finishes.
    pub async fn pause_task(&self, caller: &Caller, task_id: i64) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::PauseTask)?;
        self.set_paused(caller, task_id, true).await
    }

    /// Lets a paused rolling task's held batch go.
    pub async fn resume_task(&self, caller: &Caller, task_id: i64) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::ResumeTask)?;
        self.set_paused(caller, task_id, false).await
    }

    async fn set_paused(
        &self,
        caller: &Caller,
        task_id: i64,
        paused: bool,
    ) -> Result<Task, CoreError> {
        check_id(Field::TaskId, task_id)?;
        self.store
            .set_paused(task_id, paused, caller.name(), now_millis())
            .await?;
        self.find_task(task_id).await
    }

    /// Runs one FAILED subtask again.
    pub async fn retry_subtask(
        &self,
        caller: &Caller,
        task_id: i64,
        subtask_id: i64,
    ) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::RetrySubtask)?;
        self.reopen_subtask(caller, task_id, subtask_id, SubtaskAction::Retry)
            .await
    }

    /// Counts one FAILED subtask as done (operation SKIP), and the DAG goes on.
    pub async fn skip_subtask(
        &self,
        caller: &Caller,
        task_id: i64,
        subtask_id: i64,
    ) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::SkipSubtask)?;
        self.reopen_subtask(caller, task_id, subtask_id, SubtaskAction::Skip)
            .await
    }

    async fn reopen_subtask(
        &self,
        caller: &Caller,
        task_id: i64,
        subtask_id: i64,
        action: SubtaskAction,
    ) -> Result<Task, CoreError> {
        check_ids(task_id, subtask_id)?;
        let at = now_millis();
        let claim = self.engine.claim();
        let fence = match action {
            SubtaskAction::Retry => {
                self.store
                    .retry_subtask(task_id, subtask_id, caller.name(), at, &claim)
                    .await?
            }
            SubtaskAction::Skip => {
                self.store
                    .skip_subtask(task_id, subtask_id, caller.name(), at, &claim)
                    .await?
            }
        };
        self.finished.forget(task_id);
        self.engine.drive(fence, Start::Fresh);
        self.find_task(task_id).await
    }

    /// Stops a RUNNING subtask: its agent call is dropped, and it ends FAILED with
    /// operation CANCEL. The store tells whichever controller drives the task; this one
    /// answers once the outcome is recorded, or after [`CANCEL_WAIT`] with the subtask
    /// still CANCELING when no controller drives the task right now (the next owner
    /// records the cancel when it takes the task over).
    pub async fn cancel_subtask(
        &self,
        caller: &Caller,
        task_id: i64,
        subtask_id: i64,
    ) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::CancelSubtask)?;
        check_ids(task_id, subtask_id)?;
        let mut news = self.store.subscribe();
        self.store
            .mark_canceling(task_id, subtask_id, caller.name(), now_millis())
            .await?;
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        while self.store.subtask_status(subtask_id).await? == Some(SubtaskStatus::Canceling) {
            let woken = tokio::time::timeout_at(deadline, async {
                loop {
                    match news.recv().await {
                        Ok(id) if id == task_id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep(WATCH_POLL).await;
                            return;
                        }
                    }
                }
            })
            .await;
            if woken.is_err() {
                break;
            }
        }
        self.finished.forget(task_id);
        self.find_task(task_id).await
    }

    pub async fn subtask_log(
        &self,
        caller: &Caller,
        task_id: i64,
        subtask_id: i64,
    ) -> Result<Vec<SubtaskLogLine>, CoreError> {
        caller.admitted(ApiOperation::GetSubtaskLog)?;
        let task = self.readable_task(caller, task_id).await?;
        check_id(Field::SubtaskId, subtask_id)?;
        if !task.subtasks.iter().any(|s| s.id == subtask_id) {
            return Err(CoreError::SubtaskNotFound {
                task_id,
                subtask_id,
            });
        }
        Ok(self.store.subtask_log(subtask_id).await?)
    }

    /// Whether the caller may watch the task, without opening a watch: what a face
    /// says first when a watch request is wrong in other ways too.
    pub async fn may_watch(&self, caller: &Caller, task_id: i64) -> Result<(), CoreError> {
        caller.admitted(ApiOperation::WatchTask)?;
        self.readable_task(caller, task_id).await.map(drop)
    }

    /// Every transition of the task after event `after` (0: from its creation), in order,
    /// ending once the task is no longer RUNNING and everything was delivered. A client
    /// that reconnects passes the last `seq` it saw and misses nothing. The caller's
    /// watches are counted first, so a refused one costs no store read.
    pub async fn watch(
        &self,
        caller: &Caller,
        task_id: i64,
        after: i64,
    ) -> Result<impl Stream<Item = Result<TaskEvent, CoreError>> + use<>, CoreError> {
        caller.admitted(ApiOperation::WatchTask)?;
        let slot = self.watches.admit(caller.name())?;
        self.readable_task(caller, task_id).await?;
        if after < 0 {
            return Err(CoreError::InvalidArgument {
                field: Field::EventSeq,
                rejected: after.to_string(),
                message: "must be an event sequence number, 0 or more".to_string(),
            });
        }
        Ok(self.watches.stream(slot, task_id, after))
    }
}

fn check_ids(task_id: i64, subtask_id: i64) -> Result<(), CoreError> {
    check_id(Field::TaskId, task_id)?;
    check_id(Field::SubtaskId, subtask_id)
}

/// A task list's filter as either face receives it: strings, unchecked.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery<'a> {
    pub status: Option<&'a str>,
    pub name: Option<&'a str>,
    pub host_id: Option<i64>,
    pub created_after: Option<&'a str>,
    pub created_before: Option<&'a str>,
    pub sort: Option<&'a str>,
}

/// Checks a task list's filter once for both faces, naming the field that is wrong.
pub fn task_filter(q: &TaskQuery<'_>) -> Result<TaskFilter, CoreError> {
    let invalid = |field: Field, rejected: &str, message: String| CoreError::InvalidArgument {
        field,
        rejected: rejected.to_string(),
        message,
    };
    let status = match q.status.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<TaskStatus>().map_err(|_| {
            invalid(
                Field::TaskStatus,
                s,
                "must be one of RUNNING, FAILED, SUCCESSFUL".to_string(),
            )
        })?),
    };
    let time = |field: Field, value: Option<&str>| -> Result<Option<i64>, CoreError> {
        match value.filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|e| {
                    invalid(
                        field,
                        v,
                        format!("must be an RFC 3339 time like 2021-09-03T14:20:26.243+08:00: {e}"),
                    )
                }),
        }
    };
    let sort = match q.sort.filter(|s| !s.is_empty()) {
        None => TaskSort::default(),
        Some(s) => s.parse().map_err(|e| {
            invalid(
                Field::Sort,
                s,
                format!("{e}: use id, startTime, finishTime, name or status, optionally with ,asc or ,desc"),
            )
        })?,
    };
    if let Some(id) = q.host_id {
        check_id(Field::HostId, id)?;
    }
    Ok(TaskFilter {
        status,
        name: q.name.filter(|n| !n.is_empty()).map(str::to_string),
        host_id: q.host_id,
        created_from: time(Field::CreatedAfter, q.created_after)?,
        created_to: time(Field::CreatedBefore, q.created_before)?,
        sort,
    })
}

/// The operations `task` admits now, by name (RETRY, ROLLBACK, PAUSE, RESUME): the
/// store's own rule, which it checks again when one is asked for.
pub fn allowed_task_operations(task: &Task) -> Vec<&'static str> {
    rules::task_operations(&task.into())
        .into_iter()
        .map(TaskOperation::as_str)
        .collect()
}

/// The operations `subtask` of `task` admits now, by name (RETRY, SKIP, CANCEL).
pub fn allowed_subtask_operations(task: &Task, subtask: &Subtask) -> Vec<&'static str> {
    rules::subtask_operations(&task.into(), subtask.status)
        .into_iter()
        .map(SubtaskOperation::as_str)
        .collect()
}

/// A subtask's log as one text, a line per entry: time, trace id, what happened.
pub fn log_text(lines: &[SubtaskLogLine]) -> String {
    lines
        .iter()
        .map(|l| {
            format!(
                "{} [{}] {}\n",
                crate::time::format_millis(l.at),
                l.trace_id,
                l.line
            )
        })
        .collect()
}
