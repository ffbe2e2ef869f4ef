//! The login UI: its run-time configuration and, when Postern serves it, the built files with
//! `index.html` for client-side routes (`/login?…`, `/callback?…`) and, answered 404, unknown paths.

use axum::extract::{Request, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;
use url::Url;

use super::AppState;
use crate::config::{Config, SELF_TEST_CLIENT_ID};

/// `GET /ui-config.json`: what the UI needs to know at run time.
pub async fn ui_config(State(state): State<AppState>) -> Response {
    let c = &state.config;
    let body = shared::UiConfig {
        api_base: c.issuer_id().to_owned(),
        product_name: c.ui.product_name.clone(),
        logo_url: c.ui.logo_url.clone(),
        self_test_client_id: c.ui.self_test_client.then(|| SELF_TEST_CLIENT_ID.to_owned()),
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(origin) = c.cross_origin_ui().and_then(|o| HeaderValue::from_str(&o).ok()) {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

/// The Content-Security-Policy of UI pages: only the app's own script and WASM, no inline code.
pub fn content_security_policy(config: &Config) -> String {
    let origin_of = |url: &str| Url::parse(url).ok().map(|u| u.origin().ascii_serialization());
    let mut connect = String::from("'self'");
    if config.cross_origin_ui().is_some() {
        connect = format!("'self' {}", config.issuer.origin().ascii_serialization());
    }
    let mut img = String::from("'self' data:");
    if let Some(logo) = config.ui.logo_url.as_deref().and_then(origin_of) {
        img = format!("{img} {logo}");
    }
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src {img}; \
         connect-src {connect}; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The built UI: its files, the app's routes, and for any other path the app's page with 404
/// (the app renders "not found"; crawlers and monitors see the status).
pub fn static_files(config: &Config) -> Router<AppState> {
    let dir = &config.ui.dir;
    let csp = HeaderValue::from_str(&content_security_policy(config)).expect("the policy is ASCII");
    let index = ServeFile::new(dir.join("index.html")).precompressed_br().precompressed_gzip();
    let not_found = {
        let index = index.clone();
        move |request: Request| not_found_page(index.clone(), request)
    };
    let files = ServeDir::new(dir).precompressed_br().precompressed_gzip().fallback(not_found.into_service());
    let mut router = Router::new();
    for route in shared::UI_ROUTES {
        router = router.route_service(route, index.clone());
    }
    router
        .fallback_service(files)
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, csp))
        // File names carry no hash: revalidate every time (Last-Modified makes that cheap).
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
}

/// `index.html` answered 404. Without the conditional and range headers: a 304 or 206 relabelled
/// 404 would reach the browser as an empty or partial page.
async fn not_found_page(mut index: ServeFile, mut request: Request) -> Response {
    for name in
        [header::IF_MODIFIED_SINCE, header::IF_UNMODIFIED_SINCE, header::IF_NONE_MATCH, header::IF_RANGE, header::RANGE]
    {
        request.headers_mut().remove(name);
    }
    match index.try_call(request).await {
        Ok(response) => (StatusCode::NOT_FOUND, response).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the UI's index.html cannot be read");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
