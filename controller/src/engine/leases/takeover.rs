//! Taking over tasks whose lease ran out, and noticing tasks this controller lost.

use std::sync::Arc;

use super::super::{Shared, Start, drive};
use super::claim;
use crate::model::now_millis;
use crate::store::{Fence, StoreError};

/// How many expired tasks one scan takes over: a controller coming back to a large
/// backlog takes it in slices, leaving some to the others.
const TAKEOVER_BATCH: i64 = 1000;

/// Takes over tasks whose lease ran out (every unfinished one with `everything`),
/// queues again what was running, and drives them.
pub(in crate::engine) async fn take_over(
    shared: &Arc<Shared>,
    everything: bool,
) -> Result<usize, StoreError> {
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
}
