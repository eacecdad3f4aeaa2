//! Takes every request's credentials once, for both faces: the tower layer in front of
//! the REST router and of the gRPC services puts them in the request's extensions, and
//! the first operation that needs to know who asks has them checked, once. What was
//! found (a principal, or why there is none) is then admitted by the core's operation
//! table, and each face renders a refusal its own way.
//!
//! The check waits for an operation: health checks, reflection, the OpenAPI document,
//! unknown routes and requests the cross-site guard refuses never cost a password
//! verification, and wrong credentials sent to them are not counted as failed logins.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::header::AUTHORIZATION;
use tokio::sync::OnceCell;

use super::{AuthError, Principal, Users};

/// No user name and password of a users file come near this: a longer header is no
/// one's credentials, refused before it is decoded.
const MAX_CREDENTIALS: usize = 4096;

/// The credentials one request brought, checked at most once.
#[derive(Clone)]
pub struct Credentials(Arc<Brought>);

struct Brought {
    users: Users,
    header: Option<http::HeaderValue>,
    peer: Option<IpAddr>,
    checked: OnceCell<Result<Principal, AuthError>>,
}

impl Credentials {
    /// Who the request's credentials name, checked now if no operation asked before; a
    /// request that did not pass through the layer names no one.
    pub async fn principal(extensions: &http::Extensions) -> Result<Principal, AuthError> {
        let Some(Credentials(brought)) = extensions.get::<Credentials>().cloned() else {
            return Err(AuthError::Unauthenticated);
        };
        brought
            .checked
            .get_or_init(|| async {
                let header = brought
                    .header
                    .as_ref()
                    .filter(|v| v.len() <= MAX_CREDENTIALS)
                    .and_then(|v| v.to_str().ok());
                brought.users.authenticate(header, brought.peer).await
            })
            .await
            .clone()
    }
}

/// The REST face's client address (axum's connect info); the gRPC face's is the
/// listener's `trust::ConnInfo`. Failed logins are throttled by it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(addr))| addr.ip())
        .or_else(|| {
            extensions
                .get::<trust::ConnInfo>()
                .and_then(trust::ConnInfo::remote_addr)
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
    type Service = TakeCredentials<S>;

    fn layer(&self, inner: S) -> TakeCredentials<S> {
        TakeCredentials {
            inner,
            users: self.users.clone(),
        }
    }
}

#[derive(Clone)]
pub struct TakeCredentials<S> {
    inner: S,
    users: Users,
}

impl<S, B> tower::Service<http::Request<B>> for TakeCredentials<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        // A cheap clone of the value: it is read only if an operation asks.
        let header = request.headers().get(AUTHORIZATION).cloned();
        let credentials = Credentials(Arc::new(Brought {
            users: self.users.clone(),
            header,
            peer: peer_ip(request.extensions()),
            checked: OnceCell::new(),
        }));
        request.extensions_mut().insert(credentials);
        self.inner.call(request)
    }
}
