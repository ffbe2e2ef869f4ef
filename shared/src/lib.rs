//! The JSON bodies Postern's API and its login UI exchange, so the two can never disagree about a field.

use serde::{Deserialize, Serialize};

/// `GET` this path followed by `/{request}` to read a pending authorization request.
pub const AUTHORIZATION_REQUEST_PATH: &str = "/api/authorization-requests";
/// `POST` a [`LoginRequest`] here.
pub const LOGIN_PATH: &str = "/api/login";

/// What the login page shows about a pending authorization request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// The requesting client's id.
    pub client_id: String,
    /// The requesting client's display name.
    pub client_name: String,
    /// Scopes that will be granted.
    pub scopes: Vec<String>,
    /// Seconds left before the request expires.
    pub expires_in: u64,
}

/// Credentials the login page submits for a pending request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The opaque handle from the login page's URL.
    pub request: String,
    /// Username as typed.
    pub username: String,
    /// Password as typed.
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, even in a debug log.
        f.debug_struct("LoginRequest").field("request", &self.request).field("username", &self.username).finish()
    }
}

/// A successful login: the browser goes to `redirect_to` with a top-level navigation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The client's redirect URI with `code`, `state` and `iss`.
    pub redirect_to: String,
}

/// Machine-readable error kinds of the login API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Unknown user, wrong password or disabled account: deliberately indistinguishable.
    InvalidCredentials,
    /// The request handle is unknown, expired or already completed.
    RequestNotFound,
    /// The body is malformed.
    InvalidRequest,
    /// Too many failed attempts; retry later.
    TooManyAttempts,
    /// Something failed on the server.
    ServerError,
}

/// The body of every error answer of the login API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for code.
    pub error: ErrorCode,
    /// What went wrong, for people; safe to show on the page.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_snake_case_on_the_wire() {
        let body = ErrorBody { error: ErrorCode::InvalidCredentials, message: "x".into() };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"error":"invalid_credentials","message":"x"}"#);
    }

    #[test]
    fn debug_hides_the_password() {
        let login = LoginRequest { request: "r".into(), username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
