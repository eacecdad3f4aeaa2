//! The HTTP Basic `Authorization` value (RFC 7617): reading one a client sent, and
//! writing one for a client to send.

use base64::Engine as _;

/// `Basic <base64(name:password)>`, scheme case-insensitive as RFC 7617 allows.
pub(super) fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// The `Authorization` header value for `name` and `password`.
pub fn basic_header(name: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_splits_at_the_first_colon() {
        let parsed = parse_basic(&basic_header("ops", "a:b")).unwrap();
        assert_eq!(parsed, ("ops".to_string(), "a:b".to_string()));
        let lower = basic_header("ops", "x").replacen("Basic", "basic", 1);
        assert_eq!(parse_basic(&lower).unwrap().0, "ops");
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Bearer abc"), None);
    }
}
