//! The crate's one error type.

use crate::status::WireStatus;

/// Everything that can go wrong while framing, encoding, decoding or exchanging FCC messages.
///
/// The variants are split by *what the caller should do about it*: the connection-level ones
/// (`Refused`, `Unreachable`, the timeouts) mean the gateway was not reached or did not answer in
/// time; `ClosedWithoutResponse` and `WireStatus` are what the genuine FCC does when it rejects a
/// frame or fails to build a response; the framing and CBOR ones mean the peer sent bytes that are
/// not a valid FCC message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FccError {
    /// The TCP connection was actively refused (nothing listens on that address and port).
    #[error("connection refused: no FCC listens on that address and port")]
    Refused,
    /// The host or network could not be reached at all.
    #[error("gateway unreachable: no route to the host or network")]
    Unreachable,
    /// The TCP connection was not established within the connect timeout.
    #[error("timed out connecting to the gateway")]
    ConnectTimeout,
    /// The request could not be written within the write timeout.
    #[error("timed out writing the request to the gateway")]
    WriteTimeout,
    /// No complete response arrived within the read timeout.
    #[error("timed out waiting for the gateway's response")]
    ReadTimeout,
    /// The peer closed the connection without sending any response byte. The genuine FCC does
    /// this for every receive-side error (bad length, bad hash, truncated frame).
    #[error(
        "the gateway closed the connection without a response (it rejected the frame or exited)"
    )]
    ClosedWithoutResponse,
    /// The device answered with a non-zero wire status (in practice 9, "failed to process data":
    /// the bundle handler produced no response, e.g. factory disabled or response overflow).
    #[error(
        "the gateway sent no response body, only wire status {} ({}): {}",
        .0.as_u32(),
        .0.name(),
        .0.description()
    )]
    WireStatus(WireStatus),
    /// The first 8 bytes of a response frame are not the `mbedprov` token.
    #[error("bad frame token: the response does not start with \"mbedprov\"")]
    BadToken,
    /// The SHA-256 trailer does not match the frame's body.
    #[error("frame hash mismatch: the SHA-256 trailer does not match the body")]
    HashMismatch,
    /// A frame announced a body length of zero, which the protocol forbids.
    #[error("frame announces a zero-length body")]
    ZeroLength,
    /// A frame announced (or a caller tried to send) a body longer than the configured maximum.
    #[error("frame body of {len} bytes exceeds the maximum of {max} bytes")]
    Oversize {
        /// The announced or attempted body length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    /// A frame body is not well-formed CBOR, or not the CBOR shape expected at that place.
    #[error("undecodable CBOR: {0}")]
    UndecodableCbor(String),
    /// A bundle violates the schema (on encode: a rule of the protocol; on decode: a field
    /// that the typed model does not accept).
    #[error("invalid bundle: {0}")]
    InvalidBundle(String),
    /// A response body is well-formed CBOR but misses a mandatory field or has a wrong type.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// Any other I/O error on the socket.
    #[error("I/O error talking to the gateway: {0}")]
    Io(#[from] std::io::Error),
}

impl FccError {
    /// True for the three timeout variants (connect, write, read).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            FccError::ConnectTimeout | FccError::WriteTimeout | FccError::ReadTimeout
        )
    }

    /// True when the gateway could not be reached at all (refused or no route). A connect
    /// timeout is reported by [`FccError::is_timeout`] instead.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FccError::Refused | FccError::Unreachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WireStatus;

    #[test]
    fn wire_status_text_reads_as_a_sentence() {
        let text = FccError::WireStatus(WireStatus::from_u32(9)).to_string();
        assert_eq!(
            text,
            "the gateway sent no response body, only wire status 9 \
             (FTCD_COMM_FAILED_TO_PROCESS_DATA): the device failed to process the bundle and \
             built no response"
        );
    }
}
