//! Who may do what: the users file, HTTP Basic credentials, argon2id verification and
//! OCP's permissions, shared by the REST gateway and the gRPC face so both refuse alike.
//!
//! - `permission`: OCP's permissions and what each implies;
//! - `users`: the users file and the bootstrap admin, loaded into `Users`;
//! - `password`: argon2id hashes and the bootstrap admin's password file;
//! - `verifier`: checking credentials, and what a flood of wrong ones may cost;
//! - `basic`: the `Authorization: Basic` value, read and written;
//! - `client`: the tonic interceptor that sends credentials.

mod basic;
mod client;
mod password;
mod permission;
mod users;
mod verifier;

pub use basic::basic_header;
pub use client::BasicAuth;
pub use password::{hash_password, hash_password_with};
pub use permission::{Permission, Permissions};
pub use users::{Users, UsersError};

use crate::model::Task;
use crate::service::CoreError;
pub use crate::throttle::LoginLimits;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub permissions: Permissions,
}

impl Principal {
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.contains(p)
    }

    pub fn require(&self, p: Permission) -> Result<(), AuthError> {
        if self.has(p) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                user: self.name.clone(),
                permission: p,
            })
        }
    }

    /// SPEC: TASK_VIEWER reads every task, and the creator of a task may always read it.
    pub fn may_read_task(&self, task: &Task) -> bool {
        self.has(Permission::TaskViewer) || task.creator == self.name
    }

    /// What a read of a task may show this principal: the task, the core's error, or
    /// (outer) a refusal. Without TASK_VIEWER, a missing task is refused like a hidden
    /// one, so that whether a task exists is not revealed.
    pub fn visible(
        &self,
        found: Result<Task, CoreError>,
    ) -> Result<Result<Task, CoreError>, AuthError> {
        let forbidden = || AuthError::Forbidden {
            user: self.name.clone(),
            permission: Permission::TaskViewer,
        };
        match found {
            Ok(task) if self.may_read_task(&task) => Ok(Ok(task)),
            Ok(_) => Err(forbidden()),
            Err(CoreError::TaskNotFound(_)) if !self.has(Permission::TaskViewer) => {
                Err(forbidden())
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Deliberately one message for a missing header, an unknown user and a wrong
    /// password, so that the answer does not tell which names exist.
    #[error(
        "missing or wrong credentials: send HTTP Basic authentication of a user in the users file"
    )]
    Unauthenticated,
    #[error("user {user:?} is not permitted to do this: it needs the {permission} permission")]
    Forbidden {
        user: String,
        permission: Permission,
    },
    /// Refused before the password is even checked, so it says nothing about it.
    #[error("too many failed logins from {client}; retry after {retry_after} s")]
    Throttled {
        client: String,
        /// Whole seconds.
        retry_after: u64,
    },
    /// The controller could not check the credentials (a closed semaphore, a
    /// verification that panicked): not the caller's doing, so neither a 401 nor a
    /// failed login it would be throttled for. Logged once, where it arises.
    #[error("the controller failed to check the credentials: {0}")]
    Internal(String),
}

impl AuthError {
    /// Logs the failure where it happened, so that the faces answering it need not.
    fn internal(what: &str, source: impl std::fmt::Display) -> AuthError {
        tracing::error!(error = %source, "authentication: {what}");
        AuthError::Internal(format!("{what}: {source}"))
    }
}
