//! `pep-loadgen`: many simulated gateways in one process, provisioned through a running
//! `pep-server` with a bounded number of requests in flight (the `pep-fleet` binary, also
//! reachable as `fake-fcc fleet`).
//!
//! Gateway `i` (serial `PREFIX` + `i`, zero-padded) is started with fake-fcc's
//! [`spawn`](fake_fcc::spawn) on 127.0.0.1 (one session, memory-only storage) just before its
//! request is sent, so only about `concurrency` gateways listen at any time. Its port is the next
//! free one of [`FleetOptions::ports`], taken in turn (see [`PortRange`] for why not port 0). For
//! each gateway the fleet sends `GET /v3/identity?serialNumber=…&ip=127.0.0.1&port=…`, then checks
//! the answer against what the simulated gateway stored: HTTP 200, the same serial, ReturnStatus 0
//! and a wire-level success on the gateway, and an `enrollmentID` equal to the enrollment ID of the
//! device certificate the gateway holds.
//!
//! With `fault_rate > 0`, each gateway is *faulty* with that probability (drawn from a generator
//! seeded by `seed` and the gateway's index, so a run repeats exactly whatever the concurrency);
//! a faulty gateway gets one of the configured fault kinds, firing on every message. Its failure is
//! *expected* and counted apart from the *unexpected* failures of healthy gateways.
//!
//! Everything is bounded: each request has a timeout, each gateway's report is awaited for a
//! bounded time, and the run ends after `gateways` attempts.
//!
//! With `retry_rounds > 0` (chaos runs), every gateway that failed is then provisioned again with
//! no fault, round after round, until all are deployed or the rounds are used up. A retry answered
//! 409 counts as deployed when the gateway did store a certificate in an earlier attempt (the
//! server recorded it but its answer was lost, e.g. the server was killed). The report keeps, per
//! serial, the enrollment ID of the certificate the gateway stored last
//! ([`FleetReport::stored_enrollment_ids`]), for checking the server's database against.
//!
//! The crate is split by job: [`options`] (what a run does, its command line and checks),
//! [`run`](mod@run) (the gateways and the HTTP requests), [`report`] (what a run measured, as
//! text and as the JSON of `--json`, serialized from the report types).
// Input-derived data never unwraps (tests may: clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used)]

pub mod options;
pub mod report;
pub mod run;

pub use options::{FleetArgs, FleetOptions, PortRange, default_fault_kinds};
pub use report::{
    FailureCount, FailureExample, FailureKind, FleetReport, HISTOGRAM_BOUNDS_MS, HistogramBucket,
    Latency, RetryRound,
};
pub use run::run;

/// Why a fleet run could not start or go on (a gateway's failure is not an error: it is counted
/// in the report).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// An option is wrong; the message names it (`--gateways: must be at least 1`).
    #[error("{option}: {reason}")]
    Option {
        /// The command-line option, e.g. `--concurrency`.
        option: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The `--ca-cert` file could not be read.
    #[error("--ca-cert: cannot read {}: {source}", path.display())]
    CaCertRead {
        /// The file named by `--ca-cert`.
        path: std::path::PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The `--ca-cert` file holds no usable PEM certificate.
    #[error("--ca-cert: {} holds no usable PEM certificate: {reason}", path.display())]
    CaCertPem {
        /// The file named by `--ca-cert`.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The concurrency limiter was closed while the run went on (a bug, not an input error).
    #[error("the concurrency limiter was closed")]
    LimiterClosed,
    /// A gateway's task panicked or was cancelled.
    #[error("a gateway task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}
