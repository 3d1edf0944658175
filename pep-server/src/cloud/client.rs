//! The cloud's enrollment API as pep calls it: one request in, one [`Answer`] out.
//!
//! Every request carries the API key as a bearer token and nothing else of it: the key is not in
//! any URL, error or log line. reqwest honours the standard `HTTPS_PROXY` / `HTTP_PROXY` /
//! `NO_PROXY` environment variables (its system proxy), so a factory behind a proxy needs no
//! setting of pep's own.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;

use crate::config::ApiKey;

/// How long one request to the cloud may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `Retry-After` longer than this is taken as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// `429` without a usable `Retry-After`: wait this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Longest piece of an answer body kept in `last_error`.
const MAX_ERROR_TEXT: usize = 300;

/// What the cloud's answer means for the row that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx: done (with the cloud's id of the claim when it said one; a bulk task's id).
    Done {
        /// `id` of the answer's JSON object.
        id: Option<String>,
    },
    /// `409`: the enrollment ID is claimed already.
    AlreadyClaimed(String),
    /// `404` to a deletion: nothing to delete.
    NotFound(String),
    /// `400`, or another 4xx that a retry would not change: the row is rejected.
    Rejected(String),
    /// `401` / `403`: the key is wrong or lacks the right; rejected, and the sender stops until
    /// an operator fixes the key (a retry storm would change nothing).
    AuthRefused(String),
    /// `429`: wait `retry_after` before any further request.
    RateLimited {
        /// From `Retry-After`.
        retry_after: Duration,
        /// What to show.
        message: String,
    },
    /// `5xx`, `408` or a network error: retried with backoff.
    Retry(String),
}

impl Answer {
    /// The text to store as the row's `last_error` (none for a success).
    pub fn error_text(&self) -> Option<String> {
        match self {
            Answer::Done { .. } => None,
            Answer::AlreadyClaimed(m)
            | Answer::NotFound(m)
            | Answer::Rejected(m)
            | Answer::AuthRefused(m)
            | Answer::Retry(m) => Some(m.clone()),
            Answer::RateLimited { message, .. } => Some(message.clone()),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// reqwest could not build its client (TLS roots, proxy settings).
    #[error("cannot build the cloud API client: {0}")]
    Http(#[source] reqwest::Error),
    /// The API base URL does not parse.
    #[error("the cloud API URL `{url}` is not a valid URL: {source}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What the parser said.
        #[source]
        source: url::ParseError,
    },
}

/// The enrollment API of one cloud account.
#[derive(Debug, Clone)]
pub struct CloudClient {
    http: reqwest::Client,
    base: String,
    /// `POST /v3/device-enrollments`, parsed once: parsing it for every claim took about a tenth
    /// of the sender's CPU (a profile of `cloud sync`, docs/performance.md).
    claim_url: reqwest::Url,
    key: ApiKey,
}

impl CloudClient {
    /// A client for the API at `base` (no trailing `/`) with `key`.
    pub fn new(base: String, key: ApiKey) -> Result<CloudClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("pep-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Http)?;
        let claim_url = format!("{base}/v3/device-enrollments");
        let claim_url = reqwest::Url::parse(&claim_url).map_err(|source| ClientError::Url {
            url: base.clone(),
            source,
        })?;
        Ok(CloudClient {
            http,
            base,
            claim_url,
            key,
        })
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v3/device-enrollments` for `enrollment_id`.
    pub async fn claim(&self, enrollment_id: &str) -> Answer {
        let body = serde_json::json!({ "enrollment_identity": enrollment_id });
        let request = self
            .http
            .post(self.claim_url.clone())
            .bearer_auth(self.key.expose())
            .json(&body);
        answer(request.send().await).await.0
    }

    /// `DELETE /v3/device-enrollments/{id}` (the cloud's id of the claim).
    pub async fn delete(&self, cloud_id: &str) -> Answer {
        let path = format!(
            "/v3/device-enrollments/{}",
            url::form_urlencoded::byte_serialize(cloud_id.as_bytes()).collect::<String>()
        );
        let request = self
            .http
            .delete(self.url(&path))
            .bearer_auth(self.key.expose());
        answer(request.send().await).await.0
    }

    /// Uploads one CSV `file` to `/v3/device-enrollments-bulk-uploads` (`delete`: to
    /// `…-bulk-deletes`); a `Done` answer names the bulk task.
    pub async fn bulk(&self, file: Vec<u8>, delete: bool) -> Answer {
        let boundary = format!("pep-{:032x}", rand::random::<u128>());
        let mut body = Vec::with_capacity(file.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"enrollment_identities\"; \
                 filename=\"enrollment_ids.csv\"\r\nContent-Type: text/csv\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = self
            .http
            .post(self.url(bulk_path(delete)))
            .bearer_auth(self.key.expose())
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        answer(request.send().await).await.0
    }

    /// `GET` the bulk task `task`: its `status` and `errors_report_file`, or what went wrong.
    pub async fn bulk_task(&self, task: &str, delete: bool) -> Result<BulkTask, Answer> {
        let path = format!(
            "{}/{}",
            bulk_path(delete),
            url::form_urlencoded::byte_serialize(task.as_bytes()).collect::<String>()
        );
        let request = self
            .http
            .get(self.url(&path))
            .bearer_auth(self.key.expose());
        match answer(request.send().await).await {
            (Answer::Done { .. }, Some(json)) => Ok(BulkTask {
                completed: json["status"] == "completed",
                errors_report: json["errors_report_file"].as_str().map(str::to_owned),
                errors_count: json["errors_count"].as_u64().unwrap_or(0),
            }),
            (Answer::Done { .. }, None) => Err(Answer::Retry(
                "the bulk task answer is not a JSON object".to_owned(),
            )),
            (other, _) => Err(other),
        }
    }

    /// Downloads a report file. The key goes only to the API's own origin (a report on another
    /// host, e.g. a signed storage URL, gets no Authorization header).
    pub async fn report(&self, url: &str) -> Result<String, Answer> {
        let same_origin = match (url::Url::parse(url), url::Url::parse(&self.base)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        };
        let mut request = self.http.get(url);
        if same_origin {
            request = request.bearer_auth(self.key.expose());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(Answer::Retry(network_error(&e))),
        };
        if !response.status().is_success() {
            return Err(classify(response.status(), response.headers(), "report"));
        }
        response
            .text()
            .await
            .map_err(|e| Answer::Retry(network_error(&e)))
    }
}

/// A bulk task as polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkTask {
    /// `status` is `completed`.
    pub completed: bool,
    /// The URL of the errors report, once completed.
    pub errors_report: Option<String>,
    /// `errors_count`.
    pub errors_count: u64,
}

fn bulk_path(delete: bool) -> &'static str {
    if delete {
        "/v3/device-enrollments-bulk-deletes"
    } else {
        "/v3/device-enrollments-bulk-uploads"
    }
}

/// A network error as stored: its kind and cause, without anything of the request but the URL.
fn network_error(e: &reqwest::Error) -> String {
    let mut text = format!("network error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    clip(&text)
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The answer to a sent request, and its JSON body on success.
async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> (Answer, Option<Value>) {
    let response = match sent {
        Ok(r) => r,
        Err(e) => return (Answer::Retry(network_error(&e)), None),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap_or_default();
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if status.is_success() {
        let id = json
            .as_ref()
            .and_then(|j| j["id"].as_str())
            .map(str::to_owned);
        return (Answer::Done { id }, json);
    }
    // The body is informative only (the API says so): its `message`, clipped.
    let message = json
        .as_ref()
        .and_then(|j| j["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    (classify(status, &headers, &message), None)
}

fn classify(status: StatusCode, headers: &HeaderMap, message: &str) -> Answer {
    let text = clip(&format!("{status}: {message}"));
    match status.as_u16() {
        409 => Answer::AlreadyClaimed(text),
        404 => Answer::NotFound(text),
        401 | 403 => Answer::AuthRefused(text),
        429 => Answer::RateLimited {
            retry_after: retry_after(headers),
            message: text,
        },
        408 => Answer::Retry(text),
        400..=499 => Answer::Rejected(text),
        _ => Answer::Retry(text),
    }
}

/// `Retry-After`: seconds, or an HTTP date; otherwise a minute.
fn retry_after(headers: &HeaderMap) -> Duration {
    let Some(value) = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        return DEFAULT_RETRY_AFTER;
    };
    if let Ok(seconds) = value.parse::<u64>() {
        return Duration::from_secs(seconds).min(MAX_RETRY_AFTER);
    }
    match time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822) {
        Ok(at) => {
            let wait = at - time::OffsetDateTime::now_utc();
            Duration::try_from(wait)
                .unwrap_or(Duration::ZERO)
                .min(MAX_RETRY_AFTER)
        }
        Err(_) => DEFAULT_RETRY_AFTER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, v.parse().unwrap());
        h
    }

    /// A base that does not parse is refused when the client is built (the configuration's
    /// check refuses it before; a library caller gets this), naming the URL and never the key.
    #[test]
    fn a_base_url_that_does_not_parse_is_refused_by_name() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.key");
        std::fs::write(&path, "ak_secret_test_key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = crate::config::CloudConfig {
            api_key_file: Some(path),
            ..crate::config::CloudConfig::default()
        };
        let key = config.load_api_key().unwrap();
        let err = CloudClient::new("http://exa mple.com".to_owned(), key.clone()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::Url { .. }), "{err:?}");
        assert!(text.contains("`http://exa mple.com`"), "{text}");
        assert!(!text.contains("ak_secret_test_key"), "{text}");
        let client = CloudClient::new("https://api.example.com".to_owned(), key).unwrap();
        assert_eq!(
            client.claim_url.as_str(),
            "https://api.example.com/v3/device-enrollments"
        );
    }

    #[test]
    fn statuses_are_classified() {
        let h = HeaderMap::new();
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), &h, "m");
        assert!(matches!(c(409), Answer::AlreadyClaimed(_)));
        assert!(matches!(c(401), Answer::AuthRefused(_)));
        assert!(matches!(c(403), Answer::AuthRefused(_)));
        assert!(matches!(c(400), Answer::Rejected(_)));
        assert!(matches!(c(503), Answer::Retry(_)));
        assert!(matches!(c(500), Answer::Retry(_)));
        assert!(matches!(c(408), Answer::Retry(_)));
        assert!(matches!(c(429), Answer::RateLimited { .. }));
    }

    #[test]
    fn retry_after_seconds_date_and_garbage() {
        assert_eq!(retry_after(&with_retry_after("7")), Duration::from_secs(7));
        assert_eq!(retry_after(&with_retry_after("999999")), MAX_RETRY_AFTER);
        assert_eq!(retry_after(&with_retry_after("soon")), DEFAULT_RETRY_AFTER);
        assert_eq!(
            retry_after(&with_retry_after("Sun, 06 Nov 1994 08:49:37 GMT")),
            Duration::ZERO
        );
        assert_eq!(retry_after(&HeaderMap::new()), DEFAULT_RETRY_AFTER);
    }
}
