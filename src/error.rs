//! One error type for the whole API, turned into an RFC 9457 `application/problem+json` response
//! here and nowhere else. Database and internal errors are logged, never shown to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Refusal;
use crate::store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing, malformed or rejected credentials. `invalid_token` marks a bearer token that was
    /// presented but refused, as RFC 6750 asks.
    #[error("{detail}")]
    Unauthorized { detail: &'static str, invalid_token: bool },

    #[error("{0}")]
    Forbidden(&'static str),

    #[error("{0}")]
    NotFound(&'static str),

    /// The request was well-formed but its content breaks a rule.
    #[error("{0}")]
    Validation(String),

    #[error("{0}")]
    BadRequest(String),

    /// An `If-Match` precondition no longer holds: someone changed the resource meanwhile.
    #[error("{0}")]
    PreconditionFailed(&'static str),

    /// The request conflicts with the resource's state (a forbidden transition, a taken name).
    #[error("{0}")]
    Conflict(String),

    /// An extractor rejected the request (bad JSON, wrong content type, oversized body, ...):
    /// keep the status Axum chose, answer in our format.
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },

    /// Too many failed logins for this account or address: try again in `retry_after` seconds.
    #[error("too many failed logins; try again in {retry_after} s")]
    Throttled { retry_after: u64 },

    /// Too much work is queued already (password hashing): refused at once, not queued, so the
    /// client can come back in `retry_after` seconds instead of timing out.
    #[error("the server is busy; try again in {retry_after} s")]
    Overloaded { retry_after: u64 },

    /// This client holds as many of something (live streams) as one client may.
    #[error("{0}")]
    ClientLimit(&'static str),

    /// A dependency is down (readiness probe); the detail says which and is safe to show.
    #[error("{0}")]
    Unavailable(String),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("internal error: {0}")]
    Internal(String),
}

/// What each refusal of the rules means over HTTP.
impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Malformed(detail) => Error::BadRequest(detail),
            Refusal::Invalid(detail) => Error::Validation(detail),
            Refusal::Forbidden(detail) => Error::Forbidden(detail),
            Refusal::Hidden(detail) => Error::NotFound(detail),
            Refusal::Outdated(detail) => Error::PreconditionFailed(detail),
            Refusal::Conflict(detail) => Error::Conflict(detail),
            Refusal::TooMany(detail) => Error::ClientLimit(detail),
        }
    }
}

/// What each failure of the store means over HTTP.
impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Refused(refusal) => refusal.into(),
            StoreError::NotFound(detail) => Error::NotFound(detail),
            StoreError::Taken(detail) => Error::Conflict(detail.to_owned()),
            StoreError::KeyReused => Error::Validation(error.to_string()),
            StoreError::Unavailable(detail) => Error::Unavailable(detail),
            StoreError::Database(error) => Error::Database(error),
            StoreError::Internal(detail) => Error::Internal(detail),
        }
    }
}

impl From<crate::domain::throttle::Locked> for Error {
    fn from(locked: crate::domain::throttle::Locked) -> Self {
        Error::Throttled { retry_after: locked.retry_after }
    }
}

impl Error {
    pub fn invalid_token(detail: &'static str) -> Self {
        Error::Unauthorized { detail, invalid_token: true }
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::Rejected { status, .. } => *status,
            Error::Throttled { .. } | Error::ClientLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(error) if database_unavailable(error) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Errors that mean "the database cannot be reached right now", not "this request is wrong":
/// no connection within the pool's acquire timeout, a connection cut under us, or a server that
/// is shutting down or starting (SQLSTATE class 57: 57P01 admin shutdown, 57P03 cannot connect
/// now, ...). The client may retry; the pool reconnects on its own.
fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("57")),
        _ => false,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Error::Database(error) if database_unavailable(error) => {
                tracing::error!(error = %self, "database unavailable");
                "the database is unavailable; try again shortly".to_owned()
            }
            Error::Database(_) | Error::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                "an internal error occurred".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = problem(status, detail);
        match self {
            Error::Unauthorized { invalid_token, .. } => {
                let challenge = if invalid_token { r#"Bearer error="invalid_token""# } else { "Bearer" };
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
            Error::Throttled { retry_after } | Error::Overloaded { retry_after } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}

/// The RFC 9457 body every error response carries.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "ticket not found"
}))]
pub struct Problem {
    /// Always `about:blank`: the status code says what kind of problem it is.
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    /// The status code's reason phrase.
    pub title: &'static str,
    pub status: u16,
    /// What went wrong with this request, for a person to read.
    pub detail: String,
}

impl Problem {
    /// The one place a problem's shape is decided.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            problem_type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

/// Builds a problem+json response.
pub fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let mut response = (status, axum::Json(Problem::new(status, detail))).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// Turns any error response that is not problem+json yet (Axum's 405, an unmatched route, a
/// layer's 413 or 408) into one, keeping its status and headers such as `Allow`.
pub fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such resource".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource".to_owned(),
        other => other.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let (_, body) = problem(status, detail).into_parts();
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_out_of_reach_is_503_and_a_failing_query_is_500() {
        let status = |error: sqlx::Error| Error::Database(error).status();
        assert_eq!(status(sqlx::Error::PoolTimedOut), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(sqlx::Error::PoolClosed), StatusCode::SERVICE_UNAVAILABLE);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(status(sqlx::Error::Io(reset)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(sqlx::Error::RowNotFound), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(sqlx::Error::Protocol("garbled".into())), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_throttled_login_says_when_to_come_back() {
        let response = Error::Throttled { retry_after: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
