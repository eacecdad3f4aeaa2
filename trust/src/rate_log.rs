//! Log lines about refused connections, at most one a second per kind with a count:
//! each refusal is cheap for whoever causes it, and one line per refusal let a flood of
//! stalled handshakes write 11,000 lines in 14 s.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The least time between two lines of one kind.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// The refusal lines of one listener, a [`RateLog`] per kind.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// A TLS handshake the client failed (no certificate, the wrong CA, not TLS).
    pub(crate) refused: RateLog,
    /// A TLS handshake not finished in time.
    pub(crate) slow: RateLog,
    /// An unfinished TLS handshake closed to make room for a new connection.
    pub(crate) evicted: RateLog,
    /// `accept` failing, most likely for want of descriptors.
    pub(crate) accept: RateLog,
}

/// One kind of refusal's lines, throttled per reason: what a handshake was refused for
/// is what an operator needs to read, so each reason gets its line a second.
#[derive(Debug, Default)]
pub(crate) struct RateLog(Mutex<HashMap<String, State>>);

/// Reasons followed apart at most; beyond them (reasons a peer varies on purpose), the
/// rest share one count.
const REASONS: usize = 32;

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    /// Refusals since the last line.
    unsaid: u64,
}

impl RateLog {
    /// Counts one refusal; `Some(n)` when a line is due, `n` the refusals it stands for
    /// (this one and those not logged since the last line).
    pub(crate) fn hit(&self) -> Option<u64> {
        self.hit_for("")
    }

    /// As [`RateLog::hit`], counted apart for each `reason`.
    pub(crate) fn hit_for(&self, reason: &str) -> Option<u64> {
        self.hit_at(reason, Instant::now())
    }

    fn hit_at(&self, reason: &str, now: Instant) -> Option<u64> {
        let mut reasons = self.0.lock();
        let recent = |state: &State| {
            state
                .last
                .is_some_and(|last| now.saturating_duration_since(last) < EVERY)
        };
        if !reasons.contains_key(reason) && reasons.len() >= REASONS {
            // Reasons quiet for a second make room; what they had not said yet is lost.
            reasons.retain(|_, state| recent(state));
        }
        let key = if reasons.contains_key(reason) || reasons.len() < REASONS {
            reason
        } else {
            ""
        };
        let state = reasons.entry(key.to_string()).or_default();
        state.unsaid += 1;
        if recent(state) {
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.unsaid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_a_second_counting_what_it_stands_for() {
        let log = RateLog::default();
        assert_eq!(log.hit(), Some(1), "the first is said at once");
        for _ in 0..999 {
            assert_eq!(log.hit(), None);
        }
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(log.hit(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(log.hit(), Some(1001), "this one and the 1,000 unsaid");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(log.hit(), Some(1), "after a quiet spell, said at once");
    }

    #[tokio::test(start_paused = true)]
    async fn each_reason_has_its_line_and_a_flood_of_reasons_shares_one() {
        let log = RateLog::default();
        assert_eq!(log.hit_for("no certificate"), Some(1));
        assert_eq!(
            log.hit_for("unknown CA"),
            Some(1),
            "another reason is said too"
        );
        assert_eq!(log.hit_for("no certificate"), None);
        let said = (0..1000)
            .filter(|n| log.hit_for(&format!("made up {n}")).is_some())
            .count();
        assert_eq!(
            said,
            REASONS - 2 + 1,
            "then the rest share one count, said once"
        );
        assert!(log.0.lock().len() <= REASONS + 1);
    }
}
