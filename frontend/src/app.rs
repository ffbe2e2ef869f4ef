//! The app shell: loads the run-time configuration, then routes to the pages.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use shared::UiConfig;

use crate::api::{self, Failure};
use crate::pages::{Callback, ErrorPage, Home, Login, NotFound, SignedOut};

/// Sets the document title as "<page> · <product>".
pub fn set_title(page: &str) {
    if let Some(document) = web_sys::window().and_then(|w| w.document()) {
        let product = use_context::<UiConfig>().map(|c| c.product_name).unwrap_or_else(|| "Postern".into());
        document.set_title(&format!("{page} · {product}"));
    }
}

/// The root component.
#[component]
pub fn App() -> impl IntoView {
    let (config, set_config) = signal(None::<Result<UiConfig, Failure>>);
    spawn_local(async move { set_config.set(Some(api::ui_config().await)) });
    move || match config.get() {
        None => view! { <p class="loading" aria-busy="true">"Loading…"</p> }.into_any(),
        Some(Err(failure)) => {
            // No configuration, so no product name: set_title falls back to "Postern".
            set_title("Sign-in is unavailable");
            view! {
                <main class="page">
                    <section class="card">
                        <h1>"Sign-in is unavailable"</h1>
                        <p class="error-text">{failure.message}</p>
                    </section>
                </main>
            }
            .into_any()
        }
        Some(Ok(config)) => {
            provide_context(config.clone());
            view! { <Shell config=config/> }.into_any()
        }
    }
}

#[component]
fn Shell(config: UiConfig) -> impl IntoView {
    let logo = match config.logo_url.clone() {
        Some(src) => view! { <img class="logo" src=src alt="" width="32" height="32"/> }.into_any(),
        None => view! { <Mark/> }.into_any(),
    };
    view! {
        <Router>
            <header class="top">
                <a class="brand" href="/">{logo}<span>{config.product_name.clone()}</span></a>
            </header>
            <main class="page">
                // Besides "/", the same paths as shared::UI_ROUTES, which `postern serve` answers with 200.
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("/") view=Home/>
                    <Route path=path!("/login") view=Login/>
                    <Route path=path!("/callback") view=Callback/>
                    <Route path=path!("/error") view=ErrorPage/>
                    <Route path=path!("/signed-out") view=SignedOut/>
                </Routes>
            </main>
            <footer class="bottom">"Secured by " {config.product_name}</footer>
        </Router>
    }
}

/// Postern's mark: a gate.
#[component]
fn Mark() -> impl IntoView {
    view! {
        <svg class="logo" viewBox="0 0 32 32" width="32" height="32" aria-hidden="true">
            <rect x="3" y="3" width="26" height="26" rx="7" class="mark-bg"/>
            <path d="M10 24V14a6 6 0 0 1 12 0v10" class="mark-arch"/>
            <path d="M16 18v6" class="mark-arch"/>
        </svg>
    }
}
