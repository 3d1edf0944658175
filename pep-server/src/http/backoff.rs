//! Backoff per client address after repeated authentication failures (issue #14 §5, §4): a
//! client that keeps presenting bad tokens (or bad floor-page logins) is answered `429` without
//! its token being checked, for a time that doubles with each further failure, up to a minute.
//! Other clients are not slowed at all: nothing sleeps, the refusal is immediate.
//!
//! One table per process (one daemon per process), bounded: when it is full, entries whose
//! backoff is over are dropped, and if that is not enough the table starts afresh (an attacker
//! spraying addresses only resets the count, it cannot grow the memory).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Failures in a row allowed before the backoff starts (typos, a badly pasted token).
pub(super) const FREE_FAILURES: u32 = 10;
/// The first backoff; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest backoff.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(60);
/// Client addresses tracked at most.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: Instant,
}

/// The failure table.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// The process's table.
pub(super) static BACKOFF: LazyLock<Backoff> = LazyLock::new(Backoff::default);

impl Backoff {
    /// `Err(wait)` while `ip` is backing off.
    pub(super) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&ip) {
            Some(e) if e.until > now => Err(e.until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed authentication of `ip`.
    pub(super) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_TRACKED && !table.contains_key(&ip) {
            table.retain(|_, e| e.until > now);
            if table.len() >= MAX_TRACKED {
                table.clear();
            }
        }
        let entry = table.entry(ip).or_insert(Entry {
            failures: 0,
            until: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures > FREE_FAILURES {
            let doublings = (entry.failures - FREE_FAILURES - 1).min(16);
            let delay = FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
            entry.until = now + delay;
        }
    }

    /// A successful authentication of `ip` clears its failures.
    pub(super) fn succeeded(&self, ip: IpAddr) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_free_failures_and_doubles() {
        let b = Backoff::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            b.failed(ip, t0);
            assert!(b.check(ip, t0).is_ok());
        }
        b.failed(ip, t0);
        assert_eq!(b.check(ip, t0), Err(Duration::from_secs(1)));
        b.failed(ip, t0);
        assert_eq!(b.check(ip, t0), Err(Duration::from_secs(2)));
        for _ in 0..30 {
            b.failed(ip, t0);
        }
        assert_eq!(b.check(ip, t0), Err(MAX_DELAY));
        assert!(b.check(ip, t0 + MAX_DELAY).is_ok());
        // Others are not affected; a success clears.
        assert!(b.check(other, t0).is_ok());
        b.succeeded(ip);
        assert!(b.check(ip, t0).is_ok());
    }

    #[test]
    fn the_table_is_bounded() {
        let b = Backoff::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 5) {
            b.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(b.table.lock().unwrap().len() <= MAX_TRACKED);
    }
}
