//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): `/end-session` ends the SSO session
//! and returns the browser to a registered `post_logout_redirect_uri`, with `state`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use shared::StopReason;
use subtle::ConstantTimeEq;

use super::authorize::{see_other, with_query};
use super::client_ip::ClientIp;
use super::page::{self, escape};
use super::params::{is_form, Params};
use super::{session, AppState, Error};
use crate::audit;
use crate::keys::Unverified;

/// `GET` or `POST /end-session`.
pub async fn end_session(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Error> {
    // OIDC RP-Initiated Logout §2, plus the confirmation form's own field.
    const KNOWN: &[&str] = &["id_token_hint", "client_id", "post_logout_redirect_uri", "state", "confirm"];
    let params = if method == Method::POST && is_form(&headers) {
        Params::parse(&body, KNOWN)
    } else {
        Params::parse(query.unwrap_or_default().as_bytes(), KNOWN)
    };
    if params.duplicate().is_some() {
        return Err(state.stop(StopReason::InvalidRequest));
    }

    // Which client asks: the id_token_hint's audience (signed by us), or client_id; never two different ones.
    // A hint signed by a key no longer held (retired since) is as good as none: the user is asked.
    let hint = match params.get("id_token_hint").map(|jwt| state.keys.current().check(jwt)) {
        None | Some(Err(Unverified::UnknownKey)) => None,
        Some(Ok(claims)) => Some(claims),
        Some(Err(Unverified::Invalid)) => return Err(state.stop(StopReason::InvalidRequest)),
    };
    let hinted_client = hint.as_ref().and_then(|c| c["aud"].as_str().map(str::to_owned));
    let client_id = match (hinted_client, params.get("client_id")) {
        (Some(a), Some(b)) if a != b => return Err(state.stop(StopReason::InvalidRequest)),
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_owned),
    };
    let client = match &client_id {
        Some(id) => Some(state.store.client(id).await?.ok_or_else(|| state.stop(StopReason::UnknownClient))?),
        None => None,
    };

    // Where to go afterwards: only a URI registered for that client, exactly.
    let destination = match params.get("post_logout_redirect_uri") {
        Some(uri) => {
            let registered = client.as_ref().is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
            if !registered {
                return Err(state.stop(StopReason::InvalidRedirectUri));
            }
            match params.get("state") {
                Some(s) => with_query(uri, &[("state", s)]),
                None => uri.to_owned(),
            }
        }
        None => state.config.ui_page("/signed-out"),
    };

    let Some(current) = session::current(&state, &headers).await? else {
        return Ok(see_other(&destination));
    };
    // Bound to the session's user by a hint we signed: sign out at once. Otherwise ask first.
    let user = state.store.user_by_id(current.user_id).await?;
    let bound = hint
        .as_ref()
        .and_then(|c| c["sub"].as_str())
        .is_some_and(|sub| user.as_ref().is_some_and(|u| u.username == sub));
    let confirmed = match (method == Method::POST, params.get("confirm"), session::confirmation_token(&state, &headers))
    {
        (true, Some(given), Some(expected)) => bool::from(given.as_bytes().ct_eq(expected.as_bytes())),
        _ => false,
    };
    if !bound && !confirmed {
        let token = session::confirmation_token(&state, &headers).unwrap_or_default();
        return Ok(confirmation_page(&state, &params, client_id.as_deref(), &token));
    }
    let cookie = session::end(&state, &headers).await?;
    audit::logout(client_id.as_deref().unwrap_or("-"), ip);
    let mut response = see_other(&destination);
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// "Sign out?" with a form that posts back here with the confirmation token.
fn confirmation_page(state: &AppState, params: &Params, client_id: Option<&str>, token: &str) -> Response {
    let mut fields = format!(r#"<input type="hidden" name="confirm" value="{}">"#, escape(token));
    if let Some(id) = client_id {
        fields += &format!(r#"<input type="hidden" name="client_id" value="{}">"#, escape(id));
    }
    for key in ["post_logout_redirect_uri", "state"] {
        if let Some(value) = params.get(key) {
            fields += &format!(r#"<input type="hidden" name="{key}" value="{}">"#, escape(value));
        }
    }
    let product = escape(&state.config.ui.product_name);
    let body = format!(
        "<h1>Sign out of {product}?</h1><p>An application asked to end your {product} session in this browser.</p>\
         <form method=\"post\" action=\"{action}\">{fields}<button type=\"submit\">Sign out</button></form>",
        action = escape(&state.config.endpoint("/end-session")),
    );
    page::render(StatusCode::OK, &format!("Sign out · {}", state.config.ui.product_name), &body)
}
