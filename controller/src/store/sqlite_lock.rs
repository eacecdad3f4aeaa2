//! The one controller of a SQLite store: a second one on the same file would drive the
//! same tasks, so it is refused at start, naming the first.
//!
//! The claim is an `flock` on the database file itself, so it is keyed by the file's
//! device and inode, not by any of its names: a second controller given a symlink, a
//! path through `..` or a hard link to the database finds it taken. (SQLite's own
//! locks are `fcntl` locks, which do not meet `flock`s on a local file system.) The
//! kernel drops the claim when the process dies however it dies, so a killed controller
//! never leaves a stale one behind. `<database>.lock`, beside the database with symlinks
//! resolved, says who holds it, for the refusal's one line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{StoreError, sqlite_file, url_params};

#[derive(Debug, thiserror::Error)]
pub enum SoleError {
    #[error(
        "another ocp-controller ({holder}) already uses the SQLite store {}; a SQLite store \
         serves one controller: stop that one, or give every controller one PostgreSQL \
         database (--database-url postgres://...)",
        database.display()
    )]
    Taken { database: PathBuf, holder: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Held for as long as this controller runs.
pub struct SoleController {
    _claim: Flock<File>,
    /// `<database>.lock`: who holds the claim.
    holder: File,
    /// The database file's device and inode, written with the holder's words so that
    /// words left beside another name of another file are not believed.
    file_id: String,
}

impl SoleController {
    /// `None` for a url that is not a SQLite file (PostgreSQL, or SQLite in memory).
    /// Blocking: call it on the blocking pool.
    pub fn acquire(url: &str, who: &str) -> Result<Option<SoleController>, SoleError> {
        let Some(database) = sqlite_file(url).filter(|_| url.starts_with("sqlite:")) else {
            return Ok(None);
        };
        let database = resolved(database);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| StoreError::File { path, error }
        };
        if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        // Created here when SQLite would create it, and as it would be made (0600), so
        // that there is a file to claim.
        let create = url_params(url).any(|p| p == "mode=rwc");
        let file = OpenOptions::new()
            .read(true)
            .create(create)
            .append(create)
            .mode(0o600)
            .open(&database)
            .map_err(io(&database))?;
        let holder_path = lock_file(&database);
        let file_id = file_id(&file).map_err(io(&database))?;
        // No connection of this process has the database open yet, so dropping this
        // descriptor on a refusal releases no lock of SQLite's.
        let claim = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(claim) => claim,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(SoleError::Taken {
                    holder: holder_of(&holder_path, &file_id),
                    database,
                });
            }
            Err((_, errno)) => return Err(io(&database)(std::io::Error::from(errno)).into()),
        };
        let mut holder = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&holder_path)
            .map_err(io(&holder_path))?;
        write_holder(&mut holder, who, &file_id).map_err(io(&holder_path))?;
        Ok(Some(SoleController {
            _claim: claim,
            holder,
            file_id,
        }))
    }

    /// Says who holds the store, once the addresses it serves on are known.
    pub fn describe(&mut self, who: &str) -> std::io::Result<()> {
        write_holder(&mut self.holder, who, &self.file_id)
    }
}

/// "device 8:1 inode 1234": which file the database is, whatever its name.
fn file_id(file: &File) -> std::io::Result<String> {
    let meta = file.metadata()?;
    Ok(format!(
        "device {}:{} inode {}",
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
        meta.ino()
    ))
}

fn lock_file(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Who holds the claim, as its lock file beside this name of the database says when it
/// names this very file; a holder that reached the file by another name (a hard link)
/// left its words beside that one, and one that is only starting has written none yet.
fn holder_of(lock_file: &Path, file_id: &str) -> String {
    let mut text = String::new();
    let _ = File::open(lock_file).and_then(|mut f| f.read_to_string(&mut text));
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(who), Some(id)) if id == file_id && !who.is_empty() => who.to_string(),
        _ => format!("starting up, or through another name of the same file, {file_id}"),
    }
}

/// The file itself, wherever it is named from: a second controller given a symlink to
/// the database, or a path through `..`, must find the same lock. A database not
/// created yet is resolved through its folder.
fn resolved(database: PathBuf) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(&database) {
        return real;
    }
    match (database.parent(), database.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            std::fs::canonicalize(dir).map_or(database.clone(), |dir| dir.join(name))
        }
        _ => database,
    }
}

/// Written over the old words, then cut to length: a reader never finds it empty.
fn write_holder(file: &mut File, who: &str, file_id: &str) -> std::io::Result<()> {
    let text = format!("{who}\n{file_id}\n");
    file.rewind()?;
    file.write_all(text.as_bytes())?;
    file.set_len(text.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    #[test]
    fn a_store_reached_through_a_symlink_is_the_same_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let db = real.join("controller.db");
        std::fs::write(&db, b"").unwrap();
        let first = SoleController::acquire(&url(&db), "pid 1").expect("first");
        assert!(first.is_some());

        let link = other.join("controller.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        match SoleController::acquire(&url(&link), "pid 2") {
            Err(SoleError::Taken { holder, .. }) => assert_eq!(holder, "pid 1"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second controller got the store through a symlink"),
        }
        let relative = format!("sqlite:{}/../real/controller.db", other.display());
        assert!(matches!(
            SoleController::acquire(&relative, "pid 3"),
            Err(SoleError::Taken { .. })
        ));
    }

    #[test]
    fn a_store_reached_through_a_hard_link_is_the_same_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("controller.db");
        let first = SoleController::acquire(&url(&db), "pid 1").expect("first");
        assert!(first.is_some());
        let other = dir.path().join("elsewhere");
        std::fs::create_dir_all(&other).unwrap();
        let link = other.join("copy.db");
        std::fs::hard_link(&db, &link).unwrap();
        match SoleController::acquire(&url(&link), "pid 2") {
            Err(SoleError::Taken { holder, .. }) => assert!(
                holder
                    .starts_with("starting up, or through another name of the same file, device "),
                "{holder}"
            ),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second controller got the store through a hard link"),
        }
        drop(first);
        assert!(
            SoleController::acquire(&url(&link), "pid 2")
                .expect("free once the first is gone")
                .is_some()
        );
    }

    #[test]
    fn a_store_not_created_yet_is_claimed_where_it_will_be() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("new").join("controller.db");
        let first = SoleController::acquire(&url(&db), "pid 1").expect("first");
        assert!(first.is_some());
        assert!(matches!(
            SoleController::acquire(&url(&db), "pid 2"),
            Err(SoleError::Taken { .. })
        ));
    }
}
