//! The HTTP/2 connections to the agents: one client whose pool keeps a connection per
//! agent, dialled over TCP or mutual TLS, and the deadline of each call.
//!
//! tonic's `Channel` puts a request queue and its worker task in front of every
//! connection. With 1,000 agents those queues were 50 MB of the controller's 119 MB of
//! peak heap (heaptrack, `cargo xtask bench --hosts 1000`); a connection here is
//! hyper's alone, shared by every call to its agent.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::body::Body;
use trust::ClientTls;

use super::mismatch::{self, Plain};

/// How long dialling an agent (TLS handshake included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pings tell a dead peer from a quiet one between two heartbeats.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// A connection unused this long is closed: a deleted host's, or that of an agent whose
/// heartbeats come further apart than this.
const IDLE: Duration = Duration::from_secs(600);

type BoxError = Box<dyn StdError + Send + Sync>;
type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How long one call may wait for the agent's answer, set by `AgentClient::request` beside
/// the grpc-timeout header: the agent enforces the header, this side the deadline, so
/// that a frozen agent cannot hold a call beyond it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Duration);

/// Every call to every agent goes through one of these; clones share the connections.
#[derive(Clone)]
pub struct AgentChannel {
    client: Client<Dialer, Body>,
    /// Whether agents are dialled over TLS.
    tls: bool,
}

impl AgentChannel {
    pub fn new(tls: Option<ClientTls>) -> AgentChannel {
        let with_tls = tls.is_some();
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .http2_keep_alive_while_idle(true)
            .build(Dialer { tls });
        AgentChannel {
            client,
            tls: with_tls,
        }
    }
}

impl tower::Service<http::Request<Body>> for AgentChannel {
    type Response = http::Response<Incoming>;
    type Error = tonic::Status;
    type Future = Pending<Result<http::Response<Incoming>, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let deadline = request.extensions().get::<Deadline>().copied();
        let host = request.uri().host().unwrap_or_default().to_string();
        let plaintext = !self.tls;
        let response = self.client.request(request);
        Box::pin(async move {
            let answered = match deadline {
                Some(Deadline(limit)) => {
                    tokio::time::timeout(limit, response).await.map_err(|_| {
                        tonic::Status::deadline_exceeded(format!(
                            "no answer in {}",
                            humantime::format_duration(limit)
                        ))
                    })?
                }
                None => response.await,
            };
            answered.map_err(|error| {
                if plaintext && mismatch::speaks_tls(&error) {
                    return speaks_tls(&host);
                }
                status(error)
            })
        })
    }
}

/// The status of a call that found the agent speaking TLS: its source says so to
/// `classify`, which makes it a mismatch no retry mends.
fn speaks_tls(host: &str) -> tonic::Status {
    let words = mismatch::words(host.trim_start_matches('[').trim_end_matches(']'));
    let mut status = tonic::Status::failed_precondition(words.clone());
    status.set_source(std::sync::Arc::new(mismatch::SpeaksTls(words)));
    status
}

/// A refused connection is UNAVAILABLE, as gRPC's own clients say it (worth a retry);
/// what failed on an open connection is classified by tonic from hyper's error. The
/// error stays the status's source, where a TLS refusal's plain words are found.
fn status(error: hyper_util::client::legacy::Error) -> tonic::Status {
    if !error.is_connect() {
        return tonic::Status::from_error(Box::new(error));
    }
    let mut status = tonic::Status::unavailable(trust::causes(&error));
    status.set_source(std::sync::Arc::new(error));
    status
}

/// Dials the host and port of the URI; over TLS, the agent must present a certificate
/// for the address dialled, the one the host is registered with.
#[derive(Clone)]
struct Dialer {
    tls: Option<ClientTls>,
}

impl tower::Service<http::Uri> for Dialer {
    type Response = TokioIo<AgentStream>;
    type Error = BoxError;
    type Future = Pending<Result<TokioIo<AgentStream>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let dial = dial(uri, tls);
            match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_) => Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no connection in {}",
                        humantime::format_duration(CONNECT_TIMEOUT)
                    ),
                )) as BoxError),
            }
        })
    }
}

async fn dial(uri: http::Uri, tls: Option<ClientTls>) -> Result<AgentStream, BoxError> {
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return Err(format!("{uri} names no host and port").into());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(match tls {
        Some(tls) => {
            let name = ClientTls::server_name(host)?;
            AgentStream::Tls(Box::new(tls.handshake(name, tcp).await?))
        }
        None => AgentStream::Plain(Plain::new(tcp)),
    })
}

/// A connection to an agent, in the clear or over TLS.
pub enum AgentStream {
    Plain(Plain),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for AgentStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            AgentStream::Plain(s) => s.is_write_vectored(),
            AgentStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_flush(cx),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
