//! Postern's login UI: a Leptos client-side app (login, callback, error and small pages around them).

pub mod api;
pub mod app;
pub mod format;
pub mod oidc;
pub mod pages;
