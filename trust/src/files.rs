//! Reading certificates and keys from PEM files, with errors that name the file and
//! say what to do. Blocking: callers run it on the blocking pool.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    // Not a `source`: the cause is in the message once, for one-line reports.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(transparent)]
    Untrusted(#[from] crate::strict::StrictError),
    #[error("{} is over {MAX_PEM} bytes: not a certificate or key file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} was issued for {found}, not for {wanted}", path.display())]
    WrongRole {
        path: PathBuf,
        found: String,
        wanted: crate::Role,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a PEM certificate file: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{} and {} do not make a usable pair: {reason}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("the CA in {} cannot verify peers: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("{0:?} is neither an IP address nor a DNS name a certificate can name")]
    BadName(String),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("loading TLS files: {0}")]
    Join(tokio::task::JoinError),
}

impl From<tokio::task::JoinError> for TrustError {
    fn from(error: tokio::task::JoinError) -> TrustError {
        TrustError::Join(error)
    }
}

/// Far more than any certificate chain or key; a bound, so that a path given by
/// mistake (`/dev/zero`, a log file) fails at once instead of filling memory.
const MAX_PEM: u64 = 1 << 20;

/// A certificate or key file, once [`crate::strict`] found that only root or this
/// process's user could have written it: whoever can swap a key or a CA decides who
/// this side trusts.
fn read(path: &Path) -> Result<Vec<u8>, TrustError> {
    let err = |error| TrustError::Read {
        path: path.to_owned(),
        error,
    };
    if let Err(e) = crate::strict::check(path) {
        return Err(e.into_unreadable_file().map_or_else(Into::into, err));
    }
    // A FIFO or a device would block or never end: only regular files are read.
    if !std::fs::metadata(path).map_err(err)?.is_file() {
        return Err(TrustError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut contents = Vec::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_PEM + 1)
        .read_to_end(&mut contents)
        .map_err(err)?;
    if contents.len() as u64 > MAX_PEM {
        return Err(TrustError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(contents)
}

/// Every certificate in `path`, in order: the leaf first for a chain.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TrustError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TrustError::BadKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The trust anchors in `path`, for verifying peers.
pub(crate) fn roots(path: &Path) -> Result<std::sync::Arc<rustls::RootCertStore>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TrustError::BadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(std::sync::Arc::new(roots))
}
