//! The agent versions this host holds, under `<data-dir>/versions/`, and which one
//! the agent starts from:
//!
//! - `<version>/ocp-agent` and `<version>/sha256`: a binary and its digest;
//! - `committed`: the version the agent starts from after a crash or a reboot (none:
//!   the installed binary, as the service unit names it);
//! - `previous`: the version committed before it, kept so that an upgrade can be
//!   undone;
//! - `trial`: `<version> <until, Unix ms> <committed version>` while a switched-to
//!   version waits for its commit;
//! - `last-error`: why the last version on trial was left.
//!
//! The folder is the data dir's, 0700 and refused when another user could write it,
//! since the agent runs what it holds as root. What to start and what to remove are
//! decided by the pure functions at the end, so that they are unit-tested.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::data_dir::{
    DataDirError, io_err, private_dir, read_optional, remove_if_exists, sync_dir, write_atomic,
};

/// The binary's name inside each version's folder.
pub const BINARY: &str = "ocp-agent";
/// How files of transfers under way begin.
const INCOMING: &str = ".incoming-";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error(
        "a version must be 1 to 64 of A-Z a-z 0-9 . _ - +, starting with a letter or a digit, not {0:?}"
    )]
    Invalid(String),
}

/// A version's name is a folder's: nothing that could climb out of `versions/`.
pub fn check_label(label: &str) -> Result<(), LabelError> {
    let fits = (1..=64).contains(&label.len())
        && label.starts_with(|c: char| c.is_ascii_alphanumeric())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if fits {
        Ok(())
    } else {
        Err(LabelError::Invalid(label.to_string()))
    }
}

/// A version on trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub version: String,
    /// Unix ms after which it is left unless committed.
    pub until_ms: i64,
    /// The version to go back to.
    pub committed: String,
}

impl Trial {
    fn parse(text: &str) -> Option<Trial> {
        let mut parts = text.split_whitespace();
        let trial = Trial {
            version: parts.next()?.to_string(),
            until_ms: parts.next()?.parse().ok()?,
            committed: parts.next()?.to_string(),
        };
        (check_label(&trial.version).is_ok() && check_label(&trial.committed).is_ok())
            .then_some(trial)
    }
}

/// The `versions/` folder; blocking, like the rest of the data dir's files.
#[derive(Debug, Clone)]
pub struct Versions {
    root: PathBuf,
}

impl Versions {
    pub fn open(data_dir: &Path) -> Result<Versions, DataDirError> {
        let root = data_dir.join("versions");
        private_dir(&root)?;
        Ok(Versions { root })
    }

    pub fn binary(&self, version: &str) -> PathBuf {
        self.root.join(version).join(BINARY)
    }

    /// The sha256 of a held version; `None` when it is not held.
    pub fn held_sha256(&self, version: &str) -> Result<Option<String>, DataDirError> {
        if !self.binary(version).is_file() {
            return Ok(None);
        }
        Ok(read_optional(&self.root.join(version).join("sha256"))?.map(|s| s.trim().to_string()))
    }

    /// Held versions, newest first.
    pub fn held(&self) -> Result<Vec<String>, DataDirError> {
        let entries = std::fs::read_dir(&self.root).map_err(io_err(&self.root))?;
        let mut held: Vec<(SystemTime, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                check_label(&name).ok()?;
                let meta = std::fs::metadata(entry.path().join(BINARY)).ok()?;
                Some((meta.modified().ok()?, name))
            })
            .collect();
        held.sort_by(|a, b| b.cmp(a));
        Ok(held.into_iter().map(|(_, name)| name).collect())
    }

    /// A file in the folder, for a new version's bytes on their way in; its own, so that
    /// a transfer whose caller went away cannot collide with the next one.
    pub fn incoming(&self, version: &str) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(format!("{INCOMING}{version}.{}.{n}", std::process::id()))
    }

    /// Removes what transfers of an earlier run left half written.
    pub fn clear_incoming(&self) -> Result<(), DataDirError> {
        let entries = std::fs::read_dir(&self.root).map_err(io_err(&self.root))?;
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with(INCOMING) {
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Moves a checked binary into place as `version`.
    pub fn install(
        &self,
        incoming: &Path,
        version: &str,
        sha256: &str,
    ) -> Result<(), DataDirError> {
        let dir = self.root.join(version);
        private_dir(&dir)?;
        write_atomic(&dir.join("sha256"), &format!("{sha256}\n"), true)?;
        std::fs::set_permissions(incoming, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(incoming))?;
        let binary = dir.join(BINARY);
        std::fs::rename(incoming, &binary).map_err(io_err(&binary))?;
        sync_dir(&dir).map_err(io_err(&dir))
    }

    /// Copies the binary this process runs into the folder as `version`, unless held,
    /// so that a switch away from it can come back.
    pub fn keep_running_binary(&self, version: &str) -> Result<(), DataDirError> {
        if self.binary(version).is_file() {
            return Ok(());
        }
        let exe = std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe")))?;
        let incoming = self.incoming(version);
        remove_if_exists(&incoming)?;
        std::fs::copy(&exe, &incoming).map_err(io_err(&incoming))?;
        let sha256 = sha256_file(&incoming)?;
        self.install(&incoming, version, &sha256)
    }

    pub fn committed(&self) -> Result<Option<String>, DataDirError> {
        Ok(read_optional(&self.root.join("committed"))?
            .map(|s| s.trim().to_string())
            .filter(|s| check_label(s).is_ok()))
    }

    /// Makes `version` the one the agent starts from, ends any trial and removes the
    /// versions no longer kept.
    pub fn commit(&self, version: &str) -> Result<(), DataDirError> {
        let before = self.committed()?;
        if let Some(before) = before.as_deref().filter(|b| *b != version) {
            write_atomic(&self.root.join("previous"), &format!("{before}\n"), true)?;
        }
        write_atomic(&self.root.join("committed"), &format!("{version}\n"), true)?;
        self.end_trial()?;
        let previous = read_optional(&self.root.join("previous"))?.map(|s| s.trim().to_string());
        for stale in to_remove(&self.held()?, version, previous.as_deref()) {
            let dir = self.root.join(&stale);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove an old agent version");
            }
        }
        Ok(())
    }

    pub fn trial(&self) -> Result<Option<Trial>, DataDirError> {
        Ok(read_optional(&self.root.join("trial"))?.and_then(|t| Trial::parse(&t)))
    }

    pub fn begin_trial(&self, trial: &Trial) -> Result<(), DataDirError> {
        let text = format!("{} {} {}\n", trial.version, trial.until_ms, trial.committed);
        write_atomic(&self.root.join("trial"), &text, true)
    }

    pub fn end_trial(&self) -> Result<(), DataDirError> {
        remove_if_exists(&self.root.join("trial"))?;
        sync_dir(&self.root).map_err(io_err(&self.root))
    }

    pub fn last_error(&self) -> Result<String, DataDirError> {
        Ok(read_optional(&self.root.join("last-error"))?
            .map(|s| s.trim().to_string())
            .unwrap_or_default())
    }

    /// An empty `why` clears it.
    pub fn set_last_error(&self, why: &str) -> Result<(), DataDirError> {
        let path = self.root.join("last-error");
        if why.is_empty() {
            return remove_if_exists(&path);
        }
        write_atomic(&path, &format!("{why}\n"), true)
    }
}

fn sha256_file(path: &Path) -> Result<String, DataDirError> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which held versions a commit of `committed` removes: every one but it, the one
/// committed before it, and the newest other (`held` is newest first), so that the
/// last two versions besides the running one stay to go back to.
pub fn to_remove(held: &[String], committed: &str, previous: Option<&str>) -> Vec<String> {
    let mut others_kept = 0;
    held.iter()
        .filter(|v| {
            if v.as_str() == committed || Some(v.as_str()) == previous {
                return false;
            }
            others_kept += 1;
            others_kept > 1
        })
        .cloned()
        .collect()
}

/// What a cold start (not a handover from an earlier image) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Run this binary, as `version`.
    Run { version: String },
    /// Replace this binary with the committed one before anything else.
    Exec { version: String },
}

/// `running`: the version this binary was started as, if the agent's own exec said
/// so; `configured`: the config's version; `committed_held`: whether the committed
/// version's binary is there.
pub fn boot(
    running: Option<&str>,
    configured: &str,
    committed: Option<&str>,
    committed_held: bool,
) -> Boot {
    match (committed, running) {
        (Some(committed), Some(running)) if committed == running => Boot::Run {
            version: running.to_string(),
        },
        (Some(committed), None) if committed == configured => Boot::Run {
            version: configured.to_string(),
        },
        (Some(committed), _) if committed_held => Boot::Exec {
            version: committed.to_string(),
        },
        (_, running) => Boot::Run {
            version: running.unwrap_or(configured).to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn labels_cannot_climb_out_of_the_folder() {
        for good in ["4.2.1", "4.2.1-rc_1+b7", "a"] {
            assert_eq!(check_label(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_commit_keeps_itself_the_one_before_and_the_newest_other() {
        let held = v(&["5", "4", "3", "2", "1"]);
        assert_eq!(to_remove(&held, "4", Some("2")), v(&["3", "1"]));
        assert_eq!(to_remove(&held, "5", None), v(&["3", "2", "1"]));
        assert_eq!(to_remove(&v(&["2", "1"]), "2", Some("1")), v(&[]));
    }

    #[test]
    fn a_cold_start_runs_the_committed_version() {
        assert_eq!(
            boot(None, "4.2.0", None, false),
            Boot::Run {
                version: "4.2.0".into()
            }
        );
        assert_eq!(
            boot(None, "4.2.0", Some("5.0"), true),
            Boot::Exec {
                version: "5.0".into()
            }
        );
        assert_eq!(
            boot(None, "4.2.0", Some("4.2.0"), true),
            Boot::Run {
                version: "4.2.0".into()
            }
        );
        assert_eq!(
            boot(Some("5.0"), "4.2.0", Some("5.0"), true),
            Boot::Run {
                version: "5.0".into()
            }
        );
        // A systemd restart after a crash on trial: the installed binary execs the
        // committed one, not the one on trial.
        assert_eq!(
            boot(Some("6.0"), "4.2.0", Some("5.0"), true),
            Boot::Exec {
                version: "5.0".into()
            }
        );
        // The committed binary went missing: say what runs, rather than refuse to start.
        assert_eq!(
            boot(None, "4.2.0", Some("5.0"), false),
            Boot::Run {
                version: "4.2.0".into()
            }
        );
    }

    #[test]
    fn a_trial_file_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let versions = Versions::open(dir.path()).expect("open");
        assert_eq!(versions.trial().expect("read"), None);
        let trial = Trial {
            version: "5.0".into(),
            until_ms: 1234,
            committed: "4.2".into(),
        };
        versions.begin_trial(&trial).expect("write");
        assert_eq!(versions.trial().expect("read"), Some(trial));
        versions.end_trial().expect("end");
        assert_eq!(versions.trial().expect("read"), None);
    }
}
