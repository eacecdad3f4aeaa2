//! Checking credentials: argon2id verification, the memory of credentials that
//! verified, and the bounds on what a flood of wrong passwords may cost.
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
//! - an address that failed recently goes through a narrower lane than the gate, so a
//!   flood spread over many addresses leaves room for the others;
//! - a user name that keeps failing from an address, or an address that keeps failing
//!   for any names, is refused there before any argon2 work until it has waited (see
//!   `throttle`). A name is never locked out from elsewhere, and credentials that
//!   verified recently pass from any address.
//!
//! A failure of this machinery itself (a closed semaphore, a verification that
//! panicked) is [`AuthError::Internal`]: neither the caller's fault nor a failed login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{self, PasswordHashString};
use argon2::{Argon2, PasswordVerifier};
use parking_lot::{Mutex, MutexGuard};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::basic::parse_basic;
use super::users::User;
use super::{AuthError, LoginLimits, Principal};
use crate::throttle::{ClientKey, Exhausted, Throttle, retry_after_secs};

/// How long verified credentials are remembered, and how many at most.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_MAX: usize = 4096;

pub(super) struct Verifier {
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

impl Verifier {
    pub(super) fn new(users: HashMap<String, User>, dummy: PasswordHashString) -> Verifier {
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier {
            users,
            dummy,
            cache_key: rand::random(),
            verified: Mutex::new(HashMap::new()),
            gate: Arc::new(Semaphore::new(parallelism)),
            suspects: Arc::new(Semaphore::new(parallelism.saturating_sub(1).max(1))),
            throttle: Mutex::new(Throttle::new(LoginLimits::default())),
        }
    }

    pub(super) fn set_login_limits(&self, limits: LoginLimits) {
        *self.throttle() = Throttle::new(limits);
    }

    /// The known names, sorted.
    pub(super) fn names(&self) -> Vec<&str> {
        let mut names: Vec<_> = self.users.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    pub(super) async fn authenticate(
        self: &Arc<Self>,
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
                self.admit(client, &name)?;
                let slots = self.throttle().slots(client, Instant::now());
                match slots {
                    Some(slots) => {
                        let slot = slots.acquire_owned().await.map_err(|e| {
                            AuthError::internal("waiting for the address's login slots", e)
                        })?;
                        // Those ahead in the line may have verified these very
                        // credentials, or used up the address's failures.
                        if let Some(principal) = self.remembered(&digest) {
                            return Ok(principal);
                        }
                        self.admit(client, &name)?;
                        Some(slot)
                    }
                    None => None,
                }
            }
            None => None,
        };
        let suspect = match client {
            Some(client) if self.throttle().suspect(client, Instant::now()) => Some(
                self.suspects
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| AuthError::internal("waiting for the suspects' lane", e))?,
            ),
            _ => None,
        };
        let permit = self
            .gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AuthError::internal("waiting for the verification gate", e))?;
        let verifier = self.clone();
        // What the work logs belongs to the request, under its trace id.
        let span = tracing::Span::current();
        // The permits move into the work: a client that hangs up drops this future, not
        // the argon2 run, which keeps its share of the gate until it is done. The failure
        // is counted there too, so hanging up does not escape the throttle.
        let principal = tokio::task::spawn_blocking(move || {
            let _request = span.enter();
            let held = (permit, suspect, slot);
            let verified = verifier.verify(&name, &password);
            if let (Err(AuthError::Unauthenticated), Some(client)) = (&verified, client) {
                verifier.throttle().failed(client, &name, Instant::now());
            }
            drop(held);
            verified
        })
        .await
        .map_err(|e| AuthError::internal("the password verification did not finish", e))??;
        self.remember(digest, &principal);
        Ok(principal)
    }

    /// Refuses `name` from `client` while it has used up its failed logins there, and
    /// every name from `client` while the address has used up its ceiling.
    fn admit(&self, client: ClientKey, name: &str) -> Result<(), AuthError> {
        self.throttle()
            .check(client, name, Instant::now())
            .map_err(|spent| {
                tracing::debug!(%client, user = name, "refused a login: too many failures");
                AuthError::Throttled {
                    client: client.to_string(),
                    user: match spent {
                        Exhausted::Name(_) => Some(name.to_string()),
                        Exhausted::Address(_) => None,
                    },
                    retry_after: retry_after_secs(spent.wait()),
                }
            })
    }

    fn digest(&self, name: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn remembered(&self, digest: &[u8; 32]) -> Option<Principal> {
        let verified = self.verified.lock();
        match verified.get(digest) {
            Some((principal, at)) if at.elapsed() < VERIFIED_TTL => Some(principal.clone()),
            _ => None,
        }
    }

    fn remember(&self, digest: [u8; 32], principal: &Principal) {
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        verified.insert(digest, (principal.clone(), Instant::now()));
    }

    fn throttle(&self) -> MutexGuard<'_, Throttle> {
        self.throttle.lock()
    }

    /// Only a wrong password (or an unknown name) is the caller's failure; a hash that
    /// argon2 cannot check is the controller's.
    fn verify(&self, name: &str, password: &str) -> Result<Principal, AuthError> {
        let (hash, user) = match self.users.get(name) {
            Some(user) => (user.hash.password_hash(), Some(user)),
            None => (self.dummy.password_hash(), None),
        };
        let matches = match Argon2::default().verify_password(password.as_bytes(), &hash) {
            Ok(()) => true,
            Err(password_hash::Error::Password) => false,
            Err(e) => return Err(AuthError::internal("checking a password hash", e)),
        };
        match user {
            Some(user) if matches => Ok(Principal {
                name: name.to_string(),
                permissions: user.permissions,
            }),
            _ => Err(AuthError::Unauthenticated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Permission, Users, basic_header, hash_password_with};
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
            matches!(&refused, Err(AuthError::Throttled { client, user: Some(user), retry_after: 60 }) if client == "10.0.0.1" && user == "ops"),
            "{refused:?}"
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            "too many failed logins as \"ops\" from 10.0.0.1; retry after 60 s"
        );
        // Another name at the same address (behind the same NAT) is still verified.
        assert_eq!(
            users
                .authenticate(Some(&basic_header("viewer", "wrong")), from("10.0.0.1"))
                .await,
            Err(AuthError::Unauthenticated)
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
        let gate = users.verifier.gate.clone();
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
        let throttle = users.verifier.throttle();
        let key = ClientKey::of("10.0.0.1".parse().unwrap());
        assert!(throttle.check(key, "admin", Instant::now()).is_err());
    }

    #[tokio::test]
    async fn a_closed_gate_is_the_controllers_failure_not_the_callers() {
        let users = users().with_login_limits(LoginLimits {
            burst: 1,
            interval: Duration::from_secs(60),
        });
        users.verifier.gate.close();
        for _ in 0..2 {
            let refused = users
                .authenticate(Some(&basic_header("ops", "s3cret")), from("10.0.0.1"))
                .await;
            assert!(
                matches!(refused, Err(AuthError::Internal(_))),
                "{refused:?}"
            );
        }
        // Neither attempt counted against the address.
        let key = ClientKey::of("10.0.0.1".parse().unwrap());
        assert!(
            users
                .verifier
                .throttle()
                .check(key, "ops", Instant::now())
                .is_ok()
        );
    }

    #[test]
    fn unknown_name_costs_a_real_verification() {
        let users = users();
        assert_eq!(
            users.verifier.dummy.password_hash().params,
            users.verifier.users["ops"].hash.password_hash().params
        );
    }
}
