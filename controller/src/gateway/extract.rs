//! Extractors that turn every way a request can be wrong into an `ApiError` that says
//! which field to fix, instead of axum's plain-text rejections.
//!
//! Handlers list them in this order, which is the order of the checks a caller sees:
//! credentials (401), permission (403), a body on a route that takes none (400), path
//! ids and query (400), body (413, then 415 unless JSON, then 400). The guard middleware
//! checks before all of them where a request comes from (403).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::GatewayState;
use super::error::ApiError;
use super::routes::Routes;
use crate::auth::Credentials;
use crate::model::PageRequest;
use crate::service::{Caller, admit};

/// The request's trace id, put in place by the envelope middleware for the handlers
/// to pass on to the core (and so to the store and the agents).
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub trace_id: Arc<str>,
}

impl RequestContext {
    pub fn of(parts: &Parts) -> RequestContext {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext {
                trace_id: crate::trace::new_trace_id().into(),
            })
    }
}

/// The admitted caller of the route's operation: the credentials the layer in front of
/// both faces took are checked here, and admitted by the core's operation table, in
/// extraction, before the body is even read.
impl FromRequestParts<GatewayState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &GatewayState) -> Result<Self, ApiError> {
        let matched = parts.extensions.get::<MatchedPath>();
        let routes = parts.extensions.get::<Routes>();
        let Some(operation) = matched
            .zip(routes)
            .and_then(|(m, routes)| routes.operation(&parts.method, m.as_str()))
        else {
            tracing::error!(
                "{} {} names no operation of the table: its operationId is wrong",
                parts.method,
                parts.uri.path()
            );
            return Err(ApiError::from_status(
                StatusCode::INTERNAL_SERVER_ERROR,
                parts.method.as_str(),
                parts.uri.path(),
            ));
        };
        let trace_id = RequestContext::of(parts).trace_id.to_string();
        let principal = Credentials::principal(&parts.extensions).await;
        let caller = admit(operation, principal, trace_id)?;
        super::cross_site::unwanted_body(parts)?;
        Ok(caller)
    }
}

/// The path's named segments, parsed on demand so a bad one is reported by its name.
pub struct PathIds(HashMap<String, String>);

impl PathIds {
    pub fn id(&self, name: &str) -> Result<i64, ApiError> {
        let raw = self.0.get(name).map(String::as_str).unwrap_or_default();
        raw.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                name,
                Value::String(raw.to_string()),
                "must be a 64-bit integer id",
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Path(map)) => Ok(PathIds(map)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                super::error::codes::ILLEGAL_ARGUMENT,
                format!("the path cannot be read: {}", e.body_text()),
            )),
        }
    }
}

/// The query string as name/value pairs. Each handler names what it accepts with
/// [`QueryParams::only`]: a misspelt filter (`?hostid=3`) silently ignored would answer
/// with every task instead of that host's, so an unknown name is refused.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Query(pairs)) => Ok(QueryParams(pairs)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                super::error::codes::ILLEGAL_ARGUMENT,
                format!("the query string cannot be read: {}", e.body_text()),
            )),
        }
    }
}

impl QueryParams {
    /// Refuses the first name that is not in `accepted`, listing what is.
    pub fn only(self, accepted: &[&str]) -> Result<Self, ApiError> {
        if let Some((name, value)) = self.0.iter().find(|(k, _)| !accepted.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                name,
                Value::String(value.clone()),
                format!(
                    "unknown query parameter; this route accepts {}",
                    if accepted.is_empty() {
                        "none".to_string()
                    } else {
                        accepted.join(", ")
                    }
                ),
            ));
        }
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a name given more than once (`status=NEW&status=ONLINE`), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn number<T: std::str::FromStr>(
        &self,
        name: &str,
        valid: impl Fn(&T) -> bool,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(raw) => raw
                .parse::<T>()
                .ok()
                .filter(|v| valid(v))
                .map(Some)
                .ok_or_else(|| ApiError::invalid(name, Value::String(raw.to_string()), expected)),
        }
    }

    /// An event sequence number to resume after; 0 when absent.
    pub fn seq(&self, name: &str) -> Result<i64, ApiError> {
        Ok(self
            .number::<i64>(name, |n| *n >= 0, "must be an event seq, 0 or more")?
            .unwrap_or(0))
    }

    /// `page` and `size` as numbers; their bounds are the model's paging rules.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let whole = "must be a whole number";
        let number = self.number::<u32>("page", |_| true, whole)?;
        let size = self.number::<u32>("size", |_| true, whole)?;
        PageRequest::new(number, size).map_err(|e| {
            let rejected = self.get(e.field).unwrap_or_default().to_string();
            ApiError::invalid(e.field, Value::String(rejected), e.message)
        })
    }

    /// A whole number whose bounds are the core's to check.
    pub fn whole(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.number::<i64>(name, |_| true, "must be a whole number")
    }

    pub fn id(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.number::<i64>(name, |n| *n > 0, "must be a positive 64-bit integer id")
    }
}

/// A JSON body. Errors name the field by its JSON path and quote the refused value.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(body, &parts.method, parts.uri.path()).await?;
        super::cross_site::json_body(&parts, &bytes)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid(
                "body",
                Value::Null,
                "the request body is missing: send a JSON object",
            ));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::invalid("body", Value::Null, format!("is not valid JSON: {e}"))
        })?;
        // Every body of this API is an object; serde would also read a struct from an
        // array of its fields in order.
        if !value.is_object() {
            return Err(ApiError::invalid(
                "body",
                Value::Null,
                "must be a JSON object",
            ));
        }
        serde_path_to_error::deserialize(&value)
            .map(JsonBody)
            .map_err(|e| body_error(&value, e))
    }
}

/// How much of an oversized body is still read, and for how long, before answering
/// 413: a client still sending when the server closes gets a reset instead of the
/// answer, and would never learn what was wrong (what nginx calls a lingering close).
const DRAIN_LIMIT: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and drops what the client still sends of a refused body (`seen` bytes of it
/// so far), within DRAIN_LIMIT and DRAIN_TIME, so that it reads the answer.
pub(super) async fn linger(mut stream: axum::body::BodyDataStream, mut seen: usize) {
    let drained = async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
}

/// How many bytes a body holds, each chunk dropped as it comes: for a body refused
/// whatever it holds, and read before authentication, so it must cost no memory.
pub(super) async fn count_body(body: Body) -> usize {
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > super::BODY_LIMIT {
            linger(stream, seen).await;
            break;
        }
    }
    seen
}

/// The body, at most BODY_LIMIT bytes; a longer one is drained and refused.
async fn read_body(body: Body, method: &Method, path: &str) -> Result<Vec<u8>, ApiError> {
    let unreadable = |e: axum::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            super::error::codes::ILLEGAL_ARGUMENT,
            format!("the request body cannot be read: {e}"),
        )
    };
    let mut stream = body.into_data_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unreadable)?;
        if body.len() + chunk.len() > super::BODY_LIMIT {
            linger(stream, body.len() + chunk.len()).await;
            return Err(ApiError::from_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                method.as_str(),
                path,
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn body_error(value: &Value, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_path_to_error::Segment;
    let mut field = String::new();
    let mut pointer = String::new();
    for segment in e.path().iter() {
        match segment {
            Segment::Seq { index } => {
                field.push_str(&format!("[{index}]"));
                pointer.push_str(&format!("/{index}"));
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => {}
        }
    }
    let message = e.inner().to_string();
    let at_path = value.pointer(&pointer).cloned().unwrap_or(Value::Null);
    // serde names a missing field (and, depending on the type, an unknown one) in the
    // message while the path stops at the parent: complete the field from the message.
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"))
        .filter(|name| !field.ends_with(name));
    let rejected = match named {
        Some(_) if message.starts_with("missing field") => Value::Null,
        Some(name) => at_path.get(name).cloned().unwrap_or(Value::Null),
        None => at_path,
    };
    if let Some(name) = named {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(name);
    }
    if field.is_empty() {
        field.push_str("body");
    }
    ApiError::invalid(&field, rejected, message)
}
