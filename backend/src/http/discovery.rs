//! OpenID Provider metadata (OIDC Discovery 1.0 §3) and the JWK Set.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::claims::SUPPORTED_SCOPES;
use crate::config::Config;

/// Both documents change only with the configuration or the keys, so they are serialised ahead of time.
fn cacheable(json: Bytes) -> Response {
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    // Relying parties in browsers fetch these; they carry nothing secret.
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// `GET /.well-known/openid-configuration`.
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    cacheable(state.discovery.clone())
}

/// The OpenID Provider metadata document for this configuration.
pub fn metadata(c: &Config) -> Bytes {
    let document = json!({
        "issuer": c.issuer_id(),
        "authorization_endpoint": c.endpoint("/authorize"),
        "token_endpoint": c.endpoint("/token"),
        "userinfo_endpoint": c.endpoint("/userinfo"),
        "jwks_uri": c.endpoint("/jwks.json"),
        "revocation_endpoint": c.endpoint("/revoke"),
        "introspection_endpoint": c.endpoint("/introspect"),
        "end_session_endpoint": c.endpoint("/end-session"),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": SUPPORTED_SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [c.tokens.signing_alg.name()],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "amr",
            "name", "preferred_username", "email", "email_verified", "groups"
        ],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    });
    Bytes::from(document.to_string())
}

/// `GET /jwks.json`.
pub async fn jwks(State(state): State<AppState>) -> Response {
    cacheable(Bytes::copy_from_slice(state.keys.current().jwks_json().as_bytes()))
}
