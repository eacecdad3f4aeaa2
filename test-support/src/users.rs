//! Users files as an operator writes them: `[[users]]` tables with argon2id hashes.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// One user of a users file.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    pub name: &'a str,
    pub password: &'a str,
    /// e.g. `["HOST_MANAGER", "TASK_MANAGER"]`; empty for a user who may do nothing.
    pub permissions: &'a [&'a str],
}

/// Every permission there is: what the tests' admins get.
pub const ALL: &[&str] = &["HOST_MANAGER", "TASK_MANAGER"];

/// What a verification of the hashes costs the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// 1 MiB, one pass: the production defaults cost ~20 ms a verification, which a
    /// test does not need to pay for every user and every request.
    Cheap,
    /// argon2's defaults, as the controller's own `hash_password` uses: for tests that
    /// measure what logins cost.
    Production,
}

/// An argon2id PHC string of `password`, cheap to verify. The controller reads the
/// parameters from the string.
pub fn hash(password: &str) -> String {
    hash_with(password, Cost::Cheap)
}

/// An argon2id PHC string of `password` at `cost`.
pub fn hash_with(password: &str, cost: Cost) -> String {
    let params = match cost {
        Cost::Cheap => Params::new(1024, 1, 1, None).expect("argon2 parameters"),
        Cost::Production => Params::default(),
    };
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hash")
        .to_string()
}

/// The text of a users file holding `users`, cheap to verify.
pub fn text(users: &[User<'_>]) -> String {
    text_with(users, Cost::Cheap)
}

/// The text of a users file holding `users`, hashed at `cost`.
pub fn text_with(users: &[User<'_>], cost: Cost) -> String {
    users
        .iter()
        .map(|user| {
            let permissions: Vec<String> =
                user.permissions.iter().map(|p| format!("{p:?}")).collect();
            format!(
                "[[users]]\nname = {:?}\npassword_hash = {:?}\npermissions = [{}]\n\n",
                user.name,
                hash_with(user.password, cost),
                permissions.join(", ")
            )
        })
        .collect()
}

/// Writes `users.toml` holding `users` in `dir` (made if missing), cheap to verify;
/// its path.
pub fn write(dir: &Path, users: &[User<'_>]) -> PathBuf {
    write_with(dir, users, Cost::Cheap)
}

/// Writes `users.toml` holding `users` in `dir`, hashed at `cost`; its path. Hashing
/// at production cost takes a while: call it from a blocking thread in async tests.
pub fn write_with(dir: &Path, users: &[User<'_>], cost: Cost) -> PathBuf {
    std::fs::create_dir_all(dir).expect("users file folder");
    let path = dir.join("users.toml");
    std::fs::write(&path, text_with(users, cost)).expect("write users file");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_gets_a_table_with_its_own_salt() {
        let text = text(&[
            User {
                name: "admin",
                password: "pw",
                permissions: ALL,
            },
            User {
                name: "nobody",
                password: "pw",
                permissions: &[],
            },
        ]);
        assert_eq!(text.matches("[[users]]").count(), 2);
        assert!(text.contains("permissions = [\"HOST_MANAGER\", \"TASK_MANAGER\"]"));
        assert!(text.contains("permissions = []"));
        let hashes: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("password_hash"))
            .collect();
        assert_ne!(hashes[0], hashes[1], "salted");
        assert!(hashes[0].contains("$argon2id$v=19$m=1024,t=1,p=1$"));
    }
}
