//! Where the provisioning core gets the time from.
//!
//! The core never reads the wall clock itself: `created_at`, the `mbed.CurrentTime` config param and
//! the certificate validity all come from one [`Clock`], so a test (or a replay) can fix the time
//! and check exactly what lands in the store and in the certificate.

use std::fmt;

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> OffsetDateTime;

    /// Now, in ms since the epoch (the store's unit).
    fn now_ms(&self) -> i64 {
        unix_ms(self.now())
    }
}

/// The wall clock (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that always says the same time (tests, deterministic runs).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// `t` in ms since the epoch (saturating far outside the representable range).
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
