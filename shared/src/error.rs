//! The one error type of a request, and its one mapping to a response.
//!
//! Handlers return `Result<Response, Error>`; [`Error::into_response`] is the only place a failure
//! becomes a status code and a body. Client mistakes are 4xx with a message meant for the person
//! or platform that sent them; failures of ours or of a platform are 5xx whose body says only what
//! happened in general terms, while the detail goes to the log. No variant carries a secret.

use crate::crypto::CryptoError;
use crate::secrets::SecretsError;
use crate::store::StoreError;
use crate::web::{self, Format};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};

/// Why a request could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A parameter is missing, duplicated or malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A signature is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The route does not accept this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A one-time thing was used already, e.g. a replayed code or state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the route accepts (413).
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not of a type the route accepts (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well-formed but contradicts an earlier one, e.g. an idempotency key
    /// reused for another body (422).
    #[error("{0}")]
    Unprocessable(String),
    /// A platform refused or failed a call we made (502); the message is safe to show.
    #[error("{0}")]
    Upstream(String),
    /// A dependency of ours (store, secrets) is unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or misconfiguration (500). The detail is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConditionFailed | StoreError::Cancelled(_) => {
                Error::Conflict("this was done already".into())
            }
            StoreError::Invalid(detail) => Error::Internal(format!("store: {detail}")),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                Error::Unavailable("the store is unavailable; try again shortly".into())
            }
        }
    }
}

impl From<SecretsError> for Error {
    fn from(e: SecretsError) -> Self {
        tracing::error!(error = %e, "secrets unavailable");
        Error::Unavailable("the app's credentials are unavailable; try again shortly".into())
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl Error {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the caller: the error's own text for everything but internal errors.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "something went wrong on our side".into(),
            other => other.to_string(),
        }
    }

    /// The response for this error: an HTML page for a browser route, JSON otherwise.
    pub fn into_response(self, format: Format) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::warn!(status = status.as_u16(), error = %self, "request refused");
        }
        let message = self.public_message();
        match format {
            Format::Html => web::html_page(
                status,
                status.canonical_reason().unwrap_or("Error"),
                &format!("<p>{}</p>", web::escape(&message)),
            ),
            Format::Json => web::json(
                status,
                &serde_json::json!({ "error": status.canonical_reason(), "message": message }),
            ),
        }
    }
}

/// What a handler returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;
