//! Connections that have proven nothing yet, oldest first, so that the oldest can be
//! closed to make room: those without a complete request head when a listener is at its
//! connection cap, and those in the middle of a TLS handshake when every handshake slot
//! is taken. A connection that stalls costs the same as one being served; closing the
//! oldest lets new clients in however many stalled ones an attacker keeps open.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub(crate) struct Waiting(Arc<Mutex<Queue>>);

#[derive(Default)]
struct Queue {
    next: u64,
    tokens: BTreeMap<u64, CancellationToken>,
}

impl Waiting {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.0.lock()
    }

    pub(crate) fn enter(&self) -> Ticket {
        let token = CancellationToken::new();
        let mut queue = self.queue();
        let id = queue.next;
        queue.next += 1;
        queue.tokens.insert(id, token.clone());
        Ticket {
            id,
            token,
            waiting: self.clone(),
        }
    }

    /// Enters, first closing the oldest when `max` are waiting already; true when one
    /// was closed for it.
    pub(crate) fn enter_within(&self, max: usize) -> (Ticket, bool) {
        let evicted = self.queue().tokens.len() >= max && self.evict_oldest();
        (self.enter(), evicted)
    }

    /// Closes the oldest connection still waiting; false when none is.
    pub(crate) fn evict_oldest(&self) -> bool {
        let oldest = self.queue().tokens.pop_first();
        match oldest {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's place among those waiting; cancelled when it is evicted, and leaves
/// the queue when dropped.
pub(crate) struct Ticket {
    id: u64,
    pub(crate) token: CancellationToken,
    waiting: Waiting,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiting.queue().tokens.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_waiting_connection_is_evicted_and_a_served_one_never() {
        let waiting = Waiting::default();
        let first = waiting.enter();
        let second = waiting.enter();
        let third = waiting.enter();
        drop(first);
        assert!(waiting.evict_oldest());
        assert!(second.token.is_cancelled());
        assert!(!third.token.is_cancelled());
        drop(third);
        assert!(!waiting.evict_oldest(), "nobody waiting: nothing to evict");
    }

    #[test]
    fn a_full_queue_makes_room_by_closing_its_oldest() {
        let waiting = Waiting::default();
        let tickets: Vec<Ticket> = (0..3).map(|_| waiting.enter_within(3).0).collect();
        assert!(tickets.iter().all(|t| !t.token.is_cancelled()));
        let (newest, evicted) = waiting.enter_within(3);
        assert!(evicted);
        assert!(tickets[0].token.is_cancelled(), "the oldest made room");
        assert!(!tickets[1].token.is_cancelled() && !newest.token.is_cancelled());
        drop(tickets);
        let (_, evicted) = waiting.enter_within(3);
        assert!(!evicted, "room again once the others left");
    }
}
