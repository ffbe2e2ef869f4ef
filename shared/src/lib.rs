//! The JSON bodies Postern's API and its login UI exchange, so the two can never disagree about a field.

use serde::{Deserialize, Serialize};

/// `GET` this path followed by `/{request}` to read a pending authorization request.
pub const AUTHORIZATION_REQUEST_PATH: &str = "/api/authorization-requests";
/// `POST` a [`LoginRequest`] here.
pub const LOGIN_PATH: &str = "/api/login";
/// `GET` the [`UiConfig`] here, on the UI's own origin.
pub const UI_CONFIG_PATH: &str = "/ui-config.json";
/// The login UI's client-side routes besides `/`: served with the app's `index.html` and 200; any other
/// unknown path gets the same page with 404. The frontend's router declares the same paths.
pub const UI_ROUTES: [&str; 4] = ["/login", "/callback", "/error", "/signed-out"];

/// What the login UI learns at run time: where the API is and how to present itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiConfig {
    /// Base URL of the API (the issuer), without a trailing slash.
    pub api_base: String,
    /// Product name shown in the header and title.
    pub product_name: String,
    /// URL of a logo image, if one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    /// Client id of the UI's own "try a sign-in" relying party, if enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_test_client_id: Option<String>,
}

/// Why a sign-in request stopped at Postern instead of going back to the application
/// (`/error?error=…` on the UI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The `client_id` is missing or not registered.
    UnknownClient,
    /// The `redirect_uri` is missing or not registered for the client.
    InvalidRedirectUri,
    /// The request is malformed in a way that cannot be reported to the client.
    InvalidRequest,
    /// The sign-in took too long or was already completed.
    RequestExpired,
    /// The sign-in was completed in a different browser from the one that started it.
    OtherBrowser,
    /// The person did not sign in at the upstream provider (cancelled, refused there).
    UpstreamDenied,
    /// The upstream provider could not be reached, or did not answer in time.
    UpstreamUnavailable,
    /// The upstream provider's answer failed Postern's checks.
    UpstreamRejected,
    /// The upstream provider vouched for the person, and they still cannot sign in here.
    UpstreamAccount,
}

impl StopReason {
    /// The wire name, as in `/error?error=…`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::UnknownClient => "unknown_client",
            StopReason::InvalidRedirectUri => "invalid_redirect_uri",
            StopReason::InvalidRequest => "invalid_request",
            StopReason::RequestExpired => "request_expired",
            StopReason::OtherBrowser => "other_browser",
            StopReason::UpstreamDenied => "upstream_denied",
            StopReason::UpstreamUnavailable => "upstream_unavailable",
            StopReason::UpstreamRejected => "upstream_rejected",
            StopReason::UpstreamAccount => "upstream_account",
        }
    }

    /// Parses a wire name.
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::UnknownClient,
            Self::InvalidRedirectUri,
            Self::InvalidRequest,
            Self::RequestExpired,
            Self::OtherBrowser,
            Self::UpstreamDenied,
            Self::UpstreamUnavailable,
            Self::UpstreamRejected,
            Self::UpstreamAccount,
        ]
        .into_iter()
        .find(|r| r.as_str() == value)
    }

    /// What to tell the user.
    pub fn message(self) -> &'static str {
        match self {
            StopReason::UnknownClient => "The application that sent you here is not registered with this sign-in service.",
            StopReason::InvalidRedirectUri => {
                "The application asked to send you to an address that is not registered for it, so the sign-in was stopped."
            }
            StopReason::InvalidRequest => "The sign-in request is malformed.",
            StopReason::RequestExpired => "This sign-in request has expired or was already used.",
            StopReason::OtherBrowser => {
                "This sign-in was started in a different browser. Go back to the application and sign in from this browser."
            }
            StopReason::UpstreamDenied => "The sign-in at your home organisation was cancelled or refused there.",
            StopReason::UpstreamUnavailable => {
                "Your home organisation's sign-in service cannot be reached just now. Try again in a few minutes."
            }
            StopReason::UpstreamRejected => {
                "Your home organisation's sign-in service sent an answer that could not be trusted, so the sign-in was stopped."
            }
            StopReason::UpstreamAccount => {
                "Your account was recognised, but it cannot be used to sign in here. Ask the administrator."
            }
        }
    }
}

/// A successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The opaque access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The signed id_token, when `openid` was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// A refresh token, when the client may have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Refresh-token lifetime in seconds, alongside a refresh token (not in RFC 6749; clients ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_in: Option<u64>,
}

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
    /// Whether the page offers the username and password form.
    #[serde(default = "yes")]
    pub local_accounts: bool,
    /// Upstream providers the page offers a "Continue with …" button for.
    #[serde(default)]
    pub upstreams: Vec<UpstreamButton>,
}

fn yes() -> bool {
    true
}

/// A "Continue with …" button of the login page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamButton {
    /// The upstream's id.
    pub id: String,
    /// Its name, for the button's label.
    pub name: String,
    /// Where the button goes (a top-level navigation).
    pub url: String,
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

/// A successful login: the browser goes to `redirect_to` with a top-level navigation, which sets the
/// SSO session cookie on the API's origin and ends at the client's redirect URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Where to navigate next.
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
    /// The upstream that vouches for the account (an LDAP directory) cannot be asked just now.
    UpstreamUnavailable,
    /// The upstream knows the person, but they cannot sign in here (disabled, no account made for them).
    AccountUnavailable,
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

#[cfg(test)]
mod stop_reason_tests {
    use super::StopReason;

    #[test]
    fn wire_names_round_trip() {
        for r in [
            StopReason::UnknownClient,
            StopReason::InvalidRedirectUri,
            StopReason::InvalidRequest,
            StopReason::RequestExpired,
        ] {
            assert_eq!(StopReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json_name(r), r.as_str());
        }
    }

    fn serde_json_name(r: StopReason) -> String {
        serde_json::to_value(r).unwrap().as_str().unwrap().to_owned()
    }
}
