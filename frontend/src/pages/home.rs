//! `/`: what this is, and "Try a sign-in" with the UI's own client.

use leptos::prelude::*;
use shared::UiConfig;

use crate::app::set_title;
use crate::oidc::{authorization_url, random_string, PendingSignIn, STORAGE_KEY};

/// The UI's own callback URL on this origin.
pub fn callback_url() -> String {
    let origin = web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default();
    format!("{origin}/callback")
}

fn start_sign_in(config: &UiConfig, client_id: &str) {
    let pending = PendingSignIn { verifier: random_string(), state: random_string(), nonce: random_string() };
    let Some(window) = web_sys::window() else { return };
    if let Ok(Some(storage)) = window.session_storage() {
        let _ = storage.set_item(STORAGE_KEY, &serde_json::to_string(&pending).unwrap_or_default());
    }
    let _ = window.location().assign(&authorization_url(&config.api_base, client_id, &callback_url(), &pending));
}

/// The start page.
#[component]
pub fn Home() -> impl IntoView {
    set_title("Welcome");
    let config = expect_context::<UiConfig>();
    let try_it = config.self_test_client_id.clone().map(|client_id| {
        let config = config.clone();
        view! {
            <button type="button" class="primary" on:click=move |_| start_sign_in(&config, &client_id)>
                "Try a sign-in"
            </button>
            <p class="hint">"Signs you in with this page as the application and shows exactly what an application such as JupyterHub receives."</p>
        }
    });
    view! {
        <section class="card">
            <h1>{config.product_name.clone()}</h1>
            <p class="lead">"This is the sign-in service for your organisation's applications. Applications send you here; you do not need to start here."</p>
            {try_it}
        </section>
    }
}
