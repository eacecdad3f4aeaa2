//! Authenticates every request once, for both faces: the tower layer in front of the
//! REST router and of the gRPC services. What it found, a principal or why there is
//! none, goes into the request's extensions; the core then admits each operation by
//! its row in the operation table, and each face renders a refusal its own way.
//!
//! It never refuses by itself: health checks, reflection, the OpenAPI document and
//! unknown routes need no credentials, and only the core knows which operation asks
//! for which permission.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::header::AUTHORIZATION;
use tonic::transport::server::TcpConnectInfo;

use super::{AuthError, Principal, Users};

/// The outcome of authenticating one request.
#[derive(Debug, Clone)]
pub struct Authentication(pub Result<Principal, AuthError>);

impl Authentication {
    /// What a request that did not pass through the layer gets: no one.
    pub fn of(extensions: &http::Extensions) -> Result<Principal, AuthError> {
        extensions
            .get::<Authentication>()
            .map_or(Err(AuthError::Unauthenticated), |a| a.0.clone())
    }
}

/// The REST face's client address (axum's connect info); the gRPC face's is tonic's
/// `TcpConnectInfo`. Failed logins are throttled by it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(addr))| addr.ip())
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map(|addr| addr.ip())
        })
}

#[derive(Clone)]
pub struct AuthLayer {
    users: Users,
}

impl AuthLayer {
    pub fn new(users: Users) -> AuthLayer {
        AuthLayer { users }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            users: self.users.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    users: Users,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready yet; the one that is goes with this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let users = self.users.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let peer = peer_ip(request.extensions());
            let outcome = users.authenticate(header, peer).await;
            request.extensions_mut().insert(Authentication(outcome));
            inner.call(request).await
        })
    }
}
