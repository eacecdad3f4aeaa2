//! The store's and the engine's notion of a moment.

/// Unix milliseconds.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
