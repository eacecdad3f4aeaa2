//! Agent packages: an `ocp-agent` binary of one version for one architecture, as the
//! store keeps it and upgrades push it, and what makes a version or a digest well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Millis, UnknownWord};

words!(
    /// The machines agents run on, as `uname -m` names them.
    Arch { X86_64 = "x86_64", Aarch64 = "aarch64" }
);

/// A stored package; only complete uploads are ever read as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPackage {
    pub id: i64,
    pub version: String,
    pub arch: Arch,
    /// Lowercase hex.
    pub sha256: String,
    pub size: i64,
    pub uploaded_by: String,
    pub upload_time: Millis,
}

/// The longest version accepted: a version is a label, also in file names on hosts.
pub const MAX_VERSION_CHARS: usize = 64;

/// Why a version is refused. Versions become file names beside the agent on every
/// host, so only characters that need no quoting anywhere are taken.
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty() {
        return Err("is missing: name the package's version, e.g. 4.2.1".into());
    }
    if version.chars().count() > MAX_VERSION_CHARS {
        return Err(format!("is longer than {MAX_VERSION_CHARS} characters"));
    }
    if !version.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or a digit".into());
    }
    if let Some(bad) = version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')))
    {
        return Err(format!(
            "may hold only letters, digits and . - _ +, not {bad:?}"
        ));
    }
    Ok(())
}

/// A SHA-256 digest as 64 hex digits, in lowercase; `None` for anything else.
pub fn parse_sha256(text: &str) -> Option<String> {
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_labels_safe_in_file_names() {
        for good in ["4.2.1", "4.2.1-rc1", "v4_2+build.7", "1"] {
            assert_eq!(check_version(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".4",
            "-1",
            "4.2/../x",
            "4 2",
            "4.2.1\n",
            &"9".repeat(65),
        ] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let upper = "AB".repeat(32);
        assert_eq!(parse_sha256(&upper), Some("ab".repeat(32)));
        assert_eq!(parse_sha256(&"a".repeat(63)), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
    }

    #[test]
    fn architectures_are_named_as_uname_names_them() {
        assert_eq!("aarch64".parse::<Arch>().ok(), Some(Arch::Aarch64));
        assert_eq!(Arch::X86_64.to_string(), "x86_64");
        assert!("arm64".parse::<Arch>().is_err());
    }
}
