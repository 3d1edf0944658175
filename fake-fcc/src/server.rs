//! The thin tokio socket loop around [`Device`]: accept, read frames with fcc-proto's
//! [`DeviceCodec`], hand valid bodies to the device, send its reply (docs/protocol.md §1.4–§1.6).
//!
//! Receive errors (zero length, bad hash, truncated frame, oversize) get no reply: the connection
//! is closed, and the session ends if it was finished (the genuine process exits with status 1)
//! or waits for a new connection if an earlier message kept it alive. A peer that closes the
//! connection between frames is not an error: the device waits for a new connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fcc_proto::frame::{DeviceCodec, ResponseFrame, encode_response};
use fcc_proto::response::{Response, SUCCESS_MESSAGE};
use fcc_proto::status::{FccStatus, WireStatus};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

use crate::FakeFccError;
use crate::device::{Device, DeviceOptions, Outcome};
use crate::faults::{FaultKind, FaultRoller, Faults};
use crate::storage::{DiskStore, Storage};

/// How many factory sessions a gateway serves before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sessions {
    /// One session, like the genuine FCC process.
    #[default]
    One,
    /// This many sessions in a row, each with fresh storage.
    Count(u64),
    /// Sessions until shut down.
    Forever,
}

impl std::str::FromStr for Sessions {
    type Err = String;

    fn from_str(s: &str) -> Result<Sessions, String> {
        match s {
            "forever" => Ok(Sessions::Forever),
            n => match n.parse::<u64>() {
                Ok(0) => Err("the number of sessions must be at least 1".to_owned()),
                Ok(1) => Ok(Sessions::One),
                Ok(n) => Ok(Sessions::Count(n)),
                Err(_) => Err(format!(
                    "{s:?} is neither a number of sessions nor \"forever\""
                )),
            },
        }
    }
}

/// Configuration of one simulated gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to bind (default 127.0.0.1).
    pub bind: IpAddr,
    /// Port; 0 lets the OS choose (the binary picks a random port in [1024, 65534] like FCC).
    pub port: u16,
    /// Storage directory for item files (`None` = memory only).
    pub storage_dir: Option<PathBuf>,
    /// Sessions to serve.
    pub sessions: Sessions,
    /// Reject what the genuine FCC tolerates.
    pub strict: bool,
    /// Injected faults.
    pub faults: Faults,
    /// Largest accepted request body; longer frames are a receive error.
    pub max_frame_len: usize,
    /// Print the genuine progress lines (`Storage is erased`, ...) to stdout.
    pub print_progress: bool,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            storage_dir: None,
            sessions: Sessions::One,
            strict: false,
            faults: Faults::none(),
            max_frame_len: fcc_proto::frame::DEFAULT_MAX_FRAME_LEN,
            print_progress: false,
        }
    }
}

/// What one factory session left behind.
#[derive(Debug, Clone)]
pub struct SessionReport {
    /// The items stored by the end of the session.
    pub storage: Storage,
    /// The status the bundle handler returned for the last message (`None` if no valid frame
    /// arrived; `BundleResponseError` when the response overflowed).
    pub last_status: Option<FccStatus>,
    /// Whether the last message succeeded at wire level (the genuine exit code 0).
    pub wire_success: bool,
    /// The receive error or fault that ended the session, if any.
    pub error: Option<String>,
    /// How many valid frames were processed.
    pub messages: u64,
    /// Item files of the storage directory that could not be written or removed (the items
    /// are stored in memory all the same, and the answers do not change).
    pub disk_errors: Vec<String>,
}

/// Control of a spawned gateway. Dropping it shuts the gateway down.
#[derive(Debug)]
pub struct GatewayHandle {
    reports: mpsc::UnboundedReceiver<SessionReport>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl GatewayHandle {
    /// The next finished session's report, in order; `None` once the gateway has stopped.
    pub async fn next_report(&mut self) -> Option<SessionReport> {
        self.reports.recv().await
    }

    /// Stops accepting and closes every connection (a session in progress gets no report).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the gateway has served all its sessions (or was shut down).
    pub async fn join(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A random port in [1024, 65534], like FCC's `rand() % (65535 - 1024) + 1024` on Linux.
pub fn random_fcc_port() -> u16 {
    use rand::Rng;
    rand::thread_rng().gen_range(1024..=65534)
}

/// Binds the listening socket and starts serving sessions in a background task.
pub async fn spawn(config: GatewayConfig) -> Result<(SocketAddr, GatewayHandle), FakeFccError> {
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| FakeFccError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    let (report_tx, reports) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, config, report_tx, shutdown_rx));
    Ok((
        local,
        GatewayHandle {
            reports,
            shutdown,
            task: Some(task),
        },
    ))
}

fn print_line(enabled: bool, line: &str) {
    if enabled {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    reports: mpsc::UnboundedSender<SessionReport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut roller = config.faults.roller();
    let mut served = 0u64;
    loop {
        let Some(report) = serve_session(&listener, &config, &mut roller, &mut shutdown).await
        else {
            return;
        };
        if report.wire_success {
            print_line(config.print_progress, "Successfully completed factory flow");
        }
        served += 1;
        if reports.send(report).is_err() {
            tracing::debug!("nobody listens for session reports any more");
        }
        let done = match config.sessions {
            Sessions::One => true,
            Sessions::Count(n) => served >= n,
            Sessions::Forever => false,
        };
        if done {
            return;
        }
    }
}

/// How a connection ended.
enum ConnectionEnd {
    /// The session finished (last message without keep-alive, or an error with the session
    /// finished): report it.
    SessionOver,
    /// Wait for a new connection in the same session.
    Reconnect,
    /// The gateway is shutting down.
    Shutdown,
}

struct SessionState {
    device: Device,
    /// The storage directory the device's writes go to (`None` = memory only).
    disk: Option<DiskStore>,
    disk_errors: Vec<String>,
    last_status: Option<FccStatus>,
    wire_success: bool,
    error: Option<String>,
    messages: u64,
}

async fn serve_session(
    listener: &TcpListener,
    config: &GatewayConfig,
    roller: &mut FaultRoller,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<SessionReport> {
    let mut state = SessionState {
        device: Device::new(DeviceOptions {
            strict: config.strict,
            storage_writes: config.storage_dir.is_some(),
        }),
        disk: config.storage_dir.clone().map(DiskStore::new),
        disk_errors: Vec::new(),
        last_status: None,
        wire_success: false,
        error: None,
        messages: 0,
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return None,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tracing::debug!(%peer, "connection accepted");
        if roller.on_accept() {
            tracing::info!(%peer, "fault: accepting and never reading");
            let mut parked_shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _parked = stream;
                let _ = parked_shutdown.changed().await;
            });
            continue;
        }
        match serve_connection(stream, config, roller, shutdown, &mut state).await {
            ConnectionEnd::SessionOver => break,
            ConnectionEnd::Reconnect => continue,
            ConnectionEnd::Shutdown => return None,
        }
    }
    Some(SessionReport {
        storage: state.device.storage().clone(),
        last_status: state.last_status,
        wire_success: state.wire_success,
        error: state.error,
        messages: state.messages,
        disk_errors: state.disk_errors,
    })
}

async fn serve_connection(
    stream: TcpStream,
    config: &GatewayConfig,
    roller: &mut FaultRoller,
    shutdown: &mut watch::Receiver<bool>,
    state: &mut SessionState,
) -> ConnectionEnd {
    let mut framed = Framed::new(
        stream,
        DeviceCodec::with_max_frame_len(config.max_frame_len),
    );
    loop {
        let next = tokio::select! {
            n = framed.next() => n,
            _ = shutdown.changed() => return ConnectionEnd::Shutdown,
        };
        let body = match next {
            // EOF while scanning for a token: not an error, wait for a new connection.
            None => return ConnectionEnd::Reconnect,
            Some(Err(e)) => {
                tracing::info!(error = %e, "receive error: closing without a reply");
                // The genuine ftcd layer prints these CMD-level lines for the same errors.
                let line = match &e {
                    fcc_proto::FccError::ZeroLength => {
                        Some("Unable to read message size (got ZERO)")
                    }
                    fcc_proto::FccError::HashMismatch => Some("Inconsistent message signature"),
                    fcc_proto::FccError::Oversize { .. } => {
                        Some("Failed to allocate message buffer")
                    }
                    _ => None,
                };
                if let Some(line) = line {
                    print_line(config.print_progress, line);
                }
                state.error = Some(e.to_string());
                state.wire_success = false;
                return if state.device.session_finished() {
                    ConnectionEnd::SessionOver
                } else {
                    ConnectionEnd::Reconnect
                };
            }
            Some(Ok(body)) => body,
        };
        let outcome = state.device.handle(&body);
        // The genuine device has written its storage before it answers.
        if let Some(disk) = &state.disk {
            for write in &outcome.writes {
                if let Err(e) = disk.apply(write) {
                    tracing::warn!(error = %e, "could not change an item file");
                    state.disk_errors.push(e.to_string());
                }
            }
        }
        state.messages += 1;
        state.last_status = Some(outcome.status);
        if outcome.storage_erased {
            print_line(config.print_progress, "Storage is erased");
        }
        let finished = outcome.session_finished;
        let sent = reply(&mut framed, outcome, roller, config.print_progress).await;
        match sent {
            Ok(wire_success) => {
                state.wire_success = wire_success;
                state.error = None;
            }
            Err(reason) => {
                state.wire_success = false;
                state.error = Some(reason);
                return if finished {
                    ConnectionEnd::SessionOver
                } else {
                    ConnectionEnd::Reconnect
                };
            }
        }
        if finished {
            return ConnectionEnd::SessionOver;
        }
    }
}

/// Sends the device's reply, with any faults that fire. `Ok(wire_success)` when something was
/// sent, `Err(reason)` when the connection was closed without a reply or the send failed.
async fn reply(
    framed: &mut Framed<TcpStream, DeviceCodec>,
    outcome: Outcome,
    roller: &mut FaultRoller,
    print_progress: bool,
) -> Result<bool, String> {
    let mut frame = outcome.reply;
    let mut corrupt = false;
    for fault in roller.on_message() {
        match fault {
            FaultKind::Stall(d) => {
                tracing::info!(
                    ms = d.as_millis() as u64,
                    "fault: stalling before the reply"
                );
                tokio::time::sleep(d).await;
            }
            FaultKind::CloseWithoutReply => {
                tracing::info!("fault: closing without a reply");
                return Err("fault injected: closed without a reply".to_owned());
            }
            FaultKind::WireStatus9 => {
                frame = ResponseFrame::Status(WireStatus::FailedToProcessData)
            }
            FaultKind::CorruptHash => corrupt = true,
            FaultKind::ReturnStatus(status) => {
                if let Some(response) = &outcome.response {
                    frame = ResponseFrame::Body(Bytes::from(
                        substitute_status(response, status).encode(),
                    ));
                }
            }
            // Not message faults (the fleet handles `Refused` by not starting the gateway).
            FaultKind::AcceptThenNeverRead | FaultKind::Refused => {}
        }
    }
    let wire_success = matches!(frame, ResponseFrame::Body(_));
    // Written directly rather than through the codec's encoder: the frame length limit is for
    // requests, a response (at most 2560 bytes of CBOR) is always sent.
    let mut bytes = encode_response(&frame);
    if corrupt && let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    let stream = framed.get_mut();
    let result = async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    }
    .await;
    result.map_err(|e| format!("sending the reply failed: {e}"))?;
    print_line(
        print_progress,
        if wire_success {
            "Successfully processed comm message"
        } else {
            "Failed to process data"
        },
    );
    Ok(wire_success)
}

/// The response with another `ReturnStatus` and the InfoMessage that status would carry.
fn substitute_status(response: &Response, status: FccStatus) -> Response {
    let mut r = response.clone();
    r.return_status = status;
    if status == FccStatus::Success {
        r.info_message = SUCCESS_MESSAGE.to_owned();
    } else {
        r.info_message = status.info_prefix().to_owned();
        r.csrs.clear();
    }
    r
}
