//! `/upstreams/{id}/start` and `/upstreams/{id}/callback`: signing in at an upstream OpenID Connect
//! provider for a pending request, and coming back.
//!
//! Both ends are bound to the browser that started the request (its binding cookie), and the
//! provider's `state` finds the request once. The callback URL is fixed (the issuer's
//! `/upstreams/{id}/callback`), never taken from the request. Every failure ends on the error page
//! with an audit event naming its cause; nothing goes back to the relying party but a code.

use std::net::IpAddr;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use shared::StopReason;

use super::authorize::{see_other, with_query};
use super::client_ip::ClientIp;
use super::params::Params;
use super::{login, now, session, AppState, Error};
use crate::audit;
use crate::store::UpstreamLogin;
use crate::tokens;
use crate::upstream::{accounts, UpstreamError};

/// The provider's callback: registered there as Postern's redirect URI.
pub fn callback_url(state: &AppState, id: &str) -> String {
    state.config.endpoint(&format!("/upstreams/{id}/callback"))
}

/// Where the login page's button for `id` goes, for the pending request `handle`.
pub fn start_url(state: &AppState, id: &str, handle: &str) -> String {
    with_query(&state.config.endpoint(&format!("/upstreams/{id}/start")), &[("request", handle)])
}

/// `GET /upstreams/{id}/start?request=…`: sends the browser to the provider.
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let Some(provider) = state.upstreams.provider(&id).cloned() else {
        return Err(state.stop(StopReason::InvalidRequest));
    };
    let params = Params::parse(query.unwrap_or_default().as_bytes(), &["request"]);
    let handle = params.get("request").ok_or_else(|| state.stop(StopReason::RequestExpired))?;
    let request = state
        .store
        .authorization_request(&tokens::handle_key(handle), now())
        .await?
        .ok_or_else(|| state.stop(StopReason::RequestExpired))?;
    if !session::is_same_browser(&state, &headers, request.browser_hash.as_deref()) {
        audit::login_failed("other_browser", &request.client_id, Some(ip));
        return Err(state.stop(StopReason::OtherBrowser));
    }
    let started = match provider.start(&callback_url(&state, &id)).await {
        Ok(started) => started,
        Err(e) => return Err(failed(&state, &id, &request.client_id, ip, e)),
    };
    let login = UpstreamLogin {
        upstream: id,
        state_hash: tokens::hash(&started.state),
        nonce: started.nonce,
        verifier: started.verifier,
    };
    if !state.store.start_upstream_login(&request.id, &login, now()).await? {
        return Err(state.stop(StopReason::RequestExpired));
    }
    Ok(see_other(started.url.as_str()))
}

/// `GET /upstreams/{id}/callback?code=…&state=…[&iss=…]`: the provider's answer.
pub async fn callback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let Some(provider) = state.upstreams.provider(&id).cloned() else {
        return Err(state.stop(StopReason::InvalidRequest));
    };
    let params = Params::parse(query.unwrap_or_default().as_bytes(), &["state", "code", "iss", "error"]);
    let sent_state = params.get("state").ok_or_else(|| state.stop(StopReason::RequestExpired))?;
    let Some((request, login)) = state.store.take_upstream_login(&tokens::hash(sent_state), now()).await? else {
        return Err(state.stop(StopReason::RequestExpired));
    };
    if login.upstream != id {
        return Err(state.stop(StopReason::InvalidRequest));
    }
    if !session::is_same_browser(&state, &headers, request.browser_hash.as_deref()) {
        audit::login_failed("other_browser", &request.client_id, Some(ip));
        return Err(state.stop(StopReason::OtherBrowser));
    }
    if let Some(error) = params.get("error") {
        return Err(failed(
            &state,
            &id,
            &request.client_id,
            ip,
            UpstreamError::Denied(error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect()),
        ));
    }
    let code = params.get("code").ok_or_else(|| state.stop(StopReason::InvalidRequest))?;
    let person =
        match provider.finish(&callback_url(&state, &id), code, params.get("iss"), &login.nonce, &login.verifier).await
        {
            Ok(person) => person,
            Err(e) => return Err(failed(&state, &id, &request.client_id, ip, e)),
        };
    let user = match accounts::sign_in(state.store.as_ref(), &id, provider.config.provision, &person, now()).await? {
        Ok(user) => user,
        Err(refusal) => {
            audit::upstream_login_failed(&id, refusal.reason(), &request.client_id, ip);
            return Err(state.stop(StopReason::UpstreamAccount));
        }
    };
    let Some(resume) = login::complete(&state, &request, &user).await? else {
        return Err(state.stop(StopReason::RequestExpired));
    };
    audit::upstream_login_succeeded(&id, &request.client_id, &user.username, ip);
    Ok(see_other(&resume))
}

/// Ends a sign-in at the provider on the error page, logged and audited with its cause.
fn failed(state: &AppState, id: &str, client_id: &str, ip: IpAddr, error: UpstreamError) -> Error {
    tracing::warn!(upstream = %id, %error, "sign-in through an upstream failed");
    audit::upstream_login_failed(id, error.reason(), client_id, ip);
    state.stop(match error {
        UpstreamError::Unreachable(_) | UpstreamError::Misconfigured(_) => StopReason::UpstreamUnavailable,
        UpstreamError::Rejected(_) => StopReason::UpstreamRejected,
        UpstreamError::Denied(_) => StopReason::UpstreamDenied,
    })
}
