//! Opening a log for the agent, which is often root, to read: never through a symlink,
//! never waiting on a FIFO, and only a regular file of an owner the process could not
//! have impersonated, as judged on the file actually opened.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::{TailError, unreadable};

/// Who may own a log the agent reads. A process with a `user` opens its log as that
/// user (see `child_log`), so its log is that user's and nobody else's: a file of
/// root's in its place was put there, through a folder that user controls, and is not
/// shown. A process without one writes as the agent: root or the agent's own user.
#[derive(Debug, Clone)]
pub(crate) struct Owners {
    uids: Vec<u32>,
    /// Who they are, for a refusal.
    who: &'static str,
}

impl Owners {
    /// Blocking: it reads the user database. A `user` not found there leaves nobody,
    /// so every file is refused.
    pub(crate) fn of(user: Option<&str>) -> Owners {
        match user {
            Some(name) => Owners {
                uids: nix::unistd::User::from_name(name)
                    .ok()
                    .flatten()
                    .map(|found| vec![found.uid.as_raw()])
                    .unwrap_or_default(),
                who: "the process's user, who writes it",
            },
            None => {
                let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
                uids.dedup();
                Owners {
                    uids,
                    who: "root or the agent's user, who write it",
                }
            }
        }
    }
}

/// Why a file of this type is not read, or None for a regular file.
fn not_regular(kind: FileType) -> Option<&'static str> {
    Some(if kind.is_file() {
        return None;
    } else if kind.is_symlink() {
        "is a symlink"
    } else if kind.is_fifo() {
        "is a FIFO, not a regular file"
    } else if kind.is_dir() {
        "is a directory, not a regular file"
    } else if kind.is_socket() {
        "is a socket, not a regular file"
    } else if kind.is_char_device() || kind.is_block_device() {
        "is a device, not a regular file"
    } else {
        "is not a regular file"
    })
}

/// Opens the log at `path` for reading (blocking): the one way this module opens a
/// file, the first time and after every rotation. The `lstat` first spares opening
/// what is plainly no regular file (opening a device may do something); what decides
/// is [`open_judged`], on the file actually opened.
pub(super) fn open_log(path: &Path, owners: &Owners) -> Result<(File, Metadata), TailError> {
    let seen = std::fs::symlink_metadata(path).map_err(|e| absent(path, e))?;
    if let Some(why) = not_regular(seen.file_type()) {
        return Err(refused(path, why.to_string()));
    }
    open_judged(path, owners)
}

fn refused(path: &Path, why: String) -> TailError {
    TailError::Refused {
        path: path.to_path_buf(),
        why,
    }
}

fn absent(path: &Path, e: io::Error) -> TailError {
    match e.kind() {
        io::ErrorKind::NotFound => TailError::NotYet(path.to_path_buf()),
        _ => unreadable(path, e),
    }
}

/// The open itself: the final name is not followed if it is a symlink (`O_NOFOLLOW`),
/// a FIFO does not block it (`O_NONBLOCK`), and what was opened is then judged by
/// `fstat`, which no rename after the open can change: a regular file owned by one of
/// `owners`, or refused.
fn open_judged(path: &Path, owners: &Owners) -> Result<(File, Metadata), TailError> {
    let refuse = |why: String| refused(path, why);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("is a symlink".to_string()),
            _ => absent(path, e),
        })?;
    let meta = file.metadata().map_err(|e| unreadable(path, e))?;
    if let Some(why) = not_regular(meta.file_type()) {
        return Err(refuse(why.to_string()));
    }
    // Another name of the file may be anywhere on the file system: a user who can
    // write the log folder could link a file it may not read there (without the
    // kernel's protected_hardlinks), and the owner check alone would pass root's.
    if meta.nlink() > 1 {
        return Err(refuse(format!(
            "has {} names (hard links), so it may be another file than this process's log",
            meta.nlink()
        )));
    }
    if !owners.uids.contains(&meta.uid()) {
        return Err(refuse(format!(
            "is owned by uid {}, not by {}",
            meta.uid(),
            owners.who
        )));
    }
    Ok((file, meta))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn refusal(path: &Path, owners: &Owners) -> String {
        match open_log(path, owners) {
            Err(e @ TailError::Refused { .. }) => e.to_string(),
            other => panic!("{} was not refused: {other:?}", path.display()),
        }
    }

    #[test]
    fn a_log_is_opened_only_when_it_is_a_regular_file_of_a_trusted_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owners = Owners::of(None);
        let log = dir.path().join("p.log");
        std::fs::write(&log, "a line\n").expect("write");
        let (_, meta) = open_log(&log, &owners).expect("a regular file is read");
        assert_eq!(meta.len(), 7);

        // A symlink is refused, whatever it points at.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root's secret\n").expect("write");
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&secret, &link).expect("symlink");
        let why = refusal(&link, &owners);
        assert!(why.contains("is a symlink: refusing to read it"), "{why}");

        // A FIFO is refused at once: the open neither waits for a writer nor hangs.
        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let started = std::time::Instant::now();
        let why = refusal(&fifo, &owners);
        assert!(why.contains("is a FIFO"), "{why}");
        // Also when the lstat saw a regular file and the FIFO or the symlink took its
        // place before the open: what is opened decides.
        for (path, expected) in [(&fifo, "is a FIFO"), (&link, "is a symlink")] {
            match open_judged(path, &owners) {
                Err(e @ TailError::Refused { .. }) => {
                    assert!(e.to_string().contains(expected), "{e}")
                }
                other => panic!("{} was opened: {other:?}", path.display()),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(1));

        let why = refusal(dir.path(), &owners);
        assert!(why.contains("is a directory"), "{why}");
        assert!(matches!(
            open_log(&dir.path().join("none"), &owners),
            Err(TailError::NotYet(_))
        ));
    }

    #[test]
    fn a_log_is_read_only_when_owned_by_whoever_writes_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can give a file to another user");
            return;
        }
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            eprintln!("skipped: no user nobody");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("p.log");
        std::fs::write(&log, "theirs\n").expect("write");
        std::os::unix::fs::chown(&log, Some(nobody.uid.as_raw()), None).expect("chown");
        let why = refusal(&log, &Owners::of(None));
        assert!(
            why.contains(&format!("is owned by uid {}", nobody.uid)),
            "{why}"
        );
        let why = refusal(&log, &Owners::of(Some("nosuch-ocp-user")));
        assert!(why.contains("is owned by uid"), "{why}");
        open_log(&log, &Owners::of(Some("nobody"))).expect("the process's user's file");

        // Root's file where a process with a user keeps its log was put there.
        std::os::unix::fs::chown(&log, Some(0), None).expect("chown");
        let why = refusal(&log, &Owners::of(Some("nobody")));
        assert!(
            why.contains("is owned by uid 0, not by the process's user"),
            "{why}"
        );
    }
}
