//! Claiming deployed gateways in the device-management cloud (issue #18): the sender of the
//! store's claim outbox.
//!
//! The outbox rows are written by the store in the transaction that deploys a gateway; this
//! module only takes due rows ([`Store::take_claims`]: under a lease on PostgreSQL, where servers
//! share the table), sends them and settles each with the answer ([`Store::settle_claims`]). So
//! provisioning never waits for the cloud, and a restart or an outage loses nothing: what was not
//! settled is sent again.
//!
//! * `each`: one `POST /v3/device-enrollments` per ID, `max_in_flight` at once.
//! * `bulk`: every `bulk_interval_s`, the due IDs as CSV files under `bulk_max_file_bytes` to the
//!   bulk-upload endpoint; each task is polled until `completed`, and its errors report settles
//!   the IDs it names (the others are claimed). The task id is stored with its rows, so a restart
//!   polls it again instead of uploading twice.
//! * Answers ([`client::Answer`]): 2xx → `claimed`; `409` → `already_claimed`; `400` →
//!   `rejected`; `401`/`403` → `rejected`, and the sender stops sending until restarted (a wrong
//!   key would fail every row: no retry storm); `429` → nothing is sent before `Retry-After`;
//!   5xx and network errors → `retrying` after an exponential backoff with jitter.
//! * Deletions (a revoked gateway, queued by the store) go out as `DELETE
//!   /v3/device-enrollments/{id}` when the claim's cloud id is known, else as a bulk delete.

pub mod client;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use rand::Rng as _;
use tokio::sync::watch;

use crate::config::{CloudConfig, CloudMode, Config};
use crate::store::claims::Settlement;
use crate::store::{ClaimAction, ClaimRow, ClaimState, Store, StoreError, now_ms};
pub use client::{Answer, CloudClient};

/// How long a taken row stays this server's before another may take it (`each`, PostgreSQL).
const LEASE_EACH: Duration = Duration::from_secs(120);
/// How long rows of a bulk upload stay this server's (uploading and polling its task;
/// PostgreSQL).
const LEASE_BULK: Duration = Duration::from_secs(600);
/// How often an idle `each` sender looks for new rows.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// After a round that took every due row, the next waits this long (`each`): under load each
/// round's writes (the settlement; on PostgreSQL also the lease) then carry a batch of claims.
const GATHER: Duration = Duration::from_millis(20);
/// The first backoff pause; each further failure doubles it up to `backoff_max_s`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Most rows one bulk round takes.
const BULK_ROUND_ROWS: u32 = 200_000;
/// How often a bulk task is polled, and for how long at most in one go.
const BULK_POLL: Duration = Duration::from_millis(500);
const BULK_POLL_FOR: Duration = Duration::from_secs(300);

/// Why the sender could not start.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The API key file.
    #[error("cloud.api_key_file: {0}")]
    Key(#[from] crate::config::cloud::ApiKeyError),
    /// The HTTP client.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// The store.
    #[error("cloud claims: {0}")]
    Store(#[from] StoreError),
}

/// The delay before attempt `attempts + 1` of a failing row: 1 s doubled per attempt, at most
/// `max`, times a jitter in 0.5..1.5 (many rows failing together do not come back together).
pub fn backoff(attempts: i64, max: Duration) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    let base = FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(max);
    base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
        .min(max)
}

/// The sender's settings, from `[cloud]`.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// `each` or `bulk`.
    pub mode: CloudMode,
    /// Requests at once (`each`).
    pub max_in_flight: usize,
    /// Between two bulk rounds.
    pub bulk_interval: Duration,
    /// Largest CSV file.
    pub bulk_max_file_bytes: usize,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// This server's name on the rows it takes.
    pub server_id: String,
}

impl SenderOptions {
    /// From the configuration.
    pub fn of(config: &Config) -> SenderOptions {
        let c: &CloudConfig = &config.cloud;
        SenderOptions {
            mode: c.mode,
            max_in_flight: c.max_in_flight.max(1),
            bulk_interval: c.bulk_interval(),
            bulk_max_file_bytes: c.bulk_max_file_bytes,
            backoff_max: c.backoff_max(),
            server_id: config.server_id(),
        }
    }
}

/// The running sender: stops (finishing and settling what is in flight) at [`Sender::stop`].
#[derive(Debug)]
pub struct Sender {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    /// Starts the sender of `config` on `store` (`None` when `mode = "off"`). Ends the leases a
    /// previous run of this server left first, so its unsettled rows are sent again at once.
    pub async fn start(config: &Config, store: Store) -> Result<Option<Sender>, CloudError> {
        if config.cloud.mode == CloudMode::Off {
            return Ok(None);
        }
        let key = config.cloud.load_api_key()?;
        let client = CloudClient::new(config.cloud.api_base(&config.defaults.api_address), key)?;
        let options = SenderOptions::of(config);
        let released = store.release_claim_leases(&options.server_id).await?;
        tracing::info!(
            mode = options.mode.as_str(),
            api = client.base(),
            resumed = released,
            "cloud claims: sender started"
        );
        let (stop, stopped) = watch::channel(false);
        let worker = Worker {
            store,
            client,
            options,
            paused_until: 0,
            auth_refused: false,
        };
        let task = tokio::spawn(worker.run(stopped));
        Ok(Some(Sender { stop, task }))
    }

    /// Stops taking rows, lets the requests in flight finish and settle, and waits (at most
    /// `grace`).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!(
                "cloud claims: the sender did not stop in time; unsettled rows are sent again at the next start"
            );
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Rows taken.
    pub taken: usize,
    /// Requests sent.
    pub sent: usize,
}

/// The sender's loop and state.
pub struct Worker {
    store: Store,
    client: CloudClient,
    options: SenderOptions,
    /// No request before this (ms since the epoch): a `429`'s `Retry-After`.
    paused_until: i64,
    /// A `401`/`403` was answered: nothing more is sent until restart.
    auth_refused: bool,
}

impl Worker {
    /// A worker for one-off rounds (`pep-server cloud sync`).
    pub fn new(store: Store, client: CloudClient, options: SenderOptions) -> Worker {
        Worker {
            store,
            client,
            options,
            paused_until: 0,
            auth_refused: false,
        }
    }

    /// Whether a `401`/`403` stopped this worker.
    pub fn auth_refused(&self) -> bool {
        self.auth_refused
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            if *stopped.borrow() {
                break;
            }
            let wait = match self.round().await {
                // A full round: more are due at once.
                Ok(round)
                    if round.taken >= self.each_limit() as usize
                        && self.options.mode == CloudMode::Each =>
                {
                    Duration::ZERO
                }
                // Caught up: gather a batch, rather than two writes per claim as they trickle in.
                Ok(round) if round.taken > 0 && self.options.mode == CloudMode::Each => GATHER,
                Ok(_) if self.options.mode == CloudMode::Bulk => self.options.bulk_interval,
                Ok(_) => IDLE_POLL,
                Err(e) => {
                    tracing::error!(error = %e, "cloud claims: the outbox cannot be read or settled");
                    Duration::from_secs(5)
                }
            };
            let wait = wait.max(self.pause_left());
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
        tracing::info!("cloud claims: sender stopped");
    }

    fn pause_left(&self) -> Duration {
        let left = self.paused_until.saturating_sub(now_ms());
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }

    /// Takes the due rows and sends them; every row taken is settled before it returns.
    pub async fn round(&mut self) -> Result<Round, StoreError> {
        if self.auth_refused || !self.pause_left().is_zero() {
            return Ok(Round::default());
        }
        match self.options.mode {
            CloudMode::Bulk => self.bulk_round().await,
            _ => self.each_round().await,
        }
    }

    /// Most rows one `each` round takes.
    fn each_limit(&self) -> u32 {
        u32::try_from(self.options.max_in_flight.saturating_mul(4)).unwrap_or(1024)
    }

    async fn each_round(&mut self) -> Result<Round, StoreError> {
        let limit = self.each_limit();
        let rows = self
            .store
            .take_claims(&self.options.server_id, LEASE_EACH, limit)
            .await?;
        let taken = rows.len();
        // Rows a 429 or a 401/403 of an earlier row stopped go back unsent.
        let gate = Arc::new(std::sync::Mutex::new(Gate::default()));
        let client = &self.client;
        let answers: Vec<(ClaimRow, Option<Answer>)> = futures_util::stream::iter(rows)
            .map(|row| {
                let gate = Arc::clone(&gate);
                async move {
                    if gate.lock().map(|g| g.closed()).unwrap_or(true) {
                        return (row, None);
                    }
                    let answer = match (row.action, row.cloud_id.as_deref()) {
                        (ClaimAction::Claim, _) => client.claim(&row.enrollment_id).await,
                        (ClaimAction::Delete, Some(id)) => client.delete(id).await,
                        (ClaimAction::Delete, None) => {
                            // Only the bulk delete frees a claim by its enrollment ID.
                            let csv = csv_file(std::slice::from_ref(&row.enrollment_id));
                            bulk_delete_now(client, csv).await
                        }
                    };
                    if let Ok(mut g) = gate.lock() {
                        g.saw(&answer);
                    }
                    (row, Some(answer))
                }
            })
            .buffer_unordered(self.options.max_in_flight)
            .collect()
            .await;
        let sent = answers.iter().filter(|(_, a)| a.is_some()).count();
        let settlements: Vec<Settlement> = answers
            .iter()
            .map(|(row, answer)| self.settle(row, answer.as_ref()))
            .collect();
        self.store
            .settle_claims(&self.options.server_id, &settlements)
            .await?;
        Ok(Round { taken, sent })
    }

    /// The settlement of `row` for `answer` (`None`: not sent), and what it means for the sender.
    fn settle(&mut self, row: &ClaimRow, answer: Option<&Answer>) -> Settlement {
        let now = now_ms();
        let unsent = Settlement {
            id: row.id,
            state: row.state,
            attempted: false,
            next_attempt_at: now.max(self.paused_until),
            last_error: row.last_error.clone(),
            cloud_id: None,
        };
        let Some(answer) = answer else {
            return unsent;
        };
        let done = match row.action {
            ClaimAction::Claim => ClaimState::Claimed,
            ClaimAction::Delete => ClaimState::Deleted,
        };
        let error = answer.error_text();
        let (state, next) = match answer {
            Answer::Done { .. } => (done, now),
            Answer::NotFound(_) if row.action == ClaimAction::Delete => (ClaimState::Deleted, now),
            Answer::AlreadyClaimed(_) if row.action == ClaimAction::Claim => {
                (ClaimState::AlreadyClaimed, now)
            }
            Answer::AlreadyClaimed(_) | Answer::NotFound(_) | Answer::Rejected(_) => {
                tracing::warn!(serial = %row.serial, action = %row.action, error = error.as_deref().unwrap_or_default(), "cloud claims: rejected, not retried");
                (ClaimState::Rejected, now)
            }
            Answer::AuthRefused(m) => {
                if !self.auth_refused {
                    tracing::error!(
                        error = %m,
                        "cloud claims: the cloud refused the API key; nothing more is sent until \
                         the key is fixed and the server restarted (`pep-server cloud retry --state \
                         rejected` re-queues the refused claims)"
                    );
                }
                self.auth_refused = true;
                (ClaimState::Rejected, now)
            }
            Answer::RateLimited { retry_after, .. } => {
                let until =
                    now.saturating_add(i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX));
                self.paused_until = self.paused_until.max(until);
                tracing::warn!(
                    retry_after_s = retry_after.as_secs(),
                    "cloud claims: rate limited (429)"
                );
                (ClaimState::Retrying, until)
            }
            Answer::Retry(m) => {
                let wait = backoff(row.attempts, self.options.backoff_max);
                tracing::warn!(serial = %row.serial, error = %m, retry_in_ms = wait.as_millis() as u64, "cloud claims: will retry");
                (
                    ClaimState::Retrying,
                    now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                )
            }
        };
        let cloud_id = match answer {
            Answer::Done { id } if row.action == ClaimAction::Claim => id.clone(),
            _ => None,
        };
        Settlement {
            id: row.id,
            state,
            attempted: true,
            next_attempt_at: next,
            last_error: error,
            cloud_id,
        }
    }

    async fn bulk_round(&mut self) -> Result<Round, StoreError> {
        let rows = self
            .store
            .take_claims(&self.options.server_id, LEASE_BULK, BULK_ROUND_ROWS)
            .await?;
        let taken = rows.len();
        let mut sent = 0;
        // Rows of a task uploaded before (a restart): poll that task, never upload them again.
        let mut resumed: HashMap<(String, ClaimAction), Vec<ClaimRow>> = HashMap::new();
        let mut claims = Vec::new();
        let mut deletes = Vec::new();
        for row in rows {
            match (&row.bulk_task, row.action) {
                (Some(task), action) => {
                    resumed.entry((task.clone(), action)).or_default().push(row)
                }
                (None, ClaimAction::Claim) => claims.push(row),
                (None, ClaimAction::Delete) => deletes.push(row),
            }
        }
        for ((task, action), rows) in resumed {
            sent += 1;
            self.finish_task(&task, action == ClaimAction::Delete, rows)
                .await?;
        }
        for (rows, delete) in [(claims, false), (deletes, true)] {
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let file_rows = take_file(&mut rows, self.options.bulk_max_file_bytes);
                if self.auth_refused || !self.pause_left().is_zero() {
                    // Stopped by an earlier file's answer: back unsent.
                    let unsent: Vec<Settlement> =
                        file_rows.iter().map(|r| self.settle(r, None)).collect();
                    self.store
                        .settle_claims(&self.options.server_id, &unsent)
                        .await?;
                    continue;
                }
                sent += 1;
                self.upload(file_rows, delete).await?;
            }
        }
        Ok(Round { taken, sent })
    }

    /// Uploads one file of `rows`, then polls its task and settles every row.
    async fn upload(&mut self, rows: Vec<ClaimRow>, delete: bool) -> Result<(), StoreError> {
        let ids: Vec<String> = rows.iter().map(|r| r.enrollment_id.clone()).collect();
        let answer = self.client.bulk(csv_file(&ids), delete).await;
        let Answer::Done { id: Some(task) } = answer else {
            let answer = match answer {
                Answer::Done { id: None } => {
                    Answer::Retry("the bulk upload answer names no task".to_owned())
                }
                other => other,
            };
            // The whole file had one answer: each of its rows gets it.
            let settlements: Vec<Settlement> =
                rows.iter().map(|r| self.settle(r, Some(&answer))).collect();
            return self
                .store
                .settle_claims(&self.options.server_id, &settlements)
                .await;
        };
        tracing::info!(task = %task, ids = ids.len(), delete, "cloud claims: bulk file uploaded");
        let row_ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        self.store
            .mark_bulk(&self.options.server_id, &task, &row_ids)
            .await?;
        self.finish_task(&task, delete, rows).await
    }

    /// Polls bulk task `task` until it completes and settles `rows` by its errors report. A task
    /// that does not complete in time keeps its rows (and their lease) for a later round.
    async fn finish_task(
        &mut self,
        task: &str,
        delete: bool,
        rows: Vec<ClaimRow>,
    ) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        let polled = loop {
            match self.client.bulk_task(task, delete).await {
                Ok(t) if t.completed => break Ok(t),
                Ok(_) => {}
                Err(Answer::Retry(m)) => {
                    tracing::warn!(task, error = %m, "cloud claims: polling the bulk task failed; polling again");
                }
                Err(other) => break Err(other),
            }
            if started.elapsed() > BULK_POLL_FOR {
                tracing::warn!(
                    task,
                    "cloud claims: the bulk task has not completed; it is polled again later"
                );
                return Ok(());
            }
            tokio::time::sleep(BULK_POLL).await;
        };
        let outcome = match polled {
            Ok(t) => match (&t.errors_report, t.errors_count) {
                (_, 0) => Ok(HashMap::new()),
                (Some(url), _) => match self.client.report(url).await {
                    Ok(text) => Ok(report_errors(&text)),
                    Err(answer) => Err(answer),
                },
                (None, n) => Err(Answer::Retry(format!(
                    "the completed bulk task reports {n} errors but no errors report"
                ))),
            },
            Err(answer) => Err(answer),
        };
        let settlements: Vec<Settlement> = match outcome {
            Ok(errors) => rows
                .iter()
                .map(|r| {
                    let answer = match errors.get(&r.enrollment_id) {
                        None => Answer::Done { id: None },
                        Some(message) => bulk_line_answer(message),
                    };
                    // The row went out with the upload: its attempt was counted then.
                    Settlement {
                        attempted: false,
                        ..self.settle(r, Some(&answer))
                    }
                })
                .collect(),
            // The task cannot be read: its rows stay in it and are polled again after a pause.
            Err(answer) => {
                tracing::warn!(
                    task,
                    error = answer.error_text().unwrap_or_default(),
                    "cloud claims: the bulk task's outcome cannot be read"
                );
                return Ok(());
            }
        };
        self.store
            .settle_claims(&self.options.server_id, &settlements)
            .await
    }
}

/// A 429 or a 401/403 closes the gate: the rows of the round not yet sent stay unsent.
#[derive(Debug, Default)]
struct Gate {
    rate_limited: bool,
    auth_refused: bool,
}

impl Gate {
    fn closed(&self) -> bool {
        self.rate_limited || self.auth_refused
    }

    fn saw(&mut self, answer: &Answer) {
        match answer {
            Answer::RateLimited { .. } => self.rate_limited = true,
            Answer::AuthRefused(_) => self.auth_refused = true,
            _ => {}
        }
    }
}

/// A bulk delete of one file, polled to its end: the single-row deletion without a cloud id.
async fn bulk_delete_now(client: &CloudClient, csv: Vec<u8>) -> Answer {
    let task = match client.bulk(csv, true).await {
        Answer::Done { id: Some(task) } => task,
        Answer::Done { id: None } => {
            return Answer::Retry("the bulk delete answer names no task".to_owned());
        }
        other => return other,
    };
    let started = tokio::time::Instant::now();
    loop {
        match client.bulk_task(&task, true).await {
            Ok(t) if t.completed => {
                return match (t.errors_count, t.errors_report) {
                    (0, _) => Answer::Done { id: None },
                    (_, Some(url)) => match client.report(&url).await {
                        Ok(text) => report_errors(&text)
                            .into_values()
                            .next()
                            .map_or(Answer::Done { id: None }, |m| bulk_line_answer(&m)),
                        Err(answer) => answer,
                    },
                    (n, None) => Answer::Retry(format!("{n} errors but no errors report")),
                };
            }
            Ok(_) => {}
            Err(Answer::Retry(_)) => {}
            Err(other) => return other,
        }
        if started.elapsed() > BULK_POLL_FOR {
            return Answer::Retry("the bulk delete task did not complete".to_owned());
        }
        tokio::time::sleep(BULK_POLL).await;
    }
}

/// The header of the CSV files pep uploads.
const CSV_HEADER: &str = "enrollment_identity\r\n";

/// The bytes one ID adds to a CSV file.
fn csv_line_len(id: &str) -> usize {
    id.len() + 2
}

/// The bulk CSV of `ids`: a header line, then one ID per line (IDs need no quoting).
pub fn csv_file(ids: &[String]) -> Vec<u8> {
    let mut csv = String::with_capacity(CSV_HEADER.len() + ids.len() * 99);
    csv.push_str(CSV_HEADER);
    for id in ids {
        csv.push_str(id);
        csv.push_str("\r\n");
    }
    csv.into_bytes()
}

/// The next rows that fit one file of at most `max_bytes` (at least one row).
fn take_file(
    rows: &mut std::iter::Peekable<impl Iterator<Item = ClaimRow>>,
    max_bytes: usize,
) -> Vec<ClaimRow> {
    let mut size = CSV_HEADER.len();
    let mut file = Vec::new();
    while let Some(next) = rows.peek() {
        let len = csv_line_len(&next.enrollment_id);
        if !file.is_empty() && size + len > max_bytes {
            break;
        }
        size += len;
        if let Some(row) = rows.next() {
            file.push(row);
        }
    }
    file
}

/// How many files the bulk sender makes of `ids` (`cloud sync --dry-run`).
pub fn split_files(ids: &[String], max_bytes: usize) -> Vec<Vec<String>> {
    let mut files: Vec<Vec<String>> = Vec::new();
    let mut size = 0;
    for id in ids {
        let len = csv_line_len(id);
        match files.last_mut() {
            Some(file) if size + len <= max_bytes => {
                file.push(id.clone());
                size += len;
            }
            _ => {
                files.push(vec![id.clone()]);
                size = CSV_HEADER.len() + len;
            }
        }
    }
    files
}

/// The errors report of a bulk task: per line the enrollment ID (first value) and the rest of the
/// line as its message; the header line is skipped.
fn report_errors(text: &str) -> HashMap<String, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    reader
        .records()
        .filter_map(Result::ok)
        .filter_map(|record| {
            let id = record.get(0)?.trim().to_owned();
            let message = record
                .iter()
                .skip(1)
                .filter(|f| !f.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            (!id.is_empty()).then_some((id, message))
        })
        .collect()
}

/// What one errors-report line means: "already claimed" (or a 409) is `already_claimed`, a
/// 5xx/"try again" is retried, anything else rejected.
fn bulk_line_answer(message: &str) -> Answer {
    let lower = message.to_ascii_lowercase();
    let text = format!("bulk upload: {message}");
    if lower.contains("409") || lower.contains("already") {
        Answer::AlreadyClaimed(text)
    } else if lower.contains("500") || lower.contains("503") || lower.contains("try again") {
        Answer::Retry(text)
    } else {
        Answer::Rejected(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let max = Duration::from_secs(300);
        for attempts in 0..40 {
            let d = backoff(attempts, max);
            let base = FIRST_BACKOFF
                .saturating_mul(2u32.saturating_pow(attempts.min(30) as u32))
                .min(max);
            assert!(d >= base.mul_f64(0.5) && d <= max, "{attempts}: {d:?}");
        }
    }

    #[test]
    fn files_stay_under_the_limit() {
        let ids: Vec<String> = (0..1000).map(|i| format!("A-{i:095}")).collect();
        let files = split_files(&ids, 10_000);
        assert!(files.len() > 1);
        assert_eq!(files.iter().map(Vec::len).sum::<usize>(), 1000);
        for f in &files {
            assert!(csv_file(f).len() <= 10_000);
        }
    }

    #[test]
    fn the_errors_report_is_read() {
        let text = "enrollment_identity,status,message\r\n\"A-1\",error,\"409 the enrollment identity is already claimed\"\r\nA-2,error,400 bad format\r\n";
        let errors = report_errors(text);
        assert!(matches!(
            bulk_line_answer(&errors["A-1"]),
            Answer::AlreadyClaimed(_)
        ));
        assert!(matches!(
            bulk_line_answer(&errors["A-2"]),
            Answer::Rejected(_)
        ));
    }
}
