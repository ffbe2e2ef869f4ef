//! `/userinfo` (OIDC Core §5.3): the signed-in user's claims for a Bearer access token.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{no_store, OAuthCode};
use super::params::{is_form, Params};
use super::{now, AppState, Error};
use crate::claims::{has_scope, user_claims};
use crate::tokens;

/// The access token of a request: the `Authorization: Bearer` header, or on POST a form field (RFC 6750 §2).
fn bearer_token(method: &Method, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, Error> {
    let header_token = match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(value) => match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Some(token.trim().to_owned())
            }
            _ => return Err(Error::Bearer(Some(OAuthCode::InvalidRequest), "malformed Authorization header".into())),
        },
        None => None,
    };
    let body_token = if method == Method::POST && is_form(headers) {
        Params::parse(body, &["access_token"]).get("access_token").map(str::to_owned)
    } else {
        None
    };
    match (header_token, body_token) {
        (Some(_), Some(_)) => {
            Err(Error::Bearer(Some(OAuthCode::InvalidRequest), "send the access token one way, not two".into()))
        }
        (token, None) | (None, token) => Ok(token),
    }
}

/// `GET` or `POST /userinfo`.
pub async fn userinfo(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let token = bearer_token(&method, &headers, &body)?.ok_or_else(|| Error::Bearer(None, "no access token".into()))?;
    let info = state.store.access_token(&tokens::hash(&token), now()).await?.ok_or_else(|| {
        Error::Bearer(Some(OAuthCode::InvalidToken), "the access token is invalid, expired or revoked".into())
    })?;
    if !has_scope(&info.scope, "openid") {
        return Err(Error::Bearer(
            Some(OAuthCode::InsufficientScope),
            "the token was not granted the openid scope".into(),
        ));
    }
    Ok(no_store(Json(user_claims(&info.user, &info.scope, info.client_groups_claim)).into_response()))
}
