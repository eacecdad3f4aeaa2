//! The serving end of TLS: the certificate a binary presents and, on an agent, the rule
//! that only the controller is served. Reloadable: each new connection takes the
//! config current at its handshake.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::files::{self, TrustError};
use crate::refusal::refused;
use crate::role::Role;

/// What a server reads, again at every reload.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate from this CA issued for the controller.
    /// `None` serves any client (the controller's own faces, which use passwords).
    pub client_ca: Option<PathBuf>,
}

#[derive(Clone)]
pub struct ServerTls {
    files: Arc<ServerTlsFiles>,
    alpn: Arc<Vec<Vec<u8>>>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    /// Reads the files; `alpn` lists the protocols offered (`h2` for gRPC: grpc-go
    /// clients such as grpcurl insist on it).
    pub async fn load(files: ServerTlsFiles, alpn: &[&[u8]]) -> Result<ServerTls, TrustError> {
        let files = Arc::new(files);
        let alpn: Arc<Vec<Vec<u8>>> = Arc::new(alpn.iter().map(|p| p.to_vec()).collect());
        let config = build_blocking(files.clone(), alpn.clone()).await?;
        Ok(ServerTls {
            files,
            alpn,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again. On error the config in use stays, so a botched rotation
    /// never takes a serving binary down.
    pub async fn reload(&self) -> Result<(), TrustError> {
        let config = build_blocking(self.files.clone(), self.alpn.clone()).await?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }
}

async fn build_blocking(
    files: Arc<ServerTlsFiles>,
    alpn: Arc<Vec<Vec<u8>>>,
) -> Result<Arc<ServerConfig>, TrustError> {
    tokio::task::spawn_blocking(move || build(&files, &alpn).map(Arc::new)).await?
}

fn build(files: &ServerTlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TrustError> {
    let certs = files::certificates(&files.cert)?;
    let key = files::private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Config)?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let inner =
                WebPkiClientVerifier::builder_with_provider(files::roots(ca)?, crate::provider())
                    .build()
                    .map_err(|e| TrustError::BadCa {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(Arc::new(ControllerOnly { inner }))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TrustError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// The certificate chains to the CA (rustls' WebPKI checks, which also want the
/// clientAuth usage that agents' certificates lack) *and* carries the controller role.
#[derive(Debug)]
struct ControllerOnly {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ControllerOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match Role::of(end_entity) {
            Some(Role::Controller) => Ok(verified),
            other => Err(refused(format!(
                "the client's certificate was issued for {}, not for the controller",
                other.map_or("no role of ours".to_string(), |r| r.to_string())
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
