//! Counting the gRPC face's calls by method and status code: a tower layer in front of
//! tonic's router that reads the code where gRPC puts it, in the response headers of an
//! error answered at once, else in the trailers at the end of the response body.
//!
//! Methods are labelled by their path only when the controller serves them (read from
//! the descriptor sets of the services it registers); any other path, which tonic
//! answers UNIMPLEMENTED, shares one label, so invented paths cannot grow the exposition.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;

/// The method label of every path the controller does not serve.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Reflection, served beside the services the controller names.
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GrpcLabels {
    method: Arc<str>,
    code: &'static str,
}

/// The counters, and which paths are methods; a tower layer over tonic's router.
#[derive(Clone)]
pub struct GrpcRequests {
    family: Family<GrpcLabels, Counter>,
    /// Every served method's path, to the label it is counted under.
    methods: Arc<HashMap<String, Arc<str>>>,
    unknown: Arc<str>,
}

impl GrpcRequests {
    pub(super) fn new(served: &[&str]) -> GrpcRequests {
        GrpcRequests {
            family: Family::default(),
            methods: Arc::new(served_methods(served)),
            unknown: UNKNOWN_METHOD.into(),
        }
    }

    pub(super) fn family(&self) -> Family<GrpcLabels, Counter> {
        self.family.clone()
    }

    /// The label of the method at `path`.
    pub fn method(&self, path: &str) -> Arc<str> {
        self.methods
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.unknown.clone())
    }

    fn count(&self, method: Arc<str>, code: tonic::Code) {
        self.family
            .get_or_create(&GrpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }
}

/// `/package.Service/Method` of every method the controller's gRPC port serves, read
/// from the descriptor sets it registers for reflection.
fn served_methods(served: &[&str]) -> HashMap<String, Arc<str>> {
    let sets = [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for bytes in sets {
        let set = match prost_types::FileDescriptorSet::decode(bytes) {
            Ok(set) => set,
            Err(e) => {
                tracing::error!("reading a built-in descriptor set: {e}");
                continue;
            }
        };
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if !served.iter().chain(&REFLECTION).any(|s| *s == name) {
                    continue;
                }
                for method in &service.method {
                    let path = format!("/{name}/{}", method.name());
                    methods.insert(path.clone(), path.into());
                }
            }
        }
    }
    methods
}

/// The status code's name as the gRPC spec writes it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

impl<S> tower::Layer<S> for GrpcRequests {
    type Service = CountGrpc<S>;

    fn layer(&self, inner: S) -> CountGrpc<S> {
        CountGrpc {
            inner,
            requests: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CountGrpc<S> {
    inner: S,
    requests: GrpcRequests,
}

impl<S, B, R> tower::Service<http::Request<B>> for CountGrpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Body<Data = Bytes> + Unpin,
{
    type Response = http::Response<Counted<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.requests.method(request.uri().path());
        let requests = self.requests.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let pending = match status_in(response.headers()) {
                Some(code) => {
                    requests.count(method, code);
                    None
                }
                None => Some((requests, method)),
            };
            Ok(response.map(|body| Counted { body, pending }))
        })
    }
}

/// A response body that counts its call once its trailers say how it ended; a body
/// dropped before that (the client went away) counts as CANCELLED.
pub struct Counted<B> {
    body: B,
    pending: Option<(GrpcRequests, Arc<str>)>,
}

impl<B> Counted<B> {
    fn end(&mut self, code: tonic::Code) {
        if let Some((requests, method)) = self.pending.take() {
            requests.count(method, code);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    this.end(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(tonic::Code::Internal),
            Poll::Ready(None) => this.end(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.end(tonic::Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_has_its_own_label_and_other_paths_share_one() {
        let requests = GrpcRequests::new(&[
            "ocp.v1.HostAgentService",
            "ocp.v1.TaskService",
            "grpc.health.v1.Health",
        ]);
        for path in [
            "/ocp.v1.HostAgentService/BatchRestartAgents",
            "/ocp.v1.TaskService/WatchTask",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(&*requests.method(path), path);
        }
        for path in [
            "/ocp.v1.TaskService/NoSuchMethod",
            "/ocp.agent.v1.AgentService/StopAll",
            "/",
            "/a/b/c",
        ] {
            assert_eq!(&*requests.method(path), UNKNOWN_METHOD, "{path}");
        }
    }
}
