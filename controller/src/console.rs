//! The web console at `/console/`: the files of `controller/console/` (the page, its
//! style and its JavaScript modules) compiled into the binary and served as they are,
//! so a fresh machine needs no Node.js and the console always matches the API it was
//! built with.
//!
//! The console is a page over the REST API: it holds no secret and needs no sign-in to
//! be fetched; what it may show and do is decided by the API, per request, with the
//! credentials the user signs in with.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Every file of `controller/console/`, embedded at build time.
#[derive(rust_embed::Embed)]
#[folder = "console/"]
struct Files;

/// Only the console's own files run and are fetched; it may not be framed, so that its
/// operation buttons cannot be clicked through another site's page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The type a console file is served as, by its extension; None for any other file,
/// which is not served.
fn content_type(name: &str) -> Option<&'static str> {
    match name.rsplit_once('.')?.1 {
        "html" => Some("text/html; charset=utf-8"),
        // What the HTML standard names for scripts and modules alike; browsers run a
        // module only if it is served as JavaScript.
        "js" => Some("text/javascript; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        _ => None,
    }
}

/// The embedded file a request's path below `/console/` names, with its type. Only the
/// names of embedded files are found: no segment may be empty, `.` or `..`, so no path
/// leads out of the folder whatever the store of files does with it.
fn find(path: &str) -> Option<(rust_embed::EmbeddedFile, &'static str)> {
    let plain = path
        .split('/')
        .all(|part| !part.is_empty() && part != "." && part != "..")
        && !path.contains('\\');
    if !plain {
        return None;
    }
    let content_type = content_type(path)?;
    Some((Files::get(path)?, content_type))
}

fn etag(digest: &[u8]) -> HeaderValue {
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The console's routes, to be merged beside the API's. A path that names no file is
/// answered 404 (in OCP's envelope, by the layer the gateway puts around these routes).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|headers: HeaderMap| async move { serve("index.html", &headers) }),
        )
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }),
        )
}

/// The file, or 304 when the browser already holds this build of it: `no-cache` makes
/// it ask every time, so a new controller's console is never mixed with an old one's.
fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some((file, content_type)) = find(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = etag(&file.metadata.sha256_hash());
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        (status, headers).into_response()
    } else {
        (status, headers, file.data).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(name: &str) -> String {
        let (file, _) = find(name).unwrap_or_else(|| panic!("{name} is served"));
        String::from_utf8(file.data.into_owned()).expect("utf-8")
    }

    /// The quoted names after `marker` in `text`, e.g. the `./x.js` of `from "./x.js"`.
    fn quoted_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.match_indices(marker)
            .filter_map(|(at, _)| text[at + marker.len()..].split('"').next())
            .collect()
    }

    #[test]
    fn every_file_the_page_and_its_modules_load_is_served_as_what_it_is() {
        let page = text("index.html");
        let mut loaded: Vec<&str> = quoted_after(&page, "src=\"");
        loaded.extend(quoted_after(&page, "href=\""));
        loaded.retain(|name| !name.starts_with('#'));
        assert!(loaded.contains(&"app.js") && loaded.contains(&"app.css"));
        assert!(page.contains("<script type=\"module\" src=\"app.js\">"));
        let scripts: Vec<String> = Files::iter()
            .filter(|name| name.ends_with(".js"))
            .map(|name| name.into_owned())
            .collect();
        for script in &scripts {
            let source = text(script);
            assert!(source.starts_with("// "), "{script} says what it owns");
            assert!(source.lines().count() <= 500, "{script} is too long");
            for import in quoted_after(&source, "from \"") {
                let name = import.strip_prefix("./").expect("a relative import");
                assert!(find(name).is_some(), "{script} imports {import}");
            }
        }
        for name in loaded {
            assert!(find(name).is_some(), "index.html loads {name}");
        }
        assert!(text("app.js").contains("/profiles/me"));
    }

    #[test]
    fn only_embedded_files_are_found() {
        assert!(find("app.js").is_some());
        for path in [
            "",
            "nope.js",
            "../Cargo.toml",
            "../src/console.rs",
            "./app.js",
            "/app.js",
            "a//app.js",
            "..\\Cargo.toml",
        ] {
            assert!(find(path).is_none(), "{path:?}");
        }
        assert_eq!(
            content_type("app.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(content_type("notes.txt"), None);
    }

    #[test]
    fn a_changed_file_gets_a_new_etag() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(etag(b"a"), etag(b"a"));
    }
}
