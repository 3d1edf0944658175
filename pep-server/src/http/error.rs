//! The one error answer of the HTTP layer: a status code and a JSON body `{"error": "...", ...}`.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::store::IdentityState;

/// An error answer. The message is meant for the operator at the factory line: it says what was wrong
/// and, where it helps, what to check. It never carries tokens or keys.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    parameter: Option<String>,
    extra: Map<String, Value>,
    www_authenticate: bool,
}

impl ApiError {
    /// An error with `status` and `message` and no further fields.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            parameter: None,
            extra: Map::new(),
            www_authenticate: false,
        }
    }

    /// 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 naming the parameter (query parameter or JSON field) that was wrong.
    pub fn bad_param(name: &str, reason: impl std::fmt::Display) -> ApiError {
        let mut e = ApiError::bad_request(format!("parameter `{name}` {reason}"));
        e.parameter = Some(name.to_owned());
        e
    }

    /// 400: a required parameter is absent.
    pub fn missing_param(name: &str) -> ApiError {
        ApiError::bad_param(name, "is required")
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, message);
        e.www_authenticate = true;
        e
    }

    /// 403: authenticated, but the token lacks the role.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500 for a defect or a failed internal resource. The cause is logged here, not sent: it may
    /// describe server internals the client has no use for.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {context}; see the server log"),
        )
    }

    /// 500: the store did not answer a read.
    pub fn store_read(cause: &dyn std::fmt::Display) -> ApiError {
        ApiError::internal("reading the store failed", cause)
    }

    /// 404 naming a serial number no identity has.
    pub fn no_identity(serial: &str) -> ApiError {
        ApiError::not_found(format!("no identity has serial number `{serial}`"))
            .with("serialNumber", serial)
    }

    /// 409: the identity of `serial` is in `state`, which the action does not apply to; `message`
    /// says so (nothing changed).
    pub fn wrong_state(serial: &str, state: IdentityState, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
            .with("serialNumber", serial)
            .with("state", state.as_str())
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The parameter this error names, if any.
    pub fn parameter(&self) -> Option<&str> {
        self.parameter.as_deref()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A body that could not be read (too large, cut off) keeps the status axum gives it.
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        ApiError::new(
            rejection.status(),
            format!("cannot read the request body: {rejection}"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.message));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(p) = self.parameter {
            body.insert("parameter".into(), Value::String(p));
        }
        body.extend(self.extra);
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pep\""),
            );
        }
        response
    }
}
