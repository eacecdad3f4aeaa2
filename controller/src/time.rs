//! OCP's way of writing a moment: RFC 3339, milliseconds, the server's own UTC offset.

use chrono::{Local, TimeZone};

use crate::model::Millis;

pub fn format_millis(at: Millis) -> String {
    match Local.timestamp_millis_opt(at).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
        None => String::new(),
    }
}

pub fn format_optional(at: Option<Millis>) -> String {
    at.map(format_millis).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_millis_and_an_offset() {
        let s = format_millis(1_630_650_026_243);
        assert_eq!(s.len(), "2021-09-03T14:20:26.243+08:00".len(), "{s}");
        assert!(s.contains(".243"), "{s}");
    }
}
