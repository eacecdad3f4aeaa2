//! The calling end of TLS: the controller's channels to its agents (and any client of
//! a TLS face). Verifies the peer against the CA, the address it was dialled at and the
//! role it must hold, and says in plain words why a peer was refused.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::files::{self, TrustError};
use crate::refusal::{Refusal, refusal, refused};
use crate::role::Role;

/// What a client reads, again at every reload.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// The CA the peer's certificate must chain to.
    pub ca: PathBuf,
    /// The client's own certificate and key, for peers that require one (agents).
    pub identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone)]
pub struct ClientTls {
    files: Arc<ClientTlsFiles>,
    peer: Role,
    /// The role this side's own certificate must carry, checked at every (re)load.
    own: Option<Role>,
    current: Arc<RwLock<Arc<ClientConfig>>>,
}

/// Sessions kept for resumption: one per agent of a large fleet, so that a reconnect
/// after an agent restart skips the full handshake.
const SESSION_CACHE: usize = 4096;

impl ClientTls {
    /// Reads the files; `peer` is the role every server dialled must hold.
    pub async fn load(files: ClientTlsFiles, peer: Role) -> Result<ClientTls, TrustError> {
        Self::load_as(files, peer, None).await
    }

    /// The controller's client of its agents: as `load`, and its own certificate must
    /// be the controller's, or every agent would refuse it, far from the mistake.
    pub async fn controller(files: ClientTlsFiles) -> Result<ClientTls, TrustError> {
        Self::load_as(files, Role::Agent, Some(Role::Controller)).await
    }

    async fn load_as(
        files: ClientTlsFiles,
        peer: Role,
        own: Option<Role>,
    ) -> Result<ClientTls, TrustError> {
        let files = Arc::new(files);
        let config = build_blocking(files.clone(), peer, own).await?;
        Ok(ClientTls {
            files,
            peer,
            own,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again; on error the config in use stays.
    pub async fn reload(&self) -> Result<(), TrustError> {
        let config = build_blocking(self.files.clone(), self.peer, self.own).await?;
        *self.current.write() = config;
        Ok(())
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.current.read().clone()
    }

    /// A connector for tonic's `Endpoint::connect_with_connector_lazy` that dials the
    /// endpoint's address and expects a certificate for `name` (the host's address).
    pub fn connector(&self, name: &str) -> Result<AgentConnector, TrustError> {
        Ok(AgentConnector {
            tls: self.clone(),
            server_name: ClientTls::server_name(name)?,
        })
    }
}

impl ClientTls {
    /// TLS over `tcp` with the current configuration, expecting a certificate for
    /// `name`; a refused peer's error says why in plain words.
    pub async fn handshake(
        &self,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Box<dyn StdError + Send + Sync>> {
        let address = name.to_str().into_owned();
        match TlsConnector::from(self.config()).connect(name, tcp).await {
            Ok(stream) => Ok(stream),
            Err(e) if not_tls(&e) => Err(Box::new(Refusal(self.not_tls_words(&address)))),
            Err(e) => Err(match refusal(&e) {
                Some(words) => Box::new(Refusal(words)),
                None => Box::new(e),
            }),
        }
    }

    /// What a peer at `address` that answered without TLS is told to do.
    fn not_tls_words(&self, address: &str) -> String {
        if self.peer == Role::Agent {
            format!(
                "the agent at {address} does not speak TLS: start it with --tls-cert, \
                 --tls-key and --tls-client-ca, or the controller without --pki-dir"
            )
        } else {
            format!(
                "the controller at {address} does not speak TLS: is it running without --tls-cert?"
            )
        }
    }

    /// The name a peer dialled at `address` must hold a certificate for.
    pub fn server_name(address: &str) -> Result<ServerName<'static>, TrustError> {
        ServerName::try_from(address.to_string())
            .map_err(|_| TrustError::BadName(address.to_string()))
    }
}

/// Whether a client handshake failed because the peer's answer was no TLS at all.
fn not_tls(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)))
}

async fn build_blocking(
    files: Arc<ClientTlsFiles>,
    peer: Role,
    own: Option<Role>,
) -> Result<Arc<ClientConfig>, TrustError> {
    tokio::task::spawn_blocking(move || build(&files, peer, own).map(Arc::new)).await?
}

fn build(
    files: &ClientTlsFiles,
    peer: Role,
    own: Option<Role>,
) -> Result<ClientConfig, TrustError> {
    let inner =
        WebPkiServerVerifier::builder_with_provider(files::roots(&files.ca)?, crate::provider())
            .build()
            .map_err(|e| TrustError::BadCa {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(TrustError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier { inner, peer }));
    let mut config = match &files.identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(own_certificates(cert, own)?, files::private_key(key)?)
            .map_err(|e| TrustError::Mismatch {
                cert: cert.clone(),
                key: key.clone(),
                reason: e.to_string(),
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = Resumption::in_memory_sessions(SESSION_CACHE);
    Ok(config)
}

/// This side's own chain, checked to carry the role `own` when one is required.
fn own_certificates(
    path: &std::path::Path,
    own: Option<Role>,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let chain = files::certificates(path)?;
    if let Some(wanted) = own {
        let found = Role::of(&chain[0]);
        if found != Some(wanted) {
            return Err(TrustError::WrongRole {
                path: path.to_owned(),
                found: found.map_or("no role of ours".to_string(), |r| r.to_string()),
                wanted,
            });
        }
    }
    Ok(chain)
}

/// rustls' WebPKI checks, turned into sentences, then the peer's role.
#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    peer: Role,
}

impl PeerVerifier {
    fn noun(&self) -> &'static str {
        self.peer.name()
    }

    fn refuse(
        &self,
        at: &ServerName<'_>,
        cert: &CertificateDer<'_>,
        error: &rustls::Error,
    ) -> String {
        let who = format!("the {} at {}", self.noun(), at.to_str());
        let rustls::Error::InvalidCertificate(error) = error else {
            return format!("{who} was refused: {error}");
        };
        match error {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let names = crate::role::names(cert);
                format!(
                    "{who} presented a certificate for {}",
                    if names.is_empty() {
                        "no address or name".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            }
            CertificateError::ExpiredContext { not_after, .. } => format!(
                "{who} presented a certificate that expired at {}",
                format_unix(*not_after)
            ),
            CertificateError::Expired => format!("{who} presented an expired certificate"),
            CertificateError::NotValidYetContext { not_before, .. } => format!(
                "{who} presented a certificate not valid before {}",
                format_unix(*not_before)
            ),
            CertificateError::NotValidYet => {
                format!("{who} presented a certificate that is not valid yet")
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                format!("{who} presented a certificate not issued by this controller's CA")
            }
            CertificateError::Other(other) => {
                format!(
                    "{who} presented a certificate that was refused: {}",
                    other.0
                )
            }
            other => format!("{who} presented a certificate that was refused: {other:?}"),
        }
    }
}

fn format_unix(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{} s after the epoch", t.as_secs()))
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| refused(self.refuse(server_name, end_entity, &e)))?;
        match Role::of(end_entity) {
            Some(role) if role == self.peer => Ok(verified),
            other => Err(refused(format!(
                "the {} at {} presented a certificate issued for {}, not for {}",
                self.noun(),
                server_name.to_str(),
                other.map_or("no role of ours".to_string(), |r| r.to_string()),
                self.peer
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

/// Dials one peer over TLS, for tonic's channels.
#[derive(Clone)]
pub struct AgentConnector {
    tls: ClientTls,
    server_name: ServerName<'static>,
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
                    Box<dyn StdError + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl tower::Service<http::Uri> for AgentConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.handshake(server_name, tcp).await?))
        })
    }
}
