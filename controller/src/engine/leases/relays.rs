//! Operators' cancels and pauses, asked through any controller, passed on to the runner
//! of the task if this controller has one.

use super::super::{Control, Shared, lock_active};

pub(super) fn pass_cancel(shared: &Shared, task_id: i64, subtask_id: i64, by: String) {
    if let Some(active) = lock_active(shared).get(&task_id) {
        let _ = active.control.send(Control::Cancel { subtask_id, by });
    }
}

/// Tells the task's runner, if this controller has one, to read its pause flag again.
pub(super) fn pass_pause(shared: &Shared, task_id: i64) {
    if let Some(active) = lock_active(shared).get(&task_id) {
        let _ = active.control.send(Control::PauseChanged);
    }
}
