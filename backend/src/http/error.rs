//! The HTTP layer's one error type and its mapping to responses (RFC 6749 §5.2, RFC 6750 §3, the login API).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::keys::KeyError;
use crate::store::StoreError;
use crate::throttle::Refusal;

/// OAuth 2.0 / OIDC error codes Postern answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthCode {
    /// Malformed request.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// Code or refresh token invalid, expired, revoked or not the client's.
    InvalidGrant,
    /// The client may not use this grant.
    UnauthorizedClient,
    /// Unknown grant type.
    UnsupportedGrantType,
    /// Scope not allowed.
    InvalidScope,
    /// Only `code` is supported.
    UnsupportedResponseType,
    /// `prompt=none` without a session.
    LoginRequired,
    /// Request objects are not supported.
    RequestNotSupported,
    /// Request URIs are not supported.
    RequestUriNotSupported,
    /// Bearer token invalid.
    InvalidToken,
    /// Bearer token lacks a scope.
    InsufficientScope,
    /// Server failure.
    ServerError,
    /// The authorization server cannot take the request now (RFC 6749 §4.1.2.1).
    TemporarilyUnavailable,
}

impl OAuthCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthCode::InvalidRequest => "invalid_request",
            OAuthCode::InvalidClient => "invalid_client",
            OAuthCode::InvalidGrant => "invalid_grant",
            OAuthCode::UnauthorizedClient => "unauthorized_client",
            OAuthCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthCode::InvalidScope => "invalid_scope",
            OAuthCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthCode::LoginRequired => "login_required",
            OAuthCode::RequestNotSupported => "request_not_supported",
            OAuthCode::RequestUriNotSupported => "request_uri_not_supported",
            OAuthCode::InvalidToken => "invalid_token",
            OAuthCode::InsufficientScope => "insufficient_scope",
            OAuthCode::ServerError => "server_error",
            OAuthCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// Every way a request can fail, whichever endpoint it reached.
#[derive(Debug)]
pub enum Error {
    /// Token-endpoint error: JSON body, 400 (401 for `invalid_client`).
    OAuth(OAuthCode, String),
    /// Protected-resource error: `WWW-Authenticate: Bearer`, 401 (400 for `invalid_request`, 403 for
    /// `insufficient_scope`).
    /// `None` when no token was presented at all.
    Bearer(Option<OAuthCode>, String),
    /// Login API error, as the shared [`shared::ErrorBody`].
    Login(shared::ErrorCode, String),
    /// A request that must not be redirected back to the client: the UI's error page when there is
    /// one (`ui_page` is its URL), else a minimal HTML page.
    Stop { reason: shared::StopReason, ui_page: Option<String> },
    /// Too many failed attempts, or too many at once (429 with `Retry-After`). The body is an OAuth
    /// error at the protocol endpoints, the login API's error elsewhere.
    Throttled { refusal: Refusal, oauth: bool },
    /// Something failed on our side; the detail is logged, not sent.
    Internal(String),
    /// The database cannot be reached just now (a restart, a failover): worth a retry. The detail is
    /// logged, not sent.
    Unavailable(String),
    /// An upstream that must vouch for the account (a directory) cannot be asked, past its grace
    /// period. The detail is logged, not sent.
    UpstreamUnavailable(String),
}

impl Error {
    /// A token-endpoint error.
    pub fn oauth(code: OAuthCode, description: impl Into<String>) -> Self {
        Error::OAuth(code, description.into())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Error::Unavailable(e.to_string())
        } else {
            Error::Internal(e.to_string())
        }
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        Error::Internal(e.to_string())
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least one.
fn retry_after(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Headers RFC 6749 §5.1 requires on anything carrying tokens; applied to their errors too.
pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn quoted(value: &str) -> String {
    // Descriptions are ours and never contain quotes, but a header must never break.
    value.replace(['"', '\\'], "'")
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::OAuth(code, description) => {
                let status =
                    if code == OAuthCode::InvalidClient { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
                let mut response =
                    (status, Json(json!({ "error": code.as_str(), "error_description": description }))).into_response();
                if status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"postern\""));
                }
                no_store(response)
            }
            Error::Bearer(code, description) => {
                let (status, challenge) = match code {
                    None => (StatusCode::UNAUTHORIZED, "Bearer realm=\"postern\"".to_string()),
                    Some(code) => (
                        match code {
                            OAuthCode::InvalidRequest => StatusCode::BAD_REQUEST,
                            OAuthCode::InsufficientScope => StatusCode::FORBIDDEN,
                            _ => StatusCode::UNAUTHORIZED,
                        },
                        format!(
                            "Bearer realm=\"postern\", error=\"{}\", error_description=\"{}\"",
                            code.as_str(),
                            quoted(&description)
                        ),
                    ),
                };
                let mut response = (
                    status,
                    Json(json!({ "error": code.unwrap_or(OAuthCode::InvalidToken).as_str(), "error_description": description })),
                )
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
                no_store(response)
            }
            Error::Login(code, message) => {
                use shared::ErrorCode::*;
                let status = match code {
                    InvalidCredentials => StatusCode::UNAUTHORIZED,
                    RequestNotFound => StatusCode::NOT_FOUND,
                    InvalidRequest => StatusCode::BAD_REQUEST,
                    TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
                    ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                    UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                    AccountUnavailable => StatusCode::FORBIDDEN,
                };
                no_store((status, Json(shared::ErrorBody { error: code, message })).into_response())
            }
            Error::Stop { reason, ui_page: Some(page) } => {
                let location = format!("{page}?error={}", reason.as_str());
                no_store((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
            }
            Error::Stop { reason, ui_page: None } => {
                let body = format!(
                    "<h1>This sign-in request cannot continue</h1><p>{}</p><p>Go back to the application and start \
                     again. If this keeps happening, tell its administrator.</p>",
                    super::page::escape(reason.message())
                );
                super::page::render(StatusCode::BAD_REQUEST, "Sign-in error", &body)
            }
            Error::Throttled { refusal, oauth } => {
                // Only attempts that were checked and wrong are called failed.
                let (seconds, message, oauth_code) = match refusal {
                    Refusal::Failures(wait) => {
                        let seconds = retry_after(wait);
                        let message = format!("Too many failed attempts. Try again in {seconds} seconds.");
                        (seconds, message, OAuthCode::InvalidClient.as_str())
                    }
                    Refusal::Busy(wait) => {
                        let seconds = retry_after(wait);
                        let message =
                            format!("Too many sign-ins at once from this network. Try again in {seconds} seconds.");
                        (seconds, message, OAuthCode::TemporarilyUnavailable.as_str())
                    }
                };
                let body = if oauth {
                    json!({ "error": oauth_code, "error_description": message })
                } else {
                    json!(shared::ErrorBody { error: shared::ErrorCode::TooManyAttempts, message })
                };
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                no_store(response)
            }
            Error::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                let body = json!({
                    "error": OAuthCode::TemporarilyUnavailable.as_str(),
                    "error_description": "The service cannot reach its database. Try again in a few seconds.",
                });
                let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(5));
                no_store(response)
            }
            Error::UpstreamUnavailable(detail) => {
                tracing::warn!(%detail, "upstream unavailable");
                let body = json!({
                    "error": OAuthCode::TemporarilyUnavailable.as_str(),
                    "error_description": "The directory that vouches for this account cannot be reached. Try again later.",
                });
                let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(60));
                no_store(response)
            }
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                no_store(
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({ "error": "server_error", "error_description": "internal server error" })),
                    )
                        .into_response(),
                )
            }
        }
    }
}
