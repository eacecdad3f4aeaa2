//! Who may do what: the users file, HTTP Basic credentials, argon2id verification and
//! OCP's permissions, shared by the REST gateway and the gRPC face so both refuse alike.
//!
//! Verifying an argon2id hash costs tens of milliseconds of CPU on purpose. Two things
//! keep that from becoming either a leak or a bottleneck:
//! - a name that is not in the users file is verified against a dummy hash made with the
//!   same parameters as the real ones, so the answer takes as long as for a known name;
//! - credentials that verified are remembered for a while under a keyed SHA-256 digest
//!   (never the password itself), so a client sending the same header on every request
//!   pays for argon2 once. Failures are never remembered: each one costs the full price.
//!
//! What a flood of wrong passwords may cost is bounded four ways:
//! - a verification holds its share of the gate until argon2 is done, also when its
//!   client has hung up, so the runs (and their 19 MiB each) never exceed the gate;
//! - an address may have only a few verifications running or waiting at once, so one
//!   address cannot queue its runs ahead of everyone else's;
//! - an address that failed recently goes through a narrower lane than the gate, so a flood spread over many addresses leaves room for the others;
//! - an address that keeps failing is refused before any argon2 work until it has
//!   waited (see `throttle`). A name is never locked out, and credentials that verified
//!   recently pass from any address.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHashString, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::model::Task;
use crate::service::CoreError;
pub use crate::throttle::LoginLimits;

pub mod layer;
use crate::throttle::{ClientKey, Throttle, retry_after_secs};
pub use layer::{AuthLayer, Authentication, Peer};

/// OCP's permissions. A manager permission implies the viewer permission of its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    HostViewer,
    HostManager,
    TaskViewer,
    TaskManager,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::HostViewer,
        Permission::HostManager,
        Permission::TaskViewer,
        Permission::TaskManager,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::HostViewer => "HOST_VIEWER",
            Permission::HostManager => "HOST_MANAGER",
            Permission::TaskViewer => "TASK_VIEWER",
            Permission::TaskManager => "TASK_MANAGER",
        }
    }

    /// The permissions that holding `self` grants, itself included.
    fn grants(self) -> &'static [Permission] {
        match self {
            Permission::HostManager => &[Permission::HostManager, Permission::HostViewer],
            Permission::TaskManager => &[Permission::TaskManager, Permission::TaskViewer],
            Permission::HostViewer => &[Permission::HostViewer],
            Permission::TaskViewer => &[Permission::TaskViewer],
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown permission {s:?}: use one of HOST_VIEWER, HOST_MANAGER, TASK_VIEWER, TASK_MANAGER"
                )
            })
    }
}

/// A set of permissions with the implications already applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    pub fn all() -> Permissions {
        Permission::ALL.into_iter().collect()
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut bits = 0;
        for p in iter {
            for g in p.grants() {
                bits |= g.bit();
            }
        }
        Permissions(bits)
    }
}

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
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("reading users file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
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
    #[error("users file {origin} names no user: add a [[users]] entry")]
    Empty { origin: String },
    #[error("bootstrap admin password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
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

struct User {
    hash: PasswordHashString,
    permissions: Permissions,
}

/// How long verified credentials are remembered, and how many at most.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_MAX: usize = 4096;

/// The users the controller knows. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    inner: Arc<Inner>,
}

struct Inner {
    users: HashMap<String, User>,
    /// Verified instead of a real hash when the name is unknown.
    dummy: PasswordHashString,
    /// Keys the digests of remembered credentials, so the cache is useless to anyone
    /// who reads it from outside this process.
    cache_key: [u8; 32],
    verified: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    /// Bounds concurrent argon2 runs so a burst of bad logins cannot take every core,
    /// nor the memory each run needs.
    gate: Arc<Semaphore>,
    /// Taken before the gate by logins from addresses with recent failures, and one
    /// smaller than it, so that a flood spread over many addresses leaves a share of
    /// the gate to addresses that never failed.
    suspects: Arc<Semaphore>,
    throttle: Mutex<Throttle>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.inner.users.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_path_buf(),
            source,
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

    /// SPEC section 4: without a users file, `admin` gets every permission and a random
    /// password kept in `<data-dir>/admin-password` (mode 0600). The file is reused on
    /// the next start so the password does not change under an operator's feet.
    pub fn bootstrap(data_dir: &Path) -> Result<(Users, PathBuf), UsersError> {
        let path = data_dir.join("admin-password");
        let file_error = |source| UsersError::PasswordFile {
            path: path.clone(),
            source,
        };
        let password = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(file_error)?;
                text.trim().to_string()
            }
            Ok(_) => write_password_file(&path).map_err(file_error)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_password_file(&path).map_err(file_error)?
            }
            Err(e) => return Err(file_error(e)),
        };
        Ok((Users::single_admin(&password)?, path))
    }

    fn from_parts(users: HashMap<String, User>, dummy: PasswordHashString) -> Users {
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        Users {
            inner: Arc::new(Inner {
                users,
                dummy,
                cache_key: rand::random(),
                verified: Mutex::new(HashMap::new()),
                gate: Arc::new(Semaphore::new(parallelism)),
                suspects: Arc::new(Semaphore::new(parallelism.saturating_sub(1).max(1))),
                throttle: Mutex::new(Throttle::new(LoginLimits::default())),
            }),
        }
    }

    /// Replaces the limits on failed logins per client address.
    pub fn with_login_limits(self, limits: LoginLimits) -> Users {
        *self.inner.throttle() = Throttle::new(limits);
        self
    }

    /// Checks an `Authorization` header value (`Basic base64(name:password)`) sent from
    /// `peer`; without a known peer, failures are not throttled.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let (name, password) = header
            .and_then(parse_basic)
            .ok_or(AuthError::Unauthenticated)?;
        let digest = self.digest(&name, &password);
        if let Some(principal) = self.remembered(&digest) {
            return Ok(principal);
        }
        let client = peer.map(ClientKey::of);
        let slot = match client {
            Some(client) => {
                self.admit(client)?;
                let slots = self.inner.throttle().slots(client, Instant::now());
                match slots {
                    Some(slots) => {
                        let slot = slots
                            .acquire_owned()
                            .await
                            .map_err(|_| AuthError::Unauthenticated)?;
                        // Those ahead in the line may have verified these very
                        // credentials, or used up the address's failures.
                        if let Some(principal) = self.remembered(&digest) {
                            return Ok(principal);
                        }
                        self.admit(client)?;
                        Some(slot)
                    }
                    None => None,
                }
            }
            None => None,
        };
        let suspect = match client {
            Some(client) if self.inner.throttle().suspect(client, Instant::now()) => Some(
                self.inner
                    .suspects
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| AuthError::Unauthenticated)?,
            ),
            _ => None,
        };
        let permit = self
            .inner
            .gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Unauthenticated)?;
        let inner = self.inner.clone();
        // The permits move into the work: a client that hangs up drops this future, not
        // the argon2 run, which keeps its share of the gate until it is done. The failure
        // is counted there too, so hanging up does not escape the throttle.
        let principal = tokio::task::spawn_blocking(move || {
            let held = (permit, suspect, slot);
            let verified = inner.verify(&name, &password);
            if let (Err(_), Some(client)) = (&verified, client) {
                inner.throttle().failed(client, Instant::now());
            }
            drop(held);
            verified
        })
        .await
        .map_err(|_| AuthError::Unauthenticated)??;
        self.remember(digest, &principal);
        Ok(principal)
    }

    /// Refuses `client` while it has used up its failed logins.
    fn admit(&self, client: ClientKey) -> Result<(), AuthError> {
        self.inner
            .throttle()
            .check(client, Instant::now())
            .map_err(|wait| {
                tracing::debug!(%client, "refused a login: too many failures from there");
                AuthError::Throttled {
                    client: client.to_string(),
                    retry_after: retry_after_secs(wait),
                }
            })
    }

    fn digest(&self, name: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.inner.cache_key);
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn remembered(&self, digest: &[u8; 32]) -> Option<Principal> {
        let verified = self
            .inner
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match verified.get(digest) {
            Some((principal, at)) if at.elapsed() < VERIFIED_TTL => Some(principal.clone()),
            _ => None,
        }
    }

    fn remember(&self, digest: [u8; 32], principal: &Principal) {
        let mut verified = self
            .inner
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        verified.insert(digest, (principal.clone(), Instant::now()));
    }
}

impl Inner {
    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn verify(&self, name: &str, password: &str) -> Result<Principal, AuthError> {
        let (hash, user) = match self.users.get(name) {
            Some(user) => (user.hash.password_hash(), Some(user)),
            None => (self.dummy.password_hash(), None),
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        match user {
            Some(user) if matches => Ok(Principal {
                name: name.to_string(),
                permissions: user.permissions,
            }),
            _ => Err(AuthError::Unauthenticated),
        }
    }
}

/// `Basic <base64(name:password)>`, scheme case-insensitive as RFC 7617 allows.
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// The `Authorization` header value for `name` and `password`.
pub fn basic_header(name: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"))
    )
}

/// Adds `authorization: Basic ...` to every call of a tonic client, e.g.
/// `HostAgentServiceClient::with_interceptor(channel, BasicAuth::new("admin", pw)?)`.
#[derive(Clone)]
pub struct BasicAuth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl BasicAuth {
    pub fn new(name: &str, password: &str) -> Result<BasicAuth, AuthError> {
        basic_header(name, password)
            .parse()
            .map(BasicAuth)
            .map_err(|_| AuthError::Unauthenticated)
    }
}

impl tonic::service::Interceptor for BasicAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// An argon2id PHC string of `password` with the default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    Ok(hash_with(password, argon2::Params::default())?.to_string())
}

/// An argon2id PHC string with explicit parameters, for tests that cannot afford the
/// production cost on every user.
pub fn hash_password_with(password: &str, params: argon2::Params) -> Result<String, UsersError> {
    Ok(hash_with(password, params)?.to_string())
}

fn hash_with(password: &str, params: argon2::Params) -> Result<PasswordHashString, UsersError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| UsersError::Hash(e.to_string()))?;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| UsersError::Hash(e.to_string()))?;
    Ok(hash.serialize())
}

fn random_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

fn write_password_file(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let password = random_password();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{password}")?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> argon2::Params {
        argon2::Params::new(256, 1, 1, None).unwrap()
    }

    fn users() -> Users {
        let text = format!(
            "[[users]]\nname = \"ops\"\npassword_hash = \"{}\"\npermissions = [\"HOST_MANAGER\"]\n",
            hash_password_with("s3cret", cheap()).unwrap()
        );
        Users::parse(&text, "test").unwrap()
    }

    #[test]
    fn managers_imply_viewers() {
        let p: Permissions = [Permission::HostManager].into_iter().collect();
        assert!(p.contains(Permission::HostViewer));
        assert!(!p.contains(Permission::TaskViewer));
        let t: Permissions = [Permission::TaskManager].into_iter().collect();
        assert!(t.contains(Permission::TaskViewer));
        assert!(!t.contains(Permission::HostViewer));
    }

    #[tokio::test]
    async fn verifies_and_refuses_alike() {
        let users = users();
        let ok = users
            .authenticate(Some(&basic_header("ops", "s3cret")), None)
            .await
            .unwrap();
        assert_eq!(ok.name, "ops");
        assert!(ok.has(Permission::HostViewer));
        // Cached path answers the same.
        assert_eq!(
            users
                .authenticate(Some(&basic_header("ops", "s3cret")), None)
                .await
                .unwrap(),
            ok
        );
        for header in [
            Some(basic_header("ops", "wrong")),
            Some(basic_header("nobody", "s3cret")),
            Some("Basic !!!".to_string()),
            Some("Bearer abc".to_string()),
            None,
        ] {
            assert_eq!(
                users.authenticate(header.as_deref(), None).await,
                Err(AuthError::Unauthenticated)
            );
        }
    }

    fn from(ip: &str) -> Option<IpAddr> {
        Some(ip.parse().unwrap())
    }

    #[tokio::test]
    async fn an_address_that_keeps_failing_is_refused_and_no_name_is_locked_out() {
        let users = users().with_login_limits(LoginLimits {
            burst: 2,
            interval: Duration::from_secs(60),
        });
        let wrong = basic_header("ops", "wrong");
        let right = basic_header("ops", "s3cret");
        for _ in 0..2 {
            assert_eq!(
                users.authenticate(Some(&wrong), from("10.0.0.1")).await,
                Err(AuthError::Unauthenticated)
            );
        }
        let refused = users.authenticate(Some(&wrong), from("10.0.0.1")).await;
        assert!(
            matches!(&refused, Err(AuthError::Throttled { client, retry_after: 60 }) if client == "10.0.0.1"),
            "{refused:?}"
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            "too many failed logins from 10.0.0.1; retry after 60 s"
        );
        // The same name from elsewhere, then its verified credentials from anywhere.
        assert_eq!(
            users
                .authenticate(Some(&right), from("10.0.0.2"))
                .await
                .unwrap()
                .name,
            "ops"
        );
        assert!(
            users
                .authenticate(Some(&right), from("10.0.0.1"))
                .await
                .is_ok()
        );
        // Without a known peer nothing is throttled.
        assert_eq!(
            users.authenticate(Some(&wrong), None).await,
            Err(AuthError::Unauthenticated)
        );
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_leaves_its_verification_holding_the_gate() {
        // Production parameters: a verification takes long enough to be caught running.
        let users = Users::single_admin("s3cret")
            .unwrap()
            .with_login_limits(LoginLimits {
                burst: 1,
                interval: Duration::from_secs(60),
            });
        let gate = users.inner.gate.clone();
        let all = gate.available_permits();
        let pending = {
            let users = users.clone();
            tokio::spawn(async move {
                users
                    .authenticate(Some(&basic_header("admin", "wrong")), from("10.0.0.1"))
                    .await
            })
        };
        while gate.available_permits() == all {
            tokio::task::yield_now().await;
        }
        pending.abort();
        assert!(pending.await.unwrap_err().is_cancelled());
        assert_eq!(
            gate.available_permits(),
            all - 1,
            "released with the client"
        );
        // It finishes, counts as a failure and gives its permit back.
        let deadline = Instant::now() + Duration::from_secs(60);
        while gate.available_permits() < all {
            assert!(Instant::now() < deadline, "the verification never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let throttle = users.inner.throttle();
        let key = ClientKey::of("10.0.0.1".parse().unwrap());
        assert!(throttle.check(key, Instant::now()).is_err());
    }

    #[test]
    fn unknown_name_costs_a_real_verification() {
        let users = users();
        assert_eq!(
            users.inner.dummy.password_hash().params,
            users.inner.users["ops"].hash.password_hash().params
        );
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

    #[test]
    fn bootstrap_writes_a_private_password_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = Users::bootstrap(dir.path()).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        Users::bootstrap(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    }
}
