//! `/compute/hosts/...`: the host inventory and OCP's host-agent operations.

use axum::extract::State;

use super::extract::{JsonBody, PathIds, QueryParams};
use super::json::{
    AddHostRequest, BatchHostsRequest, BatchUpgradeRequest, Envelope, HostAgentJson,
    HostAgentProcessJson, HostJson, PageOf, ProcessLogJson, TaskJson, UpgradeRequest,
};
use super::{ApiResult, Data, Failures, GatewayState};
use crate::model::AgentAction;
use crate::rollout::RolloutInput;
use crate::service::{ApiOperation, Caller, HostQuery, ProcessAction, host_filter};

async fn batch(
    state: &GatewayState,
    caller: &Caller,
    body: BatchHostsRequest,
    action: AgentAction,
) -> ApiResult<TaskJson> {
    let rollout = body.rollout.as_ref().map(RolloutInput::from);
    let task = state
        .core
        .operate_agents(caller, action, &body.host_ids, rollout.as_ref())
        .await?;
    Ok(Data((&task).into()))
}

/// Batch restart the OCP agent's basic processes on hosts: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::BatchRestartAgents.name(),
    post, path = "/compute/hosts/batchRestartAgents", tag = "hosts",
    request_body = BatchHostsRequest,
    responses((status = 200, description = "task \"Batch restart OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn batch_restart_agents(
    State(state): State<GatewayState>,
    caller: Caller,
    JsonBody(body): JsonBody<BatchHostsRequest>,
) -> ApiResult<TaskJson> {
    batch(&state, &caller, body, AgentAction::Restart).await
}

/// Batch stop the OCP agent's basic processes on hosts: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::BatchStopAgents.name(),
    post, path = "/compute/hosts/batchStopAgents", tag = "hosts",
    request_body = BatchHostsRequest,
    responses((status = 200, description = "task \"Batch stop OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn batch_stop_agents(
    State(state): State<GatewayState>,
    caller: Caller,
    JsonBody(body): JsonBody<BatchHostsRequest>,
) -> ApiResult<TaskJson> {
    batch(&state, &caller, body, AgentAction::Stop).await
}

/// Batch start the OCP agent's basic processes on hosts: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::BatchStartAgents.name(),
    post, path = "/compute/hosts/batchStartAgents", tag = "hosts",
    request_body = BatchHostsRequest,
    responses((status = 200, description = "task \"Batch start OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn batch_start_agents(
    State(state): State<GatewayState>,
    caller: Caller,
    JsonBody(body): JsonBody<BatchHostsRequest>,
) -> ApiResult<TaskJson> {
    batch(&state, &caller, body, AgentAction::Start).await
}

/// Upgrade the OCP agent of hosts in place to an uploaded version, its processes kept
/// running: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::BatchUpgradeAgents.name(),
    post, path = "/compute/hosts/batchUpgradeAgents", tag = "hosts",
    request_body = BatchUpgradeRequest,
    responses((status = 200, description = "task \"Batch upgrade OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn batch_upgrade_agents(
    State(state): State<GatewayState>,
    caller: Caller,
    JsonBody(body): JsonBody<BatchUpgradeRequest>,
) -> ApiResult<TaskJson> {
    let rollout = body.rollout.as_ref().map(RolloutInput::from);
    let task = state
        .core
        .upgrade_agents(&caller, &body.host_ids, &body.version, rollout.as_ref())
        .await?;
    Ok(Data((&task).into()))
}

/// Upgrade one host's OCP agent in place to an uploaded version, its processes kept
/// running: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::UpgradeAgent.name(),
    post, path = "/compute/hosts/{hostId}/agent/upgrade", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id")),
    request_body = UpgradeRequest,
    responses((status = 200, description = "task \"Upgrade OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn upgrade_agent(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
    JsonBody(body): JsonBody<UpgradeRequest>,
) -> ApiResult<TaskJson> {
    let host_id = ids.id("hostId")?;
    let task = state
        .core
        .upgrade_agent(&caller, host_id, &body.version)
        .await?;
    Ok(Data((&task).into()))
}

async fn single(
    state: &GatewayState,
    caller: &Caller,
    ids: &PathIds,
    action: AgentAction,
) -> ApiResult<TaskJson> {
    let host_id = ids.id("hostId")?;
    let task = state.core.operate_agent(caller, action, host_id).await?;
    Ok(Data((&task).into()))
}

/// Restart the OCP agent's basic processes on one host: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::RestartAgent.name(),
    post, path = "/compute/hosts/{hostId}/agent/restart", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id")),
    responses((status = 200, description = "task \"Restart OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn restart_agent(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    single(&state, &caller, &ids, AgentAction::Restart).await
}

/// Stop the OCP agent's basic processes on one host: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::StopAgent.name(),
    post, path = "/compute/hosts/{hostId}/agent/stop", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id")),
    responses((status = 200, description = "task \"Stop OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn stop_agent(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    single(&state, &caller, &ids, AgentAction::Stop).await
}

/// Start the OCP agent's basic processes on one host: returns the DAG task at once.
#[utoipa::path(operation_id = ApiOperation::StartAgent.name(),
    post, path = "/compute/hosts/{hostId}/agent/start", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id")),
    responses((status = 200, description = "task \"Start OCP agent\", RUNNING", body = Envelope<TaskJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn start_agent(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<TaskJson> {
    single(&state, &caller, &ids, AgentAction::Start).await
}

async fn process(
    state: &GatewayState,
    caller: &Caller,
    ids: &PathIds,
    action: ProcessAction,
) -> ApiResult<HostAgentProcessJson> {
    let host_id = ids.id("hostId")?;
    let process_id = ids.id("agentProcessId")?;
    let process = state
        .core
        .operate_process(caller, action, host_id, process_id)
        .await?;
    Ok(Data((&process).into()))
}

/// Restart one agent process; answers once the agent has finished, with the process then.
#[utoipa::path(operation_id = ApiOperation::RestartAgentProcess.name(),
    post, path = "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/restart", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id"), ("agentProcessId" = i64, Path, description = "agent process id")),
    responses((status = 200, description = "the process after the restart", body = Envelope<HostAgentProcessJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn restart_agent_process(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<HostAgentProcessJson> {
    process(&state, &caller, &ids, ProcessAction::Restart).await
}

/// Stop one agent process; answers once the agent has finished, with the process then.
#[utoipa::path(operation_id = ApiOperation::StopAgentProcess.name(),
    post, path = "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/stop", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id"), ("agentProcessId" = i64, Path, description = "agent process id")),
    responses((status = 200, description = "the process after the stop", body = Envelope<HostAgentProcessJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn stop_agent_process(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<HostAgentProcessJson> {
    process(&state, &caller, &ids, ProcessAction::Stop).await
}

/// Start one agent process; answers once the agent has finished, with the process then.
#[utoipa::path(operation_id = ApiOperation::StartAgentProcess.name(),
    post, path = "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/start", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id"), ("agentProcessId" = i64, Path, description = "agent process id")),
    responses((status = 200, description = "the process after the start", body = Envelope<HostAgentProcessJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn start_agent_process(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<HostAgentProcessJson> {
    process(&state, &caller, &ids, ProcessAction::Start).await
}

/// The host's agent and its processes, fresh from the agent when it answers in time.
#[utoipa::path(operation_id = ApiOperation::GetHostAgent.name(),
    get, path = "/compute/hosts/{hostId}/agent", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id")),
    responses((status = 200, description = "the host's agent", body = Envelope<HostAgentJson>), Failures),
    security(("basic" = ["HOST_VIEWER"])))]
pub async fn get_host_agent(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<HostAgentJson> {
    let host_id = ids.id("hostId")?;
    let view = state.core.host_agent(&caller, host_id).await?;
    Ok(Data((&view).into()))
}

/// A page of the host's agent processes.
#[utoipa::path(operation_id = ApiOperation::ListHostAgentProcesses.name(),
    get, path = "/compute/hosts/{hostId}/agent/processes", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id"),
        ("page" = Option<u32>, Query, description = "page number, from 1"),
        ("size" = Option<u32>, Query, description = "page size, 10 by default, at most 2000")),
    responses((status = 200, description = "the processes", body = Envelope<PageOf<HostAgentProcessJson>>), Failures),
    security(("basic" = ["HOST_VIEWER"])))]
pub async fn list_host_agent_processes(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
    query: QueryParams,
) -> ApiResult<PageOf<HostAgentProcessJson>> {
    let host_id = ids.id("hostId")?;
    let page = query.only(&["page", "size"])?.page()?;
    let processes = state.core.host_processes(&caller, host_id, page).await?;
    Ok(Data(PageOf::from_page(&processes, |p| p.into())))
}

/// The last lines of one agent process's log file, read from its agent now.
#[utoipa::path(operation_id = ApiOperation::TailProcessLog.name(),
    get, path = "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/log", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id"), ("agentProcessId" = i64, Path, description = "agent process id"),
        ("lines" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "how many of the log's last lines, 1 to 10,000; 200 by default")),
    responses((status = 200, description = "the log's last lines (404, code 10002, when the process has no log file)", body = Envelope<ProcessLogJson>), Failures),
    security(("basic" = ["HOST_VIEWER"])))]
pub async fn tail_process_log(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
    query: QueryParams,
) -> ApiResult<ProcessLogJson> {
    let host_id = ids.id("hostId")?;
    let process_id = ids.id("agentProcessId")?;
    let lines = query.only(&["lines"])?.whole("lines")?;
    let log = state
        .core
        .process_log(&caller, host_id, process_id, lines)
        .await?;
    Ok(Data(ProcessLogJson { log }))
}

/// Register a host by the address and port of its agent.
#[utoipa::path(operation_id = ApiOperation::AddHost.name(),
    post, path = "/compute/hosts", tag = "hosts",
    request_body = AddHostRequest,
    responses((status = 200, description = "the new host, status NEW", body = Envelope<HostJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn add_host(
    State(state): State<GatewayState>,
    caller: Caller,
    JsonBody(body): JsonBody<AddHostRequest>,
) -> ApiResult<HostJson> {
    let host = state
        .core
        .add_host(
            &caller,
            &body.inner_ip_address,
            body.agent_port,
            body.name.as_deref(),
        )
        .await?;
    Ok(Data((&host).into()))
}

/// A page of the hosts, filtered and sorted as asked.
#[utoipa::path(operation_id = ApiOperation::ListHosts.name(),
    get, path = "/compute/hosts", tag = "hosts",
    params(("page" = Option<u32>, Query, description = "page number, from 1"),
        ("size" = Option<u32>, Query, description = "page size, 10 by default, at most 2000"),
        ("status" = Option<Vec<String>>, Query, style = Form, explode,
            description = "NEW, ONLINE or OFFLINE; hosts in any of those given, repeated (status=NEW&status=ONLINE) or separated by commas (status=NEW,ONLINE)"),
        ("keyword" = Option<String>, Query, max_length = 256,
            description = "hosts whose name or inner IP address contains it, ASCII letters in either case; % and _ match themselves"),
        ("agentVersion" = Option<String>, Query, max_length = 64,
            description = "hosts whose agent runs exactly this version, as its last heartbeat said"),
        ("sort" = Option<String>, Query,
            description = "id, name, innerIpAddress, status, createTime or updateTime, with ,asc or ,desc (default id,asc)")),
    responses((status = 200, description = "the hosts", body = Envelope<PageOf<HostJson>>), Failures),
    security(("basic" = ["HOST_VIEWER"])))]
pub async fn list_hosts(
    State(state): State<GatewayState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<PageOf<HostJson>> {
    let query = query.only(&["page", "size", "status", "keyword", "agentVersion", "sort"])?;
    let page = query.page()?;
    let filter = host_filter(&HostQuery {
        statuses: query.all("status"),
        keyword: query.get("keyword"),
        agent_version: query.get("agentVersion"),
        sort: query.get("sort"),
    })?;
    let hosts = state.core.list_hosts(&caller, &filter, page).await?;
    Ok(Data(PageOf::from_page(&hosts, |h| h.into())))
}

/// One host.
#[utoipa::path(operation_id = ApiOperation::GetHost.name(),
    get, path = "/compute/hosts/{hostId}", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id")),
    responses((status = 200, description = "the host", body = Envelope<HostJson>), Failures),
    security(("basic" = ["HOST_VIEWER"])))]
pub async fn get_host(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<HostJson> {
    let host = state.core.get_host(&caller, ids.id("hostId")?).await?;
    Ok(Data((&host).into()))
}

/// Remove a host that no unfinished task holds.
#[utoipa::path(operation_id = ApiOperation::DeleteHost.name(),
    delete, path = "/compute/hosts/{hostId}", tag = "hosts",
    params(("hostId" = i64, Path, description = "host id")),
    responses((status = 200, description = "the removed host", body = Envelope<HostJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn delete_host(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<HostJson> {
    let host = state.core.delete_host(&caller, ids.id("hostId")?).await?;
    Ok(Data((&host).into()))
}
