//! Connection bounds (issue #14 §5): a cap on open connections (`[http] max_connections`) and a
//! body-read timeout beside hyper's header-read timeout, so that no number of slow or idle clients
//! can take the daemon from everyone else.
//!
//! A connection over the cap is answered at once with `503` and closed: it is not queued in the
//! kernel's backlog or in a task, where it would wait forever and hold a file descriptor.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

/// Default `[http] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send a request body once its head has arrived.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the refusal of an excess connection may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bounds of [`super::serve_with`], and whether it serves HTTPS.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Serve HTTPS with this (`[tls]`); `None`: plain HTTP.
    pub tls: Option<super::ServerTls>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }
}

/// Answers an excess connection with a complete `503` and closes it, in its own short task.
pub(super) fn refuse_connection(mut stream: tokio::net::TcpStream, remote: SocketAddr, max: usize) {
    tracing::warn!(%remote, max_connections = max, "connection refused: too many open connections");
    tokio::spawn(async move {
        let body = format!(
            "{{\"error\":\"the server has {max} connections open, its limit; retry shortly\",\"status\":503}}"
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
    });
}
