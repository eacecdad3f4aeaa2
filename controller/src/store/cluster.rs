//! The controller cluster's id: one per store, made by the first controller that starts
//! on it and read by every other, so that all the controllers of one PostgreSQL
//! database are one cluster to the agents, and each SQLite store a cluster of its own.

use super::{Store, StoreError};
use crate::model::now_millis;

impl Store {
    /// The store's cluster id, made now if it has none. Two controllers starting at
    /// once both offer one: the row's single key lets the first insert win, the other
    /// insert does nothing (PostgreSQL makes it wait for the first to commit), and both
    /// read the winner's.
    pub async fn cluster_id(&self) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO cluster (singleton, id, create_time) VALUES (1, $1, $2) \
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(uuid_v4(rand::random()))
        .bind(now_millis())
        .execute(&self.writer)
        .await?;
        let id: String = sqlx::query_scalar("SELECT id FROM cluster WHERE singleton = 1")
            .fetch_one(&self.writer)
            .await?;
        Ok(id)
    }
}

/// `bytes`, drawn at random, as a UUID of version 4 in its usual text form.
fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_is_a_version_4_uuid() {
        assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        let id = uuid_v4(rand::random());
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, uuid_v4(rand::random()));
    }
}
