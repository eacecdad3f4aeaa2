//! `ocp.v1.TaskService`: the DAG tasks and the operator's operations on them, each
//! method admitted by its row of the core's operation table, then translated onto the
//! core.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use proto::ocp::v1 as pb;
use proto::ocp::v1::task_service_server::TaskService;
use tonic::{Request, Response, Status};

use super::{admit, convert, page_request};
use crate::service::{ApiOperation, Core, TaskQuery, log_text, task_filter};

pub struct TaskGrpc {
    core: Core,
}

impl TaskGrpc {
    pub fn new(core: Core) -> TaskGrpc {
        TaskGrpc { core }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskGrpc {
    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::GetTask, &request).await?;
        let task = self.core.get_task(&caller, request.get_ref().id).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::TaskPage>, Status> {
        let caller = admit(ApiOperation::ListTasks, &request).await?;
        let r = request.into_inner();
        let page = page_request(r.page, r.size)?;
        let filter = task_filter(&TaskQuery {
            status: Some(&r.status),
            name: Some(&r.name),
            host_id: (r.host_id != 0).then_some(r.host_id),
            created_after: Some(&r.created_after),
            created_before: Some(&r.created_before),
            sort: Some(&r.sort),
        })?;
        let tasks = self.core.list_tasks(&caller, &filter, page).await?;
        Ok(Response::new(pb::TaskPage {
            contents: tasks.contents.iter().map(convert::task).collect(),
            page: Some(convert::page(&tasks)),
        }))
    }

    async fn retry_task(
        &self,
        request: Request<pb::RetryTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::RetryTask, &request).await?;
        let r = request.get_ref();
        let task = self.core.retry_task(&caller, r.id).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn rollback_task(
        &self,
        request: Request<pb::RollbackTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::RollbackTask, &request).await?;
        let r = request.get_ref();
        let task = self.core.rollback_task(&caller, r.id).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn pause_task(
        &self,
        request: Request<pb::PauseTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::PauseTask, &request).await?;
        let r = request.get_ref();
        let task = self.core.pause_task(&caller, r.id).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn resume_task(
        &self,
        request: Request<pb::ResumeTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::ResumeTask, &request).await?;
        let r = request.get_ref();
        let task = self.core.resume_task(&caller, r.id).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn retry_subtask(
        &self,
        request: Request<pb::RetrySubtaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::RetrySubtask, &request).await?;
        let r = request.get_ref();
        let task = self
            .core
            .retry_subtask(&caller, r.task_id, r.subtask_id)
            .await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn skip_subtask(
        &self,
        request: Request<pb::SkipSubtaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::SkipSubtask, &request).await?;
        let r = request.get_ref();
        let task = self
            .core
            .skip_subtask(&caller, r.task_id, r.subtask_id)
            .await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn cancel_subtask(
        &self,
        request: Request<pb::CancelSubtaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::CancelSubtask, &request).await?;
        let r = request.get_ref();
        let task = self
            .core
            .cancel_subtask(&caller, r.task_id, r.subtask_id)
            .await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn get_subtask_log(
        &self,
        request: Request<pb::GetSubtaskLogRequest>,
    ) -> Result<Response<pb::SubtaskLog>, Status> {
        let caller = admit(ApiOperation::GetSubtaskLog, &request).await?;
        let r = request.get_ref();
        let lines = self
            .core
            .subtask_log(&caller, r.task_id, r.subtask_id)
            .await?;
        Ok(Response::new(pb::SubtaskLog {
            log: log_text(&lines),
        }))
    }

    type WatchTaskStream = EventStream;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = admit(ApiOperation::WatchTask, &request).await?;
        let r = request.get_ref();
        let events = self.core.watch(&caller, r.id, r.after_seq).await?;
        let stream = events.map(|item| item.map(|e| convert::event(&e)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
