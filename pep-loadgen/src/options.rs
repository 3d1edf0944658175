//! What a fleet run does: [`FleetOptions`], checked once by [`FleetOptions::validate`], and the
//! command line ([`FleetArgs`]) that builds them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use fake_fcc::{Fault, FaultKind};
use fcc_proto::status::FccStatus;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::LoadgenError;

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

/// What a fleet run does. Serialized (in the report's JSON) without the token and without what
/// only steers the run (timeout, retry rounds, ports).
#[derive(Debug, Clone, Serialize)]
pub struct FleetOptions {
    /// How many gateways to provision.
    pub gateways: u64,
    /// Requests (and listening gateways) at once.
    pub concurrency: usize,
    /// The server's base URL, e.g. `http://127.0.0.1:5151` or `https://127.0.0.1:5151`.
    pub server: String,
    /// A PEM file of CA certificates trusted for an `https://` server besides the built-in roots
    /// (a test or factory CA). Read when the run starts.
    #[serde(skip)]
    pub ca_cert: Option<PathBuf>,
    /// Bearer token (`None` = no Authorization header). A secret: never serialized.
    #[serde(skip)]
    pub token: Option<String>,
    /// Probability that a gateway is faulty, in `0..=1`.
    pub fault_rate: f64,
    /// Seed of the faulty-gateway draws and of each gateway's fault generator.
    pub seed: u64,
    /// The fault kinds a faulty gateway draws from (uniformly).
    #[serde(serialize_with = "crate::report::fault_names")]
    pub fault_kinds: Vec<FaultKind>,
    /// Serial numbers are this prefix followed by the zero-padded gateway index.
    pub serial_prefix: String,
    /// Timeout of one HTTP request (the whole provisioning).
    #[serde(skip)]
    pub request_timeout: Duration,
    /// Rounds of retrying the failed gateways with no fault (0 = no retry).
    #[serde(skip)]
    pub retry_rounds: u32,
    /// The ports the gateways listen on, in turn.
    #[serde(skip)]
    pub ports: PortRange,
}

impl FleetOptions {
    /// Checks the options; the error names the option that is wrong.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |option: &'static str, reason: String| LoadgenError::Option { option, reason };
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
            Ok(u) if u.scheme() == "https" => {}
            // A CA for a plain-HTTP server would be silently unused: most likely `http://` was
            // meant to be `https://`.
            Ok(_) if self.ca_cert.is_some() => {
                return Err(bad(
                    "--ca-cert",
                    format!("`{}` is not an https:// URL", self.server),
                ));
            }
            Ok(u) if u.scheme() == "http" => {}
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

    /// The fault of gateway `index`: `None` for a healthy one. Depends only on the seed and the
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
pub(crate) fn gateway_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The command line of `pep-fleet` (and of `fake-fcc fleet`, which runs `pep-fleet`).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pep-fleet", version)]
pub struct FleetArgs {
    /// How many gateways to provision (each its own simulated FCC on 127.0.0.1, one session).
    #[arg(long)]
    pub gateways: u64,

    /// Requests in flight (and gateways listening) at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// The pep-server base URL (`http://` or `https://`).
    #[arg(long, default_value = "http://127.0.0.1:5151")]
    pub server: String,

    /// PEM file of CA certificates to trust for an `https://` server (besides the built-in
    /// roots), e.g. the CA that signed the server's `[tls] cert`.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

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
            ca_cert: self.ca_cert.clone(),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn options() -> FleetOptions {
        FleetOptions {
            gateways: 10,
            concurrency: 2,
            server: "http://127.0.0.1:1".to_owned(),
            ca_cert: None,
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
    fn https_servers_and_ca_certs_parse() {
        use clap::Parser;
        let args = FleetArgs::try_parse_from([
            "pep-fleet",
            "--gateways",
            "3",
            "--server",
            "https://127.0.0.1:5151",
            "--ca-cert",
            "/etc/pep/ca.pem",
        ])
        .unwrap();
        let o = args.options();
        assert_eq!(o.server, "https://127.0.0.1:5151");
        assert_eq!(o.ca_cert, Some(PathBuf::from("/etc/pep/ca.pem")));
        o.validate().unwrap();
        // The CA is optional for https (built-in roots), and absent by default.
        let plain = FleetArgs::try_parse_from(["pep-fleet", "--gateways", "3"]).unwrap();
        assert_eq!(plain.options().ca_cert, None);
        let https = FleetOptions {
            server: "https://pep.example:443".into(),
            ..options()
        };
        https.validate().unwrap();
        // `--ca-cert` without a file is a command-line error.
        assert!(FleetArgs::try_parse_from(["pep-fleet", "--gateways", "3", "--ca-cert"]).is_err());
        // A CA for a plain-HTTP server would go unused: refused, naming the option.
        let e = FleetOptions {
            ca_cert: Some("ca.pem".into()),
            ..options()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--ca-cert") && e.contains("https://"), "{e}");
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
}
