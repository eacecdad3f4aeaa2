//! Cross-site refusals: which origins may change state, and which bodies a route accepts.
//!
//! A browser sends a form or `text/plain` POST to any address without asking first (no
//! CORS preflight), with the Basic credentials it has cached for that address. So that
//! such a request cannot act, a state-changing request from another origin is refused,
//! and a body is accepted only as `application/json` (which a browser sends to another
//! origin only after a preflight this server never grants) and only on routes that take
//! one. Clients without an `Origin` header (curl, CLIs, OCP's own clients) are not
//! browsers acting for someone else and pass.

use axum::body::{Body, HttpBody as _};
use axum::extract::{MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::{ApiError, codes};
use super::extract;
use super::routes::Routes;

/// The one declaration of which methods change state: every method but the safe ones.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossSite {
    #[error(
        "cross-site request refused: Origin {origin} is not this controller's origin {expected}; \
         a request that changes state must come from {expected} or carry no Origin header"
    )]
    ForeignOrigin { origin: String, expected: String },
    #[error(
        "cross-site request refused: Origin {origin} cannot be compared with this controller's \
         origin, the request names no Host"
    )]
    NoHost { origin: String },
    #[error(
        "cross-site request refused: Sec-Fetch-Site is {0}; a request that changes state must \
         come from this controller's own pages (same-origin) or from a client that is not a browser"
    )]
    FetchSite(String),
}

/// Where a request says it comes from, as its headers tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Provenance<'a> {
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
    /// The request's authority: HTTP/2's `:authority`, else the Host header.
    pub host: Option<&'a str>,
}

/// Whether a request may go on, judged by its method and where it says it comes from.
/// The controller's own origin is the scheme it serves and the Host it was asked by;
/// `Origin: null` (sandboxed frames, some redirects) is foreign.
pub fn check_origin(method: &Method, https: bool, from: Provenance<'_>) -> Result<(), CrossSite> {
    if !changes_state(method) {
        return Ok(());
    }
    let fetched_from_elsewhere = |site: &&str| {
        site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
    };
    if let Some(site) = from
        .fetch_site
        .map(str::trim)
        .filter(fetched_from_elsewhere)
    {
        return Err(CrossSite::FetchSite(site.to_ascii_lowercase()));
    }
    let Some(origin) = from.origin else {
        return Ok(());
    };
    let scheme = if https { "https" } else { "http" };
    let Some(host) = from.host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Err(CrossSite::NoHost {
            origin: origin.to_string(),
        });
    };
    let expected = serialized_origin(scheme, host);
    if origin == expected {
        Ok(())
    } else {
        Err(CrossSite::ForeignOrigin {
            origin: origin.to_string(),
            expected,
        })
    }
}

/// This controller's origin as a browser writes it in `Origin` (RFC 6454): the scheme,
/// the host in lower case, and the port unless it is the scheme's default. An `Origin`
/// is compared with it exactly: no browser sends a trailing slash, spaces, capitals or
/// a default port, so whatever does was not sent by one of this controller's pages.
fn serialized_origin(scheme: &str, host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    format!("{scheme}://{host}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefusal {
    #[error(
        "Content-Type {0} is not accepted: this route takes a JSON body, send it with \
         Content-Type: application/json"
    )]
    NotJson(String),
    #[error(
        "the request has a body but no Content-Type: this route takes a JSON body, send it \
         with Content-Type: application/json"
    )]
    Untyped,
}

/// Whether a body announced with `content_type` may be read as JSON. Only
/// `application/json` itself is: `application/*+json` types (merge-patch, problem) say
/// the body means something else than this route reads. A charset, if named, must be UTF-8.
pub fn check_content_type(content_type: Option<&str>, has_body: bool) -> Result<(), BodyRefusal> {
    let Some(value) = content_type else {
        return if has_body {
            Err(BodyRefusal::Untyped)
        } else {
            Ok(())
        };
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let utf8 = parts.all(|param| match param.split_once('=') {
        Some((name, v)) if name.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    if essence.eq_ignore_ascii_case("application/json") && utf8 {
        Ok(())
    } else {
        Err(BodyRefusal::NotJson(value.to_string()))
    }
}

/// What the guard middleware needs besides the request.
#[derive(Clone)]
pub struct Guard {
    /// Whether the REST face is served over TLS: the scheme of the controller's origin.
    pub https: bool,
    pub routes: Routes,
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not visible ASCII)"))
}

/// A body sent to a route that takes none, read and set aside by the guard, to be
/// refused once the caller is known: credentials and permission are judged first.
#[derive(Debug, Clone, Copy)]
pub struct UnwantedBody(pub usize);

/// The refusal of a body on a route that takes none, if the request brought one.
pub fn unwanted_body(parts: &Parts) -> Result<(), ApiError> {
    match parts.extensions.get::<UnwantedBody>() {
        Some(UnwantedBody(len)) => Err(ApiError::invalid(
            "body",
            Value::Null,
            format!(
                "{} {} takes no request body; send none (this one had {len} bytes)",
                parts.method,
                parts.uri.path()
            ),
        )),
        None => Ok(()),
    }
}

/// The refusal of a body that is not JSON, on a route that takes a JSON body.
pub fn json_body(parts: &Parts, body: &[u8]) -> Result<(), ApiError> {
    let content_type = header(&parts.headers, header::CONTENT_TYPE);
    check_content_type(content_type, !body.is_empty()).map_err(|e| {
        let mut error = ApiError::invalid(
            "Content-Type",
            content_type.map_or(Value::Null, |v| Value::String(v.to_string())),
            e.to_string(),
        );
        error.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        error.message = e.to_string();
        error
    })
}

/// Refuses a request that fails `check_origin` (403) before anything else; counts (and
/// drops) the body of a route that takes none, for `unwanted_body` to refuse after
/// authentication.
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let provenance = Provenance {
        origin: header(headers, header::ORIGIN),
        fetch_site: header(headers, header::HeaderName::from_static("sec-fetch-site")),
        host: request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| header(headers, header::HOST)),
    };
    if let Err(e) = check_origin(request.method(), guard.https, provenance) {
        extract::linger(request.into_body().into_data_stream(), 0).await;
        return ApiError::new(StatusCode::FORBIDDEN, codes::NOT_PERMITTED, e.to_string())
            .into_response();
    }
    let takes_body = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| guard.routes.takes_body(request.method(), m.as_str()));
    if takes_body != Some(false) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    if body.size_hint().exact() != Some(0) {
        let seen = extract::count_body(body).await;
        if seen > 0 {
            parts.extensions.insert(UnwantedBody(seen));
        }
    }
    next.run(Request::from_parts(parts, Body::empty())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<'a>(
        origin: Option<&'a str>,
        fetch_site: Option<&'a str>,
        host: Option<&'a str>,
    ) -> Provenance<'a> {
        Provenance {
            origin,
            fetch_site,
            host,
        }
    }

    const HOST: Option<&str> = Some("10.0.0.1:8080");

    #[test]
    fn only_get_head_and_options_leave_state_alone() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!changes_state(&m), "{m}");
        }
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::TRACE,
            Method::CONNECT,
            Method::from_bytes(b"PURGE").unwrap(),
        ] {
            assert!(changes_state(&m), "{m}");
        }
    }

    #[test]
    fn requests_without_origin_pass() {
        assert_eq!(
            check_origin(&Method::POST, false, from(None, None, HOST)),
            Ok(())
        );
        assert_eq!(
            check_origin(&Method::DELETE, true, from(None, None, None)),
            Ok(())
        );
    }

    #[test]
    fn the_controllers_own_origin_passes() {
        let own = from(Some("http://10.0.0.1:8080"), Some("same-origin"), HOST);
        assert_eq!(check_origin(&Method::POST, false, own), Ok(()));
        let own_tls = from(Some("https://ocp.example"), None, Some("OCP.example:443"));
        assert_eq!(check_origin(&Method::POST, true, own_tls), Ok(()));
        let default_port = from(Some("http://ocp.example"), None, Some("ocp.example:80"));
        assert_eq!(check_origin(&Method::DELETE, false, default_port), Ok(()));
        let user_typed = from(Some("http://10.0.0.1:8080"), Some("none"), HOST);
        assert_eq!(check_origin(&Method::POST, false, user_typed), Ok(()));
    }

    #[test]
    fn a_foreign_origin_is_refused_naming_both() {
        let e = check_origin(
            &Method::POST,
            false,
            from(Some("http://evil.example"), None, HOST),
        )
        .unwrap_err();
        assert_eq!(
            e,
            CrossSite::ForeignOrigin {
                origin: "http://evil.example".into(),
                expected: "http://10.0.0.1:8080".into()
            }
        );
        let text = e.to_string();
        assert!(text.contains("http://evil.example") && text.contains("http://10.0.0.1:8080"));
    }

    #[test]
    fn scheme_port_and_null_origins_are_foreign() {
        for origin in [
            "https://10.0.0.1:8080",
            "http://10.0.0.1:8081",
            "http://10.0.0.1",
            "null",
            "",
            // Not as a browser writes this controller's origin: compared exactly.
            "http://10.0.0.1:8080/",
            " http://10.0.0.1:8080",
            "http://10.0.0.1:8080 ",
            "HTTP://10.0.0.1:8080",
        ] {
            assert!(
                check_origin(&Method::POST, false, from(Some(origin), None, HOST)).is_err(),
                "{origin:?}"
            );
        }
        assert!(
            check_origin(
                &Method::POST,
                true,
                from(Some("http://10.0.0.1:8080"), None, HOST)
            )
            .is_err(),
            "plain http origin against a TLS controller"
        );
        assert_eq!(
            check_origin(&Method::POST, false, from(Some("http://x"), None, None)),
            Err(CrossSite::NoHost {
                origin: "http://x".into()
            })
        );
    }

    #[test]
    fn cross_and_same_site_fetches_are_refused_even_without_origin() {
        for site in ["cross-site", "same-site", "Cross-Site"] {
            assert!(matches!(
                check_origin(&Method::POST, false, from(None, Some(site), HOST)),
                Err(CrossSite::FetchSite(_))
            ));
        }
    }

    #[test]
    fn safe_methods_pass_whatever_their_origin() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            let foreign = from(Some("null"), Some("cross-site"), None);
            assert_eq!(check_origin(&m, false, foreign), Ok(()));
        }
    }

    #[test]
    fn only_json_bodies_are_taken() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert_eq!(check_content_type(Some(ok), true), Ok(()), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/merge-patch+json",
            "application/json; charset=latin1",
            "application/jsonx",
            "",
        ] {
            assert_eq!(
                check_content_type(Some(bad), true),
                Err(BodyRefusal::NotJson(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(check_content_type(None, true), Err(BodyRefusal::Untyped));
        assert_eq!(check_content_type(None, false), Ok(()));
        assert!(check_content_type(Some("text/plain"), false).is_err());
    }
}
