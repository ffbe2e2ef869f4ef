//! Entry points for the fuzz targets in `fuzz/`: every parser of untrusted input, callable with
//! arbitrary bytes. Each must return normally for any input.

use std::net::IpAddr;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue};

use super::params::Params;
use crate::keys::{Algorithm, KeySet, SigningKey};
use crate::store::{Client, ClientSource};

/// The authorization request's query string, through parsing and every validation rule.
pub fn authorize_query(input: &[u8]) {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| Client {
        id: "jupyterhub".into(),
        name: "JupyterHub".into(),
        secret_hash: None,
        redirect_uris: vec!["https://hub.example/hub/oauth_callback".into()],
        post_logout_redirect_uris: vec![],
        scopes: crate::claims::SUPPORTED_SCOPES.iter().map(|s| s.to_string()).collect(),
        public: false,
        groups_claim: false,
        require_pkce: true,
        refresh_tokens: true,
        source: ClientSource::Config,
    });
    let params = Params::parse(input, super::authorize::AUTHORIZE_PARAMS);
    let _ = super::authorize::validate(client, &params);
}

/// A token request's form body.
pub fn token_form(input: &[u8]) {
    const KEYS: &[&str] =
        &["grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope", "client_id"];
    let params = Params::parse(input, KEYS);
    let _ = (params.duplicate(), params.oversized());
    for key in KEYS {
        if let Some(value) = params.get(key) {
            let _ = crate::claims::parse_scope(value);
            let _ = crate::tokens::is_pkce_value(value);
        }
    }
}

/// An `Authorization: Basic` header value.
pub fn basic_header(input: &str) {
    let _ = super::client_auth::parse_basic(input);
}

/// A `Cookie` header.
pub fn cookie_header(input: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(input) {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value);
        let _ = super::session::find_cookie(&headers, "postern_session");
    }
}

/// An `id_token_hint` (a JWT we may have signed).
pub fn jwt_hint(input: &str) {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let (key, _) = SigningKey::generate(Algorithm::ES256).expect("key generation");
        KeySet::from_keys(key, Vec::new())
    });
    let _ = keys.verify(input);
}

/// `X-Forwarded-For` and `X-Forwarded-Proto` headers from a trusted proxy (each line of the input one
/// header line).
pub fn forwarded_for(input: &str) {
    let proxy: IpAddr = [127, 0, 0, 1].into();
    let mut headers = axum::http::HeaderMap::new();
    for line in input.lines() {
        if let Ok(value) = axum::http::HeaderValue::from_str(line) {
            headers.append("x-forwarded-for", value.clone());
            headers.append("x-forwarded-proto", value);
        }
    }
    let trusted = [proxy.into()];
    let _ = super::client_ip::resolve(proxy, &headers, &trusted);
    let _ = super::client_ip::scheme(proxy, &headers, &trusted);
}
