//! The TLS half of accepting a connection: the handshake, bounded in time, a
//! connection that closes itself once a reload stops trusting its client, and the role
//! its client's certificate carries, handed to every request it makes. The accept
//! loop (`guard`) runs each handshake in its own task, so a client that stalls
//! mid-handshake delays nobody. A client that opens without TLS is answered in its own
//! protocol ([`crate::plaintext`]) instead.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::plaintext;
use crate::rate_log::Refusals;
use crate::role::Role;
use crate::server_tls::{Current, ServerTls};

/// A client gets this long to finish its handshake: a real one needs milliseconds.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once. Each costs a key exchange before the client has
/// proved anything, so a flood of them cannot keep the CPU busy; past this, the oldest
/// unfinished one is closed for the newcomer (see `guard`).
pub(crate) const HANDSHAKES: usize = 256;

/// The server's half of a handshake on `tcp`, within `limit`; `None` (logged, at most a
/// line a second per kind) when the client was refused or too slow, or spoke plaintext.
pub(crate) async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: &ServerTls,
    limit: Duration,
    refusals: &Refusals,
) -> Option<TlsConn> {
    let deadline = Instant::now() + limit;
    // Subscribed before the handshake: a reload during it is seen afterwards.
    let mut trust = tls.subscribe();
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return None,
        Ok(Ok(_)) if !plaintext::opens_tls(first[0]) => {
            tracing::debug!(%peer, "a plaintext client on a TLS port: told to use TLS");
            plaintext::refuse(tcp, deadline).await;
            return None;
        }
        Ok(Ok(_)) | Err(_) => {}
    }
    let acceptor = TlsAcceptor::from(trust.borrow_and_update().config.clone());
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let chain = stream.get_ref().1.peer_certificates();
            let client_role = chain.and_then(|chain| chain.first()).and_then(Role::of);
            let revoked = chain.map(|chain| revoked(trust, chain.to_vec(), peer));
            Some(TlsConn {
                stream,
                revoked,
                aborted: false,
                client_role,
            })
        }
        Ok(Err(e)) => {
            let reason = crate::refusal(&e).unwrap_or_else(|| e.to_string());
            if let Some(n) = refusals.refused.hit_for(&reason) {
                tracing::warn!(%peer, "TLS handshake refused ({n} since the last such line): {reason}");
            }
            None
        }
        Err(_) => {
            if let Some(n) = refusals.slow.hit() {
                tracing::info!(%peer, "TLS handshake not finished in {limit:?}; closed ({n} since the last such line)");
            }
            None
        }
    }
}

/// Resolves once a reload brought trust that would refuse this connection's client.
fn revoked(
    mut trust: watch::Receiver<Current>,
    chain: Vec<CertificateDer<'static>>,
    peer: SocketAddr,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return std::future::pending().await;
        };
        while trust.changed().await.is_ok() {
            let verifier = trust.borrow_and_update().clients.clone();
            let refused =
                verifier.map(|v| v.verify_client_cert(leaf, intermediates, UnixTime::now()));
            if let Some(Err(e)) = refused {
                let reason = crate::refusal(&e).unwrap_or_else(|| e.to_string());
                tracing::warn!(%peer, "closing a connection the reloaded trust refuses: {reason}");
                return;
            }
        }
        // The server is gone; its connections end with it.
        std::future::pending().await
    })
}

/// One served TLS connection; it fails its reads and writes once its client's
/// certificate is no longer trusted, which makes the server close it.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    revoked: Option<BoxFuture<'static, ()>>,
    aborted: bool,
    /// Read once, at the handshake: what the server lets this client do.
    client_role: Option<Role>,
}

impl TlsConn {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.aborted
            && let Some(revoked) = &mut self.revoked
        {
            self.aborted = revoked.as_mut().poll(cx).is_ready();
        }
        if self.aborted {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client's certificate is no longer trusted",
            ));
        }
        Ok(())
    }
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.stream.get_ref().0.connect_info(),
            client_role: self.client_role,
        }
    }
}

/// What a served request knows of its connection (tonic puts it in the request's
/// extensions): the addresses, and the role of the client's certificate, so that a
/// server can let each role do its own part.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub(crate) tcp: TcpConnectInfo,
    pub(crate) client_role: Option<Role>,
}

impl ConnInfo {
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.remote_addr()
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    /// The role the client's certificate was issued for; `None` on plaintext, and for a
    /// client that presented no certificate where none is asked.
    pub fn client_role(&self) -> Option<Role> {
        self.client_role
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
