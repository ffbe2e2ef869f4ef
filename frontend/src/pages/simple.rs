//! The small pages: a stopped sign-in, signed out, not found.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use shared::StopReason;

use crate::app::set_title;

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

/// `/signed-out`.
#[component]
pub fn SignedOut() -> impl IntoView {
    set_title("Signed out");
    view! {
        <section class="card">
            <h1>"You are signed out"</h1>
            <p class="lead">"Your sign-in session has ended. You can close this tab."</p>
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
