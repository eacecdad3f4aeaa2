//! What the service core refuses, in the words both faces show: `CoreError`, how store
//! and agent failures become one, and the wording of errors about batches of hosts.

use super::ApiOperation;
use crate::agent_client::AgentError;
use crate::auth::AuthError;
use crate::model::TaskStatus;
use crate::rollout::{Problem, RolloutField};
use crate::store::{StoreError, TransitionRefused};

/// What an invalid argument is, in the domain's words. Each face names it as its
/// clients spell it: the REST face by OCP's JSON and query names, the gRPC face by the
/// proto's fields; the core knows neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    HostAddress,
    AgentPort,
    HostName,
    HostId,
    HostIds,
    ProcessId,
    TaskId,
    SubtaskId,
    /// The last event a watcher saw.
    EventSeq,
    /// The task status a task list is filtered by.
    TaskStatus,
    CreatedAfter,
    CreatedBefore,
    /// The host statuses a host list is filtered by.
    HostStatus,
    /// What a host list's names and addresses are searched for.
    Keyword,
    /// A list's order.
    Sort,
    /// How many lines of a process's log to read.
    LogLines,
    /// A field of a batch's rollout.
    Rollout(RolloutField),
    /// The version an agent package is uploaded as.
    PackageVersion,
    /// The SHA-256 the uploader says the package has.
    PackageSha256,
    /// The uploaded binary itself.
    PackageContent,
    /// An agent package's id.
    PackageId,
    /// The version an upgrade installs.
    AgentVersion,
    /// The agent version a host list is filtered by.
    HostAgentVersion,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::HostAddress => "host address",
            Field::AgentPort => "agent port",
            Field::HostName => "host name",
            Field::HostId => "host id",
            Field::HostIds => "host ids",
            Field::ProcessId => "process id",
            Field::TaskId => "task id",
            Field::SubtaskId => "subtask id",
            Field::EventSeq => "event seq",
            Field::TaskStatus => "task status",
            Field::CreatedAfter => "created after",
            Field::CreatedBefore => "created before",
            Field::HostStatus => "host status",
            Field::Keyword => "keyword",
            Field::Sort => "sort",
            Field::LogLines => "log lines",
            Field::Rollout(field) => return write!(f, "rollout {field}"),
            Field::PackageVersion => "package version",
            Field::PackageSha256 => "package sha256",
            Field::PackageContent => "package content",
            Field::PackageId => "package id",
            Field::AgentVersion => "version",
            Field::HostAgentVersion => "agent version",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{field}: {message}")]
    InvalidArgument {
        field: Field,
        rejected: String,
        message: String,
    },
    /// Every bad field of a rollout, named at once.
    #[error("invalid rollout: {}", describe_problems(.0))]
    InvalidRollout(Vec<Problem>),
    #[error("host {0} does not exist")]
    HostNotFound(i64),
    /// Names the first few missing hosts and counts the rest, so that a batch of unknown
    /// ids is answered in a line, not with the batch read back.
    #[error("{} not exist", name_hosts(.named, *.more, "does", "do"))]
    HostsNotFound { named: Vec<i64>, more: usize },
    #[error("agent process {process_id} does not exist on host {host_id}")]
    ProcessNotFound { host_id: i64, process_id: i64 },
    #[error("task {0} does not exist")]
    TaskNotFound(i64),
    /// The process has no log to read: none configured, or not written yet; `reason`
    /// is the agent's.
    #[error(
        "agent process {process_id} ({alias}) on host {host_id} has no log file to read: {reason}"
    )]
    NoProcessLog {
        host_id: i64,
        process_id: i64,
        alias: String,
        reason: String,
    },
    #[error("a host at {address} already exists, with id {existing_id}")]
    HostExists { address: String, existing_id: i64 },
    #[error("host {host_id} is held by task {task_id} ({task_name}, {task_status}); {advice}")]
    HostBusy {
        host_id: i64,
        task_id: i64,
        task_name: String,
        task_status: TaskStatus,
        advice: &'static str,
    },
    /// The holder let go between the refusal and the look-up of who it was.
    #[error("host {0} was held by a task that has just ended; try again")]
    HostJustReleased(i64),
    #[error("the agent of host {host_id} at {address} cannot be reached: {reason}")]
    AgentUnavailable {
        host_id: i64,
        address: String,
        reason: String,
    },
    #[error("the agent of host {host_id} refused: {message}")]
    AgentRefused {
        host_id: i64,
        code: tonic::Code,
        message: String,
    },
    #[error("subtask {subtask_id} does not exist in task {task_id}")]
    SubtaskNotFound { task_id: i64, subtask_id: i64 },
    /// The task or subtask is in a state the operation does not apply to.
    #[error(transparent)]
    IllegalState(TransitionRefused),
    /// Apart from `IllegalState`: OCP gives a task created with `prohibit_rollback` an
    /// error code of its own.
    #[error(transparent)]
    RollbackProhibited(TransitionRefused),
    /// The store's message is in the text, for the faces that show one line, and so the
    /// store's error is not also the source: a chain printed whole would say it twice.
    #[error("internal store error: {0}")]
    Store(StoreError),
    /// The caller may not do this, or may not see this task.
    #[error(transparent)]
    Denied(#[from] AuthError),
    /// A face admitted the caller to one operation and asked the core for another: a
    /// bug of the face, refused rather than obeyed.
    #[error("this request was admitted to {} and asked for another operation", .admitted.name())]
    Misrouted { admitted: ApiOperation },
    #[error("agent package {0} does not exist")]
    PackageNotFound(i64),
    /// The version already has a package for the architecture, with other content.
    #[error(
        "version {version} already has a package for {arch} (id {existing_id}) with other \
         content (sha256 {existing_sha256}); delete it first or upload under another version"
    )]
    PackageConflict {
        version: String,
        arch: crate::model::Arch,
        existing_id: i64,
        existing_sha256: String,
    },
    #[error(
        "agent package {package_id} is used by unfinished task {task_id}; delete it once that task ends"
    )]
    PackageInUse { package_id: i64, task_id: i64 },
    /// Reading stopped at the limit: the rest of the upload was never read.
    #[error("the package is larger than {limit} bytes (--max-package-bytes)")]
    PackageTooLarge { limit: u64 },
    /// The client's stream failed before its end; nothing of it was kept.
    #[error("the upload was interrupted: {0}")]
    UploadInterrupted(String),
    /// A watch beyond the user's limit; refused before any store read.
    #[error(
        "user {user:?} already has {limit} watches of tasks open (--max-watches-per-user): \
         close one before opening another"
    )]
    TooManyWatches { user: String, limit: usize },
    /// The reader a watch shared stopped before the task's end; a new watch from the
    /// last seq seen goes on where this one stopped.
    #[error(
        "the watch of task {task_id} was interrupted inside the controller; watch again \
         after seq {after}"
    )]
    WatchLost { task_id: i64, after: i64 },
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(refused) => match refused {
                TransitionRefused::NoTask(id) => CoreError::TaskNotFound(id),
                TransitionRefused::NoSubtask {
                    task_id,
                    subtask_id,
                } => CoreError::SubtaskNotFound {
                    task_id,
                    subtask_id,
                },
                TransitionRefused::RollbackProhibited(_) => CoreError::RollbackProhibited(refused),
                TransitionRefused::TaskState { .. }
                | TransitionRefused::SubtaskState { .. }
                | TransitionRefused::NotRolling { .. } => CoreError::IllegalState(refused),
            },
            e => CoreError::Store(e),
        }
    }
}

impl CoreError {
    /// An agent's failure as the faces tell it: one that could not be reached (a bad
    /// address, a lost connection, a refused certificate) or one that refused.
    pub(super) fn agent(host_id: i64, error: AgentError) -> CoreError {
        match error {
            AgentError::Refused { code, message } => CoreError::AgentRefused {
                host_id,
                code,
                message,
            },
            AgentError::BadAddress { ref address, .. } => CoreError::AgentUnavailable {
                host_id,
                address: address.clone(),
                reason: error.reason(),
            },
            AgentError::Unreachable {
                address, reason, ..
            }
            | AgentError::Untrusted {
                address, reason, ..
            } => CoreError::AgentUnavailable {
                host_id,
                address,
                reason,
            },
        }
    }

    pub(super) fn invalid(
        field: Field,
        rejected: impl ToString,
        message: impl Into<String>,
    ) -> CoreError {
        CoreError::InvalidArgument {
            field,
            rejected: rejected.to_string(),
            message: message.into(),
        }
    }
}

fn describe_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The most hosts one batch may name, on both faces. A batch is one task of 5N+4
/// subtasks written in one transaction and one host lock each; past this it is an
/// operation on a whole fleet that belongs in several tasks, and refusing it costs
/// nothing while accepting it holds the store and the controller's CPU for long.
pub const MAX_BATCH_HOSTS: usize = 10_000;

/// How many ids an error about a batch names before it counts the rest.
pub const NAMED_IDS: usize = 5;

/// The ids an error names, and how many more there are.
pub fn first_few(ids: &[i64]) -> (&[i64], usize) {
    let named = &ids[..ids.len().min(NAMED_IDS)];
    (named, ids.len() - named.len())
}

/// "host 7 does", "hosts 7, 8, 9, 10, 11 and 99,995 more do": `one` and `many` are
/// the verb for one host and for several.
pub fn name_hosts(named: &[i64], more: usize, one: &str, many: &str) -> String {
    let list = named
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (noun, verb) = if named.len() + more == 1 {
        ("host", one)
    } else {
        ("hosts", many)
    };
    let rest = if more > 0 {
        format!(" and {} more", thousands(more))
    } else {
        String::new()
    };
    format!("{noun} {list}{rest} {verb}").trim_end().to_string()
}

/// 99995 as "99,995".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn check_id(field: Field, id: i64) -> Result<(), CoreError> {
    if id <= 0 {
        return Err(CoreError::invalid(field, id, "must be a positive id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_hosts_are_named_a_few_and_counted() {
        let ids: Vec<i64> = (7..100_009).collect();
        let (named, more) = first_few(&ids);
        assert_eq!((named, more), (&[7, 8, 9, 10, 11][..], 99_997));
        assert_eq!(
            CoreError::HostsNotFound {
                named: named.to_vec(),
                more
            }
            .to_string(),
            "hosts 7, 8, 9, 10, 11 and 99,997 more do not exist"
        );
        assert_eq!(
            CoreError::HostsNotFound {
                named: vec![3],
                more: 0
            }
            .to_string(),
            "host 3 does not exist"
        );
        assert_eq!(
            CoreError::HostsNotFound {
                named: vec![3, 4],
                more: 0
            }
            .to_string(),
            "hosts 3, 4 do not exist"
        );
        assert_eq!(name_hosts(&[3], 0, "", ""), "host 3");
    }

    #[test]
    fn refusals_and_store_failures_keep_what_they_come_from() {
        let refused = TransitionRefused::RollbackProhibited(7);
        let error = CoreError::from(StoreError::Refused(refused.clone()));
        assert!(matches!(
            error,
            CoreError::RollbackProhibited(TransitionRefused::RollbackProhibited(7))
        ));
        assert_eq!(error.to_string(), refused.to_string());
        let store = CoreError::from(StoreError::Timeout("reading task 7"));
        assert_eq!(
            store.to_string(),
            "internal store error: reading task 7 took too long"
        );
        assert!(matches!(store, CoreError::Store(StoreError::Timeout(_))));
        assert_eq!(
            trust::causes(&store),
            store.to_string(),
            "the store's words, once, however the error is printed"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (10_001, "10,001"),
            (999_995, "999,995"),
            (1_000_000, "1,000,000"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }
}
