//! Who may do what: the users file, HTTP Basic credentials, argon2id verification and
//! OCP's permissions, shared by the REST gateway and the gRPC face so both refuse alike.
//!
//! - `permission`: OCP's permissions and what each implies;
//! - `users`: the users file and the bootstrap admin, loaded into `Users`;
//! - `password`: argon2id hashes and the bootstrap admin's password file;
//! - `verifier`: checking credentials, and what a flood of wrong ones may cost;
//! - `basic`: the `Authorization: Basic` value, read and written;
//! - `client`: the tonic interceptor that sends credentials;
//! - `layer`: the tower layer that takes every request's credentials, for both faces,
//!   to be checked once when an operation needs them.

mod basic;
mod client;
pub mod layer;
mod password;
mod permission;
mod users;
mod verifier;

pub use basic::basic_header;
pub use client::BasicAuth;
pub use layer::{AuthLayer, Credentials, Peer};
pub use password::{hash_password, hash_password_with};
pub use permission::{Permission, Permissions};
pub use users::{Users, UsersError};

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
    #[error(
        "too many failed logins {}from {client}; retry after {retry_after} s",
        user.as_ref().map(|u| format!("as {u:?} ")).unwrap_or_default()
    )]
    Throttled {
        client: String,
        /// The name whose failures at this address are spent; `None` when the address
        /// has spent its ceiling for every name.
        user: Option<String>,
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
