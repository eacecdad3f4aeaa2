//! The client side of the same credentials: a tonic interceptor that sends them on
//! every call.

use super::AuthError;
use super::basic::basic_header;

/// Adds `authorization: Basic ...` to every call of a tonic client, e.g.
/// `HostAgentServiceClient::with_interceptor(channel, BasicAuth::new("admin", pw)?)`.
#[derive(Clone)]
pub struct BasicAuth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl BasicAuth {
    pub fn new(name: &str, password: &str) -> Result<BasicAuth, AuthError> {
        basic_header(name, password)
            .parse()
            .map(BasicAuth)
            .map_err(|_| AuthError::Unauthenticated)
    }
}

impl tonic::service::Interceptor for BasicAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
