//! One fleet run: the gateways (fake-fcc's [`spawn`]), their ports, the HTTP requests to the
//! server and the checks of each answer against what the gateway stored.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fake_fcc::{Fault, FaultKind, Faults, GatewayConfig, GatewayHandle, Sessions, spawn};
use fcc_proto::names;
use fcc_proto::status::FccStatus;
use pep_ca::EnrollmentId;
use rand::Rng;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::LoadgenError;
use crate::options::{FleetOptions, gateway_seed};
use crate::report::{FailureKind, FleetReport, GatewayOutcome, RetryRound, summarize};

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
/// How many ports of the range a gateway tries before its start counts as failed.
const MAX_PORT_TRIES: u32 = 256;

/// Runs the fleet: provisions `options.gateways` gateways and checks each one.
pub async fn run(options: FleetOptions) -> Result<FleetReport, LoadgenError> {
    options.validate()?;
    // Over https the cost of a handshake must not be measured on every request, as a fleet of
    // real workstations would not pay it either: the client keeps its connections alive (up to
    // `concurrency` idle ones per host, so every request in flight finds one), and a connection
    // that is opened anyway (the server closed one) resumes its TLS session: reqwest's rustls
    // config keeps rustls' default in-memory session cache (`Resumption::default()`, 256
    // sessions), which the `https_fleet_*` test of `tests/fleet_tls.rs` checks on the server side.
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(options.concurrency)
        .timeout(options.request_timeout);
    if let Some(path) = &options.ca_cert {
        for certificate in load_ca_certs(path)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(token) = &options.token {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| LoadgenError::Option {
                option: "--token",
                reason: "not a valid HTTP header value".to_owned(),
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    let client = builder.build().map_err(LoadgenError::HttpClient)?;
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
                    *round.failures.entry(kind).or_default() += 1;
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
) -> Result<Vec<GatewayOutcome>, LoadgenError> {
    let slots = Arc::new(Semaphore::new(shared.options.concurrency));
    let mut tasks = JoinSet::new();
    let mut outcomes = Vec::new();
    for index in indices {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|_| LoadgenError::LimiterClosed)?;
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
) -> Result<GatewayOutcome, LoadgenError> {
    done.map_err(LoadgenError::Task)
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
    ) -> Result<(u16, GatewayHandle), (FailureKind, String)> {
        self.on_free_port(|port| {
            let config = GatewayConfig {
                port,
                ..config.clone()
            };
            async move {
                match spawn(config).await {
                    Ok((addr, handle)) => Ok((addr.port(), handle)),
                    Err(fake_fcc::FakeFccError::Bind { source, .. })
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
async fn lost_answer_certificate(handle: Option<&mut GatewayHandle>) -> Option<String> {
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
/// The certificates of a PEM file (`--ca-cert`). A file that cannot be read or holds no PEM
/// certificate is an error here that names it, not a TLS failure on every request (a section
/// that is PEM but not X.509 makes the client's build fail).
fn load_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, LoadgenError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |reason: String| LoadgenError::CaCertPem {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| LoadgenError::CaCertRead {
        path: path.to_owned(),
        source,
    })?;
    let mut certificates = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| match e {
            // Its own Display prints the marker as a list of bytes.
            rustls_pki_types::pem::Error::MissingSectionEnd { .. } => {
                bad("a PEM section has no `-----END` line".to_owned())
            }
            e => bad(e.to_string()),
        })?;
        certificates.push(reqwest::Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?);
    }
    if certificates.is_empty() {
        return Err(bad("no `BEGIN CERTIFICATE` section".to_owned()));
    }
    Ok(certificates)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::PortRange;
    use crate::options::tests::options;

    #[test]
    fn ca_cert_files_load_and_bad_ones_say_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["test CA".to_owned()]).unwrap();
        let good = dir.path().join("ca.pem");
        // Two certificates (a bundle) and text around them, as PEM files often have.
        std::fs::write(
            &good,
            format!("# test CA\n{}\n{}", ca.cert.pem(), ca.cert.pem()),
        )
        .unwrap();
        assert_eq!(load_ca_certs(&good).unwrap().len(), 2);

        let missing = dir.path().join("missing.pem");
        let e = load_ca_certs(&missing).unwrap_err();
        assert!(matches!(e, LoadgenError::CaCertRead { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("--ca-cert: cannot read ") && text.contains("missing.pem"),
            "{text}"
        );

        for (name, content, says) in [
            ("empty.pem", String::new(), "no `BEGIN CERTIFICATE`"),
            (
                "key.pem",
                ca.key_pair.serialize_pem(),
                "no `BEGIN CERTIFICATE`",
            ),
            (
                "cut.pem",
                ca.cert.pem().lines().take(3).collect::<Vec<_>>().join("\n"),
                "END",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let e = load_ca_certs(&path).unwrap_err();
            assert!(matches!(e, LoadgenError::CaCertPem { .. }), "{name}: {e:?}");
            let text = e.to_string();
            assert!(text.contains(name) && text.contains(says), "{name}: {text}");
        }
    }

    #[tokio::test]
    async fn an_unreadable_ca_cert_stops_the_run_before_any_request() {
        let o = FleetOptions {
            server: "https://127.0.0.1:1".into(),
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..options()
        };
        let e = run(o).await.unwrap_err().to_string();
        assert!(
            e.contains("--ca-cert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
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
            report
                .failures
                .get(&FailureKind::Transport)
                .map(|c| c.unexpected),
            Some(3)
        );
        assert!(!report.is_clean());
        let json = report.to_json();
        assert_eq!(json["failed_unexpected"], 3);
        assert_eq!(json["failures"]["transport"]["unexpected"], 3);
    }
}
