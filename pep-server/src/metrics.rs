//! Prometheus metrics of the daemon, kept in atomics and written out in the text exposition format
//! (version 0.0.4) by hand: four metric families do not justify a metrics framework.
//!
//! Families:
//! - `pep_provisions_total{result}` — counter of finished provisionings by outcome ([`ProvisionResult`]);
//! - `pep_provision_duration_seconds` — histogram of the time one provisioning took in the core, any
//!   outcome (requests the HTTP layer refuses before calling the core are counted, not timed);
//! - `pep_fcc_status_total{code,status}` — counter of the `ReturnStatus` values gateways answered;
//! - `pep_provisions_in_flight` — gauge of provisionings running right now;
//! - `pep_hook_deliveries{state}` — gauge of the webhook outbox's rows by delivery state, read from
//!   the store at each scrape ([`render_hook_deliveries`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use fcc_proto::FccStatus;

/// `pep_hook_deliveries{state}`: the webhook outbox's rows per state (pending, delivered,
/// failing, dead), appended to `out`.
pub fn render_hook_deliveries(counts: &crate::store::DeliveryCounts, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP pep_hook_deliveries Webhook deliveries in the outbox by state (failing: being \
         retried; dead: given up)."
    );
    let _ = writeln!(out, "# TYPE pep_hook_deliveries gauge");
    for state in crate::store::DeliveryState::ALL {
        let _ = writeln!(
            out,
            "pep_hook_deliveries{{state=\"{}\"}} {}",
            state.as_str(),
            counts.of(state)
        );
    }
}

/// How one provisioning ended, as counted by `pep_provisions_total{result=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionResult {
    /// Injected, verified by FCC and recorded as deployed.
    Deployed,
    /// Refused before contacting the gateway: a parameter was invalid.
    Invalid,
    /// The serial is already deployed or being provisioned.
    Conflict,
    /// FCC answered a non-zero `ReturnStatus`.
    GatewayRejected,
    /// The FCC conversation failed (closed without reply, wire status, bad frame).
    GatewayFailed,
    /// Nothing answered at the gateway's address.
    GatewayUnreachable,
    /// The gateway did not answer in time.
    GatewayTimeout,
    /// A defect or an internal resource failure (store, CA).
    Internal,
    /// A repeated request key: the stored identity was answered again (nothing injected).
    Replayed,
}

impl ProvisionResult {
    /// Every result, in the order they are exported.
    pub const ALL: [ProvisionResult; 9] = [
        ProvisionResult::Deployed,
        ProvisionResult::Invalid,
        ProvisionResult::Conflict,
        ProvisionResult::GatewayRejected,
        ProvisionResult::GatewayFailed,
        ProvisionResult::GatewayUnreachable,
        ProvisionResult::GatewayTimeout,
        ProvisionResult::Internal,
        ProvisionResult::Replayed,
    ];

    /// The label value used in the exposition.
    pub fn label(self) -> &'static str {
        match self {
            ProvisionResult::Deployed => "deployed",
            ProvisionResult::Invalid => "invalid",
            ProvisionResult::Conflict => "conflict",
            ProvisionResult::GatewayRejected => "gateway_rejected",
            ProvisionResult::GatewayFailed => "gateway_failed",
            ProvisionResult::GatewayUnreachable => "gateway_unreachable",
            ProvisionResult::GatewayTimeout => "gateway_timeout",
            ProvisionResult::Internal => "internal",
            ProvisionResult::Replayed => "replayed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the duration histogram buckets; `+Inf` is implicit. An injection is a TCP
/// round trip plus a P-256 key generation and signature: tens of milliseconds on a LAN, seconds when a
/// gateway is slow, the FCC timeouts at worst.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Highest `fcc_status_e` value with its own counter; any other value is counted as `unknown`.
const MAX_KNOWN_FCC_STATUS: usize = 37;

/// The daemon's metrics. Shared in an `Arc`; every update is one or two relaxed atomic operations.
#[derive(Debug)]
pub struct Metrics {
    provisions: [AtomicU64; ProvisionResult::ALL.len()],
    /// Cumulative counts per bucket are derived at render time; this holds per-bucket (non-cumulative)
    /// counts, the last slot being `+Inf`.
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of observed durations in microseconds (integer, so it can be an atomic).
    duration_sum_micros: AtomicU64,
    fcc_status: [AtomicU64; MAX_KNOWN_FCC_STATUS + 1],
    fcc_status_unknown: AtomicU64,
    in_flight: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Self {
        Metrics {
            provisions: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_sum_micros: AtomicU64::new(0),
            fcc_status: std::array::from_fn(|_| AtomicU64::new(0)),
            fcc_status_unknown: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }

    /// Marks one provisioning as started; the returned guard decrements the in-flight gauge when it
    /// is dropped, so a cancelled request cannot leave the gauge high.
    pub fn start_provision(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { metrics: self }
    }

    /// Counts a request refused before it reached the provisioning core (it has no meaningful
    /// duration, so it stays out of the histogram).
    pub fn count_refused(&self, result: ProvisionResult) {
        self.provisions[result.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records how one provisioning ended and how long it took.
    pub fn record_provision(&self, result: ProvisionResult, took: Duration) {
        self.provisions[result.index()].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// Records the `ReturnStatus` a gateway's FCC answered.
    pub fn record_fcc_status(&self, status: FccStatus) {
        let code = status.as_u32() as usize;
        match self.fcc_status.get(code) {
            Some(counter) => counter.fetch_add(1, Ordering::Relaxed),
            None => self.fcc_status_unknown.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// How many provisionings ended with `result` so far.
    pub fn provisions(&self, result: ProvisionResult) -> u64 {
        self.provisions[result.index()].load(Ordering::Relaxed)
    }

    /// The exposition in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "# HELP pep_provisions_total Finished provisionings by result."
        );
        let _ = writeln!(out, "# TYPE pep_provisions_total counter");
        for result in ProvisionResult::ALL {
            let _ = writeln!(
                out,
                "pep_provisions_total{{result=\"{}\"}} {}",
                result.label(),
                self.provisions(result)
            );
        }

        let _ = writeln!(
            out,
            "# HELP pep_provision_duration_seconds Time one provisioning took in the core, any result."
        );
        let _ = writeln!(out, "# TYPE pep_provision_duration_seconds histogram");
        let mut cumulative = 0u64;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.duration_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "pep_provision_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.duration_buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "pep_provision_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "pep_provision_duration_seconds_sum {sum}");
        let _ = writeln!(out, "pep_provision_duration_seconds_count {cumulative}");

        let _ = writeln!(
            out,
            "# HELP pep_fcc_status_total ReturnStatus values answered by gateways."
        );
        let _ = writeln!(out, "# TYPE pep_fcc_status_total counter");
        for (code, counter) in self.fcc_status.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            // Only statuses that occurred: 38 mostly-zero lines would drown the useful ones.
            if n == 0 {
                continue;
            }
            let name = FccStatus::from_u32(code as u32).name();
            let _ = writeln!(
                out,
                "pep_fcc_status_total{{code=\"{code}\",status=\"{name}\"}} {n}"
            );
        }
        let unknown = self.fcc_status_unknown.load(Ordering::Relaxed);
        if unknown > 0 {
            let _ = writeln!(
                out,
                "pep_fcc_status_total{{code=\"other\",status=\"unknown\"}} {unknown}"
            );
        }

        let _ = writeln!(
            out,
            "# HELP pep_provisions_in_flight Provisionings running right now."
        );
        let _ = writeln!(out, "# TYPE pep_provisions_in_flight gauge");
        let _ = writeln!(
            out,
            "pep_provisions_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}

/// Keeps one provisioning counted in `pep_provisions_in_flight` while alive.
#[derive(Debug)]
pub struct InFlightGuard<'a> {
    metrics: &'a Metrics,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The cloud claim outbox's rows by state (`[cloud]`, issue #18), as Prometheus gauges:
/// `pep_cloud_claims{state}` and `pep_cloud_claim_deletes{state}`. Read from the store, so every
/// server of a shared database reports the same counts.
pub fn render_claims(stats: &crate::store::ClaimStats) -> String {
    use crate::store::ClaimState;
    use std::fmt::Write as _;
    let mut text = String::from(
        "# HELP pep_cloud_claims Enrollment-ID claims in the cloud outbox by state.\n\
         # TYPE pep_cloud_claims gauge\n",
    );
    for state in ClaimState::ALL {
        if state != ClaimState::Deleted {
            let _ = writeln!(
                text,
                "pep_cloud_claims{{state=\"{state}\"}} {}",
                stats.claims_in(state)
            );
        }
    }
    text.push_str(
        "# HELP pep_cloud_claim_deletes Claim deletions in the cloud outbox by state.\n\
         # TYPE pep_cloud_claim_deletes gauge\n",
    );
    for state in [
        ClaimState::Pending,
        ClaimState::Retrying,
        ClaimState::Deleted,
        ClaimState::Rejected,
    ] {
        let _ = writeln!(
            text,
            "pep_cloud_claim_deletes{{state=\"{state}\"}} {}",
            stats.deletes_in(state)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::new();
        m.record_provision(ProvisionResult::Deployed, Duration::from_millis(3));
        m.record_provision(ProvisionResult::Deployed, Duration::from_millis(300));
        m.record_provision(ProvisionResult::GatewayTimeout, Duration::from_secs(60));
        let text = m.render();
        assert!(text.contains("pep_provisions_total{result=\"deployed\"} 2\n"));
        assert!(text.contains("pep_provisions_total{result=\"gateway_timeout\"} 1\n"));
        assert!(text.contains("pep_provision_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("pep_provision_duration_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("pep_provision_duration_seconds_bucket{le=\"30\"} 2\n"));
        assert!(text.contains("pep_provision_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("pep_provision_duration_seconds_count 3\n"));
    }

    #[test]
    fn in_flight_gauge_follows_guards() {
        let m = Metrics::new();
        let a = m.start_provision();
        let b = m.start_provision();
        assert!(m.render().contains("pep_provisions_in_flight 2\n"));
        drop(a);
        drop(b);
        assert!(m.render().contains("pep_provisions_in_flight 0\n"));
    }
}
