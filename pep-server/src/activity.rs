//! Live activity of the provisioning core: what the [`Provisioner`](crate::provision::Provisioner)
//! publishes when an attempt starts and when it ends.
//!
//! The core knows nothing about HTTP: it sends [`ProvisionEvent`]s on a bounded
//! `tokio::sync::broadcast` channel ([`Provisioner::subscribe`](crate::provision::Provisioner::subscribe)).
//! Publishing never blocks and never fails an attempt: with no subscriber the event is dropped, and
//! a subscriber that falls more than [`EVENT_CAPACITY`] events behind is told so by the channel
//! (`RecvError::Lagged`) and must resynchronise from the store. Events carry the same facts the
//! store records (audit rows), so a page rendered from the store and updated from events agree.

use std::net::SocketAddr;

use fcc_proto::FccStatus;

/// Events kept for slow subscribers before they lag (and must resynchronise from the store).
pub const EVENT_CAPACITY: usize = 1024;

/// Something that happened to one provisioning attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionEvent {
    /// The serial was reserved: the attempt is in flight.
    Started(AttemptStarted),
    /// The attempt ended, recorded as deployed or failed.
    Finished(AttemptFinished),
}

impl ProvisionEvent {
    /// The serial the event is about.
    pub fn serial(&self) -> &str {
        match self {
            ProvisionEvent::Started(s) => &s.serial,
            ProvisionEvent::Finished(f) => &f.serial,
        }
    }
}

/// An attempt has started (its serial is reserved and recorded in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptStarted {
    /// The identity row id (the same for every attempt on one serial).
    pub id: i64,
    /// The serial.
    pub serial: String,
    /// The gateway's FCC address.
    pub gateway: SocketAddr,
    /// Start, ms since the epoch.
    pub at_ms: i64,
}

/// An attempt has ended and its outcome is recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFinished {
    /// The identity row id.
    pub id: i64,
    /// The serial.
    pub serial: String,
    /// The gateway's FCC address.
    pub gateway: SocketAddr,
    /// End, ms since the epoch.
    pub at_ms: i64,
    /// How long the attempt took, ms.
    pub duration_ms: i64,
    /// Deployed or failed, and why.
    pub outcome: AttemptOutcome,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// FCC accepted the identity; the gateway is deployed.
    Deployed {
        /// The enrollment ID recorded.
        enrollment_id: String,
    },
    /// The attempt failed; the serial can be retried.
    Failed {
        /// FCC's ReturnStatus when FCC answered with one.
        fcc_status: Option<FccStatus>,
        /// The error as recorded in the audit trail; for an FCC rejection it ends with FCC's own
        /// InfoMessage.
        message: String,
        /// FCC's own InfoMessage when FCC rejected the identity (the `fcc_info` column).
        fcc_info: Option<String>,
    },
}
