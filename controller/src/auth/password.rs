//! Passwords at rest: argon2id hashes for the users file, and the bootstrap admin's
//! random password kept in the data dir.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHashString, SaltString};
use argon2::{Argon2, PasswordHasher};

use super::UsersError;

/// An argon2id PHC string of `password` with the default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    Ok(hash_with(password, argon2::Params::default())?.to_string())
}

/// An argon2id PHC string with explicit parameters, for tests that cannot afford the
/// production cost on every user.
pub fn hash_password_with(password: &str, params: argon2::Params) -> Result<String, UsersError> {
    Ok(hash_with(password, params)?.to_string())
}

pub(super) fn hash_with(
    password: &str,
    params: argon2::Params,
) -> Result<PasswordHashString, UsersError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| UsersError::Hash(e.to_string()))?;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| UsersError::Hash(e.to_string()))?;
    Ok(hash.serialize())
}

pub(super) fn random_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// The password in `<data_dir>/admin-password`, made and written (mode 0600) when the
/// file is missing or empty, and the file's path. The file is reused on the next start
/// so the password does not change under an operator's feet.
pub(super) fn bootstrap_password(data_dir: &Path) -> Result<(String, PathBuf), UsersError> {
    let path = data_dir.join("admin-password");
    let file_error = |error| UsersError::PasswordFile {
        path: path.clone(),
        error,
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
    Ok((password, path))
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

    #[test]
    fn bootstrap_writes_a_private_password_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = bootstrap_password(dir.path()).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        bootstrap_password(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    }
}
