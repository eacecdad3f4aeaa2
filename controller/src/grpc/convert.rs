//! Model to wire: the controller's types as `ocp.v1` messages.

use proto::ocp::v1 as pb;

use crate::model::{AgentProcess, Host, Page, Subtask, Task, TaskContext, TaskEvent, ocp};
use crate::rollout::RolloutInput;
use crate::service::HostAgentView;
use crate::time::{format_millis, format_optional};

pub fn page<T>(page: &Page<T>) -> pb::Page {
    pb::Page {
        total_elements: page.total_elements,
        total_pages: page.total_pages(),
        number: i64::from(page.number),
        size: i64::from(page.size),
    }
}

pub fn host(h: &Host) -> pb::Host {
    pb::Host {
        id: h.id,
        name: h.name.clone(),
        inner_ip_address: h.inner_ip_address.clone(),
        agent_port: u32::from(h.agent_port),
        status: h.status.to_string(),
        create_time: format_millis(h.create_time),
        update_time: format_millis(h.update_time),
        status_reason: h.status_reason.clone().unwrap_or_default(),
        agent_version: h.agent.version.clone(),
    }
}

pub fn process(p: &AgentProcess) -> pb::HostAgentProcess {
    let s = &p.snapshot;
    pb::HostAgentProcess {
        id: p.id,
        host_id: p.host_id,
        alias: s.alias.clone(),
        pid: s.wire_pid(),
        user: s.user.clone(),
        start_command: s.start_command.clone(),
        ports: s.ports.clone(),
        elapsed_time: s.elapsed_time,
        last_active_time: format_optional(s.last_active_time),
        status: s.status.clone(),
        operable: s.operable,
        log_file_pattern: s.log_file_pattern.clone(),
        create_time: format_millis(p.create_time),
        update_time: format_millis(p.update_time),
    }
}

pub fn host_agent(view: &HostAgentView) -> pb::HostAgent {
    let h = &view.host;
    pb::HostAgent {
        // One agent per host: the agent is known by its host's id.
        id: h.id,
        host_id: h.id,
        host_inner_ip_address: h.inner_ip_address.clone(),
        version: h.agent.version.clone(),
        install_home: h.agent.install_home.clone(),
        log_home: h.agent.log_home.clone(),
        status: h.agent.status.clone(),
        last_available_time: format_optional(h.last_available_time),
        processes: view.processes.iter().map(process).collect(),
        create_time: format_millis(h.create_time),
        update_time: format_millis(h.update_time),
    }
}

pub fn task(t: &Task) -> pb::Task {
    pb::Task {
        id: t.id,
        name: t.name.clone(),
        creator: t.creator.clone(),
        executor: t.executor.clone(),
        host_id: t.host_id,
        operation: t.operation.to_string(),
        status: t.status.to_string(),
        r#type: ocp::TASK_TYPE.to_string(),
        task_definition_id: ocp::NO_TASK_DEFINITION,
        start_time: format_millis(t.start_time),
        finish_time: format_optional(t.finish_time),
        prohibit_rollback: t.prohibit_rollback,
        context: Some(context(&t.ocp_context())),
        subtasks: t.subtasks.iter().map(subtask).collect(),
        rollout: t.rollout.map(|r| pb::Rollout {
            batch_size: r.batch_size.to_string(),
            max_failed_hosts: i64::from(r.max_failed_hosts),
            pause_seconds: i64::from(r.pause_seconds),
            min_healthy_seconds: i64::from(r.min_healthy_seconds),
            pause_after_first_batch: r.pause_after_first_batch,
            hosts_per_batch: u32::try_from(r.hosts_per_batch(t.host_count())).unwrap_or(u32::MAX),
        }),
        paused: t.paused,
    }
}

/// proto3 cannot tell an absent number from 0, which is each number's default anyway;
/// an empty batch size is absent.
pub fn rollout_input(r: &pb::Rollout) -> RolloutInput {
    RolloutInput {
        batch_size: (!r.batch_size.is_empty()).then(|| r.batch_size.clone()),
        max_failed_hosts: Some(r.max_failed_hosts),
        pause_seconds: Some(r.pause_seconds),
        min_healthy_seconds: Some(r.min_healthy_seconds),
        pause_after_first_batch: Some(r.pause_after_first_batch),
        unreadable: Vec::new(),
    }
}

fn context(c: &TaskContext) -> pb::TaskContext {
    pb::TaskContext {
        list_map: c
            .list_map
            .iter()
            .map(|(k, v)| (k.clone(), pb::StringList { values: v.clone() }))
            .collect(),
        string_map: c.string_map.clone().into_iter().collect(),
        parallel: c.parallel,
        parallel_idx: c.parallel_idx,
    }
}

pub fn subtask(s: &Subtask) -> pb::Subtask {
    pb::Subtask {
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
        executor: s.executor.clone().unwrap_or_default(),
        start_time: format_optional(s.start_time),
        finish_time: format_optional(s.finish_time),
        prohibit_rollback: s.prohibit_rollback,
        upstreams: s.upstreams.clone(),
        downstreams: s.downstreams.clone(),
        host_id: s.host_id,
    }
}

pub fn event(e: &TaskEvent) -> pb::TaskEvent {
    pb::TaskEvent {
        seq: e.seq,
        task_id: e.task_id,
        subtask_id: e.change.subtask_id().unwrap_or_default(),
        status: e.change.status().to_string(),
        operation: e.operation.to_string(),
        time: format_millis(e.at),
        message: e.message.clone(),
        name: e
            .subtask
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        host_id: e.subtask.as_ref().and_then(|s| s.host_id),
        taken_over_by: e
            .change
            .taken_over_by()
            .map(str::to_string)
            .unwrap_or_default(),
    }
}
