use proto::ocp::v1 as pb;
use proto::ocp::v1::host_agent_service_server::HostAgentService;
use tonic::{Request, Response, Status};

use super::{authorize, convert, page_request};
use crate::auth::{Permission, Users};
use crate::service::{Core, ProcessOp};
use crate::templates::AgentOperation;

pub struct HostAgentGrpc {
    core: Core,
    users: Users,
}

impl HostAgentGrpc {
    pub fn new(core: Core, users: Users) -> HostAgentGrpc {
        HostAgentGrpc { core, users }
    }

    async fn batch<T>(
        &self,
        op: AgentOperation,
        request: &Request<T>,
        host_ids: &[i64],
    ) -> Result<Response<pb::Task>, Status> {
        let (_, caller) = authorize(&self.users, request, Some(Permission::HostManager)).await?;
        let task = self.core.submit_batch(op, host_ids, &caller).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn single<T>(
        &self,
        op: AgentOperation,
        request: &Request<T>,
        host_id: i64,
    ) -> Result<Response<pb::Task>, Status> {
        let (_, caller) = authorize(&self.users, request, Some(Permission::HostManager)).await?;
        let task = self.core.submit_single(op, host_id, &caller).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn process<T>(
        &self,
        op: ProcessOp,
        request: &Request<T>,
        host_id: i64,
        agent_process_id: i64,
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        let (_, caller) = authorize(&self.users, request, Some(Permission::HostManager)).await?;
        let process = self
            .core
            .process_op(host_id, agent_process_id, op, &caller)
            .await?;
        Ok(Response::new(convert::process(&process)))
    }
}

#[tonic::async_trait]
impl HostAgentService for HostAgentGrpc {
    async fn batch_restart_agents(
        &self,
        r: Request<pb::BatchRestartAgentsRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.batch(AgentOperation::Restart, &r, &r.get_ref().host_ids)
            .await
    }

    async fn batch_stop_agents(
        &self,
        r: Request<pb::BatchStopAgentsRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.batch(AgentOperation::Stop, &r, &r.get_ref().host_ids)
            .await
    }

    async fn batch_start_agents(
        &self,
        r: Request<pb::BatchStartAgentsRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.batch(AgentOperation::Start, &r, &r.get_ref().host_ids)
            .await
    }

    async fn restart_agent(
        &self,
        r: Request<pb::RestartAgentRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.single(AgentOperation::Restart, &r, r.get_ref().host_id)
            .await
    }

    async fn stop_agent(
        &self,
        r: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.single(AgentOperation::Stop, &r, r.get_ref().host_id)
            .await
    }

    async fn start_agent(
        &self,
        r: Request<pb::StartAgentRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.single(AgentOperation::Start, &r, r.get_ref().host_id)
            .await
    }

    async fn restart_agent_process(
        &self,
        r: Request<pb::RestartAgentProcessRequest>,
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        let m = r.get_ref();
        self.process(ProcessOp::Restart, &r, m.host_id, m.agent_process_id)
            .await
    }

    async fn stop_agent_process(
        &self,
        r: Request<pb::StopAgentProcessRequest>,
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        let m = r.get_ref();
        self.process(ProcessOp::Stop, &r, m.host_id, m.agent_process_id)
            .await
    }

    async fn start_agent_process(
        &self,
        r: Request<pb::StartAgentProcessRequest>,
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        let m = r.get_ref();
        self.process(ProcessOp::Start, &r, m.host_id, m.agent_process_id)
            .await
    }

    async fn get_host_agent(
        &self,
        r: Request<pb::GetHostAgentRequest>,
    ) -> Result<Response<pb::HostAgent>, Status> {
        let (_, caller) = authorize(&self.users, &r, Some(Permission::HostViewer)).await?;
        let view = self
            .core
            .host_agent(r.into_inner().host_id, &caller)
            .await?;
        Ok(Response::new(convert::host_agent(&view)))
    }

    async fn list_host_agent_processes(
        &self,
        r: Request<pb::ListHostAgentProcessesRequest>,
    ) -> Result<Response<pb::HostAgentProcessPage>, Status> {
        let (_, caller) = authorize(&self.users, &r, Some(Permission::HostViewer)).await?;
        let r = r.into_inner();
        let page = self
            .core
            .host_processes(r.host_id, page_request(r.page, r.size)?, &caller)
            .await?;
        Ok(Response::new(pb::HostAgentProcessPage {
            contents: page.contents.iter().map(convert::process).collect(),
            page: Some(convert::page(&page)),
        }))
    }

    async fn add_host(&self, r: Request<pb::AddHostRequest>) -> Result<Response<pb::Host>, Status> {
        authorize(&self.users, &r, Some(Permission::HostManager)).await?;
        let r = r.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let host = self
            .core
            .add_host(&r.inner_ip_address, r.agent_port, name)
            .await?;
        Ok(Response::new(convert::host(&host)))
    }

    async fn list_hosts(
        &self,
        r: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::HostPage>, Status> {
        authorize(&self.users, &r, Some(Permission::HostViewer)).await?;
        let r = r.into_inner();
        let hosts = self.core.list_hosts(page_request(r.page, r.size)?).await?;
        Ok(Response::new(pb::HostPage {
            contents: hosts.contents.iter().map(convert::host).collect(),
            page: Some(convert::page(&hosts)),
        }))
    }

    async fn get_host(&self, r: Request<pb::GetHostRequest>) -> Result<Response<pb::Host>, Status> {
        authorize(&self.users, &r, Some(Permission::HostViewer)).await?;
        let host = self.core.get_host(r.into_inner().host_id).await?;
        Ok(Response::new(convert::host(&host)))
    }

    async fn delete_host(
        &self,
        r: Request<pb::DeleteHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        authorize(&self.users, &r, Some(Permission::HostManager)).await?;
        let host = self.core.delete_host(r.into_inner().host_id).await?;
        Ok(Response::new(convert::host(&host)))
    }
}
