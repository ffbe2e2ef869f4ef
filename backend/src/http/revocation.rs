//! Token revocation (RFC 7009) and introspection (RFC 7662), both for authenticated clients and
//! only for their own tokens.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::client_auth::authenticate;
use super::client_ip::ClientIp;
use super::error::{no_store, OAuthCode};
use super::params::{is_form, Params};
use super::{now, AppState, Error};
use crate::audit;
use crate::store::Client;
use crate::tokens;

/// Parses a form request and authenticates its client; returns the client and the `token`.
async fn client_and_token(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    ip: IpAddr,
) -> Result<(Client, String), Error> {
    if !is_form(headers) {
        return Err(Error::oauth(OAuthCode::InvalidRequest, "the body must be application/x-www-form-urlencoded"));
    }
    // RFC 7009 §2.1 and RFC 7662 §2.1; token_type_hint is optional and lookups try every kind anyway.
    let params = Params::parse(body, &["token", "token_type_hint", "client_id", "client_secret"]);
    if let Some(key) = params.duplicate() {
        return Err(Error::oauth(OAuthCode::InvalidRequest, format!("the parameter {key} was given more than once")));
    }
    let client = authenticate(state, headers, &params, ip).await?;
    let token = params.get("token").ok_or_else(|| Error::oauth(OAuthCode::InvalidRequest, "token is missing"))?;
    Ok((client, token.to_owned()))
}

/// `POST /revoke`: a refresh token revokes its whole grant; an access token only itself. Unknown
/// tokens and other clients' tokens are answered 200 and left alone (RFC 7009 §2.2).
pub async fn revoke(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let (client, token) = client_and_token(&state, &headers, &body, ip).await?;
    let hash = tokens::hash(&token);
    let now = now();
    if let Some(refresh) = state.store.refresh_token(&hash).await? {
        if refresh.grant.client_id == client.id {
            state.store.revoke_grant(refresh.grant.id, now).await?;
            audit::token_revoked("refresh_token", &client.id, ip);
        }
    } else if let Some(access) = state.store.access_token(&hash, now).await? {
        if access.client_id == client.id && state.store.revoke_access_token(&hash).await? {
            audit::token_revoked("access_token", &client.id, ip);
        }
    }
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `POST /introspect`: whether a token is active, and what it carries. Confidential clients only.
pub async fn introspect(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let (client, token) = client_and_token(&state, &headers, &body, ip).await?;
    if client.public {
        return Err(Error::oauth(OAuthCode::InvalidClient, "introspection needs client authentication"));
    }
    let hash = tokens::hash(&token);
    let now = now();
    let issuer = state.config.issuer_id();
    let inactive = || no_store(Json(json!({ "active": false })).into_response());
    if let Some(access) = state.store.access_token(&hash, now).await? {
        if access.client_id != client.id {
            return Ok(inactive());
        }
        return Ok(no_store(
            Json(json!({
                "active": true,
                "token_type": "Bearer",
                "scope": access.scope,
                "client_id": access.client_id,
                "sub": access.user.username,
                "username": access.user.username,
                "exp": access.expires_at,
                "iss": issuer,
            }))
            .into_response(),
        ));
    }
    let Some(refresh) = state.store.refresh_token(&hash).await? else {
        return Ok(inactive());
    };
    let grant = &refresh.grant;
    if grant.client_id != client.id || refresh.used || grant.revoked_at.is_some() || refresh.expires_at <= now {
        return Ok(inactive());
    }
    match state.store.user_by_id(grant.user_id).await? {
        Some(user) if !user.disabled => Ok(no_store(
            Json(json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": refresh.scope,
                "client_id": grant.client_id,
                "sub": user.username,
                "username": user.username,
                "exp": refresh.expires_at,
                "iss": issuer,
            }))
            .into_response(),
        )),
        _ => Ok(inactive()),
    }
}
