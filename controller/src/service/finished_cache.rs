//! Finished tasks kept in memory: dashboards and clients poll them again and again, and a
//! finished task only changes through an operator's retry, rollback or skip, which goes
//! through this core and forgets it as soon as the store has the change.
//!
//! Only with SQLite: its file belongs to this one controller. On PostgreSQL another
//! controller could retry a task behind this one's back, so every read goes to the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use crate::model::{Task, TaskStatus};

/// How many finished tasks are kept; past that the cache starts over.
const CAPACITY: usize = 4096;

pub(super) struct FinishedTasks {
    enabled: bool,
    /// Bumped by every `forget`, so that a read that began before an operator's change
    /// cannot put the old task back afterwards.
    epoch: AtomicU64,
    tasks: Mutex<HashMap<i64, Task>>,
}

impl FinishedTasks {
    pub fn new(enabled: bool) -> FinishedTasks {
        FinishedTasks {
            enabled,
            epoch: AtomicU64::new(0),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Task>> {
        self.tasks.lock()
    }

    pub fn get(&self, id: i64) -> Option<Task> {
        if !self.enabled {
            return None;
        }
        self.lock().get(&id).cloned()
    }

    /// Taken before reading the store; `offer` then keeps the task only if nothing was
    /// forgotten in between.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn offer(&self, task: &Task, epoch: u64) {
        if !self.enabled || task.status == TaskStatus::Running {
            return;
        }
        let mut tasks = self.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if tasks.len() >= CAPACITY {
            tasks.clear();
        }
        tasks.insert(task.id, task.clone());
    }

    pub fn forget(&self, id: i64) {
        let mut tasks = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tasks.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Operation;

    fn task(id: i64, status: TaskStatus) -> Task {
        Task::bare(id, status, Operation::Execute)
    }

    #[test]
    fn keeps_finished_tasks_only_and_never_a_read_older_than_a_forget() {
        let cache = FinishedTasks::new(true);
        let epoch = cache.epoch();
        cache.offer(&task(1, TaskStatus::Running), epoch);
        assert!(
            cache.get(1).is_none(),
            "a running task changes all the time"
        );
        cache.offer(&task(2, TaskStatus::Failed), epoch);
        assert_eq!(cache.get(2).map(|t| t.status), Some(TaskStatus::Failed));

        let before = cache.epoch();
        cache.forget(2);
        cache.offer(&task(2, TaskStatus::Failed), before);
        assert!(
            cache.get(2).is_none(),
            "a read from before the retry is not kept"
        );

        let disabled = FinishedTasks::new(false);
        disabled.offer(&task(3, TaskStatus::Successful), disabled.epoch());
        assert!(disabled.get(3).is_none());
    }
}
