//! The controller cluster this agent belongs to: the id each controller call carries,
//! the pin kept in the data dir, and the check every call goes through.
//!
//! Two controller clusters (two stores) driving one host would undo each other's
//! operations and each believe its own view. So the first cluster whose call acts on
//! processes is recorded, and a call carrying another cluster's id is refused until the
//! host is deleted from the first (its controller calls ReleaseCluster) or the operator
//! runs `ocp-agent forget-cluster` on the host. Reads pin nothing: a heartbeat still out
//! when its host is deleted must not pin the agent back to the cluster that let it go.
//! A call without the metadata, as an operator's grpcurl makes, is neither pinned nor
//! refused here.

use std::path::{Path, PathBuf};

use tonic::metadata::MetadataMap;
use tracing::info;

use crate::data_dir::{ClusterFile, DataDirError};

/// The gRPC metadata key a controller puts its cluster's id under.
pub const METADATA_KEY: &str = "ocp-cluster-id";
/// Longer than any id a controller makes, short enough for one log line.
const MAX_ID_LEN: usize = 64;

/// One controller cluster's id: letters, digits, '-', '_' and '.', at most 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterId(String);

impl ClusterId {
    pub fn parse(text: &str) -> Option<ClusterId> {
        let fits = !text.is_empty()
            && text.len() <= MAX_ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        fits.then(|| ClusterId(text.to_string()))
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "{METADATA_KEY} {0:?} is not a cluster id: use 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.'"
    )]
    BadId(String),
    #[error(
        "this agent belongs to controller cluster {pinned}; this controller is of cluster {caller}; \
         delete the host from cluster {pinned}, or run `ocp-agent forget-cluster --data-dir {}` on the host",
        data_dir.display()
    )]
    OtherCluster {
        pinned: ClusterId,
        caller: ClusterId,
        data_dir: PathBuf,
    },
    #[error("ReleaseCluster names no cluster: send the caller's id as {METADATA_KEY} metadata")]
    NoCaller,
    #[error("{path}: {text:?} is not a controller cluster id; run `ocp-agent forget-cluster --data-dir {}`", data_dir.display())]
    BadPin {
        path: PathBuf,
        text: String,
        data_dir: PathBuf,
    },
    #[error(transparent)]
    File(#[from] DataDirError),
}

/// What a call gets, given the pin and the caller's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// Serve, once the caller's cluster is recorded as the agent's.
    Pin,
    /// The agent belongs to this other cluster.
    Refuse(ClusterId),
}

/// Whether a call whose caller is of cluster `caller` (`None` without the metadata) is
/// served by an agent pinned to `pinned`; `acts` for a call that changes processes.
pub fn decide(pinned: Option<&ClusterId>, caller: Option<&ClusterId>, acts: bool) -> Verdict {
    match (pinned, caller) {
        (_, None) => Verdict::Serve,
        (None, Some(_)) if acts => Verdict::Pin,
        (None, Some(_)) => Verdict::Serve,
        (Some(pinned), Some(caller)) if pinned == caller => Verdict::Serve,
        (Some(pinned), Some(_)) => Verdict::Refuse(pinned.clone()),
    }
}

/// The caller's cluster, from the call's metadata.
fn caller(meta: &MetadataMap) -> Result<Option<ClusterId>, ClusterError> {
    let Some(value) = meta.get(METADATA_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    ClusterId::parse(text)
        .map(Some)
        .ok_or_else(|| ClusterError::BadId(String::from_utf8_lossy(value.as_bytes()).into()))
}

/// Reads the pin, as the agent does at its start. Blocking.
pub fn read_pin(file: &ClusterFile, data_dir: &Path) -> Result<Option<ClusterId>, ClusterError> {
    match file.read()? {
        None => Ok(None),
        Some(text) => ClusterId::parse(&text)
            .map(Some)
            .ok_or_else(|| ClusterError::BadPin {
                path: file.path().to_path_buf(),
                text,
                data_dir: data_dir.to_path_buf(),
            }),
    }
}

/// The agent's pin: in memory, and in the data dir's `cluster` file.
pub struct ClusterPin {
    file: ClusterFile,
    /// As the refusal names it, for the operator to paste.
    data_dir: PathBuf,
    /// Held while the pin is written, so that two clusters cannot both win it.
    pinned: tokio::sync::Mutex<Option<ClusterId>>,
}

impl ClusterPin {
    pub fn new(file: ClusterFile, data_dir: PathBuf, pinned: Option<ClusterId>) -> ClusterPin {
        ClusterPin {
            file,
            data_dir,
            pinned: tokio::sync::Mutex::new(pinned),
        }
    }

    /// Lets the call through, pinning the agent to the caller's cluster first when the
    /// call `acts` and the agent belongs to none, or refuses it.
    pub async fn admit(&self, meta: &MetadataMap, acts: bool) -> Result<(), ClusterError> {
        let Some(caller) = caller(meta)? else {
            return Ok(());
        };
        let mut pinned = self.pinned.lock().await;
        // `ocp-agent forget-cluster` may have removed the file since it was read: a
        // refusal, and a call that acts (rare, and slow anyway), read it again, so that
        // the next cluster to act owns the agent, on disk as in memory.
        if acts
            || matches!(
                decide(pinned.as_ref(), Some(&caller), acts),
                Verdict::Refuse(_)
            )
        {
            *pinned = read_pin_async(&self.file, &self.data_dir).await?;
        }
        match decide(pinned.as_ref(), Some(&caller), acts) {
            Verdict::Serve => Ok(()),
            Verdict::Pin => {
                self.file.write(&caller.0).await?;
                info!("this agent now belongs to controller cluster {caller}");
                *pinned = Some(caller);
                Ok(())
            }
            Verdict::Refuse(pinned) => Err(ClusterError::OtherCluster {
                pinned,
                caller,
                data_dir: self.data_dir.clone(),
            }),
        }
    }

    /// Forgets the pin if it is the caller's cluster; whether it did.
    pub async fn release(&self, meta: &MetadataMap) -> Result<bool, ClusterError> {
        let caller = caller(meta)?.ok_or(ClusterError::NoCaller)?;
        let mut pinned = self.pinned.lock().await;
        if pinned.as_ref() != Some(&caller) {
            return Ok(false);
        }
        self.file.remove().await?;
        *pinned = None;
        info!("released by controller cluster {caller}: this agent belongs to no cluster now");
        Ok(true)
    }
}

async fn read_pin_async(
    file: &ClusterFile,
    data_dir: &Path,
) -> Result<Option<ClusterId>, ClusterError> {
    let (file, data_dir) = (file.clone(), data_dir.to_path_buf());
    let path = file.path().to_path_buf();
    tokio::task::spawn_blocking(move || read_pin(&file, &data_dir))
        .await
        .map_err(|error| DataDirError::Unfinished { path, error })?
}

/// `ocp-agent forget-cluster`: removes the pin of the agent whose data dir is
/// `data_dir`, running or not; the cluster it named, if any. Blocking.
pub fn forget(data_dir: &Path) -> Result<Option<String>, ClusterError> {
    // Not created: a mistyped --data-dir must say so, not succeed on a new folder.
    std::fs::metadata(data_dir).map_err(|error| DataDirError::Io {
        path: data_dir.to_path_buf(),
        error,
    })?;
    let file = ClusterFile::in_data_dir(data_dir);
    let pinned = file.read()?;
    if pinned.is_some() {
        file.remove_blocking()?;
    }
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> ClusterId {
        ClusterId::parse(text).expect("an id")
    }

    fn meta(value: &str) -> MetadataMap {
        let mut meta = MetadataMap::new();
        meta.insert(METADATA_KEY, value.parse().expect("ascii"));
        meta
    }

    #[test]
    fn the_first_cluster_that_acts_pins_and_another_is_refused() {
        let (a, b) = (id("a"), id("b"));
        assert_eq!(decide(None, None, true), Verdict::Serve);
        assert_eq!(decide(Some(&a), None, true), Verdict::Serve, "grpcurl");
        assert_eq!(decide(None, Some(&a), false), Verdict::Serve, "a read");
        assert_eq!(decide(None, Some(&a), true), Verdict::Pin);
        assert_eq!(decide(Some(&a), Some(&a), true), Verdict::Serve);
        assert_eq!(decide(Some(&a), Some(&b), true), Verdict::Refuse(a.clone()));
        assert_eq!(decide(Some(&a), Some(&b), false), Verdict::Refuse(a));
    }

    #[test]
    fn an_id_is_short_and_plain() {
        assert!(ClusterId::parse("3f2a9c1e-7b44-4d0e-9a51-0c6f1d2e8b7a").is_some());
        for bad in ["", "a b", "a;b", "é", &"x".repeat(65)] {
            assert!(ClusterId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_pin_survives_in_its_file_until_its_cluster_releases_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = ClusterFile::in_data_dir(dir.path());
        let pin = ClusterPin::new(file.clone(), dir.path().to_path_buf(), None);
        pin.admit(&meta("a"), false).await.expect("a read");
        assert_eq!(file.read().expect("read"), None, "a read pins nothing");
        pin.admit(&meta("a"), true).await.expect("pins");
        assert_eq!(read_pin(&file, dir.path()).expect("read"), Some(id("a")));

        let refused = pin.admit(&meta("b"), false).await.expect_err("b");
        assert_eq!(
            refused.to_string(),
            format!(
                "this agent belongs to controller cluster a; this controller is of cluster b; \
                 delete the host from cluster a, or run `ocp-agent forget-cluster --data-dir {}` on the host",
                dir.path().display()
            )
        );
        assert!(!pin.release(&meta("b")).await.expect("b's release"));
        assert!(matches!(
            pin.release(&MetadataMap::new()).await,
            Err(ClusterError::NoCaller)
        ));
        assert!(matches!(
            pin.admit(&meta("a b"), true).await,
            Err(ClusterError::BadId(_))
        ));
        assert!(pin.release(&meta("a")).await.expect("a's release"));
        assert_eq!(file.read().expect("read"), None);
        pin.admit(&meta("b"), true).await.expect("b pins now");
        assert_eq!(file.read().expect("read").as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_pin_forgotten_beside_the_running_agent_lets_the_next_cluster_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = ClusterFile::in_data_dir(dir.path());
        let pin = ClusterPin::new(file.clone(), dir.path().to_path_buf(), None);
        pin.admit(&meta("a"), true).await.expect("pins");
        assert_eq!(forget(dir.path()).expect("forget").as_deref(), Some("a"));
        assert_eq!(forget(dir.path()).expect("again"), None);
        pin.admit(&meta("a"), false).await.expect("a read");
        assert_eq!(file.read().expect("read"), None, "a read pins nothing");
        pin.admit(&meta("a"), true).await.expect("a acts");
        assert_eq!(
            file.read().expect("read").as_deref(),
            Some("a"),
            "pinned again"
        );
        forget(dir.path()).expect("forget");
        pin.admit(&meta("b"), true).await.expect("b pins");
        assert_eq!(file.read().expect("read").as_deref(), Some("b"));
        assert!(pin.admit(&meta("a"), false).await.is_err());
        let missing = forget(&dir.path().join("typo")).expect_err("no such dir");
        assert!(
            missing.to_string().contains("No such file or directory"),
            "{missing}"
        );
    }

    #[test]
    fn a_pin_file_that_names_no_cluster_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = ClusterFile::in_data_dir(dir.path());
        std::fs::write(file.path(), "\n").expect("write");
        assert_eq!(read_pin(&file, dir.path()).expect("empty"), None);
        std::fs::write(file.path(), "not an id\n").expect("write");
        let error = read_pin(&file, dir.path()).expect_err("refused");
        assert!(
            error.to_string().ends_with(&format!(
                "\"not an id\" is not a controller cluster id; run `ocp-agent forget-cluster --data-dir {}`",
                dir.path().display()
            )),
            "{error}"
        );
    }
}
