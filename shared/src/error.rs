//! The one error type of a request, and its one mapping to a response.
//!
//! Handlers return `Result<Response, Error>`; [`Error::into_response`] is the only place a failure
//! becomes a status code and a body. Client mistakes are 4xx with a message meant for the person
//! or platform that sent them; failures of ours or of a platform are 5xx whose body says only what
//! happened in general terms, while the detail goes to the log. No variant carries a secret.
//!
//! Nothing here logs: the edge ([`crate::routes::answer`]) logs each refusal once, with its
//! `Display` text (which carries the detail a 5xx's body leaves out).

use crate::crypto::CryptoError;
use crate::response::{self as web, Format};
use crate::secrets::SecretsError;
use crate::store::StoreError;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};

/// Why a request was refused, as a stable code in every error answer (`"reason"` in JSON, on
/// the page for a browser). Callers (a platform's support, the app's own code, the tests) match
/// the code; the message beside it is for people and may be reworded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A required parameter, field or header is absent or empty (400).
    MissingParameter,
    /// A parameter is malformed: not UTF-8, an invalid escape, too long, outside its character
    /// set (400).
    MalformedParameter,
    /// A parameter, JSON key or signature header appears more than once (400).
    DuplicateParameter,
    /// The body is not the JSON (or form) the route takes (400).
    MalformedBody,
    /// The browser does not carry the flow's state cookie: it did not start this flow (400).
    StateMissing,
    /// The flow's state is invalid, expired, or for another flow (400).
    StateInvalid,
    /// The platform (or the person at it) refused, e.g. `?error=access_denied` (400).
    PlatformRefused,
    /// A signature is absent (401).
    SignatureMissing,
    /// A signature does not match (401).
    SignatureInvalid,
    /// A signed timestamp is outside the accepted window (401).
    Stale,
    /// An id_token failed a check (401).
    TokenInvalid,
    /// No valid session: sign in (401).
    SessionMissing,
    /// The caller or tenant is known but not allowed this (403).
    NotAllowed,
    /// The callback is for, or the platform signed in, another tenant than the one whose flow
    /// this browser started (403).
    WrongTenant,
    /// The platform no longer accepts the stored authorization; the tenant must authorize the
    /// app again (403).
    NeedsReauth,
    /// The tenant (shop, org, member, portal, payment) is not one we serve or know (404).
    UnknownTenant,
    /// The app is not installed for this tenant (404).
    NotInstalled,
    /// A one-time thing (code, state, delivery) was used already (409).
    AlreadyUsed,
    /// An idempotency key was reused for another request (409/422).
    IdempotencyConflict,
}

impl Reason {
    /// The code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingParameter => "missing_parameter",
            Reason::MalformedParameter => "malformed_parameter",
            Reason::DuplicateParameter => "duplicate_parameter",
            Reason::MalformedBody => "malformed_body",
            Reason::StateMissing => "state_missing",
            Reason::StateInvalid => "state_invalid",
            Reason::PlatformRefused => "platform_refused",
            Reason::SignatureMissing => "signature_missing",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::Stale => "stale",
            Reason::TokenInvalid => "token_invalid",
            Reason::SessionMissing => "session_missing",
            Reason::NotAllowed => "not_allowed",
            Reason::WrongTenant => "wrong_tenant",
            Reason::NeedsReauth => "needs_reauth",
            Reason::UnknownTenant => "unknown_tenant",
            Reason::NotInstalled => "not_installed",
            Reason::AlreadyUsed => "already_used",
            Reason::IdempotencyConflict => "idempotency_conflict",
        }
    }

    /// The status a refusal for this reason is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::MissingParameter
            | Reason::MalformedParameter
            | Reason::DuplicateParameter
            | Reason::MalformedBody
            | Reason::StateMissing
            | Reason::StateInvalid
            | Reason::PlatformRefused => StatusCode::BAD_REQUEST,
            Reason::SignatureMissing
            | Reason::SignatureInvalid
            | Reason::Stale
            | Reason::TokenInvalid
            | Reason::SessionMissing => StatusCode::UNAUTHORIZED,
            Reason::NotAllowed | Reason::WrongTenant | Reason::NeedsReauth => StatusCode::FORBIDDEN,
            Reason::UnknownTenant | Reason::NotInstalled => StatusCode::NOT_FOUND,
            Reason::AlreadyUsed | Reason::IdempotencyConflict => StatusCode::CONFLICT,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a request could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A refusal for a typed [`Reason`], which sets the status (4xx).
    #[error("{message}")]
    Refused {
        /// Why.
        reason: Reason,
        /// What the caller is told.
        message: String,
    },
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
    /// Something of ours is unavailable, or the request ran out of time (503).
    #[error("{0}")]
    Unavailable(String),
    /// A dependency of ours (the store, Secrets Manager) failed (503). Only `public` is shown;
    /// `detail` goes to the log.
    #[error("{public}: {detail}")]
    Dependency {
        /// What the caller is told.
        public: &'static str,
        /// What happened, for the log.
        detail: String,
    },
    /// A bug or misconfiguration (500). The detail is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConditionFailed | StoreError::Cancelled(_) => {
                Error::refused(Reason::AlreadyUsed, "this was done already")
            }
            StoreError::Invalid(detail) => Error::Internal(format!("store: {detail}")),
            StoreError::Unavailable(detail) => Error::Dependency {
                public: "the store is unavailable; try again shortly",
                detail,
            },
        }
    }
}

impl From<SecretsError> for Error {
    fn from(e: SecretsError) -> Self {
        Error::Dependency {
            public: "the app's credentials are unavailable; try again shortly",
            detail: e.to_string(),
        }
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl Error {
    /// A refusal for `reason`.
    pub fn refused(reason: Reason, message: impl Into<String>) -> Self {
        Error::Refused {
            reason,
            message: message.into(),
        }
    }

    /// The typed reason, if this is a [`Error::Refused`].
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The code in the answer: the typed reason's, or the status's for the other variants
    /// (`bad_request`, `upstream`, `unavailable`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Refused { reason, .. } => reason.code(),
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Conflict(_) => "conflict",
            Error::TooLarge(_) => "too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::Unprocessable(_) => "unprocessable",
            Error::Upstream(_) => "upstream",
            Error::Unavailable(_) | Error::Dependency { .. } => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Refused { reason, .. } => reason.status(),
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
            Error::Unavailable(_) | Error::Dependency { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the caller: the error's own text for everything but internal errors.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "something went wrong on our side".into(),
            Error::Dependency { public, .. } => (*public).into(),
            other => other.to_string(),
        }
    }

    /// The response for this error: an HTML page for a browser route, JSON otherwise.
    pub fn into_response(self, format: Format) -> Response<Body> {
        let status = self.status();
        let message = self.public_message();
        match format {
            Format::Html => web::html_page(
                status,
                status.canonical_reason().unwrap_or("Error"),
                &format!(
                    "<p>{}</p><p><small>reason: <code data-reason>{}</code></small></p>",
                    web::escape(&message),
                    self.code()
                ),
            ),
            Format::Json => web::json(
                status,
                &serde_json::json!({
                    "error": status.canonical_reason(),
                    "reason": self.code(),
                    "message": message,
                }),
            ),
        }
    }
}

/// What a handler returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;
