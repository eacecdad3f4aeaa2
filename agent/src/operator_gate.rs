//! What a client holding an operator's certificate may call: the read-only methods of
//! `ocp.agent.v1.AgentService` ([`trust::OPERATOR_METHODS`]), health checks and
//! reflection (so grpcurl finds the methods by name). Every other call, a method added
//! later included, is answered PERMISSION_DENIED before it reaches a service. The
//! controller, and a plaintext client on loopback, are not held back here.
//!
//! The role comes from the TLS session: the listener reads it from the client's
//! certificate at the handshake and hands it to every request as `trust::ConnInfo`.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use proto::agent::v1::agent_service_server::SERVICE_NAME as AGENT_SERVICE;
use trust::{ConnInfo, OPERATOR_METHODS, Role};

/// Services an operator may call whole: they report and describe, and change nothing.
const OPEN_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Why a client of `role` may not call `path` (a gRPC request path,
/// `/package.Service/Method`); `None` when it may.
pub fn refusal(role: Option<Role>, path: &str) -> Option<String> {
    if role != Some(Role::Operator) {
        return None;
    }
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.rsplit_once('/'))
        .unwrap_or(("", path));
    let read_only = service == AGENT_SERVICE && OPERATOR_METHODS.contains(&method);
    if read_only || OPEN_SERVICES.contains(&service) {
        return None;
    }
    let named = if service == AGENT_SERVICE {
        method
    } else {
        path
    };
    Some(format!(
        "the operator role is read-only: {named} is refused to it; it may call {}",
        OPERATOR_METHODS.join(", ")
    ))
}

/// In front of every service of the agent's gRPC server.
#[derive(Debug, Clone, Copy, Default)]
pub struct OperatorGateLayer;

impl<S> tower::Layer<S> for OperatorGateLayer {
    type Service = OperatorGate<S>;

    fn layer(&self, inner: S) -> OperatorGate<S> {
        OperatorGate { inner }
    }
}

#[derive(Debug, Clone)]
pub struct OperatorGate<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for OperatorGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<R>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let info = request.extensions().get::<ConnInfo>();
        let role = info.and_then(ConnInfo::client_role);
        match refusal(role, request.uri().path()) {
            None => Either::Right(self.inner.call(request)),
            Some(why) => {
                let peer = info.and_then(ConnInfo::remote_addr);
                tracing::warn!(?peer, "refused: {why}");
                Either::Left(ready(Ok(
                    tonic::Status::permission_denied(why).into_http::<R>()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_may_read_and_nothing_else() {
        let operator = Some(Role::Operator);
        for method in OPERATOR_METHODS {
            let path = format!("/ocp.agent.v1.AgentService/{method}");
            assert_eq!(refusal(operator, &path), None, "{path}");
        }
        assert_eq!(refusal(operator, "/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            refusal(
                operator,
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            ),
            None
        );
        let stop = refusal(operator, "/ocp.agent.v1.AgentService/StopAll").expect("refused");
        assert!(
            stop.contains("read-only") && stop.contains("StopAll is refused"),
            "{stop}"
        );
        for path in [
            "/ocp.agent.v1.AgentService/StartProcess",
            "/ocp.agent.v1.AgentService/SomethingAddedLater",
            "/ocp.agent.v1.AgentService/GetAgentInfo/extra",
            "/ocp.agent.v1.AgentServiceX/GetAgentInfo",
            "/other.Service/GetAgentInfo",
            "GetAgentInfo",
            "/",
            "",
        ] {
            assert!(refusal(operator, path).is_some(), "{path} let through");
        }
    }

    #[test]
    fn the_controller_and_plaintext_clients_are_not_held_back() {
        for role in [Some(Role::Controller), None] {
            assert_eq!(
                refusal(role, "/ocp.agent.v1.AgentService/StopAll"),
                None,
                "{role:?}"
            );
        }
    }
}
