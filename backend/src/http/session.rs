//! The SSO session cookie: an opaque random id, stored only as a hash.

use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};

use super::{now, AppState};
use crate::store::{Session, StoreResult, Timestamp};
use crate::tokens;

/// The session id from the request's cookies, if any.
pub fn cookie_value(state: &AppState, headers: &HeaderMap) -> Option<String> {
    find_cookie(headers, &state.config.session_cookie())
}

/// The value of the cookie `name` in the request's `Cookie` headers.
pub fn find_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The live session of this browser, if it has one.
pub async fn current(state: &AppState, headers: &HeaderMap) -> StoreResult<Option<Session>> {
    match cookie_value(state, headers) {
        Some(id) => state.store.session(&tokens::hash(&id), now(), state.config.session.idle_timeout as i64).await,
        None => Ok(None),
    }
}

/// Starts a new session for `user_id` (ending the browser's previous one) and returns its `Set-Cookie`.
pub async fn start(
    state: &AppState,
    headers: &HeaderMap,
    user_id: i64,
    auth_time: Timestamp,
) -> StoreResult<HeaderValue> {
    if let Some(old) = cookie_value(state, headers) {
        state.store.delete_session(&tokens::hash(&old)).await?;
    }
    let id = tokens::random_token();
    let lifetime = state.config.session.lifetime;
    let session = Session { user_id, auth_time, expires_at: auth_time + lifetime as i64 };
    state.store.create_session(&tokens::hash(&id), &session, now()).await?;
    Ok(set_cookie(state, state.config.session_cookie(), id, Some(lifetime as i64)))
}

/// Ends this browser's session, if any, and returns the `Set-Cookie` that removes the cookie.
pub async fn end(state: &AppState, headers: &HeaderMap) -> StoreResult<HeaderValue> {
    if let Some(id) = cookie_value(state, headers) {
        state.store.delete_session(&tokens::hash(&id)).await?;
    }
    Ok(set_cookie(state, state.config.session_cookie(), String::new(), Some(0)))
}

/// This browser's binding value, and the `Set-Cookie` that gives it one if it has none yet. The value
/// is kept for the browser session, so sign-ins started in several tabs all stay valid.
pub fn browser_binding(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let name = state.config.browser_cookie();
    if let Some(value) = find_cookie(headers, &name).filter(|v| tokens::is_token(v)) {
        return (value, None);
    }
    let value = tokens::random_token();
    let header = set_cookie(state, name, value.clone(), None);
    (value, Some(header))
}

/// The one way Postern sets a cookie: host-only, `Path=/`, HttpOnly, SameSite=Lax, Secure on https
/// (where the name carries the `__Host-` prefix); `max_age` in seconds, none for the browser session.
fn set_cookie(state: &AppState, name: String, value: String, max_age: Option<i64>) -> HeaderValue {
    let mut cookie = Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(state.config.secure_cookies())
        .same_site(SameSite::Lax)
        .build();
    if let Some(seconds) = max_age {
        cookie.set_max_age(cookie::time::Duration::seconds(seconds));
    }
    HeaderValue::from_str(&cookie.to_string()).expect("cookie names and base64url values are valid in a header")
}

/// Whether this request comes from the browser whose binding cookie hashes to `expected`.
pub fn is_same_browser(state: &AppState, headers: &HeaderMap, expected: Option<&[u8]>) -> bool {
    use subtle::ConstantTimeEq;
    match (find_cookie(headers, &state.config.browser_cookie()), expected) {
        (Some(value), Some(expected)) => bool::from(tokens::hash(&value).as_slice().ct_eq(expected)),
        _ => false,
    }
}

/// A token that proves a sign-out confirmation came from a page this session was shown: derived
/// from the session cookie, which a cross-site attacker cannot read.
pub fn confirmation_token(state: &AppState, headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let id = cookie_value(state, headers)?;
    let digest = tokens::hash(&format!("end-session:{id}"));
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
}
