//! One provisioning, start to finish — usable as a library, without the HTTP server.
//!
//! ```text
//! validate request ─▶ reserve serial (store) ─▶ wait for an injection slot ─▶ issue (pep-ca)
//!        │                  │ 409 if deployed/in flight        by_tool: key + certificate
//!        ▼                  ▼                                  by_device: CSR session (2 messages)
//!       400            audit "attempt"           ─▶ inject bundle (fcc-proto) ─▶ mark deployed / failed
//! ```
//!
//! A [`Provisioner`] loads and checks everything once ([`Config::check`] must pass: the CA, the
//! bootstrap CA and the update-authority certificate are read then), and is cheap to clone and share.
//! [`Provisioner::provision`] runs the attempt in its own task, so a caller that gives up (a client
//! that disconnects) cannot leave the serial half-recorded: the attempt always ends with the serial
//! marked deployed or failed. Attempts left in flight by a crash are recovered by
//! [`Store::open`](crate::store::Store::open).
//!
//! Device private keys exist only in memory, as `pep_ca::DevicePrivateKey` and the bundle's
//! zeroizing key item; both are dropped (zeroized) right after the injection, and are never stored,
//! logged or returned.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcc_proto::bundle::{Bundle, CertificateItem, ConfigParam, CsrRequest, KeyItem};
use fcc_proto::{FccClient, FccError, FccStatus, Response, Timeouts, names};
use pep_ca::{CertProfile, EndpointName, FactoryCa, IssuedCertificate};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, broadcast};

use crate::activity::{
    AttemptFinished, AttemptOutcome, AttemptStarted, EVENT_CAPACITY, ProvisionEvent,
};
use crate::config::{Config, EntropyMode, KeyMode};
use crate::store::{
    DeployedOutcome, FailedOutcome, NewAttempt, Reservation, Store, StoreError, now_ms,
};

/// Longest accepted text field (every request field except the serial, which has its own rule).
pub const MAX_FIELD_LEN: usize = 256;

/// One provisioning request (what `GET /v3/identity` carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// Gateway serial = endpoint name = certificate CN.
    pub serial_number: String,
    /// IP of the gateway's FCC.
    pub ip: IpAddr,
    /// FCC's TCP port (1–65535).
    pub port: u16,
    /// `apiAddress` (default from `[defaults]`).
    pub api_address: Option<String>,
    /// `gatewayServicesAddress`, also `cloudAddress`.
    pub gateway_services_address: Option<String>,
    /// `hardwareVersion` (default `device.hardware_version`), also `mbed.HardwareVersion`.
    pub hardware_version: Option<String>,
    /// `radioConfig`.
    pub radio_config: Option<String>,
    /// `ledConfig`.
    pub led_config: Option<String>,
    /// `production` or `development`.
    pub category: Option<String>,
    /// journald FSS verification key (stored, not injected).
    pub verification_key: Option<String>,
    /// Who asks (token name and address), for the audit trail.
    pub requester: String,
}

/// A deployed gateway identity; serializes to the `identity.json` of the original tool, plus
/// `apiServerAddress` (the field the gateway's config agent actually reads).
#[derive(utoipa::ToSchema)]
#[schema(as = Identity)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Serial number.
    #[serde(rename = "serialNumber")]
    pub serial_number: String,
    /// Account OU: unknown at the factory, empty.
    #[serde(rename = "OU")]
    pub ou: String,
    /// Device ID: assigned at first connection, empty.
    #[serde(rename = "deviceID")]
    pub device_id: String,
    /// Always true.
    pub deployed: bool,
    /// Hardware version.
    #[serde(rename = "hardwareVersion")]
    pub hardware_version: String,
    /// Radio configuration.
    #[serde(rename = "radioConfig")]
    pub radio_config: String,
    /// LED configuration.
    #[serde(rename = "ledConfig")]
    pub led_config: String,
    /// `production` or `development`.
    pub category: String,
    /// = gateway services address.
    #[serde(rename = "cloudAddress")]
    pub cloud_address: String,
    /// API address.
    #[serde(rename = "apiAddress")]
    pub api_address: String,
    /// = API address (the name the gateway reads).
    #[serde(rename = "apiServerAddress")]
    pub api_server_address: String,
    /// Gateway services address.
    #[serde(rename = "gatewayServicesAddress")]
    pub gateway_services_address: String,
    /// `A-` + SHA-256 of the device certificate.
    #[serde(rename = "enrollmentID")]
    pub enrollment_id: String,
    /// ms since the epoch.
    #[serde(rename = "createdAt")]
    pub created_at: i64,
    /// The device certificate (DER; public).
    #[serde(skip)]
    pub certificate_der: Vec<u8>,
    /// Certificate serial, hex.
    #[serde(skip)]
    pub certificate_serial: String,
    /// Certificate notAfter.
    #[serde(skip)]
    pub certificate_not_after: OffsetDateTime,
    /// Warnings FCC answered with (normally none).
    #[serde(skip)]
    pub fcc_warnings: Vec<String>,
    /// The gateway's FCC address.
    #[serde(skip)]
    pub gateway: SocketAddr,
}

/// Why a provisioning failed. [`ProvisionError::http_status`] gives the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A request field is invalid (400).
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The request field (API parameter name).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The serial is deployed or being provisioned (409).
    #[error("serial number {serial} is already deployed or being provisioned")]
    Conflict {
        /// The serial.
        serial: String,
    },
    /// FCC answered with a non-zero ReturnStatus (502). The serial can be retried.
    #[error(
        "FCC at {gateway} rejected the identity with status {} ({}): {info}",
        status.as_u32(),
        status.name()
    )]
    GatewayRejected {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// FCC's ReturnStatus.
        status: FccStatus,
        /// FCC's InfoMessage (trimmed).
        info: String,
    },
    /// A protocol-level failure: closed without reply, wire status 9, bad frame, bad CSR (502).
    #[error("FCC at {gateway} failed: {error}; check the FCC process on the gateway")]
    GatewayFailed {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// What happened.
        error: String,
    },
    /// Nothing listens at the address, or no route (504).
    #[error(
        "cannot reach FCC at {gateway}: {error}; check that FCC runs on the gateway and listens on that IP and port"
    )]
    GatewayUnreachable {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// What happened.
        error: String,
    },
    /// A connect/write/read timeout or the request deadline expired (504).
    #[error("FCC at {gateway} timed out: {error}")]
    GatewayTimeout {
        /// The gateway's FCC address.
        gateway: SocketAddr,
        /// Which timeout.
        error: String,
    },
    /// The configuration is not usable (the check report) (500).
    #[error("invalid configuration:\n{0}")]
    InvalidConfig(String),
    /// The store failed (500).
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// Anything else, e.g. the CA refusing to issue (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProvisionError {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ProvisionError::InvalidRequest { .. } => 400,
            ProvisionError::Conflict { .. } => 409,
            ProvisionError::GatewayRejected { .. } | ProvisionError::GatewayFailed { .. } => 502,
            ProvisionError::GatewayUnreachable { .. } | ProvisionError::GatewayTimeout { .. } => {
                504
            }
            ProvisionError::InvalidConfig(_)
            | ProvisionError::Store(_)
            | ProvisionError::Internal(_) => 500,
        }
    }

    /// True when provisioning the same serial again may succeed (the serial was left retryable).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProvisionError::GatewayRejected { .. }
                | ProvisionError::GatewayFailed { .. }
                | ProvisionError::GatewayUnreachable { .. }
                | ProvisionError::GatewayTimeout { .. }
        )
    }
}

/// The provisioning core. Clone it freely (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Provisioner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("key_mode", &self.inner.config.key_mode)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: Arc<Config>,
    store: Store,
    ca: Arc<FactoryCa>,
    profile: CertProfile,
    bootstrap_ca_der: Vec<u8>,
    update_auth_cert_der: Option<Vec<u8>>,
    vendor_id: Option<[u8; 16]>,
    class_id: Option<[u8; 16]>,
    timeouts: Timeouts,
    slots: Semaphore,
    /// Live activity (see [`crate::activity`]); sending never blocks.
    events: broadcast::Sender<ProvisionEvent>,
}

/// A validated request with every default filled in.
#[derive(Debug, Clone)]
struct Job {
    endpoint: EndpointName,
    gateway: SocketAddr,
    api_address: String,
    gateway_services_address: String,
    hardware_version: String,
    radio_config: String,
    led_config: String,
    category: String,
    verification_key: Option<String>,
    requester: String,
}

/// What went wrong inside one attempt (before mapping to [`ProvisionError`]).
enum AttemptError {
    Fcc(FccError),
    Rejected { response: Box<Response> },
    Protocol(String),
    Ca(String),
    Deadline(Duration),
}

impl From<FccError> for AttemptError {
    fn from(e: FccError) -> Self {
        AttemptError::Fcc(e)
    }
}

impl AttemptError {
    fn into_error(self, gateway: SocketAddr) -> ProvisionError {
        match self {
            AttemptError::Fcc(e) if e.is_unreachable() => ProvisionError::GatewayUnreachable {
                gateway,
                error: e.to_string(),
            },
            AttemptError::Fcc(e) if e.is_timeout() => ProvisionError::GatewayTimeout {
                gateway,
                error: e.to_string(),
            },
            AttemptError::Fcc(e) => ProvisionError::GatewayFailed {
                gateway,
                error: e.to_string(),
            },
            AttemptError::Rejected { response } => ProvisionError::GatewayRejected {
                gateway,
                status: response.return_status,
                info: response.info_message.trim_end().to_owned(),
            },
            AttemptError::Protocol(error) => ProvisionError::GatewayFailed { gateway, error },
            AttemptError::Ca(e) => ProvisionError::Internal(e),
            AttemptError::Deadline(d) => ProvisionError::GatewayTimeout {
                gateway,
                error: format!("the request deadline of {} ms expired", d.as_millis()),
            },
        }
    }
}

/// The result of a successful injection.
struct Injected {
    certificate: IssuedCertificate,
    warnings: Vec<String>,
}

impl Provisioner {
    /// Checks the configuration ([`Config::check`]; any error refuses to start), loads the CA and
    /// the certificates once, and sets up the injection slots.
    pub fn new(config: Arc<Config>, store: Store) -> Result<Provisioner, ProvisionError> {
        let (report, prepared) = config.prepare();
        let Some(prepared) = prepared.filter(|_| report.is_ok()) else {
            return Err(ProvisionError::InvalidConfig(report.to_string()));
        };
        for w in &report.warnings {
            tracing::warn!(field = %w.field, "config: {}", w.message);
        }
        let timeouts = Timeouts {
            connect: Duration::from_millis(config.fcc.connect_timeout_ms),
            write: Duration::from_millis(config.fcc.write_timeout_ms),
            read: Duration::from_millis(config.fcc.read_timeout_ms),
        };
        let inner = Inner {
            profile: config.cert_profile(),
            ca: prepared.ca,
            bootstrap_ca_der: prepared.bootstrap_ca_der,
            update_auth_cert_der: prepared.update_auth_cert_der,
            vendor_id: prepared.vendor_id,
            class_id: prepared.class_id,
            timeouts,
            slots: Semaphore::new(config.fcc.max_concurrent_injections),
            events: broadcast::channel(EVENT_CAPACITY).0,
            config,
            store,
        };
        Ok(Provisioner {
            inner: Arc::new(inner),
        })
    }

    /// The store (for the read API).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Subscribes to the live activity: every attempt's start and end from now on (see
    /// [`crate::activity`]). A receiver more than [`EVENT_CAPACITY`] events behind gets
    /// `RecvError::Lagged` and should resynchronise from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<ProvisionEvent> {
        self.inner.events.subscribe()
    }

    /// Injection slots free right now (for metrics).
    pub fn free_injection_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// Provisions one gateway: validate, reserve the serial, issue, inject, record.
    ///
    /// Runs in its own task: dropping the returned future does not abort the attempt, which always
    /// ends recorded as deployed or failed.
    pub async fn provision(&self, request: ProvisionRequest) -> Result<Identity, ProvisionError> {
        let job = validate(&self.inner.config, request)?;
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.run(job).await })
            .await
            .map_err(|e| ProvisionError::Internal(format!("the provisioning task failed: {e}")))?
    }
}

/// Validates a request and fills in the defaults.
fn validate(config: &Config, r: ProvisionRequest) -> Result<Job, ProvisionError> {
    let invalid = |field: &str, reason: String| ProvisionError::InvalidRequest {
        field: field.to_owned(),
        reason,
    };
    let endpoint = EndpointName::from_str(&r.serial_number)
        .map_err(|e| invalid("serialNumber", e.to_string()))?;
    match r.ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => {
            return Err(invalid("ip", format!("{v4} is not a unicast address")));
        }
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => {
            return Err(invalid("ip", format!("{v6} is not a unicast address")));
        }
        _ => {}
    }
    if r.port == 0 {
        return Err(invalid("port", "must be in 1..=65535".to_owned()));
    }
    let text = |field: &str, v: Option<String>, default: &str| -> Result<String, ProvisionError> {
        let v = v.unwrap_or_else(|| default.to_owned());
        check_field(field, &v)?;
        if v.is_empty() {
            return Err(invalid(field, "must not be empty".to_owned()));
        }
        Ok(v)
    };
    let d = &config.defaults;
    let api_address = text("apiAddress", r.api_address, &d.api_address)?;
    let gateway_services_address = text(
        "gatewayServicesAddress",
        r.gateway_services_address,
        &d.gateway_services_address,
    )?;
    for (field, v) in [
        ("apiAddress", &api_address),
        ("gatewayServicesAddress", &gateway_services_address),
    ] {
        match url::Url::parse(v) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
            Ok(u) => {
                return Err(invalid(
                    field,
                    format!("scheme `{}` is not http(s)", u.scheme()),
                ));
            }
            Err(e) => return Err(invalid(field, format!("is not a URL: {e}"))),
        }
    }
    let hardware_version = text(
        "hardwareVersion",
        r.hardware_version,
        &config.device.hardware_version,
    )?;
    let radio_config = text("radioConfig", r.radio_config, &d.radio_config)?;
    let led_config = text("ledConfig", r.led_config, &d.led_config)?;
    let category = text("category", r.category, d.category.as_str())?;
    if category != "production" && category != "development" {
        return Err(invalid(
            "category",
            format!("`{category}` is not `production` or `development`"),
        ));
    }
    let verification_key = match r.verification_key {
        Some(k) if k.is_empty() => None,
        Some(k) => {
            check_field("verificationKey", &k)?;
            Some(k)
        }
        None => None,
    };
    let requester = if r.requester.chars().count() > MAX_FIELD_LEN {
        r.requester.chars().take(MAX_FIELD_LEN).collect()
    } else {
        r.requester
    };
    Ok(Job {
        endpoint,
        gateway: SocketAddr::new(r.ip, r.port),
        api_address,
        gateway_services_address,
        hardware_version,
        radio_config,
        led_config,
        category,
        verification_key,
        requester,
    })
}

fn check_field(field: &str, v: &str) -> Result<(), ProvisionError> {
    let len = v.chars().count();
    if len > MAX_FIELD_LEN {
        return Err(ProvisionError::InvalidRequest {
            field: field.to_owned(),
            reason: format!("has {len} characters, at most {MAX_FIELD_LEN} are allowed"),
        });
    }
    if v.chars().any(char::is_control) {
        return Err(ProvisionError::InvalidRequest {
            field: field.to_owned(),
            reason: "must not contain control characters".to_owned(),
        });
    }
    Ok(())
}

impl Inner {
    async fn run(&self, job: Job) -> Result<Identity, ProvisionError> {
        let started = Instant::now();
        let serial = job.endpoint.as_str();
        let gateway_text = job.gateway.to_string();
        let reservation = self
            .store
            .reserve(&NewAttempt {
                serial,
                gateway: &gateway_text,
                requester: &job.requester,
                hardware_version: &job.hardware_version,
                radio_config: &job.radio_config,
                led_config: &job.led_config,
                category: &job.category,
                cloud_address: &job.gateway_services_address,
                api_address: &job.api_address,
                gateway_services_address: &job.gateway_services_address,
                verification_key: job.verification_key.as_deref(),
                now_ms: now_ms(),
            })
            .await?;
        let id = match reservation {
            Reservation::Reserved { id } => {
                // No subscriber is not an error: the event is simply not seen.
                let _ = self.events.send(ProvisionEvent::Started(AttemptStarted {
                    id,
                    serial: serial.to_owned(),
                    gateway: job.gateway,
                    at_ms: now_ms(),
                }));
                id
            }
            Reservation::Conflict { state } => {
                tracing::info!(serial, %state, "serial conflict");
                return Err(ProvisionError::Conflict {
                    serial: serial.to_owned(),
                });
            }
        };
        tracing::debug!(serial, gateway = %job.gateway, id, "serial reserved");

        let deadline = self.config.request_deadline();
        let outcome = match tokio::time::timeout(deadline, self.attempt(&job, id)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AttemptError::Deadline(deadline)),
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);

        match outcome {
            Ok(injected) => {
                let cert = &injected.certificate;
                let enrollment_id = cert.enrollment_id.to_string();
                let recorded = self
                    .store
                    .mark_deployed(
                        id,
                        &DeployedOutcome {
                            enrollment_id: &enrollment_id,
                            cert_serial: &cert.serial_hex,
                            cert_not_after: cert.not_after.unix_timestamp(),
                            fcc_warnings: &injected.warnings,
                            duration_ms,
                        },
                    )
                    .await;
                let created_at = match recorded {
                    Ok(created_at) => created_at,
                    Err(e) => {
                        // The gateway holds the identity but the store could not record it: say
                        // loudly what to do; the row is recovered as failed at the next start.
                        tracing::error!(serial, gateway = %job.gateway, %enrollment_id, error = %e,
                            "gateway provisioned but the store could not record it");
                        return Err(e.into());
                    }
                };
                if !injected.warnings.is_empty() {
                    tracing::warn!(serial, gateway = %job.gateway, warnings = ?injected.warnings,
                        "FCC accepted the identity with warnings");
                }
                tracing::info!(serial, gateway = %job.gateway, %enrollment_id, duration_ms, "deployed");
                let _ = self.events.send(ProvisionEvent::Finished(AttemptFinished {
                    id,
                    serial: serial.to_owned(),
                    gateway: job.gateway,
                    at_ms: now_ms(),
                    duration_ms,
                    outcome: AttemptOutcome::Deployed {
                        enrollment_id: enrollment_id.clone(),
                    },
                }));
                Ok(Identity {
                    serial_number: serial.to_owned(),
                    ou: String::new(),
                    device_id: String::new(),
                    deployed: true,
                    hardware_version: job.hardware_version.clone(),
                    radio_config: job.radio_config.clone(),
                    led_config: job.led_config.clone(),
                    category: job.category.clone(),
                    cloud_address: job.gateway_services_address.clone(),
                    api_address: job.api_address.clone(),
                    api_server_address: job.api_address.clone(),
                    gateway_services_address: job.gateway_services_address.clone(),
                    enrollment_id,
                    created_at,
                    certificate_der: cert.der.clone(),
                    certificate_serial: cert.serial_hex.clone(),
                    certificate_not_after: cert.not_after,
                    fcc_warnings: injected.warnings,
                    gateway: job.gateway,
                })
            }
            Err(failure) => {
                let (fcc_status, warnings) = match &failure {
                    AttemptError::Rejected { response } => (
                        Some(response.return_status.as_u32()),
                        response.warnings.clone(),
                    ),
                    _ => (None, Vec::new()),
                };
                let error = failure.into_error(job.gateway);
                let message = error.to_string();
                tracing::warn!(serial, gateway = %job.gateway, error = %message, "provisioning failed");
                self.store
                    .mark_failed(
                        id,
                        &FailedOutcome {
                            fcc_status,
                            fcc_warnings: &warnings,
                            error: &message,
                            duration_ms,
                        },
                    )
                    .await?;
                let _ = self.events.send(ProvisionEvent::Finished(AttemptFinished {
                    id,
                    serial: serial.to_owned(),
                    gateway: job.gateway,
                    at_ms: now_ms(),
                    duration_ms,
                    outcome: AttemptOutcome::Failed {
                        fcc_status: fcc_status.map(FccStatus::from_u32),
                        message,
                    },
                }));
                Err(error)
            }
        }
    }

    /// Waits for an injection slot, then issues and injects.
    async fn attempt(&self, job: &Job, id: i64) -> Result<Injected, AttemptError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| AttemptError::Ca("the injection slots were closed".to_owned()))?;
        // A short SID keeps FCC's response well under its 512-byte buffer.
        let sid = format!("pep-{id}");
        match self.config.key_mode {
            KeyMode::ByTool => self.inject_by_tool(job, sid).await,
            KeyMode::ByDevice => self.inject_by_device(job, sid).await,
        }
    }

    async fn inject_by_tool(&self, job: &Job, sid: String) -> Result<Injected, AttemptError> {
        // Issuing is done inline on the runtime thread: it costs ~34 µs of CPU in a release build
        // (pep-ca's criterion benchmark, docs/performance.md), about what one poll of a busy task
        // may take, while an injection waits milliseconds on the network anyway; `spawn_blocking`
        // would add a thread hand-off of a similar order. `sign_csr` (by_device, ~115 µs) likewise.
        let issued = self
            .ca
            .issue(&job.endpoint, &self.profile)
            .map_err(|e| AttemptError::Ca(format!("the CA could not issue a certificate: {e}")))?;
        let mut bundle = self.final_bundle(job, sid, &issued.certificate);
        bundle.keys.push(KeyItem::private(
            names::BOOTSTRAP_DEVICE_PRIVATE_KEY,
            issued.private_key.to_der(),
        ));
        bundle.entropy_and_rot(self.config.fcc.entropy_rot);
        let certificate = issued.certificate;
        // The key (in `issued.private_key`, already moved out, and in the bundle) is zeroized when
        // `bundle` drops at the end of this scope, right after the exchange.
        drop(issued.private_key);
        let mut client = FccClient::connect(job.gateway, self.timeouts).await?;
        let response = client.send(&bundle).await;
        drop(bundle);
        drop(client);
        let response = response?;
        accept(response).map(|warnings| Injected {
            certificate,
            warnings,
        })
    }

    async fn inject_by_device(&self, job: &Job, sid: String) -> Result<Injected, AttemptError> {
        let mut client = FccClient::connect(job.gateway, self.timeouts).await?;
        // Message 1 (keep-alive): the device generates the key and answers with a CSR.
        let mut first = Bundle {
            sid: Some(sid.clone()),
            csr_requests: vec![CsrRequest {
                private_key_name: names::BOOTSTRAP_DEVICE_PRIVATE_KEY.to_owned(),
                subject: format!("CN={}", escape_subject_value(job.endpoint.as_str())),
                md: 1,
                key_usage: Some(1),     // digitalSignature
                ext_key_usage: Some(4), // clientAuth
            }],
            verify: Some(false),
            keep_alive: Some(true),
            ..Bundle::default()
        };
        first.entropy_and_rot(self.config.fcc.entropy_rot);
        let response = client.send(&first).await?;
        drop(first);
        if !response.is_success() {
            return Err(AttemptError::Rejected {
                response: Box::new(response),
            });
        }
        let csr = response
            .csrs
            .iter()
            .find(|c| c.private_key_name == names::BOOTSTRAP_DEVICE_PRIVATE_KEY)
            .ok_or_else(|| {
                AttemptError::Protocol(format!(
                    "the CSR response has no CSR for {}",
                    names::BOOTSTRAP_DEVICE_PRIVATE_KEY
                ))
            })?;
        let certificate = self
            .ca
            .sign_csr(&csr.der, &job.endpoint, &self.profile)
            .map_err(|e| AttemptError::Protocol(format!("the gateway's CSR was refused: {e}")))?;
        // Message 2 (final, verified): everything but the key, which stays on the device.
        let second = self.final_bundle(job, sid, &certificate);
        let response = client.send(&second).await?;
        drop(client);
        accept(response).map(|warnings| Injected {
            certificate,
            warnings,
        })
    }

    /// The final, verified message: device certificate (bound to the key by `PrKN`), bootstrap CA,
    /// update-authority certificate and every config param, so that FCC answers with no warning.
    fn final_bundle(&self, job: &Job, sid: String, cert: &IssuedCertificate) -> Bundle {
        let c = &self.config;
        let mut certificates = vec![
            CertificateItem {
                name: names::BOOTSTRAP_DEVICE_CERT.to_owned(),
                der: cert.der.clone(),
                private_key_name: Some(names::BOOTSTRAP_DEVICE_PRIVATE_KEY.to_owned()),
            },
            CertificateItem {
                name: names::BOOTSTRAP_SERVER_CA_CERT.to_owned(),
                der: self.bootstrap_ca_der.clone(),
                private_key_name: None,
            },
        ];
        if let Some(der) = &self.update_auth_cert_der {
            certificates.push(CertificateItem {
                name: names::UPDATE_AUTH_CERT.to_owned(),
                der: der.clone(),
                private_key_name: None,
            });
        }
        let serial = job.endpoint.as_str();
        let mut params = vec![
            ConfigParam::uint(names::USE_BOOTSTRAP, 1),
            ConfigParam::text(names::ENDPOINT_NAME, serial),
            ConfigParam::text(names::BOOTSTRAP_SERVER_URI, c.bootstrap.uri.clone()),
            ConfigParam::text(names::MANUFACTURER, c.device.manufacturer.clone()),
            ConfigParam::text(names::MODEL_NUMBER, c.device.model_number.clone()),
            ConfigParam::text(names::DEVICE_TYPE, c.device.device_type.clone()),
            ConfigParam::text(names::HARDWARE_VERSION, job.hardware_version.clone()),
            ConfigParam::uint(names::MEMORY_TOTAL_KB, u64::from(c.device.memory_total_kb)),
            ConfigParam::text(names::SERIAL_NUMBER, serial),
        ];
        if c.bootstrap.first_to_claim {
            params.push(ConfigParam::uint(names::FIRST_TO_CLAIM, 1));
        }
        if c.time.sync {
            // Seconds: milliseconds would put the device far in the future (certificates "expired").
            let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
            params.push(ConfigParam::uint(names::CURRENT_TIME, now));
        }
        params.push(ConfigParam::text(names::TIMEZONE, c.time.timezone.clone()));
        params.push(ConfigParam::text(
            names::UTC_OFFSET,
            c.time.utc_offset.clone(),
        ));
        if let Some(id) = self.vendor_id {
            params.push(ConfigParam::bytes(names::VENDOR_ID, id.to_vec()));
        }
        if let Some(id) = self.class_id {
            params.push(ConfigParam::bytes(names::CLASS_ID, id.to_vec()));
        }
        Bundle {
            sid: Some(sid),
            certificates,
            config_params: params,
            verify: Some(true),
            ..Bundle::default()
        }
    }
}

/// ReturnStatus 0 → the warnings; anything else → rejected.
fn accept(response: Response) -> Result<Vec<String>, AttemptError> {
    if response.is_success() {
        Ok(response.warnings)
    } else {
        Err(AttemptError::Rejected {
            response: Box::new(response),
        })
    }
}

/// mbedTLS subject strings separate attributes with `,`; a literal comma is written `\,`.
fn escape_subject_value(v: &str) -> String {
    v.replace(',', "\\,")
}

/// Entropy and root of trust for the first message of a session.
trait EntropyAndRot {
    fn entropy_and_rot(&mut self, mode: EntropyMode);
}

impl EntropyAndRot for Bundle {
    fn entropy_and_rot(&mut self, mode: EntropyMode) {
        if mode == EntropyMode::Random {
            use rand::RngCore;
            let mut entropy = [0u8; 48];
            let mut rot = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut entropy);
            rand::rngs::OsRng.fill_bytes(&mut rot);
            self.entropy = Some(entropy);
            self.rot = Some(rot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses() {
        let gw: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            ProvisionError::Conflict { serial: "x".into() }.http_status(),
            409
        );
        let e = ProvisionError::GatewayRejected {
            gateway: gw,
            status: FccStatus::from_u32(13),
            info: "Certificate expired:mbed.BootstrapDeviceCert".into(),
        };
        assert_eq!(e.http_status(), 502);
        let text = e.to_string();
        assert!(
            text.contains("127.0.0.1:1") && text.contains("Certificate expired"),
            "{text}"
        );
        assert_eq!(
            ProvisionError::GatewayTimeout {
                gateway: gw,
                error: "x".into()
            }
            .http_status(),
            504
        );
    }

    #[test]
    fn subject_commas_are_escaped() {
        assert_eq!(escape_subject_value("a,b"), "a\\,b");
    }
}
