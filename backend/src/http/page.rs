//! The few pages Postern renders itself, without the login UI: one template, one CSP.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::error::no_store;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A small self-contained page: `title` (text) and `body` (HTML, escaped by the caller), never cached,
/// with a CSP that allows its inline style and nothing else.
pub fn render(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}\
         button{{font:inherit;font-weight:600;padding:.7rem 1.2rem;border:0;border-radius:8px;background:#2f5bd3;color:#fff}}\
         @media(prefers-color-scheme:dark){{body{{background:#111;color:#eee}}}}</style></head><body>{body}</body></html>",
        title = escape(title),
    );
    let mut response = (status, Html(page)).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        // No form-action: a confirmed sign-out redirects to the client's registered URI.
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    no_store(response)
}
