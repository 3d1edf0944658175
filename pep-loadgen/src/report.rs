//! What a fleet run measured: [`FleetReport`], printed as text ([`fmt::Display`]) and written as
//! JSON by `--json`, serialized from these types.
//!
//! The JSON field names are read by scripts (`bench/lib.sh`, `bench/baselines.sh`,
//! `bench/growth.sh`: `provisions_per_s`, `latency.p50_ms`/`p99_ms`, `failed`,
//! `histogram[].le_ms`/`count`) and tests; the `serde` attributes below keep them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use fake_fcc::FaultKind;
use serde::{Serialize, Serializer};

use crate::options::FleetOptions;

/// Upper bounds (ms) of the latency histogram; the last bucket is open.
pub const HISTOGRAM_BOUNDS_MS: [u64; 12] = [1, 2, 3, 5, 10, 15, 20, 25, 50, 100, 250, 1000];
/// At most this many failure examples are kept for the report.
const MAX_EXAMPLES: usize = 10;

/// Why one gateway was not provisioned correctly. Serialized (and used as a map key) by its
/// [`Display`](fmt::Display) name, e.g. `http_502`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The simulated gateway could not be started (bind failed).
    GatewaySpawn,
    /// The HTTP request timed out.
    Timeout,
    /// The HTTP request failed (connect, reset, …).
    Transport,
    /// The server answered with this non-200 status.
    Http(u16),
    /// 200, but the body is not the identity JSON.
    BadAnswer,
    /// 200, but the identity is for another serial.
    SerialMismatch,
    /// 200, but the gateway finished no session.
    GatewayNoSession,
    /// 200, but the gateway's last ReturnStatus was not 0 or its reply was not a success.
    GatewayStatus,
    /// 200, but the gateway stored no device certificate.
    NoCertificate,
    /// 200, but the enrollment ID does not match the certificate the gateway stored.
    EnrollmentIdMismatch,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::GatewaySpawn => f.write_str("gateway_spawn"),
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Transport => f.write_str("transport"),
            FailureKind::Http(s) => write!(f, "http_{s}"),
            FailureKind::BadAnswer => f.write_str("bad_answer"),
            FailureKind::SerialMismatch => f.write_str("serial_mismatch"),
            FailureKind::GatewayNoSession => f.write_str("gateway_no_session"),
            FailureKind::GatewayStatus => f.write_str("gateway_status"),
            FailureKind::NoCertificate => f.write_str("no_certificate"),
            FailureKind::EnrollmentIdMismatch => f.write_str("enrollment_id_mismatch"),
        }
    }
}

impl Serialize for FailureKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One failed gateway, for the report's examples.
#[derive(Debug, Clone, Serialize)]
pub struct FailureExample {
    /// The serial.
    pub serial: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// The injected fault, if the gateway was faulty.
    #[serde(serialize_with = "fault_name")]
    pub fault: Option<FaultKind>,
    /// Whether the failure was expected (the gateway was faulty).
    pub expected: bool,
    /// Details (server message, check that failed).
    pub detail: String,
}

/// Counts of one failure kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    /// Failures of faulty gateways.
    pub expected: u64,
    /// Failures of healthy gateways.
    pub unexpected: u64,
}

/// Latency summary, kept in microseconds and serialized in milliseconds (`p50_ms`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Median.
    #[serde(rename = "p50_ms", serialize_with = "us_as_ms")]
    pub p50_us: u64,
    /// 95th percentile.
    #[serde(rename = "p95_ms", serialize_with = "us_as_ms")]
    pub p95_us: u64,
    /// 99th percentile.
    #[serde(rename = "p99_ms", serialize_with = "us_as_ms")]
    pub p99_us: u64,
    /// Largest.
    #[serde(rename = "max_ms", serialize_with = "us_as_ms")]
    pub max_us: u64,
    /// Mean.
    #[serde(rename = "mean_ms", serialize_with = "mean_us_as_ms")]
    pub mean_us: f64,
}

impl Latency {
    /// The summary of these samples (any order).
    pub fn of(samples: &mut [u64]) -> Latency {
        samples.sort_unstable();
        let (Some(&max_us), n) = (samples.last(), samples.len()) else {
            return Latency::default();
        };
        let at = |q: f64| {
            // Nearest-rank percentile: rank in 1..=n, so the index is in bounds.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            samples.get(rank - 1).copied().unwrap_or(max_us)
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            count: n as u64,
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            max_us,
            mean_us: sum as f64 / n as f64,
        }
    }
}

/// One bucket of the latency histogram of successful provisionings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HistogramBucket {
    /// Upper bound in ms (inclusive); `None` (JSON `null`) for the open last bucket.
    pub le_ms: Option<u64>,
    /// Provisionings in the bucket.
    pub count: u64,
}

/// What a fleet run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// The options of the run (their JSON fields sit at the top level of the report).
    #[serde(flatten)]
    pub options: FleetOptions,
    /// Gateways provisioned and checked.
    pub succeeded: u64,
    /// Gateways that failed (expected + unexpected).
    pub failed: u64,
    /// Failures of faulty gateways.
    pub failed_expected: u64,
    /// Failures of healthy gateways.
    pub failed_unexpected: u64,
    /// Gateways that were given a fault.
    #[serde(rename = "faulty_gateways")]
    pub faulty: u64,
    /// Faulty gateways that were provisioned anyway.
    pub faulty_succeeded: u64,
    /// Wall time from the first gateway start to the last answer.
    #[serde(rename = "elapsed_s", serialize_with = "secs")]
    pub elapsed: Duration,
    /// Successful provisionings per second of wall time (first pass).
    pub provisions_per_s: f64,
    /// Latency of the successful provisionings (request sent → answer read).
    pub latency: Latency,
    /// Latency of every answered request, failures included.
    #[serde(rename = "latency_all_answers")]
    pub latency_all: Latency,
    /// Successful provisionings per bucket of [`HISTOGRAM_BOUNDS_MS`], then the open bucket.
    pub histogram: Vec<HistogramBucket>,
    /// Failures by kind.
    pub failures: BTreeMap<FailureKind, FailureCount>,
    /// Failures by injected fault (faulty gateways only; keyed by the fault's spec name), by kind.
    pub failures_by_fault: BTreeMap<String, BTreeMap<FailureKind, u64>>,
    /// The first failures of each class (unexpected first).
    pub examples: Vec<FailureExample>,
    /// The retry rounds that ran (empty without `retry_rounds`).
    #[serde(rename = "retry_rounds")]
    pub retries: Vec<RetryRound>,
    /// Gateways deployed at the end: first pass plus every retry round.
    pub deployed_after_retries: u64,
    /// Serial → enrollment ID of the certificate that gateway stored in its last successful
    /// session (whether or not the server's answer arrived). For checks, not in the JSON.
    #[serde(skip)]
    pub stored_enrollment_ids: BTreeMap<String, String>,
}

/// One retry round: the failed gateways of the previous pass, provisioned again without faults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryRound {
    /// Gateways retried.
    pub attempted: u64,
    /// Provisioned and checked.
    pub succeeded: u64,
    /// Answered 409 although the gateway stored a certificate earlier: the server had recorded
    /// it, its answer was lost. Counted as deployed.
    pub already_deployed: u64,
    /// Failures by kind.
    pub failures: BTreeMap<FailureKind, u64>,
}

fn us_as_ms<S: Serializer>(us: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(*us as f64 / 1000.0)
}

fn mean_us_as_ms<S: Serializer>(us: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(us / 1000.0)
}

fn secs<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(d.as_secs_f64())
}

fn fault_name<S: Serializer>(fault: &Option<FaultKind>, serializer: S) -> Result<S::Ok, S::Error> {
    match fault {
        Some(kind) => serializer.collect_str(kind),
        None => serializer.serialize_none(),
    }
}

/// Fault kinds by their spec names (`close`, `return-status=17`, …).
pub(crate) fn fault_names<S: Serializer>(
    kinds: &[FaultKind],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(kinds.iter().map(|k| k.to_string()))
}

impl FleetReport {
    /// Successful provisionings per second of wall time.
    pub fn rate(&self) -> f64 {
        self.provisions_per_s
    }

    /// True when every healthy gateway was provisioned correctly; with retry rounds, when every
    /// gateway ended deployed.
    pub fn is_clean(&self) -> bool {
        if self.options.retry_rounds > 0 {
            return self.deployed_after_retries == self.options.gateways;
        }
        self.failed_unexpected == 0 && self.succeeded + self.failed == self.options.gateways
    }

    /// The report as JSON (what `--json` writes).
    pub fn to_json(&self) -> serde_json::Value {
        // Infallible: every map key serializes as a string and every number is finite or
        // becomes `null`.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "fleet: {} gateways, concurrency {}, server {}",
            o.gateways, o.concurrency, o.server
        )?;
        writeln!(
            f,
            "provisioned: {} ok, {} failed ({} expected from {} faulty gateways, {} unexpected)",
            self.succeeded, self.failed, self.failed_expected, self.faulty, self.failed_unexpected
        )?;
        if self.faulty_succeeded > 0 {
            writeln!(
                f,
                "faulty gateways provisioned anyway: {}",
                self.faulty_succeeded
            )?;
        }
        writeln!(
            f,
            "rate: {:.1} provisions/s ({:.3} s)",
            self.rate(),
            self.elapsed.as_secs_f64()
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "latency (ok, ms): p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            ms(l.p50_us),
            ms(l.p95_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.mean_us / 1000.0
        )?;
        write!(f, "histogram (ok, ms):")?;
        let open_from = HISTOGRAM_BOUNDS_MS.last().copied().unwrap_or_default();
        for bucket in &self.histogram {
            match bucket.le_ms {
                Some(b) => write!(f, " ≤{b}:{}", bucket.count)?,
                None => write!(f, " >{open_from}:{}", bucket.count)?,
            }
        }
        writeln!(f)?;
        if !self.failures.is_empty() {
            writeln!(f, "failures by kind:")?;
            for (kind, c) in &self.failures {
                writeln!(
                    f,
                    "  {kind}: {} ({} expected, {} unexpected)",
                    c.expected + c.unexpected,
                    c.expected,
                    c.unexpected
                )?;
            }
        }
        for e in &self.examples {
            write!(f, "  e.g. {} {} [", e.serial, e.kind)?;
            match e.fault {
                Some(fault) => write!(f, "{fault}")?,
                None => f.write_str("healthy")?,
            }
            writeln!(f, "]: {}", e.detail)?;
        }
        for (i, r) in self.retries.iter().enumerate() {
            write!(
                f,
                "retry round {}: {} retried, {} ok, {} already deployed",
                i + 1,
                r.attempted,
                r.succeeded,
                r.already_deployed
            )?;
            for (kind, n) in &r.failures {
                write!(f, ", {kind}: {n}")?;
            }
            writeln!(f)?;
        }
        if o.retry_rounds > 0 {
            writeln!(
                f,
                "deployed after retries: {} of {}",
                self.deployed_after_retries, o.gateways
            )?;
        }
        Ok(())
    }
}

/// The outcome of one gateway.
pub(crate) struct GatewayOutcome {
    pub(crate) index: u64,
    pub(crate) fault: Option<FaultKind>,
    /// Latency when the server answered at all.
    pub(crate) latency_us: Option<u64>,
    /// Enrollment ID of the certificate the gateway stored, when its session succeeded.
    pub(crate) stored: Option<String>,
    pub(crate) result: Result<(), (FailureKind, String)>,
}

/// The report of the first pass over `outcomes` (retry rounds are added by the caller).
pub(crate) fn summarize(
    options: FleetOptions,
    outcomes: Vec<GatewayOutcome>,
    elapsed: Duration,
) -> FleetReport {
    let mut ok_latencies = Vec::with_capacity(outcomes.len());
    let mut all_latencies = Vec::with_capacity(outcomes.len());
    let mut histogram: Vec<HistogramBucket> = HISTOGRAM_BOUNDS_MS
        .iter()
        .map(|&b| Some(b))
        .chain([None])
        .map(|le_ms| HistogramBucket { le_ms, count: 0 })
        .collect();
    let mut failures: BTreeMap<FailureKind, FailureCount> = BTreeMap::new();
    let mut failures_by_fault: BTreeMap<String, BTreeMap<FailureKind, u64>> = BTreeMap::new();
    let mut unexpected_examples = Vec::new();
    let mut expected_examples = Vec::new();
    let (mut succeeded, mut failed_expected, mut failed_unexpected) = (0, 0, 0);
    let (mut faulty, mut faulty_succeeded) = (0, 0);
    for o in outcomes {
        if let Some(l) = o.latency_us {
            all_latencies.push(l);
        }
        if o.fault.is_some() {
            faulty += 1;
        }
        match o.result {
            Ok(()) => {
                succeeded += 1;
                if o.fault.is_some() {
                    faulty_succeeded += 1;
                }
                if let Some(l) = o.latency_us {
                    ok_latencies.push(l);
                    // The first bucket whose bound holds the latency, else the open one.
                    if let Some(bucket) = histogram
                        .iter_mut()
                        .find(|b| b.le_ms.is_none_or(|le| l <= le * 1000))
                    {
                        bucket.count += 1;
                    }
                }
            }
            Err((kind, detail)) => {
                let count = failures.entry(kind).or_default();
                let example = FailureExample {
                    serial: options.serial(o.index),
                    kind,
                    fault: o.fault,
                    expected: o.fault.is_some(),
                    detail,
                };
                match o.fault {
                    Some(fault) => {
                        count.expected += 1;
                        failed_expected += 1;
                        *failures_by_fault
                            .entry(fault.to_string())
                            .or_default()
                            .entry(kind)
                            .or_default() += 1;
                        if expected_examples.len() < MAX_EXAMPLES / 2 {
                            expected_examples.push(example);
                        }
                    }
                    None => {
                        count.unexpected += 1;
                        failed_unexpected += 1;
                        if unexpected_examples.len() < MAX_EXAMPLES {
                            unexpected_examples.push(example);
                        }
                    }
                }
            }
        }
    }
    let mut examples = unexpected_examples;
    examples.extend(expected_examples);
    examples.truncate(MAX_EXAMPLES);
    let seconds = elapsed.as_secs_f64();
    FleetReport {
        succeeded,
        failed: failed_expected + failed_unexpected,
        failed_expected,
        failed_unexpected,
        faulty,
        faulty_succeeded,
        elapsed,
        provisions_per_s: if seconds > 0.0 {
            succeeded as f64 / seconds
        } else {
            0.0
        },
        latency: Latency::of(&mut ok_latencies),
        latency_all: Latency::of(&mut all_latencies),
        histogram,
        failures,
        failures_by_fault,
        examples,
        retries: Vec::new(),
        deployed_after_retries: 0,
        stored_enrollment_ids: BTreeMap::new(),
        options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&mut s);
        assert_eq!((l.p50_us, l.p95_us, l.p99_us, l.max_us), (50, 95, 99, 100));
        assert_eq!(Latency::of(&mut []).count, 0);
        let one = Latency::of(&mut [7]);
        assert_eq!((one.p50_us, one.p99_us), (7, 7));
    }

    /// The JSON of `--json` keeps the field names scripts read (bench/*.sh) and its shapes.
    #[test]
    fn json_report_keeps_its_field_names_and_units() {
        let options = FleetOptions {
            token: Some("secret-token".to_owned()),
            ..crate::options::tests::options()
        };
        let outcome = |index, fault, latency_us, result| GatewayOutcome {
            index,
            fault,
            latency_us,
            stored: None,
            result,
        };
        let outcomes = vec![
            outcome(0, None, Some(1_500), Ok(())),
            outcome(1, None, Some(2_000_000), Ok(())),
            outcome(
                2,
                Some(FaultKind::CloseWithoutReply),
                Some(3_000),
                Err((FailureKind::Http(502), "bad gateway".to_owned())),
            ),
            outcome(
                3,
                None,
                None,
                Err((FailureKind::Transport, "refused".to_owned())),
            ),
        ];
        let mut report = summarize(options, outcomes, Duration::from_secs(2));
        report.retries.push(RetryRound {
            attempted: 2,
            succeeded: 1,
            already_deployed: 0,
            failures: [(FailureKind::Timeout, 1)].into(),
        });
        let json = report.to_json();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "concurrency",
                "deployed_after_retries",
                "elapsed_s",
                "examples",
                "failed",
                "failed_expected",
                "failed_unexpected",
                "failures",
                "failures_by_fault",
                "fault_kinds",
                "fault_rate",
                "faulty_gateways",
                "faulty_succeeded",
                "gateways",
                "histogram",
                "latency",
                "latency_all_answers",
                "provisions_per_s",
                "retry_rounds",
                "seed",
                "serial_prefix",
                "server",
                "succeeded",
            ]
        );
        assert!(!json.to_string().contains("secret-token"));
        assert_eq!(json["gateways"], 10);
        assert_eq!(json["succeeded"], 2);
        assert_eq!(json["failed"], 2);
        assert_eq!(json["faulty_gateways"], 1);
        assert_eq!(json["elapsed_s"], 2.0);
        assert_eq!(json["provisions_per_s"], 1.0);
        assert_eq!(
            json["fault_kinds"],
            serde_json::json!(["close", "corrupt-hash", "wire9", "return-status=17"])
        );
        assert_eq!(
            json["latency"],
            serde_json::json!({
                "count": 2, "p50_ms": 1.5, "p95_ms": 2000.0, "p99_ms": 2000.0,
                "max_ms": 2000.0, "mean_ms": 1000.75,
            })
        );
        assert_eq!(json["latency_all_answers"]["count"], 3);
        let histogram = json["histogram"].as_array().unwrap();
        assert_eq!(histogram.len(), HISTOGRAM_BOUNDS_MS.len() + 1);
        assert_eq!(histogram[1], serde_json::json!({"le_ms": 2, "count": 1}));
        assert_eq!(
            histogram[12],
            serde_json::json!({"le_ms": null, "count": 1})
        );
        assert_eq!(
            json["failures"],
            serde_json::json!({
                "http_502": {"expected": 1, "unexpected": 0},
                "transport": {"expected": 0, "unexpected": 1},
            })
        );
        assert_eq!(
            json["failures_by_fault"],
            serde_json::json!({"close": {"http_502": 1}})
        );
        assert_eq!(
            json["examples"],
            serde_json::json!([
                {"serial": "fleet-000003", "kind": "transport", "fault": null,
                 "expected": false, "detail": "refused"},
                {"serial": "fleet-000002", "kind": "http_502", "fault": "close",
                 "expected": true, "detail": "bad gateway"},
            ])
        );
        assert_eq!(
            json["retry_rounds"],
            serde_json::json!([{"attempted": 2, "succeeded": 1, "already_deployed": 0,
                                "failures": {"timeout": 1}}])
        );
        assert_eq!(json["deployed_after_retries"], 0);
        // The text report shows the same figures.
        let text = report.to_string();
        assert!(
            text.contains(
                "provisioned: 2 ok, 2 failed (1 expected from 1 faulty gateways, 1 unexpected)"
            ),
            "{text}"
        );
        assert!(
            text.contains(" ≤2:1 ") && text.contains(" >1000:1"),
            "{text}"
        );
        assert!(
            text.contains("e.g. fleet-000002 http_502 [close]: bad gateway"),
            "{text}"
        );
        assert!(
            text.contains("e.g. fleet-000003 transport [healthy]: refused"),
            "{text}"
        );
    }
}
