//! The crate's one error type and the exit codes it maps to.
//!
//! Factory scripts branch on the exit code, so every failure class has its own, stable code
//! (documented in `docs/pep-cli.md`). The message printed for an error is always one line.

use std::path::PathBuf;

/// Process exit codes of `pep-cli`. Stable: factory scripts depend on them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any failure not covered below: the server's internal error (500), an answer that is not what
    /// the API promises, a local file that cannot be written.
    pub const FAILURE: u8 = 1;
    /// Bad command line or input: unknown flag, missing value, invalid serial number, or the server
    /// rejected the request as invalid (400).
    pub const USAGE: u8 = 2;
    /// The server cannot be reached (connection refused, DNS, TLS, time-out).
    pub const UNREACHABLE: u8 = 3;
    /// The server refused the API token (401 or 403), or none was given.
    pub const AUTH: u8 = 4;
    /// The serial number is already provisioned (409).
    pub const CONFLICT: u8 = 5;
    /// The gateway side failed: the server could not inject into FCC (502/504), or the local FCC
    /// process did not start, did not print its address in time, or did not exit with status 0.
    pub const GATEWAY: u8 = 6;
    /// The serial number is unknown to the server (404).
    pub const NOT_FOUND: u8 = 7;
    /// Installing the results was refused (a destination exists, no `--force`) or failed (rolled back).
    pub const INSTALL: u8 = 8;
    /// Generating the journald Forward-Secure-Sealing key (`-k`) failed; the server was not contacted.
    pub const KEY_GENERATION: u8 = 9;
    /// `provision` lost the server's answer and asking again with the same request key did not
    /// recover it: the identity may be on the gateway. FCC's staging directory (with `pal/`) was
    /// kept; an operator resolves the serial on the server (see "Lost answers" in `docs/pep-cli.md`).
    pub const ANSWER_LOST: u8 = 10;
    /// Interrupted by SIGINT/SIGTERM; the FCC child, if any, was killed.
    pub const INTERRUPTED: u8 = 130;
}

/// Everything that can go wrong in `pep-cli`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad command-line value that clap could not catch by itself.
    #[error("{0}")]
    Usage(String),

    /// The serial number breaks the endpoint-name rule.
    #[error("invalid serial number {serial:?}: {reason}")]
    InvalidSerial {
        /// The rejected value.
        serial: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The serial number could not be read from its source.
    #[error("cannot read the serial number from {source_name}: {reason}")]
    SerialSource {
        /// `cpuinfo`, `machine-id` or the file path.
        source_name: String,
        /// What went wrong.
        reason: String,
    },

    /// The API token could not be read.
    #[error("cannot read the API token from {path}: {reason}")]
    Token {
        /// The `--token-file` path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// No connection to the server (or no answer in time).
    #[error("cannot reach the pep server at {url}: {detail}")]
    Unreachable {
        /// The server URL (never with the token).
        url: String,
        /// The transport error, in words.
        detail: String,
    },

    /// The request may have reached the server, but its answer did not arrive whole: a time-out,
    /// or the connection was reset or closed before the end of the answer.
    #[error("no complete answer from the pep server at {url}: {detail}")]
    NoAnswer {
        /// The server URL (never with the token).
        url: String,
        /// The transport error, in words.
        detail: String,
    },

    /// The server answered with an HTTP error status.
    #[error("{what}: server answered HTTP {status}: {message}")]
    Server {
        /// What was asked, e.g. `get-one-identity GW-1`.
        what: String,
        /// The HTTP status code.
        status: u16,
        /// The server's `error` text (or the start of its body).
        message: String,
        /// The `state` field of the server's error body (`in_progress`, `in_doubt`, ...), if any.
        state: Option<String>,
    },

    /// A 502, 503 or 504 that is not the pep server's own answer (its body is not the server's
    /// JSON error): a reverse proxy between us and the server gave up, and the server may still
    /// have done the work.
    #[error("{what}: a proxy answered HTTP {status} instead of the pep server: {message}")]
    Proxy {
        /// What was asked.
        what: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the proxy's body, or the status reason.
        message: String,
    },

    /// `provision` lost the identity answer and could not recover it by asking again: the staging
    /// directory is kept, and an operator must resolve the serial on the server.
    #[error("{0}")]
    AnswerLost(Box<LostAnswer>),

    /// The server answered 200 with something that is not what the API promises.
    #[error("{what}: unexpected answer from the server: {detail}")]
    BadAnswer {
        /// What was asked.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },

    /// `journalctl --setup-keys` failed.
    #[error("cannot generate the FSS verification key with {program}: {reason}")]
    KeyGeneration {
        /// The program that was run (`journalctl` or `$PEP_JOURNALCTL`).
        program: String,
        /// What went wrong.
        reason: String,
    },

    /// The local FCC process failed.
    #[error("FCC {0}")]
    Fcc(String),

    /// A destination of `provision --install` already exists and `--force` was not given.
    #[error("destination {} already exists (use --force to move it aside)", path.display())]
    DestinationExists {
        /// The existing path.
        path: PathBuf,
    },

    /// Installing failed part-way; everything was rolled back.
    #[error("install failed (nothing was installed): {0}")]
    Install(String),

    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },

    /// SIGINT or SIGTERM arrived.
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    /// Builds an [`CliError::Io`] naming what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::InvalidSerial { .. } | Self::SerialSource { .. } => exit::USAGE,
            Self::Token { .. } => exit::AUTH,
            Self::Unreachable { .. } | Self::NoAnswer { .. } => exit::UNREACHABLE,
            Self::Server { status, .. } | Self::Proxy { status, .. } => {
                exit_code_for_status(*status)
            }
            Self::AnswerLost(_) => exit::ANSWER_LOST,
            Self::BadAnswer { .. } | Self::Io { .. } => exit::FAILURE,
            Self::KeyGeneration { .. } => exit::KEY_GENERATION,
            Self::Fcc(_) => exit::GATEWAY,
            Self::DestinationExists { .. } | Self::Install(_) => exit::INSTALL,
            Self::Interrupted => exit::INTERRUPTED,
        }
    }
}

/// What [`CliError::AnswerLost`] reports: everything an operator needs to resolve the serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostAnswer {
    /// The gateway's serial number.
    pub serial: String,
    /// The request key sent with every try.
    pub request_key: String,
    /// How the first answer was lost.
    pub lost: String,
    /// The last try's outcome.
    pub last: String,
    /// The kept FCC working directory (holds `pal/`).
    pub staging: PathBuf,
    /// How FCC ended.
    pub fcc: String,
}

impl std::fmt::Display for LostAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            serial,
            request_key,
            lost,
            last,
            staging,
            fcc,
        } = self;
        write!(
            f,
            "provision {serial}: the identity answer was lost ({lost}) and asking again with request key \
             {request_key} did not recover it ({last}); the identity may be on the gateway, so FCC's \
             results are kept in {} ({fcc}); resolve serial {serial} on the server \
             (docs/pep-cli.md, \"Lost answers\") before provisioning this gateway again",
            staging.display()
        )
    }
}

/// Maps an HTTP error status of the pep server to an exit code.
pub fn exit_code_for_status(status: u16) -> u8 {
    match status {
        400 | 422 => exit::USAGE,
        401 | 403 => exit::AUTH,
        404 => exit::NOT_FOUND,
        409 => exit::CONFLICT,
        502 | 504 => exit::GATEWAY,
        _ => exit::FAILURE,
    }
}

/// Makes a server-provided text safe for a one-line message: control characters become spaces and
/// the text is cut at 300 characters.
pub fn one_line(text: &str) -> String {
    const MAX: usize = 300;
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if text.trim().chars().count() > MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_distinct_documented_codes() {
        assert_eq!(exit_code_for_status(400), exit::USAGE);
        assert_eq!(exit_code_for_status(401), exit::AUTH);
        assert_eq!(exit_code_for_status(403), exit::AUTH);
        assert_eq!(exit_code_for_status(404), exit::NOT_FOUND);
        assert_eq!(exit_code_for_status(409), exit::CONFLICT);
        assert_eq!(exit_code_for_status(502), exit::GATEWAY);
        assert_eq!(exit_code_for_status(504), exit::GATEWAY);
        assert_eq!(exit_code_for_status(500), exit::FAILURE);
    }

    #[test]
    fn a_lost_answer_has_its_own_code_and_names_what_the_operator_needs() {
        let e = CliError::AnswerLost(Box::new(LostAnswer {
            serial: "GW-1".into(),
            request_key: "0123456789abcdef0123456789abcdef".into(),
            lost: "no complete answer".into(),
            last: "try 6 of 6: connection refused".into(),
            staging: PathBuf::from("/userdata/mbed/.pep-fcc-x1"),
            fcc: "FCC exited with status 0".into(),
        }));
        assert_eq!(e.exit_code(), exit::ANSWER_LOST);
        let codes = [
            exit::OK,
            exit::FAILURE,
            exit::USAGE,
            exit::UNREACHABLE,
            exit::AUTH,
            exit::CONFLICT,
            exit::GATEWAY,
            exit::NOT_FOUND,
            exit::INSTALL,
            exit::KEY_GENERATION,
            exit::INTERRUPTED,
        ];
        assert!(!codes.contains(&exit::ANSWER_LOST));
        let msg = e.to_string();
        for part in [
            "GW-1",
            "0123456789abcdef0123456789abcdef",
            "/userdata/mbed/.pep-fcc-x1",
            "FCC exited with status 0",
            "connection refused",
            "Lost answers",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }

    #[test]
    fn one_line_removes_newlines_and_truncates() {
        assert_eq!(one_line("  a\nb\r\tc  "), "a b  c");
        let long = "x".repeat(400);
        let cut = one_line(&long);
        assert!(cut.ends_with("..."));
        assert_eq!(cut.len(), 303);
    }
}
