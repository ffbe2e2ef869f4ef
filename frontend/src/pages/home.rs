//! `/`: what this is, and "Try a sign-in" with the UI's own client.

use leptos::prelude::*;
use shared::UiConfig;

use crate::app::set_title;
use crate::oidc::{authorization_url, ui_url, PendingSignIn, STORAGE_KEY};

fn start_sign_in(config: &UiConfig, client_id: &str) {
    let pending = PendingSignIn::new();
    let Some(window) = web_sys::window() else { return };
    if let Ok(Some(storage)) = window.session_storage() {
        let _ = storage.set_item(STORAGE_KEY, &serde_json::to_string(&pending).unwrap_or_default());
    }
    let url = authorization_url(&config.api_base, client_id, &ui_url("/callback"), &pending);
    let _ = window.location().assign(&url);
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
