//! Trace ids: 16 lowercase hex digits, as OCP writes them.

pub fn new_trace_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A caller's own trace id is kept only when it has OCP's form, so logs stay greppable.
pub fn accept(candidate: Option<&str>) -> String {
    match candidate {
        Some(id) if is_valid(id) => id.to_string(),
        _ => new_trace_id(),
    }
}

pub fn is_valid(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids_and_replaces_others() {
        assert_eq!(accept(Some("135b61d1965d4be3")), "135b61d1965d4be3");
        let fresh = accept(Some("not-a-trace"));
        assert!(is_valid(&fresh), "{fresh}");
        assert_ne!(new_trace_id(), new_trace_id());
    }
}
