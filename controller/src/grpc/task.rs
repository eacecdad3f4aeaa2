use std::pin::Pin;

use futures::{Stream, StreamExt};
use proto::ocp::v1 as pb;
use proto::ocp::v1::task_service_server::TaskService;
use tonic::{Request, Response, Status};

use super::{authorize, convert, page_request};
use crate::auth::{Permission, Users};
use crate::service::{Core, SubtaskOp, TaskOp, TaskQuery, log_text, task_filter};

pub struct TaskGrpc {
    core: Core,
    users: Users,
}

impl TaskGrpc {
    pub fn new(core: Core, users: Users) -> TaskGrpc {
        TaskGrpc { core, users }
    }

    /// TASK_VIEWER reads any task; its creator may always read it.
    async fn readable<T>(
        &self,
        request: &Request<T>,
        task_id: i64,
    ) -> Result<crate::model::Task, Status> {
        let (principal, _) = authorize(&self.users, request, None).await?;
        Ok(principal.visible(self.core.get_task(task_id).await)??)
    }

    async fn task_op<T>(
        &self,
        op: TaskOp,
        request: &Request<T>,
        task_id: i64,
    ) -> Result<Response<pb::Task>, Status> {
        let (_, caller) = authorize(&self.users, request, Some(Permission::TaskManager)).await?;
        let task = self.core.task_op(op, task_id, &caller).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn subtask_op<T>(
        &self,
        op: SubtaskOp,
        request: &Request<T>,
        task_id: i64,
        subtask_id: i64,
    ) -> Result<Response<pb::Task>, Status> {
        let (_, caller) = authorize(&self.users, request, Some(Permission::TaskManager)).await?;
        let task = self
            .core
            .subtask_op(op, task_id, subtask_id, &caller)
            .await?;
        Ok(Response::new(convert::task(&task)))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskGrpc {
    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let task = self.readable(&request, request.get_ref().id).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::TaskPage>, Status> {
        authorize(&self.users, &request, Some(Permission::TaskViewer)).await?;
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
        let tasks = self.core.list_tasks(&filter, page).await?;
        Ok(Response::new(pb::TaskPage {
            contents: tasks.contents.iter().map(convert::task).collect(),
            page: Some(convert::page(&tasks)),
        }))
    }

    async fn retry_task(
        &self,
        request: Request<pb::RetryTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.task_op(TaskOp::Retry, &request, request.get_ref().id)
            .await
    }

    async fn rollback_task(
        &self,
        request: Request<pb::RollbackTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.task_op(TaskOp::Rollback, &request, request.get_ref().id)
            .await
    }

    async fn retry_subtask(
        &self,
        request: Request<pb::RetrySubtaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let r = request.get_ref();
        self.subtask_op(SubtaskOp::Retry, &request, r.task_id, r.subtask_id)
            .await
    }

    async fn skip_subtask(
        &self,
        request: Request<pb::SkipSubtaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let r = request.get_ref();
        self.subtask_op(SubtaskOp::Skip, &request, r.task_id, r.subtask_id)
            .await
    }

    async fn cancel_subtask(
        &self,
        request: Request<pb::CancelSubtaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let r = request.get_ref();
        self.subtask_op(SubtaskOp::Cancel, &request, r.task_id, r.subtask_id)
            .await
    }

    async fn get_subtask_log(
        &self,
        request: Request<pb::GetSubtaskLogRequest>,
    ) -> Result<Response<pb::SubtaskLog>, Status> {
        let r = request.get_ref();
        self.readable(&request, r.task_id).await?;
        let lines = self.core.subtask_log(r.task_id, r.subtask_id).await?;
        Ok(Response::new(pb::SubtaskLog {
            log: log_text(&lines),
        }))
    }

    type WatchTaskStream = EventStream;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.get_ref();
        self.readable(&request, r.id).await?;
        let events = self.core.watch(r.id, r.after_seq).await?;
        let stream = events.map(|item| item.map(|e| convert::event(&e)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
