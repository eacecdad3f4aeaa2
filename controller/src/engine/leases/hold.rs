//! A task's hold on its lease, as far as this controller knows: steps wait on it before
//! they call an agent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Clock;
use crate::model::Millis;

/// Until when, on the lease clock, this controller knows it holds one task's lease:
/// set when it starts driving the task, pushed on by each renewal that finds the task
/// still held, never by one that does not.
///
/// Store writes are fenced in the database; an agent call cannot be. A controller woken
/// from a pause past its TTL would otherwise send the call a step was about to make
/// (the next attempt after a backoff, say) before its lease loop learns that the task
/// was taken over, and undo what the new owner just did. So a step waits here first.
pub(in crate::engine) struct Hold {
    until: watch::Sender<Millis>,
}

impl Hold {
    pub fn new(until: Millis) -> Arc<Hold> {
        Arc::new(Hold {
            until: watch::Sender::new(until),
        })
    }

    pub fn extend(&self, until: Millis) {
        self.until.send_if_modified(|u| {
            let later = until > *u;
            if later {
                *u = until;
            }
            later
        });
    }

    /// Returns once the lease is known to hold for `margin` more. A task that was taken
    /// over is never extended again: its runner stops the waiting step instead.
    pub async fn ready(&self, clock: &Clock, margin: Millis) {
        let mut until = self.until.subscribe();
        loop {
            if clock.now().saturating_add(margin) < *until.borrow_and_update() {
                return;
            }
            if until.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// How much of its lease a step wants left before it calls an agent: a third of the
/// TTL, the time between two renewals, so that a controller renewing on time never
/// waits and one that missed a renewal waits for the next.
pub(in crate::engine) fn call_margin(ttl: Duration) -> Millis {
    i64::try_from((ttl / 3).as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_calls_an_agent_only_while_its_lease_is_known_to_hold() {
        let clock = Clock::start();
        let ttl = Duration::from_secs(9);
        let margin = call_margin(ttl);
        let hold = Hold::new(clock.now() + 9_000);
        tokio::time::timeout(Duration::ZERO, hold.ready(&clock, margin))
            .await
            .expect("a fresh lease: at once");

        // Paused past the point where a renewal was due: wait for one.
        tokio::time::advance(Duration::from_secs(7)).await;
        let waiting = tokio::spawn({
            let hold = hold.clone();
            async move { hold.ready(&clock, margin).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "no renewal yet: the call waits");
        hold.extend(clock.now() - 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "an older expiry changes nothing");
        hold.extend(clock.now() + 9_000);
        tokio::time::timeout(Duration::from_millis(100), waiting)
            .await
            .expect("renewed: the call goes")
            .unwrap();

        // A task taken over is never extended: its step waits until it is stopped.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(
            tokio::time::timeout(Duration::from_secs(60), hold.ready(&clock, margin))
                .await
                .is_err()
        );
    }
}
