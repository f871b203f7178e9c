//! A per-key event throttle: something worth recording (a refused DNS client, a boot script
//! served, a config refused) is recorded at most once per interval per key, so a client that
//! loops cannot flood the event log and push real history out of it. Neutral.

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

#[cfg(test)]
mod tests {
    use super::*;

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
