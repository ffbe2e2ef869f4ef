//! `/callback`: the UI's own relying party finishes its sign-in and shows what an application receives.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use oauth2::CsrfToken;
use serde_json::Value;
use shared::{TokenResponse, UiConfig};

use crate::api;
use crate::app::set_title;
use crate::format::{duration, utc};
use crate::oidc::{end_session_url, jwt_claims, ui_url, PendingSignIn, SIGN_OUT_STATE_KEY, STORAGE_KEY};

/// Everything the callback learned.
#[derive(Clone)]
struct Outcome {
    tokens: TokenResponse,
    claims: Value,
    userinfo: Value,
    nonce_ok: bool,
    end_session_endpoint: Option<String>,
}

fn take_pending() -> Option<PendingSignIn> {
    let storage = web_sys::window()?.session_storage().ok()??;
    let value = storage.get_item(STORAGE_KEY).ok()??;
    // One callback per sign-in: a reload cannot replay it.
    let _ = storage.remove_item(STORAGE_KEY);
    serde_json::from_str(&value).ok()
}

async fn finish(config: UiConfig, code: String, state: String) -> Result<Outcome, String> {
    let client_id = config.self_test_client_id.ok_or("The self-test client is not enabled.")?;
    let pending =
        take_pending().ok_or("No sign-in was started from this browser tab (or it was already completed).")?;
    if pending.state.secret() != &state {
        return Err("The state does not match the sign-in this tab started; the response was ignored.".into());
    }
    let tokens = api::exchange_code(&config.api_base, &client_id, &code, &ui_url("/callback"), &pending.verifier)
        .await
        .map_err(|e| format!("The code exchange failed: {e}"))?;
    let claims =
        tokens.id_token.as_deref().and_then(jwt_claims).ok_or("The token response has no readable id_token.")?;
    let nonce_ok = claims["nonce"].as_str() == Some(pending.nonce.as_str());
    let userinfo = api::userinfo(&config.api_base, &tokens.access_token)
        .await
        .map_err(|e| format!("The userinfo request failed: {e}"))?;
    // Only the sign-out needs discovery: without it the page still shows the sign-in, minus that button.
    let end_session_endpoint = api::discovery(&config.api_base).await.ok().and_then(|d| d.end_session_endpoint);
    Ok(Outcome { tokens, claims, userinfo, nonce_ok, end_session_endpoint })
}

/// Ends the SSO session at Postern, which sends the browser to `/signed-out` with the `state` kept here.
fn sign_out(endpoint: &str, id_token: &str) {
    let state = CsrfToken::new_random();
    let Some(window) = web_sys::window() else { return };
    if let Ok(Some(storage)) = window.session_storage() {
        let _ = storage.set_item(SIGN_OUT_STATE_KEY, state.secret());
    }
    let _ = window.location().assign(&end_session_url(endpoint, id_token, &ui_url("/signed-out"), &state));
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A JWT time claim as a UTC date, or a dash when the token lacks it.
fn claim_time(claims: &Value, name: &str) -> String {
    claims[name].as_i64().map_or_else(|| "—".into(), utc)
}

/// How long the id_token is valid: `exp − iat`.
fn id_token_lifetime(claims: &Value) -> String {
    match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) if exp >= iat => duration((exp - iat) as u64),
        _ => "—".into(),
    }
}

fn refresh_token_lifetime(tokens: &TokenResponse) -> String {
    match (&tokens.refresh_token, tokens.refresh_token_expires_in) {
        (None, _) => "none issued".into(),
        (Some(_), Some(seconds)) => format!("{} (a new refresh token with every use)", duration(seconds)),
        (Some(_), None) => "issued, lifetime not stated (a new refresh token with every use)".into(),
    }
}

/// What to say for an OAuth error code (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6); the query's own
/// text (`error_description`) is never shown.
fn error_message(code: &str) -> &'static str {
    match code {
        "access_denied" => "The sign-in was refused.",
        "login_required" | "interaction_required" | "consent_required" | "account_selection_required" => {
            "You are not signed in, and the application asked not to show the sign-in page."
        }
        "invalid_request"
        | "invalid_request_uri"
        | "invalid_request_object"
        | "request_not_supported"
        | "request_uri_not_supported" => "The sign-in request was malformed.",
        "invalid_scope" => "The sign-in asked for permissions this application may not have.",
        "unauthorized_client" | "unsupported_response_type" => "This application may not sign in this way.",
        "temporarily_unavailable" => "The sign-in service is busy. Try again in a few minutes.",
        "server_error" => "The sign-in service failed. Try again later.",
        _ => "The sign-in returned an error.",
    }
}

/// The callback page.
#[component]
pub fn Callback() -> impl IntoView {
    set_title("Sign-in result");
    let config = expect_context::<UiConfig>();
    let query = use_query_map().get_untracked();
    let (outcome, set_outcome) = signal(None::<Result<Outcome, String>>);
    match (query.get("code"), query.get("state"), query.get("error")) {
        // Only known codes are named: this page is on the identity provider's origin, and anyone can
        // link to it with a query of their choosing.
        (_, _, Some(error)) => set_outcome.set(Some(Err(error_message(&error).into()))),
        (Some(code), Some(state), None) => {
            spawn_local(async move { set_outcome.set(Some(finish(config, code, state).await)) })
        }
        _ => set_outcome.set(Some(Err("This page is where a sign-in returns; it was opened without one.".into()))),
    }
    move || match outcome.get() {
        None => view! { <p class="loading" aria-busy="true">"Completing the sign-in…"</p> }.into_any(),
        Some(Err(message)) => view! {
            <section class="card">
                <h1>"Sign-in failed"</h1>
                <p class="error-text" role="alert">{message}</p>
                <a class="button" href="/">"Start again"</a>
            </section>
        }
        .into_any(),
        Some(Ok(o)) => {
            let who = o.claims["preferred_username"].as_str().or(o.claims["sub"].as_str()).unwrap_or("?").to_owned();
            let sign_out_button = o.end_session_endpoint.clone().zip(o.tokens.id_token.clone()).map(|(endpoint, id_token)| {
                view! {
                    <button type="button" id="sign-out" class="secondary" on:click=move |_| sign_out(&endpoint, &id_token)>
                        "Sign out"
                    </button>
                }
            });
            view! {
                <section class="card wide">
                    <h1>"Signed in as " <span id="signed-in-user">{who}</span></h1>
                    <p class="lead">"This is what an application such as JupyterHub receives from this sign-in."</p>
                    <dl class="facts">
                        <dt>"Access token lifetime"</dt><dd id="expires-in">{duration(o.tokens.expires_in)}</dd>
                        <dt>"Refresh token lifetime"</dt><dd id="refresh-lifetime">{refresh_token_lifetime(&o.tokens)}</dd>
                        <dt>"id_token lifetime"</dt><dd id="id-token-lifetime">{id_token_lifetime(&o.claims)}</dd>
                        <dt>"id_token issued (iat)"</dt><dd id="id-token-iat">{claim_time(&o.claims, "iat")}</dd>
                        <dt>"id_token expires (exp)"</dt><dd id="id-token-exp">{claim_time(&o.claims, "exp")}</dd>
                        <dt>"Signed in at (auth_time)"</dt><dd id="id-token-auth-time">{claim_time(&o.claims, "auth_time")}</dd>
                        <dt>"Granted scopes"</dt><dd>{o.tokens.scope.clone()}</dd>
                        <dt>"Nonce"</dt><dd>{if o.nonce_ok { "matches" } else { "does not match!" }}</dd>
                    </dl>
                    <h2>"id_token claims"</h2>
                    <pre id="id-token-claims">{pretty(&o.claims)}</pre>
                    <h2>"userinfo"</h2>
                    <pre id="userinfo">{pretty(&o.userinfo)}</pre>
                    <div class="actions">
                        <a class="button" href="/">"Done"</a>
                        {sign_out_button}
                    </div>
                </section>
            }
            .into_any()
        }
    }
}
