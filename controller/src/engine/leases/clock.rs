//! The lease clock: wall-clock milliseconds that follow tokio's clock.

use tokio::time::Instant;

use crate::model::{Millis, now_millis};

/// Wall-clock milliseconds that advance with tokio's clock, so that lease times follow
/// paused time in tests and never jump backwards with the system clock.
#[derive(Clone, Copy)]
pub(in crate::engine) struct Clock {
    wall: Millis,
    at: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall: now_millis(),
            at: Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        let elapsed = i64::try_from(self.at.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_lease_clock_follows_tokio_time() {
        let clock = Clock::start();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(clock.now() - t0, 11_000);
    }
}
