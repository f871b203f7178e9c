//! A per-key event throttle: something worth recording (a refused DNS client, a boot script
//! served, a config refused) is recorded at most once per interval per key, so a client that
//! loops cannot flood the event log and push real history out of it; and a budget, for records
//! a flood of ever-new keys sets off. Neutral.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one `due` per key per `interval`; remembers at most `capacity` keys.
#[derive(Debug)]
pub struct Throttle<K> {
    interval: Duration,
    capacity: usize,
    last: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq> Throttle<K> {
    pub fn new(interval: Duration, capacity: usize) -> Throttle<K> {
        Throttle { interval, capacity, last: Mutex::new(HashMap::new()) }
    }

    /// Whether `key` may be recorded now (and, if so, that it was). When the table is full,
    /// keys older than the interval are forgotten first, then all of them: a flood of new keys
    /// costs memory up to `capacity`, never more.
    pub fn due(&self, key: K) -> bool {
        self.due_at(key, Instant::now())
    }

    fn due_at(&self, key: K, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.get(&key).is_some_and(|at| now.duration_since(*at) < self.interval) {
            return false;
        }
        if last.len() >= self.capacity && !last.contains_key(&key) {
            last.retain(|_, at| now.duration_since(*at) < self.interval);
            if last.len() >= self.capacity {
                last.clear();
            }
        }
        last.insert(key, now);
        true
    }
}

/// At most `per_interval` records per `interval` in all, whatever their key: for what a flood
/// of ever-new keys (random MACs) can set off, where a per-key throttle would let each through.
#[derive(Debug)]
pub struct Budget {
    interval: Duration,
    per_interval: u32,
    /// (when the current interval began, records allowed in it so far)
    spent: Mutex<(Option<Instant>, u32)>,
}

impl Budget {
    pub fn new(interval: Duration, per_interval: u32) -> Budget {
        Budget { interval, per_interval, spent: Mutex::new((None, 0)) }
    }

    /// Whether one more may be recorded now (and, if so, that it was).
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut spent = self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if spent.0.is_none_or(|began| now.duration_since(began) >= self.interval) {
            *spent = (Some(now), 0);
        }
        if spent.1 >= self.per_interval {
            return false;
        }
        spent.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_so_many_per_interval_whatever_the_key() {
        let b = Budget::new(Duration::from_secs(60), 3);
        let start = Instant::now();
        assert!((0..3).all(|i| b.allow_at(start + Duration::from_secs(i))));
        assert!(!b.allow_at(start + Duration::from_secs(59)));
        assert!(b.allow_at(start + Duration::from_secs(60)), "a new interval");
    }

    #[test]
    fn one_record_per_key_per_interval_and_memory_stays_bounded() {
        let t = Throttle::new(Duration::from_secs(60), 3);
        let start = Instant::now();
        assert!(t.due_at("a", start));
        assert!(!t.due_at("a", start + Duration::from_secs(59)));
        assert!(t.due_at("a", start + Duration::from_secs(61)));
        assert!(t.due_at("b", start) && t.due_at("c", start));
        let len = || t.last.lock().expect("lock").len();
        // Full, and every entry stale: they are forgotten.
        let later = start + Duration::from_secs(122);
        assert!(t.due_at("d", later));
        assert_eq!(len(), 1);
        // Full of fresh entries: all are forgotten rather than the table growing.
        assert!(t.due_at("e", later) && t.due_at("f", later));
        assert!(t.due_at("g", later + Duration::from_secs(1)));
        assert_eq!(len(), 1);
        assert!(t.due_at("d", later + Duration::from_secs(1)), "forgotten, so due again");
    }
}
