//! The health gate's judgement: which of the processes Start all left running did not
//! stay up. Pure, so every way of failing it is tested without an agent.

use proto::agent::v1::{ProcessInfo, ProcessState};

/// One line per process that is no longer the one Start all started: restarted under
/// another pid, not running, or gone. `watched` is (alias, pid) after Start all.
pub(super) fn unhealthy(watched: &[(String, u32)], now: &[ProcessInfo]) -> Vec<String> {
    watched
        .iter()
        .filter_map(|(alias, pid)| {
            let Some(p) = now.iter().find(|p| &p.alias == alias) else {
                return Some(format!("{alias} (pid {pid}) is no longer configured"));
            };
            let why = if !p.last_error.is_empty() {
                format!(": {}", p.last_error)
            } else {
                String::new()
            };
            if p.state() != ProcessState::Running || p.pid == 0 {
                Some(format!(
                    "{alias} (pid {pid}) exited and is {:?} now{why}",
                    p.state()
                ))
            } else if p.pid != *pid {
                Some(format!(
                    "{alias} (pid {pid}) exited and was restarted as pid {}{why}",
                    p.pid
                ))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(alias: &str, pid: u32, state: ProcessState) -> ProcessInfo {
        let mut p = ProcessInfo {
            alias: alias.to_string(),
            pid,
            ..ProcessInfo::default()
        };
        p.set_state(state);
        p
    }

    #[test]
    fn the_same_pids_still_running_are_healthy() {
        let watched = vec![
            ("ocp_agent".to_string(), 10),
            ("ocp_mgragent".to_string(), 11),
        ];
        let now = vec![
            process("ocp_agent", 10, ProcessState::Running),
            process("ocp_mgragent", 11, ProcessState::Running),
            process("ob_cleaner", 99, ProcessState::Backoff),
        ];
        assert!(unhealthy(&watched, &now).is_empty());
    }

    #[test]
    fn a_restart_a_stop_and_a_disappearance_each_fail_the_host() {
        let watched = vec![
            ("a".to_string(), 10),
            ("b".to_string(), 11),
            ("c".to_string(), 12),
        ];
        let mut b = process("b", 0, ProcessState::Backoff);
        b.last_error = "exited with status 1".to_string();
        let now = vec![process("a", 20, ProcessState::Running), b];
        assert_eq!(
            unhealthy(&watched, &now),
            vec![
                "a (pid 10) exited and was restarted as pid 20".to_string(),
                "b (pid 11) exited and is Backoff now: exited with status 1".to_string(),
                "c (pid 12) is no longer configured".to_string(),
            ]
        );
    }
}
