//! When a step calls its agent again after a failed call: the one retry policy, and the
//! pure decision of what follows a failure.
//!
//! Only steps retry: a heartbeat comes again on its own, and an operator's call is
//! answered at once, right or wrong, for the operator to decide.

use std::time::Duration;

use tokio::time::Instant;

use super::AgentError;

/// The pause after a first failed attempt; each next one is twice the last, up to
/// `MAX_PAUSE`, so that a restarting agent is found soon and a dead one not hammered.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// How a step's calls to its agent are retried: transient failures only, at most
/// `retries` times, with a jittered doubling pause, and never past `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Calls after the first, at most (`Step::transient_retries`).
    pub retries: u32,
    /// The step's: no attempt starts after it, and no pause runs past it.
    pub deadline: Instant,
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then make the next attempt.
    RetryAfter(Duration),
    /// The failure was transient, but the attempts are spent.
    GiveUp,
    /// Another attempt would fail alike: a refused certificate, a refusal by the agent.
    Fail,
}

impl RetryPolicy {
    /// How long an attempt starting at `now` may take; None once the deadline has come,
    /// when no attempt starts.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// Attempt number `attempt` (the first is 1) has just failed with `error`. `jitter`,
    /// drawn from [0, 1), makes the pause between half and one and a half times its
    /// length, so that hosts failing together do not retry in lockstep.
    pub fn after_failure(
        &self,
        attempt: u32,
        error: &AgentError,
        now: Instant,
        jitter: f64,
    ) -> Next {
        if !error.is_transient() {
            return Next::Fail;
        }
        if attempt > self.retries {
            return Next::GiveUp;
        }
        let doubled = FIRST_PAUSE
            .checked_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .map_or(MAX_PAUSE, |pause| pause.min(MAX_PAUSE));
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let pause = doubled.mul_f64(0.5 + jitter);
        Next::RetryAfter(pause.min(self.deadline.saturating_duration_since(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> AgentError {
        AgentError::Unreachable {
            address: "http://127.0.0.2:9000".to_string(),
            reason: "connection refused".to_string(),
            status: tonic::Status::unavailable("connection refused"),
        }
    }

    fn policy(retries: u32, left: Duration) -> (RetryPolicy, Instant) {
        let now = Instant::now();
        (
            RetryPolicy {
                retries,
                deadline: now + left,
            },
            now,
        )
    }

    #[test]
    fn transient_failures_are_retried_with_a_doubling_pause_up_to_two_seconds() {
        let (policy, now) = policy(8, Duration::from_secs(600));
        let pauses: Vec<Next> = (1..=8)
            .map(|attempt| policy.after_failure(attempt, &unreachable(), now, 0.5))
            .collect();
        let ms = |ms| Next::RetryAfter(Duration::from_millis(ms));
        assert_eq!(
            pauses,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000),
                ms(2000)
            ]
        );
    }

    #[test]
    fn the_jitter_spreads_a_pause_between_half_and_one_and_a_half() {
        let (policy, now) = policy(8, Duration::from_secs(600));
        let error = unreachable();
        assert_eq!(
            policy.after_failure(3, &error, now, 0.0),
            Next::RetryAfter(Duration::from_millis(200))
        );
        assert_eq!(
            policy.after_failure(3, &error, now, 1.0),
            Next::RetryAfter(Duration::from_millis(600))
        );
        assert_eq!(
            policy.after_failure(3, &error, now, f64::NAN),
            Next::RetryAfter(Duration::from_millis(400))
        );
    }

    #[test]
    fn the_attempts_are_spent_after_the_last_retry() {
        let (policy, now) = policy(5, Duration::from_secs(60));
        assert!(matches!(
            policy.after_failure(5, &unreachable(), now, 0.5),
            Next::RetryAfter(_)
        ));
        assert_eq!(
            policy.after_failure(6, &unreachable(), now, 0.5),
            Next::GiveUp
        );
        let (none, now) = self::policy(0, Duration::from_secs(60));
        assert_eq!(
            none.after_failure(1, &unreachable(), now, 0.5),
            Next::GiveUp
        );
    }

    #[test]
    fn refusals_are_not_retried() {
        let (policy, now) = policy(8, Duration::from_secs(60));
        let refused = AgentError::Refused {
            code: tonic::Code::FailedPrecondition,
            message: "not operable".to_string(),
        };
        let untrusted = AgentError::Untrusted {
            address: "https://10.0.0.5:9000".to_string(),
            reason: "the agent at 10.0.0.5 presented a certificate for 10.0.0.6".to_string(),
            status: tonic::Status::unavailable("handshake"),
        };
        let bad = AgentError::BadAddress {
            address: "http://[::1:9000".to_string(),
            reason: "invalid authority".to_string(),
        };
        for error in [refused, untrusted, bad] {
            assert_eq!(policy.after_failure(1, &error, now, 0.5), Next::Fail);
        }
    }

    #[test]
    fn no_pause_runs_past_the_deadline_and_no_attempt_starts_after_it() {
        let (policy, now) = policy(8, Duration::from_millis(150));
        assert_eq!(
            policy.after_failure(2, &unreachable(), now, 0.5),
            Next::RetryAfter(Duration::from_millis(150))
        );
        assert_eq!(policy.time_left(now), Some(Duration::from_millis(150)));
        let later = now + Duration::from_millis(150);
        assert_eq!(policy.time_left(later), None);
        assert_eq!(
            policy.after_failure(1, &unreachable(), later, 0.5),
            Next::RetryAfter(Duration::ZERO)
        );
    }
}
