//! Async tool-side client: one TCP connection to a device's FCC, one request/response exchange
//! per [`FccClient::send`], any number of exchanges per connection (keep-alive sessions).
//!
//! This is the only module of the crate that does I/O; framing is [`ToolCodec`]'s job.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use zeroize::Zeroizing;

use crate::bundle::Bundle;
use crate::error::FccError;
use crate::frame::{HASH_LEN, ResponseFrame, TOKEN, ToolCodec};
use crate::response::Response;

/// Default for each of the three timeouts.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect, write and read timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// Writing one complete request frame.
    pub write: Duration,
    /// Receiving one complete response frame, counted from the end of the write. The device
    /// runs verification before answering, so this covers its processing time too.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_TIMEOUT,
            write: DEFAULT_TIMEOUT,
            read: DEFAULT_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// The same duration for all three.
    pub fn all(d: Duration) -> Self {
        Timeouts {
            connect: d,
            write: d,
            read: d,
        }
    }
}

/// A connection to one device's FCC.
#[derive(Debug)]
pub struct FccClient {
    stream: TcpStream,
    peer: SocketAddr,
    timeouts: Timeouts,
    codec: ToolCodec,
    /// Received bytes not yet consumed by the codec.
    buf: BytesMut,
}

fn is_closed(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

impl FccClient {
    /// Connects to the FCC listening at `addr`.
    ///
    /// Errors: [`FccError::Refused`], [`FccError::Unreachable`], [`FccError::ConnectTimeout`],
    /// or [`FccError::Io`] for anything else.
    pub async fn connect(addr: SocketAddr, timeouts: Timeouts) -> Result<FccClient, FccError> {
        let stream = match timeout(timeouts.connect, TcpStream::connect(addr)).await {
            Err(_) => return Err(FccError::ConnectTimeout),
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "FCC connect failed");
                return Err(match e.kind() {
                    io::ErrorKind::ConnectionRefused => FccError::Refused,
                    io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable => FccError::Unreachable,
                    io::ErrorKind::TimedOut => FccError::ConnectTimeout,
                    _ => FccError::Io(e),
                });
            }
            Ok(Ok(s)) => s,
        };
        // Frames are written whole; don't let Nagle hold back the tail of one.
        stream.set_nodelay(true)?;
        tracing::debug!(%addr, "connected to FCC");
        Ok(FccClient {
            stream,
            peer: addr,
            timeouts,
            codec: ToolCodec::new(),
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Sets the largest body accepted or sent (default [`crate::frame::DEFAULT_MAX_FRAME_LEN`]).
    pub fn with_max_frame_len(mut self, max: usize) -> Self {
        self.codec = ToolCodec::with_max_frame_len(max);
        self
    }

    /// The device's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Encodes `bundle`, sends it and waits for the response.
    ///
    /// A response with a non-zero `ReturnStatus` is `Ok` (check [`Response::is_success`]); the
    /// errors are transport and framing failures, including [`FccError::WireStatus`] for the
    /// 12-byte status frame and [`FccError::ClosedWithoutResponse`] when the device drops the
    /// connection (its reaction to a frame it cannot read). After any error the session state on
    /// the device is uncertain (docs/protocol.md §0.1: a failed message may leave it waiting): drop the client.
    pub async fn send(&mut self, bundle: &Bundle) -> Result<Response, FccError> {
        let body = Zeroizing::new(bundle.encode()?);
        self.send_raw(&body).await
    }

    /// Sends an already encoded CBOR body and decodes the response.
    pub async fn send_raw(&mut self, body: &[u8]) -> Result<Response, FccError> {
        match self.exchange(body).await? {
            ResponseFrame::Body(b) => Response::decode(&b),
            ResponseFrame::Status(s) => Err(FccError::WireStatus(s)),
        }
    }

    /// Sends a body and returns the raw response frame (no CBOR decoding).
    pub async fn exchange(&mut self, body: &[u8]) -> Result<ResponseFrame, FccError> {
        self.write_request(body).await?;
        self.read_response().await
    }

    /// Writes one request frame. The frame buffer holds a copy of the body (which may contain
    /// the device private key) and is zeroized as soon as it has been written.
    pub async fn write_request(&mut self, body: &[u8]) -> Result<(), FccError> {
        let max = self.codec.max_frame_len();
        if body.is_empty() {
            return Err(FccError::ZeroLength);
        }
        if body.len() > max {
            return Err(FccError::Oversize {
                len: body.len() as u64,
                max,
            });
        }
        // Built with its exact final size so it never reallocates (which would leave an
        // unzeroized copy behind).
        let frame = Zeroizing::new(crate::frame::encode_request(body));
        debug_assert_eq!(frame.len(), TOKEN.len() + 4 + body.len() + HASH_LEN);
        let write = async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await
        };
        match timeout(self.timeouts.write, write).await {
            Err(_) => Err(FccError::WriteTimeout),
            Ok(Err(e)) if is_closed(e.kind()) => Err(FccError::ClosedWithoutResponse),
            Ok(Err(e)) => Err(FccError::Io(e)),
            Ok(Ok(())) => {
                tracing::debug!(peer = %self.peer, body_len = body.len(), "request frame sent");
                Ok(())
            }
        }
    }

    /// Reads one response frame within the read timeout.
    pub async fn read_response(&mut self) -> Result<ResponseFrame, FccError> {
        let deadline = Instant::now() + self.timeouts.read;
        loop {
            if let Some(frame) = self.codec.decode_response(&mut self.buf)? {
                tracing::debug!(peer = %self.peer, frame = %frame_kind(&frame), "response frame received");
                return Ok(frame);
            }
            let n = match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(FccError::ReadTimeout),
                Ok(Ok(n)) => n,
                Ok(Err(e)) if is_closed(e.kind()) => 0,
                Ok(Err(e)) => return Err(FccError::Io(e)),
            };
            if n == 0 {
                if self.buf.is_empty() {
                    return Err(FccError::ClosedWithoutResponse);
                }
                return match self.codec.decode_response_eof(&mut self.buf)? {
                    Some(frame) => Ok(frame),
                    None => Err(FccError::Truncated),
                };
            }
        }
    }

    /// Closes the connection (sends FIN).
    pub async fn close(mut self) -> Result<(), FccError> {
        self.stream.shutdown().await?;
        Ok(())
    }
}

fn frame_kind(frame: &ResponseFrame) -> String {
    match frame {
        ResponseFrame::Body(b) => format!("body of {} bytes", b.len()),
        ResponseFrame::Status(s) => format!("wire status {}", s.as_u32()),
    }
}
