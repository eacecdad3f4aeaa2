//! The one controller of a SQLite store: a second one on the same file would drive the
//! same tasks, so it is refused at start, naming the first.
//!
//! The claim is an `flock` on `<database>.lock`, next to the database file with symlinks
//! resolved, which the kernel drops when the process dies however it dies, so a killed
//! controller never leaves a stale claim behind. The file says who holds it, for the
//! refusal's one line. (A hard link to the database is not seen; SQLite itself does not
//! support one, its journal being named after the path.)

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{StoreError, sqlite_file};

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
    lock: Flock<File>,
}

impl SoleController {
    /// `None` for a url that is not a SQLite file (PostgreSQL, or SQLite in memory).
    /// Blocking: call it on the blocking pool.
    pub fn acquire(url: &str, who: &str) -> Result<Option<SoleController>, SoleError> {
        let Some(database) = sqlite_file(url).filter(|_| url.starts_with("sqlite:")) else {
            return Ok(None);
        };
        let database = resolved(database);
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let io = |source| StoreError::File {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(SoleError::Taken {
                    database,
                    holder: if holder.is_empty() {
                        "starting up".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno)).into()),
        };
        write_holder(&mut lock, who).map_err(io)?;
        Ok(Some(SoleController { lock }))
    }

    /// Says who holds the store, once the addresses it serves on are known.
    pub fn describe(&mut self, who: &str) -> std::io::Result<()> {
        write_holder(&mut self.lock, who)
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

fn write_holder(file: &mut File, who: &str) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(format!("{who}\n").as_bytes())
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
