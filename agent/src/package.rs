//! Receiving a new agent binary over `ReceivePackage`: written beside the current
//! one as it streams in (a 100 MB binary never sits whole in memory), hashed on the
//! way, and moved into `versions/` only once its size and sha256 match the header,
//! so that a truncated or corrupted transfer leaves nothing a switch could run.

use std::io;

use futures::{Stream, StreamExt};
use proto::agent::v1::package_chunk::Part;
use proto::agent::v1::{PackageChunk, PackageHeader};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::data_dir::DataDirError;
use crate::versions::{LabelError, Versions, check_label, hex};

/// The largest binary the agent takes, as the controller does.
pub const MAX_PACKAGE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the first message must be the package's header")]
    NoHeader,
    #[error("a second header after the package's bytes began")]
    SecondHeader,
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error("sha256 must be 64 lower-case hex digits, not {0:?}")]
    BadSha256(String),
    #[error("the package says it is {0} bytes: over the {MAX_PACKAGE_BYTES}-byte limit")]
    TooBig(u64),
    #[error("version {version} is held already, with sha256 {held}, not {sent}")]
    Conflict {
        version: String,
        held: String,
        sent: String,
    },
    #[error("the package ended after {got} of its {size} bytes; nothing was kept")]
    Truncated { got: u64, size: u64 },
    #[error("the package ran past its {size} bytes; nothing was kept")]
    TooLong { size: u64 },
    #[error("the package's sha256 is {got}, not {sent}; nothing was kept")]
    Digest { got: String, sent: String },
    #[error("the transfer broke off: {0}; nothing was kept")]
    Stream(tonic::Status),
    #[error("writing the package: {0}")]
    Write(io::Error),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("writing the package: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub struct Received {
    pub version: String,
    pub sha256: String,
    pub already_held: bool,
}

/// Takes one package from the stream; see the module's note.
pub async fn receive<S>(versions: &Versions, mut stream: S) -> Result<Received, ReceiveError>
where
    S: Stream<Item = Result<PackageChunk, tonic::Status>> + Unpin,
{
    let header = match stream.next().await {
        Some(Ok(PackageChunk {
            part: Some(Part::Header(header)),
        })) => header,
        Some(Err(status)) => return Err(ReceiveError::Stream(status)),
        _ => return Err(ReceiveError::NoHeader),
    };
    let PackageHeader {
        version,
        sha256,
        size,
    } = header;
    check_label(&version)?;
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ReceiveError::BadSha256(sha256));
    }
    if size > MAX_PACKAGE_BYTES {
        return Err(ReceiveError::TooBig(size));
    }
    let held = {
        let (versions, version) = (versions.clone(), version.clone());
        tokio::task::spawn_blocking(move || versions.held_sha256(&version)).await??
    };
    match held {
        Some(held) if held == sha256 => {
            return Ok(Received {
                version,
                sha256,
                already_held: true,
            });
        }
        Some(held) => {
            return Err(ReceiveError::Conflict {
                version,
                held,
                sent: sha256,
            });
        }
        None => {}
    }
    let incoming = versions.incoming(&version);
    let written = write_incoming(&incoming, &mut stream, size, &sha256).await;
    let installed = match written {
        Ok(()) => {
            let (versions, version, sha256, incoming) = (
                versions.clone(),
                version.clone(),
                sha256.clone(),
                incoming.clone(),
            );
            tokio::task::spawn_blocking(move || versions.install(&incoming, &version, &sha256))
                .await
                .map_err(ReceiveError::from)
                .and_then(|r| r.map_err(ReceiveError::from))
        }
        Err(e) => Err(e),
    };
    if let Err(e) = installed {
        let _ = tokio::fs::remove_file(&incoming).await;
        return Err(e);
    }
    Ok(Received {
        version,
        sha256,
        already_held: false,
    })
}

async fn write_incoming<S>(
    path: &std::path::Path,
    stream: &mut S,
    size: u64,
    sha256: &str,
) -> Result<(), ReceiveError>
where
    S: Stream<Item = Result<PackageChunk, tonic::Status>> + Unpin,
{
    use std::os::unix::fs::OpenOptionsExt;
    let _ = tokio::fs::remove_file(path).await;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = tokio::fs::OpenOptions::from(options)
        .open(path)
        .await
        .map_err(ReceiveError::Write)?;
    let mut hasher = sha2::Sha256::new();
    let mut got: u64 = 0;
    while let Some(message) = stream.next().await {
        let data = match message.map_err(ReceiveError::Stream)?.part {
            Some(Part::Data(data)) => data,
            Some(Part::Header(_)) => return Err(ReceiveError::SecondHeader),
            None => continue,
        };
        got += data.len() as u64;
        if got > size {
            return Err(ReceiveError::TooLong { size });
        }
        hasher.update(&data);
        file.write_all(&data).await.map_err(ReceiveError::Write)?;
    }
    if got < size {
        return Err(ReceiveError::Truncated { got, size });
    }
    let got = hex(&hasher.finalize());
    if got != sha256 {
        return Err(ReceiveError::Digest {
            got,
            sent: sha256.to_string(),
        });
    }
    file.sync_all().await.map_err(ReceiveError::Write)
}
