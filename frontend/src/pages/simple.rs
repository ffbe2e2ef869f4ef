//! The small pages: a stopped sign-in, signed out, not found.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use shared::StopReason;

use crate::app::set_title;
use crate::oidc::SIGN_OUT_STATE_KEY;

/// `/error?error=…`: a sign-in request Postern stopped instead of sending back to the application.
#[component]
pub fn ErrorPage() -> impl IntoView {
    set_title("Sign-in stopped");
    let reason = use_query_map().get_untracked().get("error").and_then(|e| StopReason::parse(&e));
    let message = reason.map_or("The sign-in request could not be processed.", StopReason::message);
    view! {
        <section class="card">
            <h1>"This sign-in request cannot continue"</h1>
            <p class="error-text" role="alert">{message}</p>
            <p>"Go back to the application and start again. If this keeps happening, tell its administrator."</p>
        </section>
    }
}

/// Whether this tab's own sign-out came back: the `state` Postern returned is the one the callback kept.
fn own_sign_out_returned(state: Option<String>) -> bool {
    let Some(storage) = web_sys::window().and_then(|w| w.session_storage().ok().flatten()) else { return false };
    let kept = storage.get_item(SIGN_OUT_STATE_KEY).ok().flatten();
    let _ = storage.remove_item(SIGN_OUT_STATE_KEY);
    kept.is_some() && kept == state
}

/// `/signed-out`: where Postern sends the browser after ending a session.
#[component]
pub fn SignedOut() -> impl IntoView {
    set_title("Signed out");
    let state = use_query_map().get_untracked().get("state");
    // After "Try a sign-in" → "Sign out", offer the way back; other visitors just close the tab.
    let again = own_sign_out_returned(state).then(|| {
        view! { <a class="button" id="try-again" href="/">"Try a sign-in again"</a> }
    });
    view! {
        <section class="card">
            <h1>"You are signed out"</h1>
            <p class="lead">"Your sign-in session has ended. You can close this tab."</p>
            {again}
        </section>
    }
}

/// Any other path.
#[component]
pub fn NotFound() -> impl IntoView {
    set_title("Not found");
    view! {
        <section class="card">
            <h1>"Page not found"</h1>
            <p class="lead">"There is nothing at this address."</p>
            <a class="button" href="/">"Go to the start page"</a>
        </section>
    }
}
