//! The HTTP surface: one module per endpoint, assembled into one router.

mod authorize;
mod client_auth;
mod client_ip;
pub mod discovery;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod login;
mod logout;
mod page;
mod params;
mod revocation;
mod session;
mod token;
mod ui;
mod upstream;
mod userinfo;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::routing::{any, get, post};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::keys::Keys;
use crate::password::Passwords;
use crate::store::{Store, Timestamp};
use crate::throttle::Throttle;

pub use error::Error;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Signing keys.
    pub keys: Keys,
    /// argon2id hasher.
    pub passwords: Passwords,
    /// Whether the login UI (served here or elsewhere) can show error pages.
    pub ui_available: bool,
    /// Password sign-ins' throttle.
    pub login_throttle: Arc<Throttle>,
    /// Client secrets' throttle (its own addresses: a notebook cannot block the Hub's).
    pub client_throttle: Arc<Throttle>,
    /// Client secrets already verified.
    pub verified_secrets: Arc<client_auth::VerifiedSecrets>,
    /// The discovery document, serialised once.
    pub discovery: axum::body::Bytes,
    /// Upstream identity providers.
    pub upstreams: Arc<crate::upstream::Upstreams>,
}

impl AppState {
    /// Stops a sign-in request at Postern, with the UI's error page when there is one.
    pub fn stop(&self, reason: shared::StopReason) -> Error {
        let ui_page = self.ui_available.then(|| self.config.ui_page("/error"));
        Error::Stop { reason, ui_page }
    }
}

/// The current time in Unix seconds.
pub fn now() -> Timestamp {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Largest request body any endpoint accepts.
const BODY_LIMIT: usize = 16 * 1024;
/// Longest any request may take, queueing included (a sign-in may wait for its turn at the throttle
/// and at argon2); past it the answer is 408 and the work is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests handled at once; more wait for a slot (within the timeout), so a flood queues instead of
/// taking memory and database connections without bound.
const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// Builds the application.
pub fn router(state: AppState) -> Router {
    // What the login UI calls; CORS-enabled for the UI's origin in a split deployment.
    let mut ui_facing = Router::new()
        .route("/token", post(token::token))
        .route("/revoke", post(revocation::revoke))
        .route("/introspect", post(revocation::introspect))
        .route("/userinfo", get(userinfo::userinfo).post(userinfo::userinfo))
        .route(&format!("{}/{{request}}", shared::AUTHORIZATION_REQUEST_PATH), get(login::pending_request))
        .route(shared::LOGIN_PATH, post(login::login))
        .route("/api/{*rest}", any(login::unknown_api));
    if let Some(origin) = state.config.cross_origin_ui() {
        let origin = HeaderValue::from_str(&origin).expect("an origin is a valid header value");
        ui_facing = ui_facing.layer(
            CorsLayer::new()
                // A list, not `exact`: other origins get no CORS headers at all.
                .allow_origin(AllowOrigin::list([origin]))
                // No credentials: none of these routes reads a cookie.
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        );
    }
    let mut app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/jwks.json", get(discovery::jwks))
        .route("/authorize", get(authorize::authorize_get).post(authorize::authorize_post))
        .route("/authorize/resume", get(authorize::resume))
        .route("/upstreams/{id}/start", get(upstream::start))
        .route("/upstreams/{id}/callback", get(upstream::callback))
        .route("/healthz/live", get(health::live))
        .route("/healthz/ready", get(health::ready))
        .route("/end-session", get(logout::end_session).post(logout::end_session))
        .route(shared::UI_CONFIG_PATH, get(ui::ui_config))
        .merge(ui_facing);
    if state.config.serves_ui_files() {
        app = app.merge(ui::static_files(&state.config));
    }
    let hsts = state.config.secure_cookies();
    let metered = state.config.metrics.listen.is_some();
    let trusted = state.config.trusted_proxies.clone();
    let mut app = app.with_state(state);
    if metered {
        // Inside the routes' layers, so the route template is known; outside them would see none.
        app = app.route_layer(axum::middleware::from_fn(crate::metrics::track_requests));
    }
    if hsts {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    app.layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        // Spans name the route, not the path or query: those carry codes, states and request handles.
        .layer(TraceLayer::new_for_http().make_span_with(move |request: &Request<_>| {
            let route = request.extensions().get::<MatchedPath>().map_or("(other)", MatchedPath::as_str);
            let peer = client_ip::peer(request.extensions());
            tracing::info_span!(
                "http",
                method = %request.method(),
                route,
                client = %client_ip::resolve(peer, request.headers(), &trusted),
                scheme = client_ip::scheme(peer, request.headers(), &trusted),
            )
        }))
}
