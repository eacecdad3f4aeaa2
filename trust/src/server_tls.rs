//! The serving end of TLS: the certificate a binary presents and, on an agent, the rule
//! that only the controller and operators are served (what an operator may call is the
//! agent's to decide, from the role each connection carries). Reloadable: each new
//! connection takes the config current at its handshake.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::sync::watch;

use crate::files::{self, TrustError};
use crate::refusal::refused;
use crate::role::Role;

/// What a server reads, again at every reload.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate from this CA issued for the controller or an
    /// operator. `None` serves any client (the controller's own faces, which use
    /// passwords).
    pub client_ca: Option<PathBuf>,
}

#[derive(Clone)]
pub struct ServerTls {
    files: Arc<ServerTlsFiles>,
    alpn: Arc<Vec<Vec<u8>>>,
    current: Arc<watch::Sender<Current>>,
}

/// The config in force, and the verifier it checks clients with: kept apart so that
/// the connections already open can be checked again when it changes.
#[derive(Clone)]
pub(crate) struct Current {
    pub config: Arc<ServerConfig>,
    pub clients: Option<Arc<dyn ClientCertVerifier>>,
}

impl ServerTls {
    /// Reads the files; `alpn` lists the protocols offered (`h2` for gRPC: grpc-go
    /// clients such as grpcurl insist on it).
    pub async fn load(files: ServerTlsFiles, alpn: &[&[u8]]) -> Result<ServerTls, TrustError> {
        let files = Arc::new(files);
        let alpn: Arc<Vec<Vec<u8>>> = Arc::new(alpn.iter().map(|p| p.to_vec()).collect());
        let current = build_blocking(files.clone(), alpn.clone()).await?;
        Ok(ServerTls {
            files,
            alpn,
            current: Arc::new(watch::Sender::new(current)),
        })
    }

    /// Reads the files again. On error the config in use stays, so a botched rotation
    /// never takes a serving binary down. On success, new connections use the new
    /// files, and open connections whose client the new CA would refuse are closed: a
    /// CA change is how a leaked controller key is revoked.
    pub async fn reload(&self) -> Result<(), TrustError> {
        let current = build_blocking(self.files.clone(), self.alpn.clone()).await?;
        self.current.send_replace(current);
        Ok(())
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.borrow().config.clone()
    }

    /// The config and verifier in force, and every later change of them.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Current> {
        self.current.subscribe()
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }
}

async fn build_blocking(
    files: Arc<ServerTlsFiles>,
    alpn: Arc<Vec<Vec<u8>>>,
) -> Result<Current, TrustError> {
    tokio::task::spawn_blocking(move || build(&files, &alpn)).await?
}

fn build(files: &ServerTlsFiles, alpn: &[Vec<u8>]) -> Result<Current, TrustError> {
    let certs = files::certificates(&files.cert)?;
    let key = files::private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Config)?;
    let clients: Option<Arc<dyn ClientCertVerifier>> = match &files.client_ca {
        Some(ca) => {
            let inner =
                WebPkiClientVerifier::builder_with_provider(files::roots(ca)?, crate::provider())
                    .build()
                    .map_err(|e| TrustError::BadCa {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
            Some(Arc::new(ControllerOrOperator { inner }))
        }
        None => None,
    };
    let builder = match &clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
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
    Ok(Current {
        config: Arc::new(config),
        clients,
    })
}

/// The certificate chains to the CA (rustls' WebPKI checks, which also want the
/// clientAuth usage that agents' certificates lack) *and* carries the controller's or
/// an operator's role: another agent's certificate, or one without a role of ours, is
/// refused before any call.
#[derive(Debug)]
struct ControllerOrOperator {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ControllerOrOperator {
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
            Some(Role::Controller | Role::Operator) => Ok(verified),
            other => Err(refused(format!(
                "the client's certificate was issued for {}, not for the controller or an operator",
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
