//! `/login?request=…`: which application asks, for what, and the credentials form.

use leptos::ev::SubmitEvent;
use leptos::html::Input;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use shared::{ErrorCode, LoginRequest, PendingRequest, StopReason, UiConfig};

use crate::api::{self, Failure};
use crate::app::set_title;

/// What each scope lets the application see, in words.
fn describe(scope: &str) -> Option<&'static str> {
    match scope {
        "openid" => Some("Confirm who you are"),
        "profile" => Some("Your name and username"),
        "email" => Some("Your e-mail address"),
        "groups" => Some("Your group memberships"),
        _ => None,
    }
}

/// The login page.
#[component]
pub fn Login() -> impl IntoView {
    set_title("Sign in");
    let config = expect_context::<UiConfig>();
    let handle = use_query_map().get_untracked().get("request").unwrap_or_default();
    let (pending, set_pending) = signal(None::<Result<PendingRequest, Failure>>);
    {
        let (api, handle) = (config.api_base.clone(), handle.clone());
        spawn_local(async move {
            let result = if handle.is_empty() {
                Err(Failure {
                    code: None,
                    message: "This page needs a sign-in request. Start from the application you want to use.".into(),
                })
            } else {
                api::pending_request(&api, &handle).await
            };
            set_pending.set(Some(result));
        });
    }
    move || match pending.get() {
        None => view! { <p class="loading" aria-busy="true">"Loading…"</p> }.into_any(),
        Some(Err(failure)) => view! {
            <section class="card">
                <h1>"This sign-in cannot continue"</h1>
                <p class="error-text" role="alert">{failure.message}</p>
            </section>
        }
        .into_any(),
        Some(Ok(request)) => view! { <LoginForm request=request handle=handle.clone()/> }.into_any(),
    }
}

/// Which fields the current error is about, for `aria-invalid`.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Invalid {
    username: bool,
    password: bool,
}

#[component]
fn LoginForm(request: PendingRequest, handle: String) -> impl IntoView {
    let api = expect_context::<UiConfig>().api_base;
    let (username, set_username) = signal(String::new());
    let (password, set_password) = signal(String::new());
    let (submitting, set_submitting) = signal(false);
    // The request expired or was completed elsewhere: nothing typed here can succeed any more.
    let (ended, set_ended) = signal(false);
    let (error, set_error) = signal(String::new());
    let (invalid, set_invalid) = signal(Invalid::default());
    let username_input = NodeRef::<Input>::new();
    let password_input = NodeRef::<Input>::new();
    let focus = |input: NodeRef<Input>| {
        if let Some(input) = input.get_untracked() {
            let _ = input.focus();
        }
    };
    // The form appears after the request loads, so the autofocus attribute alone may be too late.
    Effect::new(move |_| {
        if let Some(input) = username_input.get() {
            let _ = input.focus();
        }
    });

    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if submitting.get_untracked() || ended.get_untracked() {
            return;
        }
        let body = LoginRequest {
            request: handle.clone(),
            username: username.get_untracked(),
            password: password.get_untracked(),
        };
        let missing = Invalid { username: body.username.trim().is_empty(), password: body.password.is_empty() };
        if missing != Invalid::default() {
            set_error.set("Enter your username and password.".into());
            set_invalid.set(missing);
            focus(if missing.username { username_input } else { password_input });
            return;
        }
        set_error.set(String::new());
        set_invalid.set(Invalid::default());
        set_submitting.set(true);
        let api = api.clone();
        spawn_local(async move {
            match api::login(&api, &body).await {
                Ok(done) => {
                    // A top-level navigation: Postern sets the session cookie and sends the browser on.
                    if let Some(window) = web_sys::window() {
                        let _ = window.location().assign(&done.redirect_to);
                    }
                }
                Err(failure) => {
                    set_submitting.set(false);
                    set_password.set(String::new());
                    match failure.code {
                        Some(ErrorCode::RequestNotFound) => {
                            set_ended.set(true);
                            set_error.set(expired_message());
                        }
                        code => {
                            let both = code == Some(ErrorCode::InvalidCredentials);
                            set_invalid.set(Invalid { username: both, password: both });
                            set_error.set(failure.message);
                            focus(password_input);
                        }
                    }
                }
            }
        });
    };

    // aria-invalid is left out, rather than "false", while a field is fine.
    let invalid_attr = move |pick: fn(Invalid) -> bool| move || pick(invalid.get()).then_some("true");
    let consent = (!request.scopes.is_empty()).then(|| {
        let items = request
            .scopes
            .into_iter()
            .map(|scope| match describe(&scope) {
                Some(words) => view! { <li>{words}</li> }.into_any(),
                // A scope this page has no words for is still shown: nothing is granted unseen.
                None => view! { <li><code>{scope}</code></li> }.into_any(),
            })
            .collect_view();
        view! {
            <div class="consent">
                <p>"The application will be able to:"</p>
                <ul class="scopes">{items}</ul>
            </div>
        }
    });
    // One "Continue with …" link per upstream provider: a top-level navigation through Postern to it
    // (rel="external": not a route of this app for the router to take over).
    let has_buttons = !request.upstreams.is_empty();
    let buttons = has_buttons.then(|| {
        let links = request
            .upstreams
            .iter()
            .map(|u| view! { <li><a class="button secondary upstream" rel="external" href=u.url.clone()>"Continue with " {u.name.clone()}</a></li> })
            .collect_view();
        view! { <ul class="upstreams">{links}</ul> }
    });
    let divider = (has_buttons && request.local_accounts).then(|| view! { <p class="divider"><span>"or"</span></p> });
    let form = request.local_accounts.then(|| {
        view! {
                <form on:submit=on_submit novalidate>
                    <label for="username">"Username"</label>
                    <input id="username" name="username" type="text" autocomplete="username" autocapitalize="none"
                        spellcheck="false" required autofocus node_ref=username_input aria-describedby="login-error"
                        aria-invalid=invalid_attr(|i| i.username)
                        disabled=move || ended.get()
                        prop:value=move || username.get()
                        on:input=move |ev| set_username.set(event_target_value(&ev))/>
                    <label for="password">"Password"</label>
                    <input id="password" name="password" type="password" autocomplete="current-password" required
                        node_ref=password_input aria-describedby="login-error"
                        aria-invalid=invalid_attr(|i| i.password)
                        disabled=move || ended.get()
                        prop:value=move || password.get()
                        on:input=move |ev| set_password.set(event_target_value(&ev))/>
                    <p id="login-error" class="error-text" role="alert" aria-live="assertive">{move || error.get()}</p>
                    <button type="submit" disabled=move || submitting.get() || ended.get()
                        aria-busy=move || submitting.get().to_string()>
                        {move || if submitting.get() { "Signing in…" } else { "Sign in" }}
                    </button>
                </form>
        }
    });
    view! {
        <section class="card">
            <h1>"Sign in"</h1>
            <p class="lead">"to continue to " <strong class="client">{request.client_name}</strong></p>
            {buttons}
            {divider}
            {form}
            {consent}
        </section>
    }
}

/// What an expired request shows: the stop reason's words and the only way on.
fn expired_message() -> String {
    format!("{} Go back to the application and start again.", StopReason::RequestExpired.message())
}
