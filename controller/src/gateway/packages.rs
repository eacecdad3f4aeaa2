//! `/agent/packages`: agent packages, uploaded as a streamed `application/octet-stream`
//! body, listed and deleted.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};

use super::error::{ApiError, codes};
use super::extract::{PathIds, QueryParams, linger};
use super::json::{AgentPackageJson, Envelope, PageOf};
use super::{ApiResult, Data, Failures, GatewayState};
use crate::service::{ApiOperation, Caller, CoreError};

/// The upload's path; its body may be as large as `--max-package-bytes`, where every
/// other route's is held to `BODY_LIMIT`.
pub const UPLOAD_PATH: &str = "/agent/packages";

/// The largest body `method path` may bring, when it is the upload's.
pub fn upload_limit(state: &GatewayState, method: &Method, path: &str) -> Option<u64> {
    let bare = path.strip_prefix("/api/v2").unwrap_or(path);
    (method == Method::POST && bare == UPLOAD_PATH).then(|| state.core.max_package_bytes())
}

/// The 413 of an upload larger than the limit.
pub fn too_large(limit: u64) -> ApiError {
    CoreError::PackageTooLarge { limit }.into()
}

/// The upload's body is the binary itself: only `application/octet-stream` (which a
/// browser never sends to another site without asking first) is read.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = given.map(|t| t.split(';').next().unwrap_or_default().trim());
    if essence.is_some_and(|e| e.eq_ignore_ascii_case("application/octet-stream")) {
        return Ok(());
    }
    let message = match given {
        Some(t) => format!(
            "Content-Type {t} is not accepted: send the ocp-agent binary as the body, with \
             Content-Type: application/octet-stream"
        ),
        None => "the request has no Content-Type: send the ocp-agent binary as the body, \
                 with Content-Type: application/octet-stream"
            .to_string(),
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        codes::ILLEGAL_ARGUMENT,
        message,
    ))
}

/// Upload an ocp-agent binary as a package of `version`. The body is checked (an ELF
/// executable for x86_64 or aarch64, not empty, matching `sha256` when given, at most
/// --max-package-bytes, 256 MiB by default) and stored as it streams in; the same
/// version, architecture and content again answers with the stored package, other
/// content under a stored version and architecture with 409.
#[utoipa::path(operation_id = ApiOperation::UploadPackage.name(),
    post, path = "/agent/packages", tag = "packages",
    params(("version" = String, Query, description = "the package's version: letters, digits and . - _ +, starting with a letter or digit, at most 64"),
        ("sha256" = Option<String>, Query, description = "the binary's SHA-256 as 64 hex digits, checked against the body")),
    request_body(content = String, content_type = "application/octet-stream",
        description = "the ocp-agent binary"),
    responses((status = 200, description = "the package: new, or the one stored with the same version, architecture and content", body = Envelope<AgentPackageJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn upload_package(
    State(state): State<GatewayState>,
    caller: Caller,
    query: QueryParams,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<AgentPackageJson> {
    let mut content = body.into_data_stream();
    let checked = query
        .only(&["version", "sha256"])
        .and_then(|query| check_content_type(&headers).map(|()| query));
    let query = match checked {
        Ok(query) => query,
        Err(e) => {
            linger(content, 0).await;
            return Err(e);
        }
    };
    let version = query.get("version").unwrap_or_default();
    let uploaded = state
        .core
        .upload_package(&caller, version, query.get("sha256"), &mut content)
        .await;
    match uploaded {
        Ok(package) => Ok(Data((&package).into())),
        Err(e) => {
            // What the client still sends, read (within bounds) so that it reads this
            // answer instead of a reset.
            linger(content, 0).await;
            Err(e.into())
        }
    }
}

/// Agent packages, newest upload first.
#[utoipa::path(operation_id = ApiOperation::ListPackages.name(),
    get, path = "/agent/packages", tag = "packages",
    params(("page" = Option<u32>, Query, description = "page number, from 1"),
        ("size" = Option<u32>, Query, description = "page size, 10 by default, at most 2000")),
    responses((status = 200, description = "the packages", body = Envelope<PageOf<AgentPackageJson>>), Failures),
    security(("basic" = ["HOST_VIEWER"])))]
pub async fn list_packages(
    State(state): State<GatewayState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<PageOf<AgentPackageJson>> {
    let query = query.only(&["page", "size"])?;
    let page = state.core.list_packages(&caller, query.page()?).await?;
    Ok(Data(PageOf::from_page(&page, |p| p.into())))
}

/// Delete an agent package, unless an unfinished task uses it (409); answers with the
/// package as it was.
#[utoipa::path(operation_id = ApiOperation::DeletePackage.name(),
    delete, path = "/agent/packages/{id}", tag = "packages",
    params(("id" = i64, Path, description = "package id")),
    responses((status = 200, description = "the deleted package", body = Envelope<AgentPackageJson>), Failures),
    security(("basic" = ["HOST_MANAGER"])))]
pub async fn delete_package(
    State(state): State<GatewayState>,
    caller: Caller,
    ids: PathIds,
) -> ApiResult<AgentPackageJson> {
    let id = ids.id("id")?;
    let deleted = state.core.delete_package(&caller, id).await?;
    Ok(Data((&deleted).into()))
}
