//! A process's log as the faces show it: its last lines, read from its agent at once
//! (the agent finds them from the end of the file, so a large log costs no more).

use super::errors::{Field, thousands};
use super::{ApiOperation, Caller, Core, CoreError};
use crate::agent_client::AgentError;

/// Lines read when the caller names no number.
pub const DEFAULT_LOG_LINES: i64 = 200;
/// The most lines one read may ask for, as the agent allows.
pub const MAX_LOG_LINES: i64 = 10_000;

impl Core {
    /// The last `lines` lines (default [`DEFAULT_LOG_LINES`]) of the process's log file.
    /// A process without one, or whose file was not written yet, is not found.
    pub async fn process_log(
        &self,
        caller: &Caller,
        host_id: i64,
        process_id: i64,
        lines: Option<i64>,
    ) -> Result<String, CoreError> {
        caller.admitted(ApiOperation::TailProcessLog)?;
        let asked = lines.unwrap_or(DEFAULT_LOG_LINES);
        let lines = u32::try_from(asked)
            .ok()
            .filter(|n| (1..=MAX_LOG_LINES).contains(&i64::from(*n)))
            .ok_or_else(|| {
                CoreError::invalid(
                    Field::LogLines,
                    asked,
                    format!("must be from 1 to {}", thousands(MAX_LOG_LINES as usize)),
                )
            })?;
        let (host, process) = self.find_process(host_id, process_id).await?;
        let alias = &process.snapshot.alias;
        let read = self
            .client(&host, caller)?
            .tail_log(alias, lines, self.options.log_timeout)
            .await;
        match read {
            Ok(log) => Ok(log),
            // The agent knows no log of it: none configured, none written yet, or the
            // process left the agent's config since it was recorded.
            Err(AgentError::Refused {
                code: tonic::Code::NotFound,
                message,
            }) => Err(CoreError::NoProcessLog {
                host_id,
                process_id,
                alias: alias.clone(),
                reason: message,
            }),
            Err(e) => Err(CoreError::agent(host_id, e)),
        }
    }
}
