//! Reading certificates and keys from PEM files, with errors that name the file and
//! say what to do. Blocking: callers run it on the blocking pool.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
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
    Join(#[from] tokio::task::JoinError),
}

fn read(path: &Path) -> Result<Vec<u8>, TrustError> {
    std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })
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
