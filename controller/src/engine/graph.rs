//! One task's DAG in memory while it runs: who waits for whom, and where each subtask is.

use std::collections::HashMap;

use crate::model::{Operation, Step, SubtaskStatus, Task};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub status: SubtaskStatus,
    pub operation: Operation,
    pub upstreams: Vec<i64>,
    pub downstreams: Vec<i64>,
    pub host_id: Option<i64>,
    /// A rolling task's barrier between batches: it starts when the batch before has
    /// settled (each host done or failed) and the rollout lets it, never by itself.
    pub barrier: bool,
}

pub(super) struct Graph {
    nodes: HashMap<i64, Node>,
}

impl Graph {
    pub fn new(task: &Task) -> Graph {
        let rolling = task.rollout.is_some();
        Graph {
            nodes: task
                .subtasks
                .iter()
                .map(|s| {
                    let node = Node {
                        status: s.status,
                        operation: s.operation,
                        upstreams: s.upstreams.clone(),
                        downstreams: s.downstreams.clone(),
                        host_id: s.host_id,
                        barrier: rolling && s.step == Step::Wait,
                    };
                    (s.id, node)
                })
                .collect(),
        }
    }

    pub fn node(&self, id: i64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    pub fn set(&mut self, id: i64, status: SubtaskStatus, operation: Operation) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.status = status;
            node.operation = operation;
        }
    }

    pub fn status(&self, id: i64) -> Option<SubtaskStatus> {
        self.nodes.get(&id).map(|n| n.status)
    }

    fn is(&self, id: i64, status: SubtaskStatus) -> bool {
        self.status(id) == Some(status)
    }

    pub fn all_successful(&self) -> bool {
        self.nodes
            .values()
            .all(|n| n.status == SubtaskStatus::Successful)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (i64, &Node)> {
        self.nodes.iter().map(|(id, n)| (*id, n))
    }

    /// Forward: what may start now, in id order. READY ones, and PENDING ones whose
    /// upstreams all succeeded, which a skipped subtask leaves behind. Barriers are
    /// the rollout's to start.
    pub fn startable(&self) -> (Vec<i64>, Vec<i64>) {
        let mut ready: Vec<i64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.status == SubtaskStatus::Ready && !n.barrier)
            .map(|(id, _)| *id)
            .collect();
        let mut promoted: Vec<i64> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.status == SubtaskStatus::Pending && !n.barrier && self.upstreams_done(n)
            })
            .map(|(id, _)| *id)
            .collect();
        ready.sort();
        promoted.sort();
        (ready, promoted)
    }

    fn upstreams_done(&self, node: &Node) -> bool {
        node.upstreams
            .iter()
            .all(|u| self.is(*u, SubtaskStatus::Successful))
    }

    /// Forward: downstreams of `id` that every upstream now lets go.
    pub fn unblocked_by(&self, id: i64) -> Vec<i64> {
        let Some(node) = self.nodes.get(&id) else {
            return Vec::new();
        };
        node.downstreams
            .iter()
            .copied()
            .filter(|d| {
                self.nodes.get(d).is_some_and(|n| {
                    n.status == SubtaskStatus::Pending && !n.barrier && self.upstreams_done(n)
                })
            })
            .collect()
    }

    /// Rollback: whether the subtask ran (or half ran) and was not undone yet.
    pub fn needs_undo(&self, id: i64) -> bool {
        self.nodes.get(&id).is_some_and(|n| match n.status {
            SubtaskStatus::Successful | SubtaskStatus::Failed => true,
            // Queued again after a controller restart in the middle of its undo.
            SubtaskStatus::Ready => n.operation == Operation::Rollback,
            _ => false,
        })
    }

    /// Rollback: a subtask is undone only after everything downstream of it was.
    pub fn undoable(&self, id: i64) -> bool {
        self.needs_undo(id)
            && self.nodes.get(&id).is_some_and(|n| {
                n.downstreams
                    .iter()
                    .all(|d| !self.needs_undo(*d) && !self.is(*d, SubtaskStatus::Running))
            })
    }

    pub fn undoable_now(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| self.undoable(*id))
            .collect();
        ids.sort();
        ids.reverse();
        ids
    }

    pub fn anything_to_undo(&self) -> bool {
        self.nodes.keys().any(|id| self.needs_undo(*id))
    }

    /// Rollback: upstreams of `id` that its undo made undoable.
    pub fn undo_unblocked_by(&self, id: i64) -> Vec<i64> {
        self.nodes
            .get(&id)
            .map(|n| {
                n.upstreams
                    .iter()
                    .copied()
                    .filter(|u| self.undoable(*u))
                    .collect()
            })
            .unwrap_or_default()
    }
}
