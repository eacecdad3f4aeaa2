//! `ocp.v1.HostAgentService`: hosts and OCP's host-agent operations, each method
//! admitted by its row of the core's operation table, then translated onto the core.

use proto::ocp::v1 as pb;
use proto::ocp::v1::host_agent_service_server::HostAgentService;
use tonic::{Request, Response, Status};

use super::{admit, convert, page_request};
use crate::model::AgentAction;
use crate::service::{ApiOperation, Core, HostQuery, ProcessAction, host_filter};

pub struct HostAgentGrpc {
    core: Core,
}

impl HostAgentGrpc {
    pub fn new(core: Core) -> HostAgentGrpc {
        HostAgentGrpc { core }
    }

    async fn batch<M>(
        &self,
        action: AgentAction,
        request: Request<M>,
        host_ids: impl FnOnce(M) -> (Vec<i64>, Option<pb::Rollout>),
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::batch(action), &request).await?;
        let (host_ids, rollout) = host_ids(request.into_inner());
        let rollout = rollout.as_ref().map(convert::rollout_input);
        let task = self
            .core
            .operate_agents(&caller, action, &host_ids, rollout.as_ref())
            .await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn single<M>(
        &self,
        action: AgentAction,
        request: Request<M>,
        host_id: impl FnOnce(&M) -> i64,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::single(action), &request).await?;
        let host_id = host_id(request.get_ref());
        let task = self.core.operate_agent(&caller, action, host_id).await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn process<M>(
        &self,
        action: ProcessAction,
        request: Request<M>,
        ids: impl FnOnce(&M) -> (i64, i64),
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        let caller = admit(ApiOperation::process(action), &request).await?;
        let (host_id, process_id) = ids(request.get_ref());
        let process = self
            .core
            .operate_process(&caller, action, host_id, process_id)
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
        self.batch(AgentAction::Restart, r, |m| (m.host_ids, m.rollout))
            .await
    }

    async fn batch_stop_agents(
        &self,
        r: Request<pb::BatchStopAgentsRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.batch(AgentAction::Stop, r, |m| (m.host_ids, m.rollout))
            .await
    }

    async fn batch_start_agents(
        &self,
        r: Request<pb::BatchStartAgentsRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.batch(AgentAction::Start, r, |m| (m.host_ids, m.rollout))
            .await
    }

    async fn restart_agent(
        &self,
        r: Request<pb::RestartAgentRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.single(AgentAction::Restart, r, |m| m.host_id).await
    }

    async fn stop_agent(
        &self,
        r: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.single(AgentAction::Stop, r, |m| m.host_id).await
    }

    async fn start_agent(
        &self,
        r: Request<pb::StartAgentRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.single(AgentAction::Start, r, |m| m.host_id).await
    }

    async fn batch_upgrade_agents(
        &self,
        r: Request<pb::BatchUpgradeAgentsRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::BatchUpgradeAgents, &r).await?;
        let m = r.into_inner();
        let rollout = m.rollout.as_ref().map(convert::rollout_input);
        let task = self
            .core
            .upgrade_agents(&caller, &m.host_ids, &m.version, rollout.as_ref())
            .await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn upgrade_agent(
        &self,
        r: Request<pb::UpgradeAgentRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let caller = admit(ApiOperation::UpgradeAgent, &r).await?;
        let m = r.into_inner();
        let task = self
            .core
            .upgrade_agent(&caller, m.host_id, &m.version)
            .await?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn restart_agent_process(
        &self,
        r: Request<pb::RestartAgentProcessRequest>,
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        self.process(ProcessAction::Restart, r, |m| {
            (m.host_id, m.agent_process_id)
        })
        .await
    }

    async fn stop_agent_process(
        &self,
        r: Request<pb::StopAgentProcessRequest>,
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        self.process(ProcessAction::Stop, r, |m| (m.host_id, m.agent_process_id))
            .await
    }

    async fn start_agent_process(
        &self,
        r: Request<pb::StartAgentProcessRequest>,
    ) -> Result<Response<pb::HostAgentProcess>, Status> {
        self.process(ProcessAction::Start, r, |m| (m.host_id, m.agent_process_id))
            .await
    }

    async fn get_host_agent(
        &self,
        r: Request<pb::GetHostAgentRequest>,
    ) -> Result<Response<pb::HostAgent>, Status> {
        let caller = admit(ApiOperation::GetHostAgent, &r).await?;
        let view = self.core.host_agent(&caller, r.get_ref().host_id).await?;
        Ok(Response::new(convert::host_agent(&view)))
    }

    async fn list_host_agent_processes(
        &self,
        r: Request<pb::ListHostAgentProcessesRequest>,
    ) -> Result<Response<pb::HostAgentProcessPage>, Status> {
        let caller = admit(ApiOperation::ListHostAgentProcesses, &r).await?;
        let r = r.into_inner();
        let page = self
            .core
            .host_processes(&caller, r.host_id, page_request(r.page, r.size)?)
            .await?;
        Ok(Response::new(pb::HostAgentProcessPage {
            contents: page.contents.iter().map(convert::process).collect(),
            page: Some(convert::page(&page)),
        }))
    }

    async fn tail_process_log(
        &self,
        r: Request<pb::TailProcessLogRequest>,
    ) -> Result<Response<pb::ProcessLog>, Status> {
        let caller = admit(ApiOperation::TailProcessLog, &r).await?;
        let r = r.into_inner();
        let log = self
            .core
            .process_log(
                &caller,
                r.host_id,
                r.agent_process_id,
                r.lines.map(i64::from),
            )
            .await?;
        Ok(Response::new(pb::ProcessLog { log }))
    }

    async fn add_host(&self, r: Request<pb::AddHostRequest>) -> Result<Response<pb::Host>, Status> {
        let caller = admit(ApiOperation::AddHost, &r).await?;
        let r = r.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let host = self
            .core
            .add_host(&caller, &r.inner_ip_address, r.agent_port, name)
            .await?;
        Ok(Response::new(convert::host(&host)))
    }

    async fn list_hosts(
        &self,
        r: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::HostPage>, Status> {
        let caller = admit(ApiOperation::ListHosts, &r).await?;
        let r = r.into_inner();
        let page = page_request(r.page, r.size)?;
        let filter = host_filter(&HostQuery {
            statuses: r.status.iter().map(String::as_str).collect(),
            keyword: Some(&r.keyword),
            agent_version: Some(&r.agent_version),
            sort: Some(&r.sort),
        })?;
        let hosts = self.core.list_hosts(&caller, &filter, page).await?;
        Ok(Response::new(pb::HostPage {
            contents: hosts.contents.iter().map(convert::host).collect(),
            page: Some(convert::page(&hosts)),
        }))
    }

    async fn get_host(&self, r: Request<pb::GetHostRequest>) -> Result<Response<pb::Host>, Status> {
        let caller = admit(ApiOperation::GetHost, &r).await?;
        let host = self.core.get_host(&caller, r.get_ref().host_id).await?;
        Ok(Response::new(convert::host(&host)))
    }

    async fn delete_host(
        &self,
        r: Request<pb::DeleteHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        let caller = admit(ApiOperation::DeleteHost, &r).await?;
        let host = self.core.delete_host(&caller, r.get_ref().host_id).await?;
        Ok(Response::new(convert::host(&host)))
    }
}
