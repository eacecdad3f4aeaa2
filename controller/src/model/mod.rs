//! The controller's domain: hosts and their agent processes (`host`), DAG tasks
//! (`task`) and their steps (`step`), the lists' filters, sorts and pages (`query`),
//! OCP's conventions (`ocp`), the clock (`clock`) and agent packages (`package`, and
//! `elf` for what an uploaded binary runs on).
//!
//! Enumerations carry OCP's own words (`RUNNING`, `EXECUTE`, ...) as their
//! string form, because both faces and the store speak them.

macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $word)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord { kind: stringify!($name), word: s.to_string() }),
                }
            }
        }
    };
}

mod clock;
pub mod elf;
mod host;
pub mod ocp;
pub mod package;
mod query;
mod step;
mod task;

pub use clock::{Millis, now_millis};
pub use host::{AgentProcess, AgentSummary, Host, HostStatus, NewHost, ProcessSnapshot};
pub use package::{AgentPackage, Arch};
pub use query::{
    HostFilter, HostSort, HostSortKey, Page, PageRefused, PageRequest, TaskFilter, TaskSort,
    TaskSortKey,
};
pub use step::Step;
pub use task::{
    AgentAction, Change, EventSubtask, NewSubtask, NewTask, Operation, StoreCounts, Subtask,
    SubtaskLogLine, SubtaskStatus, Task, TaskContext, TaskEvent, TaskStatus,
};

/// A word read from the store or a request that names no known value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} {word:?}")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub word: String,
}
