//! gRPC channels to a fleet's controller and agents, in the fleet's transport:
//! plaintext, or TLS verified against the fleet's CA and, to an agent, presenting the
//! controller's certificate (the only client an agent serves).

use std::error::Error as StdError;
use std::net::SocketAddr;

use tonic::transport::{Channel, Endpoint};
use trust::{ClientTls, ClientTlsFiles, Role};

use crate::fleet::Pki;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("loading the fleet's TLS files: {0}")]
    Trust(#[from] trust::TrustError),
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
}

/// Dials one kind of peer; cheap to clone, and every channel it makes shares one TLS
/// configuration (files read once, sessions resumed).
#[derive(Clone)]
pub struct Dialer {
    tls: Option<ClientTls>,
}

impl Dialer {
    /// To the controller's gRPC face. No client certificate: the faces take passwords,
    /// and grpcurl calls them with `-cacert` alone.
    pub async fn controller(pki: Option<&Pki>) -> Result<Dialer, DialError> {
        Dialer::load(pki, None, Role::Controller).await
    }

    /// To agents, as the controller dials them: with its certificate, and expecting an
    /// agent's certificate naming the address dialled.
    pub async fn agents(pki: Option<&Pki>) -> Result<Dialer, DialError> {
        let identity = pki.map(|p| (p.controller_cert.clone(), p.controller_key.clone()));
        Dialer::load(pki, identity, Role::Agent).await
    }

    /// To agents with the CA but no client certificate: what any process on the network
    /// could try, and what an agent must refuse.
    pub async fn agents_anonymously(pki: Option<&Pki>) -> Result<Dialer, DialError> {
        Dialer::load(pki, None, Role::Agent).await
    }

    async fn load(
        pki: Option<&Pki>,
        identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
        peer: Role,
    ) -> Result<Dialer, DialError> {
        let tls = match pki {
            Some(pki) => Some(
                ClientTls::load(
                    ClientTlsFiles {
                        ca: pki.ca.clone(),
                        identity,
                    },
                    peer,
                )
                .await?,
            ),
            None => None,
        };
        Ok(Dialer { tls })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A connected channel to `addr`, whose certificate must name `addr`'s IP.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Channel, DialError> {
        let failed = |reason: String| DialError::Connect { addr, reason };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| failed(e.to_string()))?;
        let connected = match &self.tls {
            Some(tls) => {
                let connector = tls.connector(&addr.ip().to_string())?;
                endpoint.connect_with_connector(connector).await
            }
            None => endpoint.connect().await,
        };
        connected.map_err(|e| failed(reason(&e)))
    }
}

/// The TLS refusal in plain words when there is one, else the whole chain of causes:
/// tonic's own message is only "transport error".
pub fn reason(error: &(dyn StdError + 'static)) -> String {
    trust::refusal(error).unwrap_or_else(|| trust::causes(error))
}
