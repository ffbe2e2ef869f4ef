//! The JSON login API the login page talks to: read a pending request, submit credentials.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::{ErrorCode, LoginRequest, LoginResponse, PendingRequest, UpstreamButton};

use super::client_ip::ClientIp;
use super::error::no_store;
use super::{authorize, now, AppState, Error};
use crate::audit;
use crate::claims::parse_scope;
use crate::store::{AuthorizationRequest, RequestLogin, StoreError, Timestamp, User};
use crate::throttle::Refusal;
use crate::tokens;
use crate::upstream::ldap::Check;
use crate::upstream::{accounts, UpstreamError};

/// Seconds the browser has to follow the login's redirect.
const TICKET_LIFETIME: Timestamp = 60;
use crate::users::normalize_username;

fn not_found() -> Error {
    Error::Login(
        ErrorCode::RequestNotFound,
        "This sign-in request has expired or was already used. Go back to the application and start again.".into(),
    )
}

async fn pending(state: &AppState, id: &str) -> Result<AuthorizationRequest, Error> {
    state.store.authorization_request(&tokens::handle_key(id), now()).await?.ok_or_else(not_found)
}

/// `GET /api/authorization-requests/{request}`: what the login page shows.
pub async fn pending_request(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Error> {
    let request = pending(&state, &id).await?;
    let client = state.store.client(&request.client_id).await?.ok_or_else(not_found)?;
    let upstreams = state
        .upstreams
        .providers
        .iter()
        .map(|p| UpstreamButton {
            id: p.id.clone(),
            name: p.config.name.clone(),
            url: super::upstream::start_url(&state, &p.id, &id),
        })
        .collect();
    let body = PendingRequest {
        client_id: client.id,
        client_name: client.name,
        scopes: parse_scope(&request.scope).into_iter().map(str::to_owned).collect(),
        expires_in: (request.expires_at - now()).max(0) as u64,
        local_accounts: state.config.login.local_accounts,
        upstreams,
    };
    Ok(no_store(Json(body).into_response()))
}

/// `POST /api/login`: checks credentials, starts the SSO session and completes the request.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let malformed = |m: &str| Error::Login(ErrorCode::InvalidRequest, m.to_owned());
    // JSON only: a cross-site HTML form cannot send it without a CORS preflight.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(malformed("The login API accepts only application/json."));
    }
    // Browsers name the page's origin on every POST made with fetch: only Postern's own UI may submit
    // logins, and a request that names no origin is not from it.
    let origin_allowed = headers
        .get(header::ORIGIN)
        .is_some_and(|origin| state.config.allowed_origins().iter().any(|a| origin.as_bytes() == a.as_bytes()));
    if !origin_allowed {
        return Err(malformed("Sign in from the sign-in page."));
    }
    let login: LoginRequest =
        serde_json::from_slice(&body).map_err(|_| malformed("The login request is malformed."))?;
    let request = pending(&state, &login.request).await?;
    if !state.config.login.local_accounts {
        return Err(malformed("Passwords are not accepted here: sign in with one of the buttons."));
    }

    // One answer for an unknown user, a wrong password and a disabled account, and the same
    // argon2 work for each, so neither the response nor its timing tells them apart.
    // Admitted by the throttle before the password is checked: attempts beyond what failures could
    // still afford wait for those ahead of them. Names no account can have share one key, so that the
    // throttle's tables stay small whatever is sent; with a directory configured, any name of
    // reasonable length may be someone's there.
    let typed = login.username.as_str();
    let username = normalize_username(typed).ok();
    let directory_name = (!state.upstreams.directories.is_empty()
        && (1..=MAX_DIRECTORY_NAME).contains(&typed.len())
        && !typed.chars().any(char::is_control))
    .then(|| typed.to_lowercase());
    let throttle_name = username.as_deref().or(directory_name.as_deref()).unwrap_or_default();
    let attempt = match state.login_throttle.attempt(throttle_name, ip).await {
        Ok(attempt) => attempt,
        Err(refusal) => {
            let reason = match refusal {
                Refusal::Failures(_) => "failures",
                Refusal::Busy(_) => "busy",
            };
            audit::login_throttled(reason, &request.client_id, ip);
            return Err(Error::Throttled { refusal, oauth: false });
        }
    };
    let user = match &username {
        Some(name) => match state.store.user_by_name(name).await {
            Ok(user) => user,
            // The password was not checked: an outage counts against nobody.
            Err(e) => {
                attempt.abandoned();
                return Err(e.into());
            }
        },
        None => None,
    };
    // Accounts without a password of Postern's own (people from a directory) get the dummy check too.
    let local_hash = user.as_ref().filter(|u| u.has_password()).map(|u| u.password_hash.clone());
    let password_ok = state.passwords.verify(login.password.clone(), local_hash).await;
    let invalid = || Error::Login(ErrorCode::InvalidCredentials, "Incorrect username or password.".into());
    let (user, upstream) = match user {
        Some(user) if password_ok && !user.disabled => (user, None),
        Some(_) if password_ok => {
            attempt.failed().await;
            audit::login_failed("disabled_user", &request.client_id, Some(ip));
            return Err(invalid());
        }
        local => {
            // Not a local password: the directories, in turn, know the name or not.
            let had_local_password = local.as_ref().is_some_and(|u| u.has_password());
            match directory_sign_in(&state, directory_name.as_deref().map(|_| typed), &login.password).await {
                DirectoryOutcome::SignedIn(directory, user) => (user, Some(directory)),
                DirectoryOutcome::Refused(directory, refusal) => {
                    audit::upstream_login_failed(&directory, refusal.reason(), &request.client_id, ip);
                    if refusal == accounts::Refusal::Disabled {
                        attempt.failed().await;
                        return Err(invalid());
                    }
                    // The password was right: nothing to count, and no address to remember either.
                    attempt.abandoned();
                    return Err(Error::Login(ErrorCode::AccountUnavailable, refusal.message().into()));
                }
                DirectoryOutcome::StoreFailed(e) => {
                    attempt.abandoned();
                    return Err(e.into());
                }
                DirectoryOutcome::WrongPassword(directory) => {
                    attempt.failed().await;
                    audit::upstream_login_failed(&directory, "wrong_password", &request.client_id, ip);
                    return Err(invalid());
                }
                DirectoryOutcome::Unavailable(failures) if !had_local_password => {
                    // Nothing was checked: an outage counts against nobody.
                    attempt.abandoned();
                    for (directory, error) in &failures {
                        tracing::warn!(upstream = %directory, error = %error, "directory sign-in failed");
                        audit::upstream_login_failed(directory, error.reason(), &request.client_id, ip);
                    }
                    return Err(Error::Login(
                        ErrorCode::UpstreamUnavailable,
                        "The directory that checks this account cannot be reached just now. Try again in a few minutes."
                            .into(),
                    ));
                }
                DirectoryOutcome::Unavailable(_) | DirectoryOutcome::Unknown => {
                    let reason = if local.is_some() { "wrong_password" } else { "unknown_user" };
                    attempt.failed().await;
                    audit::login_failed(reason, &request.client_id, Some(ip));
                    return Err(invalid());
                }
            }
        }
    };
    attempt.succeeded().await;
    // A hash from older argon2 parameters is replaced now that the password is at hand, so that old
    // accounts and unknown names cost the same to check.
    if upstream.is_none() && state.passwords.needs_rehash(&user.password_hash) {
        let upgraded = state.passwords.hash(login.password).await;
        state.store.upgrade_password_hash(user.id, &user.password_hash, &upgraded).await?;
        tracing::info!(user = %user.username, "password hash upgraded to the current argon2 parameters");
    }

    let Some(redirect_to) = complete(&state, &request, &user).await? else { return Err(not_found()) };
    match &upstream {
        Some(directory) => audit::upstream_login_succeeded(directory, &request.client_id, &user.username, ip),
        None => audit::login_succeeded(&request.client_id, &user.username, ip),
    }
    Ok(no_store(Json(LoginResponse { redirect_to }).into_response()))
}

/// Completes a pending request for the user who just signed in (by password or at an upstream), once:
/// a ticket for the browser's next, top-level step to `/authorize/resume`, which sets the session
/// cookie first-party even when the login page is on another site. Where to send the browser; `None`
/// if the request is gone, expired or already completed.
pub(super) async fn complete(
    state: &AppState,
    request: &AuthorizationRequest,
    user: &User,
) -> Result<Option<String>, Error> {
    let now = now();
    let ticket = tokens::random_token();
    let signed_in = RequestLogin {
        user_id: user.id,
        auth_time: now,
        ticket_hash: tokens::hash(&ticket),
        expires_at: now + TICKET_LIFETIME,
    };
    if !state.store.authenticate_request(&request.id, &signed_in, now).await? {
        return Ok(None);
    }
    Ok(Some(authorize::with_query(&state.config.endpoint("/authorize/resume"), &[("ticket", &ticket)])))
}

/// Longest name the password form passes to a directory.
const MAX_DIRECTORY_NAME: usize = 256;

/// What the configured directories made of a name and password.
enum DirectoryOutcome {
    /// A directory vouched for the person (its id), and this is their Postern user.
    SignedIn(String, User),
    /// A directory vouched for them, and they still cannot sign in.
    Refused(String, accounts::Refusal),
    /// A directory knows the name, and the password is not theirs.
    WrongPassword(String),
    /// No directory knows the name.
    Unknown,
    /// No directory knows the name, and these could not be asked.
    Unavailable(Vec<(String, UpstreamError)>),
    /// The store failed while the account was looked up or made.
    StoreFailed(StoreError),
}

/// Asks each directory in turn about `name` (none when the name cannot be a directory's).
async fn directory_sign_in(state: &AppState, name: Option<&str>, password: &str) -> DirectoryOutcome {
    let Some(name) = name else { return DirectoryOutcome::Unknown };
    let mut failures = Vec::new();
    for directory in &state.upstreams.directories {
        let id = directory.id.clone();
        match directory.check_password(name, password).await {
            Ok(Check::UnknownUser) => {}
            Ok(Check::WrongPassword) => return DirectoryOutcome::WrongPassword(id),
            Ok(Check::Authenticated(person)) => {
                let provision = directory.config.provision;
                return match accounts::sign_in(state.store.as_ref(), &id, provision, &person, now()).await {
                    Ok(Ok(user)) => DirectoryOutcome::SignedIn(id, user),
                    Ok(Err(refusal)) => DirectoryOutcome::Refused(id, refusal),
                    Err(e) => DirectoryOutcome::StoreFailed(e),
                };
            }
            Err(e) => failures.push((id, e)),
        }
    }
    if failures.is_empty() {
        DirectoryOutcome::Unknown
    } else {
        DirectoryOutcome::Unavailable(failures)
    }
}

/// `/api/…` paths that do not exist: a JSON 404 rather than the UI's index page.
pub async fn unknown_api() -> Error {
    Error::Login(ErrorCode::InvalidRequest, "No such API endpoint.".into())
}
