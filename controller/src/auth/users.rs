//! The users the controller knows: the users file (parsed and checked), the bootstrap
//! admin, and the [`Users`] handle every face authenticates through.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::PasswordHashString;
use serde::Deserialize;

use super::password::{bootstrap_password, hash_with, random_password};
use super::verifier::Verifier;
use super::{AuthError, LoginLimits, Permission, Permissions, Principal};

/// Each message names its cause itself, none is a `source`: a chain printed whole
/// would name it twice.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("reading users file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("users file {origin}, line {line}: {message}")]
    Parse {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("users file {origin}: user {user:?}: {reason}")]
    BadUser {
        origin: String,
        user: String,
        reason: String,
    },
    #[error("users file: {0}")]
    Untrusted(trust::strict::StrictError),
    #[error("users file {origin} names no user: add a [[users]] entry")]
    Empty { origin: String },
    #[error("bootstrap admin password file {path}: {error}")]
    PasswordFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("hashing a password: {0}")]
    Hash(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    #[serde(default)]
    permissions: Vec<String>,
}

pub(super) struct User {
    pub(super) hash: PasswordHashString,
    pub(super) permissions: Permissions,
}

/// The users the controller knows. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    pub(super) verifier: Arc<Verifier>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("names", &self.verifier.names())
            .finish()
    }
}

impl Users {
    /// Blocking. The file says who may stop every process of the fleet, so only root
    /// or the controller's user may have written it ([`trust::strict`]).
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        trust::strict::check(path).map_err(|e| match e.into_unreadable_file() {
            Ok(error) => UsersError::Read {
                path: path.to_path_buf(),
                error,
            },
            Err(untrusted) => UsersError::Untrusted(untrusted),
        })?;
        let text = std::fs::read_to_string(path).map_err(|error| UsersError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Users::parse(&text, &path.display().to_string())
    }

    /// Parses a users file's text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Users, UsersError> {
        // toml's own Display quotes the source over several lines; a bad config must be
        // reported on one.
        let file: UsersFile = toml::from_str(text).map_err(|e| UsersError::Parse {
            origin: origin.to_string(),
            line: e.span().map_or(0, |span| {
                text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            }),
            message: e.message().to_string(),
        })?;
        if file.users.is_empty() {
            return Err(UsersError::Empty {
                origin: origin.to_string(),
            });
        }
        let bad = |user: &str, reason: String| UsersError::BadUser {
            origin: origin.to_string(),
            user: user.to_string(),
            reason,
        };
        let mut users = HashMap::new();
        let mut dummy_params = None;
        for entry in file.users {
            if entry.name.is_empty() || entry.name.contains(':') {
                return Err(bad(
                    &entry.name,
                    "a name must be non-empty and without ':' (Basic auth splits on it)".into(),
                ));
            }
            let hash = PasswordHashString::new(&entry.password_hash).map_err(|e| {
                bad(
                    &entry.name,
                    format!("password_hash is not a PHC string ({e}): make one with `ocp-controller hash-password`"),
                )
            })?;
            let parsed = hash.password_hash();
            if parsed.algorithm != argon2::ARGON2ID_IDENT {
                return Err(bad(
                    &entry.name,
                    format!(
                        "password_hash uses {}, not argon2id: make one with `ocp-controller hash-password`",
                        parsed.algorithm
                    ),
                ));
            }
            let params = argon2::Params::try_from(&parsed)
                .map_err(|e| bad(&entry.name, format!("password_hash parameters: {e}")))?;
            dummy_params.get_or_insert(params);
            let permissions = entry
                .permissions
                .iter()
                .map(|p| p.parse::<Permission>())
                .collect::<Result<Permissions, _>>()
                .map_err(|e| bad(&entry.name, e))?;
            if users
                .insert(entry.name.clone(), User { hash, permissions })
                .is_some()
            {
                return Err(bad(&entry.name, "is listed twice".into()));
            }
        }
        let dummy = hash_with(
            &random_password(),
            dummy_params.unwrap_or_else(argon2::Params::default),
        )?;
        Ok(Users::from_parts(users, dummy))
    }

    /// The user `admin` with every permission and `password`.
    pub fn single_admin(password: &str) -> Result<Users, UsersError> {
        let hash = hash_with(password, argon2::Params::default())?;
        let dummy = hash_with(&random_password(), argon2::Params::default())?;
        let admin = User {
            hash,
            permissions: Permissions::all(),
        };
        Ok(Users::from_parts(
            HashMap::from([("admin".to_string(), admin)]),
            dummy,
        ))
    }

    /// docs/operating.md#users: without a users file, `admin` gets every permission and a random
    /// password kept in `<data-dir>/admin-password` (mode 0600). The file is reused on
    /// the next start so the password does not change under an operator's feet.
    pub fn bootstrap(data_dir: &Path) -> Result<(Users, PathBuf), UsersError> {
        let (password, path) = bootstrap_password(data_dir)?;
        Ok((Users::single_admin(&password)?, path))
    }

    fn from_parts(users: HashMap<String, User>, dummy: PasswordHashString) -> Users {
        Users {
            verifier: Arc::new(Verifier::new(users, dummy)),
        }
    }

    /// Replaces the limits on failed logins per client address.
    pub fn with_login_limits(self, limits: LoginLimits) -> Users {
        self.verifier.set_login_limits(limits);
        self
    }

    /// Checks an `Authorization` header value (`Basic base64(name:password)`) sent from
    /// `peer`; without a known peer, failures are not throttled.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        self.verifier.authenticate(header, peer).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::hash_password_with;
    use super::*;

    fn cheap() -> argon2::Params {
        argon2::Params::new(256, 1, 1, None).unwrap()
    }

    #[test]
    fn rejects_bad_files_with_the_reason() {
        let e = Users::parse(
            "[[users]]\nname=\"a\"\npassword_hash=\"$2b$12$abc\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("user \"a\""), "{e}");
        let hash = hash_password_with("x", cheap()).unwrap();
        let e = Users::parse(
            &format!("[[users]]\nname=\"a\"\npassword_hash=\"{hash}\"\npermissions=[\"ROOT\"]\n"),
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown permission \"ROOT\""), "{e}");
        assert!(Users::parse("", "f.toml").is_err());
        let e = Users::parse("[[users]]\nname = \"a\"\nname = \"b\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.contains("line 3"), "{e}");
    }
}
