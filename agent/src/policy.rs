//! When to try again after a process died, and when to give up.
//!
//! Like supervisord's `startretries`: a process that keeps dying sooner than its
//! `min_live` is broken (bad config, missing file, port taken), and restarting it
//! forever would only fill its log and load the host, so after [`MAX_QUICK_EXITS`]
//! such exits in a row it is FATAL until an operator starts it again. Exits after a
//! longer life are restarted with an exponential backoff, which resets once a run
//! lasted [`STABLE_AFTER`].

use std::time::Duration;

use tokio::time::Instant;

pub const FIRST_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(30);
pub const MAX_QUICK_EXITS: u32 = 3;
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    Fatal,
}

#[derive(Debug)]
pub struct RestartPolicy {
    min_live: Duration,
    quick_exits: u32,
    failures: u32,
    spawned_at: Option<Instant>,
}

impl RestartPolicy {
    pub fn new(min_live: Duration) -> RestartPolicy {
        RestartPolicy {
            min_live,
            quick_exits: 0,
            failures: 0,
            spawned_at: None,
        }
    }

    /// An operator's start or stop: the count of earlier failures no longer applies.
    pub fn reset(&mut self) {
        self.quick_exits = 0;
        self.failures = 0;
        self.spawned_at = None;
    }

    pub fn spawned(&mut self, now: Instant) {
        self.spawned_at = Some(now);
    }

    /// A start that did not get to RUNNING: always a quick exit, whatever its cause.
    pub fn start_failed(&mut self) -> Decision {
        self.spawned_at = None;
        self.quick_exits += 1;
        self.next()
    }

    /// The process died after it had been counted as started.
    pub fn exited(&mut self, now: Instant) -> Decision {
        let lived = self
            .spawned_at
            .take()
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        if lived < self.min_live {
            self.quick_exits += 1;
        } else {
            self.quick_exits = 0;
        }
        if lived >= STABLE_AFTER {
            self.failures = 0;
        }
        self.next()
    }

    fn next(&mut self) -> Decision {
        if self.quick_exits >= MAX_QUICK_EXITS {
            return Decision::Fatal;
        }
        self.failures += 1;
        let doublings = self.failures.saturating_sub(1).min(16);
        Decision::RetryAfter((FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_the_cap() {
        let mut p = RestartPolicy::new(Duration::from_secs(1));
        let mut delays = Vec::new();
        for _ in 0..12 {
            p.spawned(Instant::now());
            advance(Duration::from_secs(2)).await;
            match p.exited(Instant::now()) {
                Decision::RetryAfter(d) => delays.push(d),
                Decision::Fatal => panic!("slow exits are never fatal"),
            }
        }
        let expected: Vec<Duration> = [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600]
            .into_iter()
            .map(ms)
            .chain([MAX_DELAY; 3])
            .collect();
        assert_eq!(delays, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_after_three_quick_exits_in_a_row() {
        let mut p = RestartPolicy::new(Duration::from_secs(1));
        p.spawned(Instant::now());
        advance(ms(200)).await;
        assert_eq!(p.exited(Instant::now()), Decision::RetryAfter(ms(100)));
        p.spawned(Instant::now());
        advance(ms(200)).await;
        assert_eq!(p.exited(Instant::now()), Decision::RetryAfter(ms(200)));
        p.spawned(Instant::now());
        advance(ms(200)).await;
        assert_eq!(p.exited(Instant::now()), Decision::Fatal);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_enough_life_breaks_the_streak() {
        let mut p = RestartPolicy::new(Duration::from_secs(1));
        assert!(matches!(p.start_failed(), Decision::RetryAfter(_)));
        assert!(matches!(p.start_failed(), Decision::RetryAfter(_)));
        p.spawned(Instant::now());
        advance(Duration::from_secs(1)).await;
        assert!(matches!(p.exited(Instant::now()), Decision::RetryAfter(_)));
        assert!(matches!(p.start_failed(), Decision::RetryAfter(_)));
        assert!(matches!(p.start_failed(), Decision::RetryAfter(_)));
        assert_eq!(p.start_failed(), Decision::Fatal);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_run_resets_the_backoff_and_reset_clears_fatal() {
        let mut p = RestartPolicy::new(Duration::ZERO);
        for _ in 0..5 {
            p.spawned(Instant::now());
            advance(ms(10)).await;
            p.exited(Instant::now());
        }
        p.spawned(Instant::now());
        advance(STABLE_AFTER).await;
        assert_eq!(p.exited(Instant::now()), Decision::RetryAfter(FIRST_DELAY));

        let mut q = RestartPolicy::new(Duration::from_secs(1));
        for _ in 0..3 {
            q.start_failed();
        }
        q.reset();
        assert_eq!(q.start_failed(), Decision::RetryAfter(FIRST_DELAY));
    }
}
