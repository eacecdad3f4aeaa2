//! The steps a subtask runs, with their names and retry policy as OCP's templates have
//! them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::UnknownWord;

words!(
    /// What a subtask does when it runs; `className` is derived from it.
    Step {
        PrepareRestart = "PREPARE_RESTART",
        PrepareStop = "PREPARE_STOP",
        PrepareStart = "PREPARE_START",
        RestartProxy = "RESTART_PROXY",
        StopAll = "STOP_ALL",
        StartAll = "START_ALL",
        Finish = "FINISH",
        Wait = "WAIT",
        PrepareUpgrade = "PREPARE_UPGRADE",
        PushPackage = "PUSH_PACKAGE",
        SwitchAgent = "SWITCH_AGENT",
        VerifyAgent = "VERIFY_AGENT",
        CommitAgent = "COMMIT_AGENT",
    }
);

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::PrepareRestart => "Prepare restart OCP agent",
            Step::PrepareStop => "Prepare stop OCP agent",
            Step::PrepareStart => "Prepare start OCP agent",
            Step::RestartProxy => "Restart pos proxy",
            Step::StopAll => "Stop all OCP agent processes",
            Step::StartAll => "Start all OCP agent processes",
            Step::Finish => "Finish OCP agent operation",
            Step::Wait => "Wait node",
            Step::PrepareUpgrade => "Prepare upgrade OCP agent",
            Step::PushPackage => "Push OCP agent package",
            Step::SwitchAgent => "Switch OCP agent",
            Step::VerifyAgent => "Verify OCP agent",
            // An upgrade ends as every agent operation does, by name; this one commits.
            Step::CommitAgent => "Finish OCP agent operation",
        }
    }

    pub fn class_name(self) -> &'static str {
        match self {
            Step::PrepareRestart => "ocp.agent.PrepareRestartAgent",
            Step::PrepareStop => "ocp.agent.PrepareStopAgent",
            Step::PrepareStart => "ocp.agent.PrepareStartAgent",
            Step::RestartProxy => "ocp.agent.RestartPosProxy",
            Step::StopAll => "ocp.agent.StopAllProcesses",
            Step::StartAll => "ocp.agent.StartAllProcesses",
            Step::Finish => "ocp.agent.FinishAgentOperation",
            Step::Wait => "ocp.task.WaitNode",
            Step::PrepareUpgrade => "ocp.agent.PrepareUpgradeAgent",
            Step::PushPackage => "ocp.agent.PushAgentPackage",
            Step::SwitchAgent => "ocp.agent.SwitchAgent",
            Step::VerifyAgent => "ocp.agent.VerifyAgent",
            Step::CommitAgent => "ocp.agent.CommitAgentUpgrade",
        }
    }

    /// How many times the step calls its agent after a transient error (unavailable,
    /// deadline exceeded) before it fails, with a jittered doubling pause between calls.
    pub fn transient_retries(self) -> u32 {
        match self {
            Step::StopAll
            | Step::StartAll
            | Step::PrepareRestart
            | Step::PrepareStop
            | Step::PrepareStart
            | Step::PrepareUpgrade
            | Step::PushPackage
            | Step::SwitchAgent
            | Step::VerifyAgent => 8,
            Step::RestartProxy | Step::Finish | Step::CommitAgent => 5,
            Step::Wait => 0,
        }
    }
}
