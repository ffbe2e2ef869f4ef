//! `/callback`: the UI's own relying party finishes its sign-in and shows what an application receives.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use serde_json::Value;
use shared::{TokenResponse, UiConfig};

use super::home::callback_url;
use crate::api;
use crate::app::set_title;
use crate::oidc::{jwt_claims, PendingSignIn, STORAGE_KEY};

/// Everything the callback learned.
#[derive(Clone)]
struct Outcome {
    tokens: TokenResponse,
    claims: Value,
    userinfo: Value,
    nonce_ok: bool,
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
    if pending.state != state {
        return Err("The state does not match the sign-in this tab started; the response was ignored.".into());
    }
    let tokens = api::exchange_code(&config.api_base, &client_id, &code, &callback_url(), &pending.verifier)
        .await
        .map_err(|e| format!("The code exchange failed: {e}"))?;
    let claims =
        tokens.id_token.as_deref().and_then(jwt_claims).ok_or("The token response has no readable id_token.")?;
    let nonce_ok = claims["nonce"].as_str() == Some(pending.nonce.as_str());
    let userinfo = api::userinfo(&config.api_base, &tokens.access_token)
        .await
        .map_err(|e| format!("The userinfo request failed: {e}"))?;
    Ok(Outcome { tokens, claims, userinfo, nonce_ok })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The callback page.
#[component]
pub fn Callback() -> impl IntoView {
    set_title("Sign-in result");
    let config = expect_context::<UiConfig>();
    let query = use_query_map().get_untracked();
    let (outcome, set_outcome) = signal(None::<Result<Outcome, String>>);
    match (query.get("code"), query.get("state"), query.get("error")) {
        (_, _, Some(error)) => {
            let description = query.get("error_description").unwrap_or_default();
            set_outcome.set(Some(Err(format!("The sign-in returned an error: {error}. {description}"))));
        }
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
            let refresh = if o.tokens.refresh_token.is_some() { "issued (rotates on every use)" } else { "none" };
            view! {
                <section class="card wide">
                    <h1>"Signed in as " <span id="signed-in-user">{who}</span></h1>
                    <p class="lead">"This is what an application such as JupyterHub receives from this sign-in."</p>
                    <dl class="facts">
                        <dt>"Access token lifetime"</dt><dd id="expires-in">{format!("{} s", o.tokens.expires_in)}</dd>
                        <dt>"Refresh token"</dt><dd>{refresh}</dd>
                        <dt>"Granted scopes"</dt><dd>{o.tokens.scope.clone()}</dd>
                        <dt>"Nonce"</dt><dd>{if o.nonce_ok { "matches" } else { "does not match!" }}</dd>
                    </dl>
                    <h2>"id_token claims"</h2>
                    <pre id="id-token-claims">{pretty(&o.claims)}</pre>
                    <h2>"userinfo"</h2>
                    <pre id="userinfo">{pretty(&o.userinfo)}</pre>
                    <a class="button" href="/">"Done"</a>
                </section>
            }
            .into_any()
        }
    }
}
