//! Accepting TLS connections for tonic and axum: the accept loop hands each new
//! connection its own handshake task, so a client that stalls mid-handshake delays
//! nobody, and a handshake that fails is logged and dropped, never served.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::server::ServerTls;

/// A client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("setting TCP_NODELAY: {e}");
        }
        let acceptor = TlsAcceptor::from(tls.config());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((TlsConn(stream), peer)).await;
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

/// One served TLS connection.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl TlsConn {
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.0.get_ref().1.peer_certificates()
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
