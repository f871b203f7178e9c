//! Per-address backoff after failed authentication: an address that presents a wrong token (or
//! none) `FREE` times within `WINDOW` is refused (429, `Retry-After`) without its token being
//! looked at, for 1 s, then twice as long after each further failure, up to `LONGEST`. A
//! request with a valid token ends it. Memory is bounded: at most `CAPACITY` addresses are
//! remembered, the stalest forgotten first. Decisions take the time as an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in a window before the backoff starts.
const FREE: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
const LONGEST: Duration = Duration::from_secs(300);
const CAPACITY: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    first: Instant,
    until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Backoff {
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl Backoff {
    /// How long `client` must still wait, if it is backing off.
    pub fn waiting(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = records.get(&client)?.until?;
        (until > now).then(|| until - now)
    }

    /// A failed authentication from `client`: how long it is now shut out, when it is.
    pub fn failed(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let mut records = self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if records.len() >= CAPACITY && !records.contains_key(&client) {
            records.retain(|_, r| r.until.is_some_and(|u| u > now) || now.duration_since(r.first) < WINDOW);
            if records.len() >= CAPACITY {
                records.clear();
            }
        }
        let record = records.entry(client).or_insert(Record { failures: 0, first: now, until: None });
        if record.until.is_none() && now.duration_since(record.first) >= WINDOW {
            *record = Record { failures: 0, first: now, until: None };
        }
        record.failures += 1;
        let over = record.failures.checked_sub(FREE + 1)?;
        let wait = Duration::from_secs(1u64 << over.min(16)).min(LONGEST);
        record.until = Some(now + wait);
        Some(wait)
    }

    /// A valid token from `client`: it starts afresh.
    pub fn succeeded(&self, client: IpAddr) {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_are_free_then_each_one_doubles_the_wait_and_a_success_ends_it() {
        let b = Backoff::default();
        let (me, other): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(b.failed(me, t0 + Duration::from_secs(i)), None, "failure {i} is free");
        }
        assert_eq!(b.failed(me, t0 + Duration::from_secs(5)), Some(Duration::from_secs(1)));
        assert_eq!(b.waiting(me, t0 + Duration::from_secs(5)), Some(Duration::from_secs(1)));
        assert_eq!(b.waiting(other, t0 + Duration::from_secs(5)), None, "per address");
        assert_eq!(b.failed(me, t0 + Duration::from_secs(7)), Some(Duration::from_secs(2)));
        assert_eq!(b.failed(me, t0 + Duration::from_secs(10)), Some(Duration::from_secs(4)));
        for i in 0..20 {
            b.failed(me, t0 + Duration::from_secs(20 + i));
        }
        assert_eq!(b.failed(me, t0 + Duration::from_secs(100)), Some(LONGEST), "capped");
        b.succeeded(me);
        assert_eq!(b.waiting(me, t0 + Duration::from_secs(101)), None);
        // Failures spread wider than the window never back off.
        for i in 0..20 {
            assert_eq!(b.failed(other, t0 + Duration::from_secs(i * 61)), None);
        }
    }
}
