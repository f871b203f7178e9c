//! A backend's health from its check results (pure): down after `fall` failures in a row, up
//! after `rise` successes in a row. A new backend starts up, so a pool serves at once; a dead one
//! leaves within `fall` intervals, and connect failures are retried on the next backend anyway.

/// One backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    /// Results in a row that disagree with `up`.
    streak: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health { up: true, streak: 0 }
    }
}

impl Health {
    /// Records one check result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= if ok { rise } else { fall } {
            self.up = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_take_a_backend_down_and_two_successes_bring_it_back() {
        let mut h = Health::default();
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), Some(false));
        assert!(!h.up);
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3), Some(true));
        assert!(h.up);
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let mut h = Health::default();
        h.observe(false, 2, 3);
        h.observe(false, 2, 3);
        h.observe(true, 2, 3);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert!(h.up);
    }
}
