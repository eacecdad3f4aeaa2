//! Whether a file that says what a binary may do can be believed: it, and every folder
//! on the way to it, is owned by root or by the user the binary runs as, and writable
//! by nobody else (sshd's StrictModes). Both binaries judge their config, users and TLS
//! files by it before they read them.
//!
//! The agent runs as root and runs what its config names: a config that another user
//! could write (mode 0666, or a folder above it that user owns) makes that user root on
//! the host. A folder writable by all but sticky and owned by root (`/tmp`) passes:
//! nobody may rename or remove there what they do not own.
//!
//! The path is walked as the kernel resolves it, one component at a time, and every
//! folder passed through is judged, those holding a symlink met on the way included:
//! whoever may write such a folder may point the link elsewhere. Once all of them
//! pass, nobody else can change what the path names between the check and the read.
//! Blocking: callers run it on the blocking pool or before they serve.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StrictError {
    #[error("{} is not trusted: {}", file.display(), self.reason())]
    Untrusted {
        file: PathBuf,
        culprit: PathBuf,
        why: &'static str,
        mode: u32,
        owner: u32,
        me: u32,
    },
    #[error("cannot check who may write {}: {}: {error}", file.display(), culprit.display())]
    Unreadable {
        file: PathBuf,
        culprit: PathBuf,
        error: std::io::Error,
    },
}

impl StrictError {
    /// The file's own I/O error (missing, say), for a caller that reports it as it
    /// reports a failed read; anything else stays this error, which names its folder.
    pub fn into_unreadable_file(self) -> Result<std::io::Error, StrictError> {
        match self {
            StrictError::Unreadable {
                file,
                culprit,
                error,
            } if file == culprit => Ok(error),
            other => Err(other),
        }
    }

    /// What is wrong and how to fix it, without the file's name: for a message that
    /// already names it.
    pub fn reason(&self) -> String {
        match self {
            StrictError::Untrusted {
                file,
                culprit,
                why,
                mode,
                owner,
                me,
            } => {
                let which = if culprit == file {
                    "it".to_string()
                } else {
                    format!("its folder {}", culprit.display())
                };
                format!(
                    "{which} {why} (mode {mode:04o}, owner uid {owner}); the file and every \
                     folder above it must be owned by root or by uid {me} (this process's \
                     user) and writable by no one else (chown, chmod go-w)"
                )
            }
            StrictError::Unreadable { culprit, error, .. } => {
                format!("cannot check who may write {}: {error}", culprit.display())
            }
        }
    }
}

/// What judging one file or folder needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub owner: u32,
    pub mode: u32,
    pub dir: bool,
}

/// Why `entry` makes what lies in or below it untrustworthy to a process of uid `me`;
/// `None` when it does not.
pub fn judge(entry: Entry, me: u32) -> Option<&'static str> {
    if entry.owner != 0 && entry.owner != me {
        return Some("is owned by another user");
    }
    let sticky_root_dir = entry.dir && entry.owner == 0 && entry.mode & 0o1000 != 0;
    if entry.mode & 0o022 != 0 && !sticky_root_dir {
        return Some(if entry.mode & 0o002 != 0 {
            "may be written by others"
        } else {
            "may be written by its group"
        });
    }
    None
}

/// Refuses `file` unless it and every folder above it pass [`judge`] for this process.
pub fn check(file: &Path) -> Result<(), StrictError> {
    let me = nix::unistd::geteuid().as_raw();
    let unreadable = |culprit: &Path, error| StrictError::Unreadable {
        file: file.to_path_buf(),
        culprit: culprit.to_path_buf(),
        error,
    };
    for path in resolution(file).map_err(|(at, e)| unreadable(&at, e))? {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| unreadable(&path, e))?;
        let entry = Entry {
            owner: meta.uid(),
            mode: meta.mode() & 0o7777,
            dir: meta.is_dir(),
        };
        if let Some(why) = judge(entry, me) {
            return Err(StrictError::Untrusted {
                file: file.to_path_buf(),
                culprit: path,
                why,
                mode: entry.mode,
                owner: entry.owner,
                me,
            });
        }
    }
    Ok(())
}

/// Symlinks followed at most, as the kernel's own limit.
const MAX_LINKS: usize = 40;

/// What the kernel passes through to reach `file`, one component at a time: every
/// folder (those that hold a symlink met on the way included, since whoever may write
/// one may point the link elsewhere), then the file itself. The error names where the
/// walk stopped.
fn resolution(file: &Path) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let start = std::path::absolute(file).map_err(|e| (file.to_path_buf(), e))?;
    let mut todo: VecDeque<PathBuf> = VecDeque::new();
    push_front(&mut todo, &start);
    let mut here = PathBuf::from("/");
    let mut passed = vec![here.clone()];
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        match part.components().next() {
            Some(Component::RootDir) => here = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                here.pop();
            }
            Some(Component::Normal(name)) => {
                let next = here.join(name);
                let meta = std::fs::symlink_metadata(&next).map_err(|e| (next.clone(), e))?;
                if meta.file_type().is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err((next, nix::errno::Errno::ELOOP.into()));
                    }
                    let target = std::fs::read_link(&next).map_err(|e| (next.clone(), e))?;
                    push_front(&mut todo, &target);
                } else {
                    here = next;
                    passed.push(here.clone());
                }
            }
            _ => {}
        }
    }
    passed.dedup();
    Ok(passed)
}

/// `path`'s components, to be walked before what `todo` holds.
fn push_front(todo: &mut VecDeque<PathBuf>, path: &Path) {
    for part in path.components().rev() {
        todo.push_front(PathBuf::from(part.as_os_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(owner: u32, mode: u32) -> Entry {
        Entry {
            owner,
            mode,
            dir: false,
        }
    }

    fn dir(owner: u32, mode: u32) -> Entry {
        Entry {
            owner,
            mode,
            dir: true,
        }
    }

    #[test]
    fn root_or_my_own_and_written_by_no_one_else() {
        assert_eq!(judge(file(0, 0o644), 0), None);
        assert_eq!(judge(file(0, 0o640), 999), None, "root's, read by my group");
        assert_eq!(judge(file(999, 0o600), 999), None);
        assert_eq!(
            judge(file(65534, 0o644), 0),
            Some("is owned by another user")
        );
        assert_eq!(judge(file(0, 0o666), 0), Some("may be written by others"));
        assert_eq!(
            judge(file(0, 0o664), 0),
            Some("may be written by its group")
        );
        assert_eq!(judge(dir(0, 0o755), 0), None);
        assert_eq!(judge(dir(0, 0o777), 0), Some("may be written by others"));
    }

    #[test]
    fn a_sticky_folder_writable_by_all_passes_only_as_roots() {
        assert_eq!(judge(dir(0, 0o1777), 0), None, "/tmp");
        assert_eq!(
            judge(dir(1000, 0o1777), 1000),
            Some("may be written by others"),
            "a user's sticky folder: its owner may still replace what is in it"
        );
        assert_eq!(
            judge(file(0, 0o1666), 0),
            Some("may be written by others"),
            "a sticky bit on a file means nothing"
        );
    }

    #[test]
    fn a_folder_above_the_file_is_judged_too() {
        let root = tempfile::tempdir().expect("tempdir");
        let folder = root.path().join("etc");
        std::fs::create_dir(&folder).expect("folder");
        let config = folder.join("agent.toml");
        std::fs::write(&config, "").expect("config");
        use std::os::unix::fs::PermissionsExt;
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        chmod(&config, 0o644);
        chmod(&folder, 0o755);
        check(&config).expect("a file of mine, written by me only");

        chmod(&folder, 0o777);
        let e = check(&config).expect_err("a folder anyone may write");
        let said = e.to_string();
        assert!(
            said.contains(&folder.display().to_string())
                && said.contains("may be written by others")
                && said.contains("mode 0777"),
            "{said}"
        );
        chmod(&folder, 0o755);

        // A symlink to it from a folder anyone may write: judged as written, too.
        let open = root.path().join("open");
        std::fs::create_dir(&open).expect("open");
        chmod(&open, 0o777);
        let link = open.join("agent.toml");
        std::os::unix::fs::symlink(&config, &link).expect("symlink");
        assert!(check(&link).is_err(), "the link's folder is anyone's");

        // A chain: a link in a trusted folder to a link in an open one, to the file.
        let trusted = root.path().join("trusted");
        std::fs::create_dir(&trusted).expect("trusted");
        chmod(&trusted, 0o755);
        let first = trusted.join("agent.toml");
        std::os::unix::fs::symlink(&link, &first).expect("symlink");
        let e = check(&first).expect_err("the middle link's folder is anyone's");
        assert!(e.to_string().contains(&open.display().to_string()), "{e}");
        // Relative links and `..` are walked as the kernel does.
        let relative = trusted.join("relative.toml");
        std::os::unix::fs::symlink("../etc/agent.toml", &relative).expect("symlink");
        check(&relative).expect("through trusted folders only");
        let loop_link = trusted.join("loop");
        std::os::unix::fs::symlink("loop", &loop_link).expect("symlink");
        assert!(matches!(
            check(&loop_link),
            Err(StrictError::Unreadable { .. })
        ));
    }

    #[test]
    fn the_walk_passes_every_folder_once_and_ends_at_the_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let real = root.path().join("real");
        std::fs::create_dir_all(real.join("sub")).expect("dirs");
        std::fs::write(real.join("sub/f"), "").expect("file");
        let via = root.path().join("via");
        std::os::unix::fs::symlink("real/sub", &via).expect("symlink");
        let walked = resolution(&via.join("../sub/f")).expect("walk");
        assert_eq!(walked.first(), Some(&PathBuf::from("/")));
        assert_eq!(walked.last(), Some(&real.join("sub/f")));
        assert!(
            walked.contains(&root.path().to_path_buf()),
            "the link's folder"
        );
        assert!(walked.contains(&real.join("sub")));
    }
}
