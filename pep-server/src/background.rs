//! A runtime for the HTTP work that no gateway waits for: the cloud claims (`[cloud]`) and the
//! event webhooks (`[[hooks.events]]`) send their requests on a thread of their own at a lower CPU
//! priority (nice +[`NICE`]).
//!
//! Why: both are durable outboxes, so a request sent a few seconds later loses nothing; a
//! provisioning, though, holds a gateway on the line until it is answered. On a saturated machine
//! (a fleet bench, a big line on a small box) the kernel then gives the CPU to provisioning first;
//! on an idle machine the background thread still runs at full speed, so claims and events go out
//! at once. The store work of both senders (leasing, settling) stays on the server's runtime: its
//! connections belong there.
//!
//! Each [`Background`] is one OS thread running a current-thread tokio runtime; the HTTP clients
//! used on it keep their connection pools there too. It ends when the last clone is dropped.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How much lower than the server the background thread runs (`nice` units: a thread at +10 gets
/// about a tenth of a core's time that a nice-0 thread wants).
pub const NICE: i32 = 10;
/// The lowest priority there is.
const MAX_NICE: i32 = 19;

/// Why a background runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The thread or its runtime could not be made.
    #[error("cannot start the background thread `{name}`: {source}")]
    Start {
        /// The thread's name.
        name: &'static str,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// A task sent to the background runtime did not finish: the runtime stopped (the server is
/// shutting down) or the task panicked.
#[derive(Debug, thiserror::Error)]
#[error("the background task did not finish: {0}")]
pub struct Stopped(#[source] tokio::task::JoinError);

/// A handle to one background thread; clones share it.
#[derive(Debug, Clone)]
pub struct Background {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    handle: Handle,
    /// Dropped with the last [`Background`]: the thread's runtime then ends.
    _stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Background {
    /// Starts the thread `name` at nice +[`NICE`] (where the system refuses that, it runs at the
    /// server's priority and says so in the log).
    pub fn start(name: &'static str) -> Result<Background, BackgroundError> {
        let start = |source| BackgroundError::Start { name, source };
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                lower_priority(name);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        // The tasks spawned on the handle run while this waits; dropping the
                        // runtime afterwards cancels what is left.
                        runtime.block_on(async {
                            let _ = stop_rx.await;
                        });
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                }
            })
            .map_err(start)?;
        let handle = handle_rx
            .recv()
            .map_err(|_| {
                start(std::io::Error::other(
                    "the thread ended before its runtime ran",
                ))
            })?
            .map_err(start)?;
        Ok(Background {
            inner: Arc::new(Inner {
                handle,
                _stop: Mutex::new(Some(stop_tx)),
            }),
        })
    }

    /// The runtime of the thread, to spawn on (e.g. `JoinSet::spawn_on`).
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// Runs `task` on the background thread and waits for its output.
    pub async fn run<F>(&self, task: F) -> Result<F::Output, Stopped>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.handle.spawn(task).await.map_err(Stopped)
    }
}

/// Lowers the calling thread's CPU priority by [`NICE`] from the server's (a server started with
/// `nice` keeps its offset). Linux applies `setpriority` to the thread whose id it is given, not
/// to the whole process; the value is absolute, hence the read first.
fn lower_priority(name: &str) {
    let thread = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(thread))
        .map(|now| now.saturating_add(NICE).min(MAX_NICE))
        .and_then(|nice| rustix::process::setpriority_process(Some(thread), nice));
    if let Err(e) = lowered {
        tracing::warn!(thread = name, error = %e,
            "cannot lower the background thread's CPU priority; it runs at the server's");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_named_thread_at_the_lower_priority() {
        let background = Background::start("pep-test-bg").unwrap();
        let (name, nice) = background
            .run(async {
                let name = std::thread::current().name().map(str::to_owned);
                (
                    name,
                    rustix::process::getpriority_process(Some(rustix::thread::gettid())),
                )
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("pep-test-bg"));
        let ours = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_eq!(nice.unwrap(), (ours + NICE).min(MAX_NICE));
    }

    /// The names of this process's threads, from /proc.
    fn thread_names() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim_end().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_thread_ends_with_the_last_handle() {
        const NAME: &str = "pep-test-bg-end";
        let background = Background::start(NAME).unwrap();
        let copy = background.clone();
        drop(background);
        assert_eq!(copy.run(async { 7 }).await.unwrap(), 7);
        assert!(thread_names().iter().any(|n| n == NAME));
        drop(copy);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while thread_names().iter().any(|n| n == NAME) {
            assert!(std::time::Instant::now() < deadline, "{NAME} still runs");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
