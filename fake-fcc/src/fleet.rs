//! `fake-fcc fleet`: many simulated gateways in one process, provisioned through a running
//! `pep-server` with a bounded number of requests in flight.
//!
//! Gateway `i` (serial `PREFIX` + `i`, zero-padded) is started with the library's [`spawn`] on
//! 127.0.0.1 (one session, memory-only storage) just before its request is sent, so only
//! about `concurrency` gateways listen at any time. Its port is the next free one of
//! [`FleetOptions::ports`], taken in turn (see [`PortRange`] for why not port 0). For each gateway the fleet sends
//! `GET /v3/identity?serialNumber=…&ip=127.0.0.1&port=…`, then checks the answer against what the
//! simulated gateway stored: HTTP 200, the same serial, ReturnStatus 0 and a wire-level success on
//! the gateway, and an `enrollmentID` equal to the enrollment ID of the device certificate the
//! gateway holds.
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

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fcc_proto::names;
use fcc_proto::status::FccStatus;
use pep_ca::EnrollmentId;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::FakeFccError;
use crate::faults::{Fault, FaultKind, Faults};
use crate::server::{GatewayConfig, Sessions, spawn};

/// How long a gateway's session report is awaited after the server answered 200 (the gateway has
/// sent its reply by then; this only covers scheduling).
const REPORT_WAIT: Duration = Duration::from_secs(10);
/// How long a gateway's report is awaited when the HTTP request failed in transport (the server
/// died mid-request): the gateway may still have finished its session and stored a certificate.
/// As long as after a 200: on a loaded machine the report of a session the dead server ended can
/// take seconds, and missing it would leave a deployed serial without its gateway's certificate.
const LOST_ANSWER_REPORT_WAIT: Duration = REPORT_WAIT;
/// Pause before each retry round (lets a restarted server come up).
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Upper bounds (ms) of the latency histogram; the last bucket is open.
pub const HISTOGRAM_BOUNDS_MS: [u64; 12] = [1, 2, 3, 5, 10, 15, 20, 25, 50, 100, 250, 1000];
/// How many ports of the range a gateway tries before its start counts as failed.
const MAX_PORT_TRIES: u32 = 256;

/// The ports a fleet's gateways listen on, handed out in turn (`--ports FIRST-LAST`).
///
/// Why not port 0: each gateway's session ends with the gateway closing its connection first, so
/// every gateway leaves a socket in TIME_WAIT on its port for a minute. With port 0 the kernel
/// must search the ephemeral range for a port with no socket at all, and that search, like the
/// server's `connect()` port search in the same range, got slower with every gateway: at 20,000
/// gateways the fleet spent 2 ms of kernel time per gateway (`inet_bhash2_conflict` in `bind`)
/// and the cost per gateway kept growing with the run. Binding a named port with `SO_REUSEADDR`
/// (tokio sets it) is one hash lookup, and a port that only has TIME_WAIT sockets may be bound
/// again, so the cost stays flat. The default range lies below Linux's default ephemeral range
/// (32768–60999), so the fleet's ports and the server's outgoing connections never compete. A
/// port some other program listens on is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port (inclusive).
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// 16384–32767: below Linux's default ephemeral range.
    pub const DEFAULT: PortRange = PortRange {
        first: 16384,
        last: 32767,
    };

    /// How many ports the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Always false: a range holds at least its first port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<PortRange, String> {
        let (first, last) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not FIRST-LAST, e.g. 16384-32767"))?;
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{p}` is not a port in 1..=65535")),
            Ok(port) => Ok(port),
        };
        let range = PortRange {
            first: port(first)?,
            last: port(last)?,
        };
        if range.first > range.last {
            return Err(format!(
                "the first port {} is above the last {}",
                range.first, range.last
            ));
        }
        Ok(range)
    }
}

/// At most this many failure examples are kept for the report.
const MAX_EXAMPLES: usize = 10;

/// The fault kinds a faulty gateway draws from when none are given: each one makes the
/// provisioning fail with a 502 (no stalls or never-read connections, which only cost time).
pub fn default_fault_kinds() -> Vec<FaultKind> {
    vec![
        FaultKind::CloseWithoutReply,
        FaultKind::CorruptHash,
        FaultKind::WireStatus9,
        FaultKind::ReturnStatus(FccStatus::from_u32(17)),
    ]
}

/// What a fleet run does.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How many gateways to provision.
    pub gateways: u64,
    /// Requests (and listening gateways) at once.
    pub concurrency: usize,
    /// The server's base URL, e.g. `http://127.0.0.1:5151`.
    pub server: String,
    /// Bearer token (`None` = no Authorization header).
    pub token: Option<String>,
    /// Probability that a gateway is faulty, in `0..=1`.
    pub fault_rate: f64,
    /// Seed of the faulty-gateway draws and of each gateway's fault generator.
    pub seed: u64,
    /// The fault kinds a faulty gateway draws from (uniformly).
    pub fault_kinds: Vec<FaultKind>,
    /// Serial numbers are this prefix followed by the zero-padded gateway index.
    pub serial_prefix: String,
    /// Timeout of one HTTP request (the whole provisioning).
    pub request_timeout: Duration,
    /// Rounds of retrying the failed gateways with no fault (0 = no retry).
    pub retry_rounds: u32,
    /// The ports the gateways listen on, in turn.
    pub ports: PortRange,
}

impl FleetOptions {
    /// Checks the options; the error names the option that is wrong.
    pub fn validate(&self) -> Result<(), FakeFccError> {
        let bad = |option: &str, reason: String| FakeFccError::Fleet {
            reason: format!("{option}: {reason}"),
        };
        if self.gateways == 0 {
            return Err(bad("--gateways", "must be at least 1".to_owned()));
        }
        if self.concurrency == 0 {
            return Err(bad("--concurrency", "must be at least 1".to_owned()));
        }
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(bad(
                "--fault-rate",
                format!("{} is not a probability in 0..=1", self.fault_rate),
            ));
        }
        if self.fault_rate > 0.0 && self.fault_kinds.is_empty() {
            return Err(bad(
                "--fault",
                "a fault rate needs at least one fault kind".to_owned(),
            ));
        }
        match url::Url::parse(&self.server) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return Err(bad(
                    "--server",
                    format!("scheme `{}` is not http or https", u.scheme()),
                ));
            }
            Err(e) => {
                return Err(bad(
                    "--server",
                    format!("`{}` is not a URL: {e}", self.server),
                ));
            }
        }
        let longest = format!("{}{}", self.serial_prefix, self.serial_width_example());
        if pep_ca::EndpointName::try_from(longest.clone()).is_err() {
            return Err(bad(
                "--prefix",
                format!("`{longest}` is not a valid serial number (endpoint name)"),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(bad("--timeout-ms", "must be at least 1".to_owned()));
        }
        // Every gateway in flight holds a port; twice as many leaves room for ports in use.
        let needed = self.concurrency.saturating_mul(2);
        if (self.ports.len() as usize) < needed {
            return Err(bad(
                "--ports",
                format!(
                    "{} holds {} ports; --concurrency {} needs at least {needed}",
                    self.ports,
                    self.ports.len(),
                    self.concurrency
                ),
            ));
        }
        Ok(())
    }

    fn serial_width(&self) -> usize {
        (self.gateways.saturating_sub(1)).to_string().len().max(6)
    }

    fn serial_width_example(&self) -> String {
        "9".repeat(self.serial_width())
    }

    /// The serial number of gateway `index`.
    pub fn serial(&self, index: u64) -> String {
        format!(
            "{}{:0width$}",
            self.serial_prefix,
            index,
            width = self.serial_width()
        )
    }

    /// The faults of gateway `index`: empty for a healthy one. Depends only on the seed and the
    /// index.
    pub fn faults_of(&self, index: u64) -> Option<FaultKind> {
        if self.fault_rate <= 0.0 || self.fault_kinds.is_empty() {
            return None;
        }
        let mut rng = StdRng::seed_from_u64(gateway_seed(self.seed, index));
        let faulty = self.fault_rate >= 1.0 || rng.gen_bool(self.fault_rate);
        if !faulty {
            return None;
        }
        let k = rng.gen_range(0..self.fault_kinds.len());
        self.fault_kinds.get(k).copied()
    }
}

/// A per-gateway seed (splitmix64 of seed and index), so draws do not depend on scheduling.
fn gateway_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The short name of a fault kind, as in the command-line spec.
pub fn fault_name(kind: FaultKind) -> String {
    match kind {
        FaultKind::CloseWithoutReply => "close".to_owned(),
        FaultKind::CorruptHash => "corrupt-hash".to_owned(),
        FaultKind::Stall(d) => format!("stall={}", d.as_millis()),
        FaultKind::WireStatus9 => "wire9".to_owned(),
        FaultKind::ReturnStatus(s) => format!("return-status={}", s.as_u32()),
        FaultKind::AcceptThenNeverRead => "never-read".to_owned(),
        FaultKind::Refused => "refused".to_owned(),
    }
}

/// The command line of `fake-fcc fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// How many gateways to provision (each its own simulated FCC on 127.0.0.1, one session).
    #[arg(long)]
    pub gateways: u64,

    /// Requests in flight (and gateways listening) at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// The pep-server base URL.
    #[arg(long, default_value = "http://127.0.0.1:5151")]
    pub server: String,

    /// Bearer token with the `provision` role.
    #[arg(long, env = "PEP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Probability that a gateway is faulty (its failure is then expected and counted apart).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,

    /// Seed of the faulty-gateway draws (repeatable chaos runs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Fault kind a faulty gateway may get, as in `fake-fcc --fault` (repeatable; the
    /// probability part is ignored: a faulty gateway's fault fires on every message).
    /// Default: close, corrupt-hash, wire9, return-status=17.
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_fault_kind)]
    pub faults: Vec<FaultKind>,

    /// Serial number prefix (default `fleet-<start time in ms, hex>-`, unique per run).
    #[arg(long)]
    pub prefix: Option<String>,

    /// Timeout of one provisioning request, in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,

    /// Worker threads of the fleet's runtime (server and fleet usually share the machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "OUT")]
    pub json: Option<std::path::PathBuf>,

    /// After the run, provision every failed gateway again with no fault, up to N rounds (chaos
    /// runs: the run is clean when every gateway ends deployed).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub retry_rounds: u32,

    /// The ports the simulated gateways listen on, taken in turn (ports in use are skipped).
    /// The default lies below Linux's ephemeral range, which the server's outgoing connections use.
    #[arg(long, value_name = "FIRST-LAST", default_value_t = PortRange::DEFAULT)]
    pub ports: PortRange,
}

fn parse_fault_kind(s: &str) -> Result<FaultKind, String> {
    s.parse::<Fault>()
        .map(|f| f.kind)
        .map_err(|e| e.to_string())
}

impl FleetArgs {
    /// The run options these arguments describe.
    pub fn options(&self) -> FleetOptions {
        let prefix = self.prefix.clone().unwrap_or_else(|| {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("fleet-{ms:x}-")
        });
        FleetOptions {
            gateways: self.gateways,
            concurrency: self.concurrency,
            server: self.server.clone(),
            token: self.token.clone(),
            fault_rate: self.fault_rate,
            seed: self.seed,
            fault_kinds: if self.faults.is_empty() {
                default_fault_kinds()
            } else {
                self.faults.clone()
            },
            serial_prefix: prefix,
            request_timeout: Duration::from_millis(self.timeout_ms),
            retry_rounds: self.retry_rounds,
            ports: self.ports,
        }
    }
}

/// `fake-fcc fleet`: runs the fleet, prints the report (and writes `--json`). Exit code 0 when
/// every healthy gateway was provisioned and checked, 1 when any was not, 2 when the run could
/// not start.
pub fn main(args: FleetArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let options = args.options();
    if let Err(e) = options.validate() {
        eprintln!("fake-fcc: {e}");
        return ExitCode::from(2);
    }
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-fcc: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(run(options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fake-fcc: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{report}");
    if let Some(path) = &args.json {
        let text = match serde_json::to_string_pretty(&report.to_json()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("fake-fcc: cannot encode the JSON report: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("fake-fcc: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why one gateway was not provisioned correctly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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

/// One failed gateway, for the report's examples.
#[derive(Debug, Clone)]
pub struct FailureExample {
    /// The serial.
    pub serial: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// The injected fault, if the gateway was faulty.
    pub fault: Option<FaultKind>,
    /// Details (server message, check that failed).
    pub detail: String,
}

/// Counts of one failure kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureCount {
    /// Failures of faulty gateways.
    pub expected: u64,
    /// Failures of healthy gateways.
    pub unexpected: u64,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// The summary of these samples (any order).
    pub fn of(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| {
            // Nearest-rank percentile.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            samples[rank - 1]
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            count: n as u64,
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            max_us: samples[n - 1],
            mean_us: sum as f64 / n as f64,
        }
    }
}

/// What a fleet run measured.
#[derive(Debug, Clone)]
pub struct FleetReport {
    /// The options of the run.
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
    pub faulty: u64,
    /// Faulty gateways that were provisioned anyway.
    pub faulty_succeeded: u64,
    /// Wall time from the first gateway start to the last answer.
    pub elapsed: Duration,
    /// Latency of the successful provisionings (request sent → answer read).
    pub latency: Latency,
    /// Latency of every answered request, failures included.
    pub latency_all: Latency,
    /// Successful provisionings per histogram bucket ([`HISTOGRAM_BOUNDS_MS`] + open bucket).
    pub histogram: Vec<u64>,
    /// Failures by kind.
    pub failures: BTreeMap<String, FailureCount>,
    /// Failures by injected fault (faulty gateways only), by kind.
    pub failures_by_fault: BTreeMap<String, BTreeMap<String, u64>>,
    /// The first failures of each class (unexpected first).
    pub examples: Vec<FailureExample>,
    /// The retry rounds that ran (empty without `retry_rounds`).
    pub retries: Vec<RetryRound>,
    /// Gateways deployed at the end: first pass plus every retry round.
    pub deployed_after_retries: u64,
    /// Serial → enrollment ID of the certificate that gateway stored in its last successful
    /// session (whether or not the server's answer arrived).
    pub stored_enrollment_ids: BTreeMap<String, String>,
}

/// One retry round: the failed gateways of the previous pass, provisioned again without faults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryRound {
    /// Gateways retried.
    pub attempted: u64,
    /// Provisioned and checked.
    pub succeeded: u64,
    /// Answered 409 although the gateway stored a certificate earlier: the server had recorded
    /// it, its answer was lost. Counted as deployed.
    pub already_deployed: u64,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
}
impl FleetReport {
    /// Successful provisionings per second of wall time.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.succeeded as f64 / s
        } else {
            0.0
        }
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
    pub fn to_json(&self) -> Value {
        let latency = |l: &Latency| {
            json!({
                "count": l.count,
                "p50_ms": l.p50_us as f64 / 1000.0,
                "p95_ms": l.p95_us as f64 / 1000.0,
                "p99_ms": l.p99_us as f64 / 1000.0,
                "max_ms": l.max_us as f64 / 1000.0,
                "mean_ms": l.mean_us / 1000.0,
            })
        };
        let histogram: Vec<Value> = self
            .histogram
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let le = HISTOGRAM_BOUNDS_MS
                    .get(i)
                    .map(|b| json!(b))
                    .unwrap_or(Value::Null);
                json!({"le_ms": le, "count": count})
            })
            .collect();
        let failures: serde_json::Map<String, Value> = self
            .failures
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    json!({"expected": c.expected, "unexpected": c.unexpected}),
                )
            })
            .collect();
        let examples: Vec<Value> = self
            .examples
            .iter()
            .map(|e| {
                json!({
                    "serial": e.serial,
                    "kind": e.kind.to_string(),
                    "fault": e.fault.map(fault_name),
                    "expected": e.fault.is_some(),
                    "detail": e.detail,
                })
            })
            .collect();
        let o = &self.options;
        json!({
            "gateways": o.gateways,
            "concurrency": o.concurrency,
            "server": o.server,
            "fault_rate": o.fault_rate,
            "seed": o.seed,
            "fault_kinds": o.fault_kinds.iter().map(|k| fault_name(*k)).collect::<Vec<_>>(),
            "serial_prefix": o.serial_prefix,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failed_expected": self.failed_expected,
            "failed_unexpected": self.failed_unexpected,
            "faulty_gateways": self.faulty,
            "faulty_succeeded": self.faulty_succeeded,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "provisions_per_s": self.rate(),
            "latency": latency(&self.latency),
            "latency_all_answers": latency(&self.latency_all),
            "histogram": histogram,
            "failures": failures,
            "failures_by_fault": self.failures_by_fault,
            "examples": examples,
            "retry_rounds": self.retries.iter().map(|r| json!({
                "attempted": r.attempted,
                "succeeded": r.succeeded,
                "already_deployed": r.already_deployed,
                "failures": r.failures,
            })).collect::<Vec<_>>(),
            "deployed_after_retries": self.deployed_after_retries,
        })
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
        for (i, count) in self.histogram.iter().enumerate() {
            match HISTOGRAM_BOUNDS_MS.get(i) {
                Some(b) => write!(f, " ≤{b}:{count}")?,
                None => write!(
                    f,
                    " >{}:{count}",
                    HISTOGRAM_BOUNDS_MS[HISTOGRAM_BOUNDS_MS.len() - 1]
                )?,
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
            writeln!(
                f,
                "  e.g. {} {} [{}]: {}",
                e.serial,
                e.kind,
                e.fault.map_or_else(|| "healthy".to_owned(), fault_name),
                e.detail
            )?;
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
struct GatewayOutcome {
    index: u64,
    fault: Option<FaultKind>,
    /// Latency when the server answered at all.
    latency_us: Option<u64>,
    /// Enrollment ID of the certificate the gateway stored, when its session succeeded.
    stored: Option<String>,
    result: Result<(), (FailureKind, String)>,
}

/// Runs the fleet: provisions `options.gateways` gateways and checks each one.
pub async fn run(options: FleetOptions) -> Result<FleetReport, FakeFccError> {
    options.validate()?;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(options.concurrency)
        .timeout(options.request_timeout);
    if let Some(token) = &options.token {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| FakeFccError::Fleet {
                reason: "--token: not a valid HTTP header value".to_owned(),
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    let client = builder.build().map_err(|e| FakeFccError::Fleet {
        reason: format!("cannot build the HTTP client: {e}"),
    })?;
    let endpoint = format!("{}/v3/identity", options.server.trim_end_matches('/'));
    let shared = Arc::new(Shared {
        client,
        endpoint,
        // A random start: two fleets on one machine rarely try the same ports at once.
        next_port: AtomicU32::new(rand::thread_rng().gen_range(0..options.ports.len())),
        options: options.clone(),
    });

    let started = Instant::now();
    let outcomes = pass(&shared, 0..options.gateways, true).await?;
    let elapsed = started.elapsed();

    let mut stored = BTreeMap::new();
    let mut failed = Vec::new();
    let mut deployed = 0;
    for o in &outcomes {
        if let Some(id) = &o.stored {
            stored.insert(options.serial(o.index), id.clone());
        }
        match o.result {
            Ok(()) => deployed += 1,
            Err(_) => failed.push(o.index),
        }
    }
    let mut retries = Vec::new();
    for _ in 0..options.retry_rounds {
        if failed.is_empty() {
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        let mut round = RetryRound {
            attempted: failed.len() as u64,
            ..RetryRound::default()
        };
        let again = pass(&shared, failed.iter().copied(), false).await?;
        failed.clear();
        for o in again {
            let serial = options.serial(o.index);
            if let Some(id) = &o.stored {
                stored.insert(serial.clone(), id.clone());
            }
            match o.result {
                Ok(()) => round.succeeded += 1,
                Err((FailureKind::Http(409), _)) if stored.contains_key(&serial) => {
                    round.already_deployed += 1;
                }
                Err((kind, _)) => {
                    *round.failures.entry(kind.to_string()).or_default() += 1;
                    failed.push(o.index);
                }
            }
        }
        failed.sort_unstable();
        deployed += round.succeeded + round.already_deployed;
        retries.push(round);
    }
    let mut report = summarize(options, outcomes, elapsed);
    report.retries = retries;
    report.deployed_after_retries = deployed;
    report.stored_enrollment_ids = stored;
    Ok(report)
}

/// Provisions the gateways `indices` with at most `concurrency` in flight; `with_faults` false
/// gives every gateway no fault (retry rounds).
async fn pass(
    shared: &Arc<Shared>,
    indices: impl Iterator<Item = u64>,
    with_faults: bool,
) -> Result<Vec<GatewayOutcome>, FakeFccError> {
    let slots = Arc::new(Semaphore::new(shared.options.concurrency));
    let mut tasks = JoinSet::new();
    let mut outcomes = Vec::new();
    for index in indices {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|_| FakeFccError::Fleet {
                reason: "the concurrency limiter was closed".to_owned(),
            })?;
        let shared = Arc::clone(shared);
        let fault = if with_faults {
            shared.options.faults_of(index)
        } else {
            None
        };
        tasks.spawn(async move {
            let outcome = shared.one(index, fault).await;
            drop(permit);
            outcome
        });
        while let Some(done) = tasks.try_join_next() {
            outcomes.push(joined(done)?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        outcomes.push(joined(done)?);
    }
    Ok(outcomes)
}

fn joined(
    done: Result<GatewayOutcome, tokio::task::JoinError>,
) -> Result<GatewayOutcome, FakeFccError> {
    done.map_err(|e| FakeFccError::Fleet {
        reason: format!("a gateway task failed: {e}"),
    })
}

struct Shared {
    client: reqwest::Client,
    endpoint: String,
    /// The next port of `options.ports` to try, as an offset (taken modulo the range's length).
    next_port: AtomicU32,
    options: FleetOptions,
}

impl Shared {
    fn next_port(&self) -> u16 {
        let range = self.options.ports;
        let offset = self.next_port.fetch_add(1, Ordering::Relaxed) % range.len();
        // In range: offset < len, so first + offset <= last.
        u16::try_from(u32::from(range.first) + offset).unwrap_or(range.last)
    }

    /// Runs `bind` on the next ports of the range until one is free (`bind` answers an
    /// `AddrInUse` error for a port in use), at most [`MAX_PORT_TRIES`] ports.
    async fn on_free_port<T, F, Fut>(&self, mut bind: F) -> Result<T, (FailureKind, String)>
    where
        F: FnMut(u16) -> Fut,
        Fut: std::future::Future<Output = Result<T, std::io::Error>>,
    {
        let mut last_error = String::new();
        for _ in 0..MAX_PORT_TRIES {
            let port = self.next_port();
            match bind(port).await {
                Ok(bound) => return Ok(bound),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    last_error = format!("port {port}: {e}");
                }
                Err(e) => return Err((FailureKind::GatewaySpawn, e.to_string())),
            }
        }
        Err((
            FailureKind::GatewaySpawn,
            format!(
                "no free port among {MAX_PORT_TRIES} tried in {} (last: {last_error})",
                self.options.ports
            ),
        ))
    }

    /// Starts a gateway on the next free port of the range.
    async fn start_gateway(
        &self,
        config: GatewayConfig,
    ) -> Result<(u16, crate::GatewayHandle), (FailureKind, String)> {
        self.on_free_port(|port| {
            let config = GatewayConfig {
                port,
                ..config.clone()
            };
            async move {
                match spawn(config).await {
                    Ok((addr, handle)) => Ok((addr.port(), handle)),
                    Err(FakeFccError::Bind { source, .. })
                        if source.kind() == std::io::ErrorKind::AddrInUse =>
                    {
                        Err(source)
                    }
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            }
        })
        .await
    }

    /// Binds (without listening) the next free port of the range: connections to it are refused,
    /// and, unlike a released port, no other gateway of the fleet can take it meanwhile (the
    /// server would then provision the wrong gateway under this serial).
    async fn reserve_refusing_port(
        &self,
    ) -> Result<(u16, tokio::net::TcpSocket), (FailureKind, String)> {
        self.on_free_port(|port| async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
            Ok((port, socket))
        })
        .await
    }

    async fn one(&self, index: u64, fault: Option<FaultKind>) -> GatewayOutcome {
        let mut outcome = GatewayOutcome {
            index,
            fault,
            latency_us: None,
            stored: None,
            result: Ok(()),
        };
        outcome.result = self
            .provision(index, fault, &mut outcome.latency_us, &mut outcome.stored)
            .await;
        outcome
    }

    async fn provision(
        &self,
        index: u64,
        fault: Option<FaultKind>,
        latency_us: &mut Option<u64>,
        stored: &mut Option<String>,
    ) -> Result<(), (FailureKind, String)> {
        let serial = self.options.serial(index);
        let faults = Faults {
            faults: fault
                .map(|kind| Fault {
                    kind,
                    probability: 1.0,
                })
                .into_iter()
                .collect(),
            seed: Some(gateway_seed(self.options.seed, index)),
        };
        let config = GatewayConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0, // chosen by `start_gateway`
            storage_dir: None,
            sessions: Sessions::One,
            faults,
            ..GatewayConfig::default()
        };
        // A refused gateway is never started: its port is bound but not listening.
        let (port, mut handle, _reserved) = if fault == Some(FaultKind::Refused) {
            let (port, socket) = self.reserve_refusing_port().await?;
            (port, None, Some(socket))
        } else {
            let (port, handle) = self.start_gateway(config).await?;
            (port, Some(handle), None)
        };
        let port = port.to_string();
        let sent = Instant::now();
        let response = self
            .client
            .get(&self.endpoint)
            .query(&[
                ("serialNumber", serial.as_str()),
                ("ip", "127.0.0.1"),
                ("port", port.as_str()),
            ])
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                // The answer is lost, but the gateway may have stored a certificate anyway
                // (unless the request never reached the server).
                if !e.is_connect() {
                    *stored = lost_answer_certificate(handle.as_mut()).await;
                }
                let kind = if e.is_timeout() {
                    FailureKind::Timeout
                } else {
                    FailureKind::Transport
                };
                return Err((kind, error_chain(&e)));
            }
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err((FailureKind::Timeout, e.to_string())),
            Err(e) => return Err((FailureKind::Transport, error_chain(&e))),
        };
        *latency_us = Some(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            let detail: String = text.chars().take(300).collect();
            return Err((FailureKind::Http(status), detail));
        }
        let identity: Value = serde_json::from_slice(&body)
            .map_err(|e| (FailureKind::BadAnswer, format!("not JSON: {e}")))?;
        let field = |name: &str| {
            identity
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| (FailureKind::BadAnswer, format!("no `{name}` string")))
        };
        let answered_serial = field("serialNumber")?;
        if answered_serial != serial {
            return Err((
                FailureKind::SerialMismatch,
                format!("asked for {serial}, got {answered_serial}"),
            ));
        }
        let enrollment_id = field("enrollmentID")?;
        let Some(handle) = handle.as_mut() else {
            return Err((
                FailureKind::GatewayNoSession,
                "answered 200 for a gateway that was never started".to_owned(),
            ));
        };
        let report = match tokio::time::timeout(REPORT_WAIT, handle.next_report()).await {
            Ok(Some(report)) => report,
            Ok(None) => {
                return Err((
                    FailureKind::GatewayNoSession,
                    "the gateway stopped without finishing a session".to_owned(),
                ));
            }
            Err(_) => {
                return Err((
                    FailureKind::GatewayNoSession,
                    format!(
                        "no finished session {} s after the answer",
                        REPORT_WAIT.as_secs()
                    ),
                ));
            }
        };
        if report.last_status != Some(FccStatus::Success) || !report.wire_success {
            return Err((
                FailureKind::GatewayStatus,
                format!(
                    "gateway's last ReturnStatus {:?}, wire success {}, error {:?}",
                    report.last_status.map(|s| s.as_u32()),
                    report.wire_success,
                    report.error
                ),
            ));
        }
        let der = report
            .storage
            .certificates
            .get(names::BOOTSTRAP_DEVICE_CERT)
            .and_then(|chain| chain.first())
            .ok_or_else(|| {
                (
                    FailureKind::NoCertificate,
                    format!("the gateway holds no {}", names::BOOTSTRAP_DEVICE_CERT),
                )
            })?;
        let held = EnrollmentId::of_certificate(der);
        *stored = Some(held.to_string());
        if held.as_str() != enrollment_id {
            return Err((
                FailureKind::EnrollmentIdMismatch,
                format!("answer {enrollment_id}, stored certificate {held}"),
            ));
        }
        Ok(())
    }
}

/// The enrollment ID of the certificate a gateway stored in a successful session whose HTTP
/// answer was lost, if its session report arrives within [`LOST_ANSWER_REPORT_WAIT`].
async fn lost_answer_certificate(handle: Option<&mut crate::GatewayHandle>) -> Option<String> {
    let report = tokio::time::timeout(LOST_ANSWER_REPORT_WAIT, handle?.next_report())
        .await
        .ok()??;
    if report.last_status != Some(FccStatus::Success) || !report.wire_success {
        return None;
    }
    let der = report
        .storage
        .certificates
        .get(names::BOOTSTRAP_DEVICE_CERT)?
        .first()?;
    Some(EnrollmentId::of_certificate(der).to_string())
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn summarize(
    options: FleetOptions,
    outcomes: Vec<GatewayOutcome>,
    elapsed: Duration,
) -> FleetReport {
    let mut ok_latencies = Vec::with_capacity(outcomes.len());
    let mut all_latencies = Vec::with_capacity(outcomes.len());
    let mut histogram = vec![0u64; HISTOGRAM_BOUNDS_MS.len() + 1];
    let mut failures: BTreeMap<String, FailureCount> = BTreeMap::new();
    let mut failures_by_fault: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
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
                    let bucket = HISTOGRAM_BOUNDS_MS
                        .iter()
                        .position(|&b| l <= b * 1000)
                        .unwrap_or(HISTOGRAM_BOUNDS_MS.len());
                    histogram[bucket] += 1;
                }
            }
            Err((kind, detail)) => {
                let count = failures.entry(kind.to_string()).or_default();
                let example = FailureExample {
                    serial: options.serial(o.index),
                    kind: kind.clone(),
                    fault: o.fault,
                    detail,
                };
                match o.fault {
                    Some(fault) => {
                        count.expected += 1;
                        failed_expected += 1;
                        *failures_by_fault
                            .entry(fault_name(fault))
                            .or_default()
                            .entry(kind.to_string())
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
    FleetReport {
        succeeded,
        failed: failed_expected + failed_unexpected,
        failed_expected,
        failed_unexpected,
        faulty,
        faulty_succeeded,
        elapsed,
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

    fn options() -> FleetOptions {
        FleetOptions {
            gateways: 10,
            concurrency: 2,
            server: "http://127.0.0.1:1".to_owned(),
            token: None,
            fault_rate: 0.0,
            seed: 1,
            fault_kinds: default_fault_kinds(),
            serial_prefix: "fleet-".to_owned(),
            request_timeout: Duration::from_secs(1),
            retry_rounds: 0,
            ports: PortRange::DEFAULT,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&mut s);
        assert_eq!((l.p50_us, l.p95_us, l.p99_us, l.max_us), (50, 95, 99, 100));
        assert_eq!(Latency::of(&mut []).count, 0);
        let one = Latency::of(&mut [7]);
        assert_eq!((one.p50_us, one.p99_us), (7, 7));
    }

    #[test]
    fn bad_options_name_the_option() {
        let cases: Vec<(FleetOptions, &str)> = vec![
            (
                FleetOptions {
                    gateways: 0,
                    ..options()
                },
                "--gateways",
            ),
            (
                FleetOptions {
                    concurrency: 0,
                    ..options()
                },
                "--concurrency",
            ),
            (
                FleetOptions {
                    fault_rate: 1.5,
                    ..options()
                },
                "--fault-rate",
            ),
            (
                FleetOptions {
                    fault_rate: 0.5,
                    fault_kinds: vec![],
                    ..options()
                },
                "--fault",
            ),
            (
                FleetOptions {
                    server: "nope".into(),
                    ..options()
                },
                "--server",
            ),
            (
                FleetOptions {
                    server: "ftp://x".into(),
                    ..options()
                },
                "--server",
            ),
            (
                FleetOptions {
                    serial_prefix: "bad\u{1}".into(),
                    ..options()
                },
                "--prefix",
            ),
            (
                FleetOptions {
                    serial_prefix: "x".repeat(60),
                    ..options()
                },
                "--prefix",
            ),
            (
                FleetOptions {
                    request_timeout: Duration::ZERO,
                    ..options()
                },
                "--timeout-ms",
            ),
            (
                FleetOptions {
                    concurrency: 64,
                    ports: PortRange {
                        first: 20000,
                        last: 20099,
                    },
                    ..options()
                },
                "--ports",
            ),
        ];
        for (o, option) in cases {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(option), "{option}: {e}");
        }
        options().validate().unwrap();
    }

    #[test]
    fn port_ranges_parse_and_bad_ones_say_why() {
        assert_eq!("16384-32767".parse::<PortRange>(), Ok(PortRange::DEFAULT));
        assert_eq!(PortRange::DEFAULT.to_string(), "16384-32767");
        assert_eq!(PortRange::DEFAULT.len(), 16384);
        assert_eq!("7-7".parse::<PortRange>().map(|r| r.len()), Ok(1));
        for (text, says) in [
            ("16384", "FIRST-LAST"),
            ("0-10", "`0`"),
            ("10-70000", "`70000`"),
            ("x-10", "`x`"),
            ("30000-20000", "above"),
        ] {
            let e = text.parse::<PortRange>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[tokio::test]
    async fn gateways_skip_ports_in_use_and_stay_in_the_range() {
        // A two-port range whose first port is taken by a listener: every gateway gets the other.
        let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = busy.local_addr().unwrap().port();
        let Some(free) = taken.checked_add(1) else {
            return;
        };
        let shared = Shared {
            client: reqwest::Client::new(),
            endpoint: String::new(),
            next_port: AtomicU32::new(0),
            options: FleetOptions {
                ports: PortRange {
                    first: taken,
                    last: free,
                },
                ..options()
            },
        };
        let mut first = match shared.start_gateway(GatewayConfig::default()).await {
            Ok((port, handle)) => {
                assert_eq!(port, free);
                handle
            }
            // The neighbouring port may belong to someone else on a busy machine.
            Err((_, e)) if e.contains("no free port") => return,
            Err(other) => panic!("{other:?}"),
        };
        // Both ports are now taken: the next gateway cannot start, and says why.
        let (kind, e) = shared
            .start_gateway(GatewayConfig::default())
            .await
            .unwrap_err();
        assert_eq!(kind, FailureKind::GatewaySpawn);
        assert!(
            e.contains("no free port") && e.contains(&format!("{taken}-{free}")),
            "{e}"
        );
        first.shutdown();
        first.join().await;
        let (port, _socket) = shared.reserve_refusing_port().await.unwrap();
        assert_eq!(port, free);
    }

    #[test]
    fn faulty_gateways_depend_on_seed_and_index_only() {
        let o = FleetOptions {
            gateways: 1000,
            fault_rate: 0.1,
            ..options()
        };
        let a: Vec<_> = (0..1000).map(|i| o.faults_of(i)).collect();
        let b: Vec<_> = (0..1000).rev().map(|i| o.faults_of(i)).rev().collect();
        assert_eq!(a, b);
        let n = a.iter().filter(|f| f.is_some()).count();
        assert!((50..=150).contains(&n), "{n} faulty of 1000 at rate 0.1");
        assert!(options().faults_of(3).is_none());
        let all = FleetOptions {
            fault_rate: 1.0,
            ..options()
        };
        assert!((0..10).all(|i| all.faults_of(i).is_some()));
    }

    #[test]
    fn serials_are_zero_padded_and_unique() {
        let o = options();
        assert_eq!(o.serial(7), "fleet-000007");
        let big = FleetOptions {
            gateways: 12_345_678,
            ..options()
        };
        assert_eq!(big.serial(7), "fleet-00000007");
    }

    #[tokio::test]
    async fn unreachable_server_is_counted_as_transport_failures() {
        // Port 1 on loopback: nothing listens, connections are refused.
        let report = run(FleetOptions {
            gateways: 3,
            ..options()
        })
        .await
        .unwrap();
        assert_eq!(report.succeeded, 0);
        assert_eq!(report.failed_unexpected, 3);
        assert_eq!(
            report.failures.get("transport").map(|c| c.unexpected),
            Some(3)
        );
        assert!(!report.is_clean());
        let json = report.to_json();
        assert_eq!(json["failed_unexpected"], 3);
    }
}
