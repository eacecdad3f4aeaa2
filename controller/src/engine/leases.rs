//! This controller's share of the work among several on one database: the leases of the
//! tasks it drives, the takeover of tasks whose owner went silent, cancels sent through
//! other controllers, and which hosts it heartbeats.
//!
//! Every `ttl / 3` the loop renews the leases of the tasks this controller drives, so
//! two renewals can fail before a lease runs out; a lease with no runner here is not
//! renewed, so a claim whose request never started the task is taken over in the end.
//! It then tells runners whose task is no longer held to stop, takes over what expired
//! (a step that was running is run again), and re-reads which controllers are alive.
//! A controller that could not renew for a whole TTL stops every
//! runner itself (see [`Keeper`]). The decisions are the pure functions and the keeper
//! below; `run` only acts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Control, Shared, Start, drive, lock_active};
use crate::model::{Millis, now_millis};
use crate::store::{Claim, ControllerRow, Fence, StoreError};

/// How many expired tasks one scan takes over: a controller coming back to a large
/// backlog takes it in slices, leaving some to the others.
const TAKEOVER_BATCH: i64 = 1000;

/// Wall-clock milliseconds that advance with tokio's clock, so that lease times follow
/// paused time in tests and never jump backwards with the system clock.
#[derive(Clone, Copy)]
pub(super) struct Clock {
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

/// Until when, on the lease clock, this controller knows it holds one task's lease:
/// set when it starts driving the task, pushed on by each renewal that finds the task
/// still held, never by one that does not.
///
/// Store writes are fenced in the database; an agent call cannot be. A controller woken
/// from a pause past its TTL would otherwise send the call a step was about to make
/// (the next attempt after a backoff, say) before its lease loop learns that the task
/// was taken over, and undo what the new owner just did. So a step waits here first.
pub(super) struct Hold {
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
pub(super) fn call_margin(ttl: Duration) -> Millis {
    i64::try_from((ttl / 3).as_millis()).unwrap_or(i64::MAX)
}

/// This controller's place among the live ones: it heartbeats the hosts whose id falls
/// on its index, so each host is checked by one controller, and a dead controller's
/// hosts fall to the others once it is no longer seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Membership {
    pub index: u64,
    /// How many controllers are alive; 0 until the first round, when it checks all hosts.
    pub of: u64,
}

impl Membership {
    pub fn checks(&self, host_id: i64) -> bool {
        self.of <= 1 || host_id.rem_euclid(self.of as i64) as u64 == self.index
    }
}

/// `live` is ordered by id and holds `me`.
pub(super) fn membership(live: &[ControllerRow], me: &str) -> Membership {
    match live.iter().position(|c| c.id == me) {
        Some(index) => Membership {
            index: index as u64,
            of: live.len() as u64,
        },
        None => Membership::default(),
    }
}

/// Tasks this controller drives (id, generation) that the store no longer gives it.
pub(super) fn lost(held: &[Fence], driving: &[(i64, i64)]) -> Vec<(i64, i64)> {
    driving
        .iter()
        .copied()
        .filter(|&(id, generation)| {
            !held
                .iter()
                .any(|f| f.task_id == id && f.generation == generation)
        })
        .collect()
}

pub(super) fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(10))
}

pub(super) fn claim(shared: &Shared) -> Claim {
    let ttl = i64::try_from(shared.options.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    Claim {
        owner: shared.options.owner.clone(),
        expires: shared.clock.now().saturating_add(ttl),
    }
}

/// Takes over tasks whose lease ran out (every unfinished one with `everything`),
/// queues again what was running, and drives them.
pub(super) async fn take_over(shared: &Arc<Shared>, everything: bool) -> Result<usize, StoreError> {
    let now = shared.clock.now();
    let taken = shared
        .store
        .take_over_leases(&claim(shared), now, everything, TAKEOVER_BATCH)
        .await?;
    // Every task taken is driven, whatever else fails: one claimed and not driven would
    // be renewed by this controller and never finished by anyone. Its runner queues
    // again what was running before it starts anything, so a requeue that fails here
    // is done there.
    for fence in &taken {
        match shared.store.requeue_interrupted(fence, now_millis()).await {
            Ok(requeued) => tracing::info!(
                task_id = fence.task_id,
                generation = fence.generation,
                requeued,
                "took the task over"
            ),
            Err(e) => tracing::warn!(
                task_id = fence.task_id,
                "took the task over; its runner queues its steps again: {e}"
            ),
        }
        drive(shared, fence.clone(), Start::Resumed, None);
    }
    Ok(taken.len())
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

fn pass_cancel(shared: &Shared, task_id: i64, subtask_id: i64, by: String) {
    if let Some(active) = lock_active(shared).get(&task_id) {
        let _ = active.control.send(Control::Cancel { subtask_id, by });
    }
}

/// Tells the task's runner, if this controller has one, to read its pause flag again.
fn pass_pause(shared: &Shared, task_id: i64) {
    if let Some(active) = lock_active(shared).get(&task_id) {
        let _ = active.control.send(Control::PauseChanged);
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

    fn fence(task_id: i64, generation: i64) -> Fence {
        Fence {
            task_id,
            owner: "a".into(),
            generation,
        }
    }

    #[test]
    fn a_task_driven_under_a_generation_the_store_no_longer_gives_is_lost() {
        let held = [fence(1, 3), fence(2, 1)];
        assert_eq!(lost(&held, &[(1, 3), (2, 1)]), vec![]);
        assert_eq!(lost(&held, &[(1, 2), (2, 1), (3, 1)]), vec![(1, 2), (3, 1)]);
        assert_eq!(lost(&[], &[(4, 1)]), vec![(4, 1)]);
    }

    #[test]
    fn hosts_are_split_between_live_controllers_by_id() {
        let row = |id: &str| ControllerRow {
            id: id.to_string(),
            address: String::new(),
            pid: 1,
        };
        let live = [row("a"), row("b"), row("c")];
        let b = membership(&live, "b");
        assert_eq!(b, Membership { index: 1, of: 3 });
        let mine: Vec<i64> = (1..=9).filter(|&h| b.checks(h)).collect();
        assert_eq!(mine, vec![1, 4, 7]);
        for host in 1..=30 {
            let checkers = live
                .iter()
                .filter(|c| membership(&live, &c.id).checks(host))
                .count();
            assert_eq!(checkers, 1, "host {host}");
        }
        assert!(
            (1..=9).all(|h| Membership::default().checks(h)),
            "alone or before its first round, a controller checks every host"
        );
        assert_eq!(membership(&live, "z"), Membership::default());
    }

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

    #[tokio::test(start_paused = true)]
    async fn the_lease_clock_follows_tokio_time() {
        let clock = Clock::start();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(clock.now() - t0, 11_000);
    }
}
