//! Accepting TLS connections for tonic and axum: the accept loop hands each new
//! connection its own handshake task, so a client that stalls mid-handshake delays
//! nobody, and a handshake that fails is logged and dropped, never served.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::server::{Current, ServerTls};

/// A client gets this long to finish its handshake: a real one needs milliseconds.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once. Each costs a descriptor and a key exchange before
/// the client has proved anything, so a flood of stalled ones is turned away at the
/// door rather than allowed to use up the descriptors the controller needs.
const HANDSHAKES: usize = 256;

/// Connections whose handshake succeeded, ready to serve.
pub struct TlsIncoming {
    ready: mpsc::Receiver<(TlsConn, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsIncoming {
    /// Takes over `listener`; the accept loop ends when this is dropped.
    pub fn new(listener: TcpListener, tls: ServerTls) -> io::Result<TlsIncoming> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, tls, tx));
        Ok(TlsIncoming { ready, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection whose handshake succeeded; `None` once the loop ended.
    pub async fn accept(&mut self) -> Option<(TlsConn, SocketAddr)> {
        self.ready.recv().await
    }

    /// For `tonic::transport::Server::serve_with_incoming*`.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<TlsConn>> + Send + 'static {
        futures::stream::unfold(self, |mut incoming| async move {
            let (conn, _) = incoming.accept().await?;
            Some((Ok(conn), incoming))
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    ready: mpsc::Sender<(TlsConn, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: give the clients a moment to leave.
                tracing::warn!("accept error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "{HANDSHAKES} TLS handshakes already in progress; connection closed");
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("setting TCP_NODELAY: {e}");
        }
        // Subscribed before the handshake: a reload during it is seen afterwards.
        let mut trust = tls.subscribe();
        let acceptor = TlsAcceptor::from(trust.borrow_and_update().config.clone());
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match handshake {
                Ok(Ok(stream)) => {
                    let revoked = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|chain| revoked(trust, chain.to_vec(), peer));
                    let conn = TlsConn {
                        stream,
                        revoked,
                        aborted: false,
                    };
                    let _ = ready.send((conn, peer)).await;
                }
                Ok(Err(e)) => {
                    let reason = crate::refusal(&e).unwrap_or_else(|| e.to_string());
                    tracing::warn!(%peer, "TLS handshake refused: {reason}");
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake not finished in {HANDSHAKE_TIMEOUT:?}; closed")
                }
            }
        });
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
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.get_ref().0.connect_info()
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
