//! Calls to Postern's API, with the `shared` types.

use gloo_net::http::{Request, Response};
use oauth2::PkceCodeVerifier;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use shared::{ErrorBody, ErrorCode, LoginRequest, LoginResponse, PendingRequest, TokenResponse, UiConfig};

/// A failed call, ready to show: the API's own message, or one for a network failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The login API's error code, when it sent one.
    pub code: Option<ErrorCode>,
    /// What to show.
    pub message: String,
}

impl Failure {
    fn network(e: impl std::fmt::Display) -> Self {
        Failure {
            code: None,
            message: format!("Postern could not be reached ({e}). Check your connection and try again."),
        }
    }
}

async fn read<T: DeserializeOwned>(response: Result<Response, gloo_net::Error>) -> Result<T, Failure> {
    let response = response.map_err(Failure::network)?;
    if response.ok() {
        return response.json::<T>().await.map_err(Failure::network);
    }
    match response.json::<ErrorBody>().await {
        Ok(body) => Err(Failure { code: Some(body.error), message: body.message }),
        Err(_) => Err(Failure {
            code: None,
            message: format!("Postern answered {} {}.", response.status(), response.status_text()),
        }),
    }
}

/// The UI's run-time configuration, from its own origin.
pub async fn ui_config() -> Result<UiConfig, Failure> {
    read(Request::get(shared::UI_CONFIG_PATH).send().await).await
}

/// What the login page shows about a pending request.
pub async fn pending_request(api: &str, handle: &str) -> Result<PendingRequest, Failure> {
    let url = format!("{api}{}/{handle}", shared::AUTHORIZATION_REQUEST_PATH);
    read(Request::get(&url).send().await).await
}

/// Submits credentials.
pub async fn login(api: &str, body: &LoginRequest) -> Result<LoginResponse, Failure> {
    // No cookies: no route the login page calls reads one (the browser's binding is checked by its
    // top-level visit to /authorize/resume).
    let request = Request::post(&format!("{api}{}", shared::LOGIN_PATH)).json(body).map_err(Failure::network)?;
    read(request.send().await).await
}

/// Exchanges the UI's own authorization code (public client, PKCE).
pub async fn exchange_code(
    api: &str,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &PkceCodeVerifier,
) -> Result<TokenResponse, String> {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("client_id", client_id)
        .append_pair("code_verifier", verifier.secret())
        .finish();
    let response = Request::post(&format!("{api}/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| e.to_string())?;
    oauth_json(response).await
}

/// The parts of the provider's metadata (OIDC Discovery 1.0 §3) the UI uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Where RP-initiated logout goes, when the provider offers it.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// The provider's metadata, from the issuer's well-known address.
pub async fn discovery(api: &str) -> Result<Discovery, String> {
    let response =
        Request::get(&format!("{api}/.well-known/openid-configuration")).send().await.map_err(|e| e.to_string())?;
    oauth_json(response).await
}

/// The userinfo response for an access token.
pub async fn userinfo(api: &str, access_token: &str) -> Result<serde_json::Value, String> {
    let response = Request::get(&format!("{api}/userinfo"))
        .header("Authorization", &format!("Bearer {access_token}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    oauth_json(response).await
}

async fn oauth_json<T: DeserializeOwned>(response: Response) -> Result<T, String> {
    if response.ok() {
        return response.json().await.map_err(|e| e.to_string());
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Err(format!(
        "{} {}",
        body["error"].as_str().unwrap_or("error"),
        body["error_description"].as_str().unwrap_or_default()
    ))
}
