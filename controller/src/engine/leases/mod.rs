//! This controller's share of the work among several on one database: the leases of the
//! tasks it drives, renewed by the loop here; the takeover of tasks whose owner went
//! silent (`takeover`); operators' cancels and pauses passed on to the runners
//! (`relays`); the lease clock (`clock`) and a task's hold on its lease (`hold`); and,
//! each round, which controllers are alive, for the heartbeat's share of the hosts
//! ([`crate::membership`]).
//!
//! Every `ttl / 3` the loop renews the leases of the tasks this controller drives, so
//! two renewals can fail before a lease runs out; a lease with no runner here is not
//! renewed, so a claim whose request never started the task is taken over in the end.
//! It then tells runners whose task is no longer held to stop, takes over what expired
//! (a step that was running is run again), and re-reads which controllers are alive.
//! A controller that could not renew for a whole TTL stops every runner itself (see
//! [`Keeper`]). The decisions are pure functions and the keeper; `run` only acts.

mod clock;
mod hold;
mod relays;
mod takeover;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

pub(super) use clock::Clock;
pub(super) use hold::{Hold, call_margin};
use relays::{pass_cancel, pass_pause};
use takeover::lost;
pub(super) use takeover::take_over;

use super::{Control, Shared, lock_active};
use crate::membership::membership;
use crate::model::{Millis, now_millis};
use crate::store::{Claim, ControllerRow, StoreError};

/// A name no other run of any controller has: the address says which machine, the pid
/// and a random part which run.
pub fn new_owner(advertise: &str) -> Arc<str> {
    format!(
        "{advertise}#{}#{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
    .into()
}

fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(10))
}

pub(super) fn claim(shared: &Shared) -> Claim {
    let ttl = i64::try_from(shared.options.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    Claim {
        owner: shared.options.owner.clone(),
        expires: shared.clock.now().saturating_add(ttl),
        executor: shared.options.executor.as_str().into(),
    }
}

/// Whether this controller may still believe it holds its leases. A renewal asked at
/// `t` that succeeded makes them good until `t + ttl`; once that passed without another,
/// other controllers may have taken them over, so it stops driving every task rather than
/// run steps a new owner runs too (as river's and Nomad's leaders step down).
pub(super) struct Keeper {
    ttl: Duration,
    good_until: Instant,
    /// Set when the runners were dropped: the leases are given up at the next chance, so
    /// that the normal takeover hands them out again, to this controller or another.
    to_release: bool,
}

impl Keeper {
    pub fn new(now: Instant, ttl: Duration) -> Keeper {
        Keeper {
            ttl,
            good_until: now + ttl,
            to_release: false,
        }
    }

    pub fn renewed(&mut self, asked_at: Instant) {
        self.good_until = asked_at + self.ttl;
    }

    /// True once, when the leases ran out unrenewed: drop every runner now.
    pub fn ran_out(&mut self, now: Instant) -> bool {
        if now < self.good_until || self.to_release {
            return false;
        }
        self.to_release = true;
        true
    }
}

pub(super) async fn run(shared: Arc<Shared>) {
    let ttl = shared.options.lease_ttl;
    let mut tick = tokio::time::interval(renew_interval(ttl));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut cancels = shared.store.subscribe_cancels();
    let mut pauses = shared.store.subscribe_pauses();
    let mut keeper = Keeper::new(Instant::now(), ttl);
    let started_at = now_millis();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = round(&shared, &mut keeper, started_at).await {
                    tracing::warn!("lease round failed, trying again in {:?}: {e}", tick.period());
                }
                if keeper.ran_out(Instant::now()) {
                    tracing::warn!(
                        "fenced: this controller's leases ran out unrenewed ({}); it stops \
                         driving every task, which any controller may now take over",
                        humantime::format_duration(ttl)
                    );
                    for active in lock_active(&shared).values() {
                        let _ = active.control.send(Control::Lost);
                    }
                }
            }
            request = cancels.recv() => match request {
                Ok((task_id, subtask_id, by)) => pass_cancel(&shared, task_id, subtask_id, by),
                // Missed some: the next round reads the requests from the store.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    cancels = shared.store.subscribe_cancels();
                }
            },
            request = pauses.recv() => match request {
                Ok(task_id) => pass_pause(&shared, task_id),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    pauses = shared.store.subscribe_pauses();
                }
            },
        }
    }
}

async fn round(
    shared: &Arc<Shared>,
    keeper: &mut Keeper,
    started_at: Millis,
) -> Result<(), StoreError> {
    if keeper.to_release {
        shared.store.release_leases(&shared.options.owner).await?;
        keeper.to_release = false;
    }
    let driving: Vec<(i64, i64)> = lock_active(shared)
        .iter()
        .map(|(id, a)| (*id, a.generation))
        .collect();
    let ids: Vec<i64> = driving.iter().map(|&(id, _)| id).collect();
    let asked_at = Instant::now();
    // A renewal still hanging when the leases run out counts as failed.
    let renewal = claim(shared);
    let held =
        tokio::time::timeout_at(keeper.good_until, shared.store.renew_leases(&renewal, &ids))
            .await
            .map_err(|_| StoreError::Timeout("renewing the leases"))??;
    keeper.renewed(asked_at);
    {
        let active = lock_active(shared);
        for fence in &held {
            if let Some(a) = active
                .get(&fence.task_id)
                .filter(|a| a.generation == fence.generation)
            {
                a.hold.extend(renewal.expires);
            }
        }
    }
    for (task_id, generation) in lost(&held, &driving) {
        let active = lock_active(shared);
        if let Some(a) = active.get(&task_id).filter(|a| a.generation == generation) {
            tracing::warn!(
                task_id,
                generation,
                "fenced: the task's lease is no longer this controller's; it stops driving it"
            );
            let _ = a.control.send(Control::Lost);
        }
    }
    take_over(shared, false).await?;
    for (task_id, subtask_id) in shared.store.cancel_requests(&shared.options.owner).await? {
        pass_cancel(shared, task_id, subtask_id, "an operator".to_string());
    }
    // Pauses and resumes again, in case a notice was lost: a runner whose flag
    // already matches the store's does nothing with it.
    match shared.store.rolling_tasks(&shared.options.owner).await {
        Ok(tasks) => tasks.into_iter().for_each(|id| pass_pause(shared, id)),
        // Not worth skipping the rest of the round for: the flags are read again next time.
        Err(e) => tracing::warn!("reading the rolling tasks to pass their pauses on: {e}"),
    }
    let me = ControllerRow {
        id: shared.options.owner.to_string(),
        address: shared.options.executor.clone(),
        pid: i64::from(std::process::id()),
    };
    let now = shared.clock.now();
    let ttl = i64::try_from(shared.options.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let live = shared
        .store
        .controller_seen(&me, started_at, now, now.saturating_sub(ttl))
        .await?;
    shared
        .membership
        .send_if_modified(|m| std::mem::replace(m, membership(&live, &me.id)) != *m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_renewed_twice_before_they_run_out() {
        for ttl in [Duration::from_secs(1), Duration::from_secs(10)] {
            let every = renew_interval(ttl);
            assert!(every * 3 <= ttl && every * 4 > ttl, "{ttl:?}: {every:?}");
        }
        assert_eq!(
            renew_interval(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leases_left_unrenewed_for_a_ttl_drop_every_task_once() {
        let ttl = Duration::from_secs(9);
        let mut keeper = Keeper::new(Instant::now(), ttl);
        for _ in 0..5 {
            tokio::time::advance(renew_interval(ttl)).await;
            keeper.renewed(Instant::now());
            assert!(
                !keeper.ran_out(Instant::now()),
                "renewed every third of the TTL"
            );
        }
        let last = Instant::now();
        tokio::time::advance(renew_interval(ttl) * 2).await;
        assert!(!keeper.ran_out(Instant::now()), "two renewals may fail");
        tokio::time::advance(last + ttl - Instant::now()).await;
        assert!(keeper.ran_out(Instant::now()), "a whole TTL without one");
        assert!(!keeper.ran_out(Instant::now()), "once");
        assert!(
            keeper.to_release,
            "the leases are given up at the next chance"
        );
        tokio::time::advance(ttl * 3).await;
        assert!(
            !keeper.ran_out(Instant::now()),
            "still once, until released"
        );
        keeper.to_release = false;
        keeper.renewed(Instant::now());
        tokio::time::advance(ttl).await;
        assert!(
            keeper.ran_out(Instant::now()),
            "and again after a new outage"
        );
    }
}
