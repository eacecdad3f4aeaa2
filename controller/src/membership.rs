//! Which hosts this controller heartbeats, when several share one store: its place
//! among the live controllers, which the engine's lease loop reads each round and the
//! heartbeat follows.

use crate::store::ControllerRow;

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
pub fn membership(live: &[ControllerRow], me: &str) -> Membership {
    match live.iter().position(|c| c.id == me) {
        Some(index) => Membership {
            index: index as u64,
            of: live.len() as u64,
        },
        None => Membership::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
