//! `/authorize` (RFC 6749 §4.1.1, OIDC Core §3.1.2, RFC 7636, RFC 9207): validate, then either issue a
//! code from the SSO session or park the request and send the browser to the login page.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::client_ip::ClientIp;
use super::error::{no_store, OAuthCode};
use super::params::Params;
use super::{now, session, AppState, Error};
use crate::audit;
use crate::claims::parse_scope;
use crate::keys::Unverified;
use crate::store::{AuthorizationRequest, Client, NewGrant, PendingLimits, Timestamp};
use crate::tokens;
use shared::StopReason;

/// Parameters `/authorize` reads (OIDC Core §3.1.2.1); any other is ignored.
pub(super) const AUTHORIZE_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "id_token_hint",
    "request",
    "request_uri",
    "idp_hint",
    "kc_idp_hint",
];

/// Longest `state` accepted (a client's own opaque value; JupyterHub's is about 100 characters).
const MAX_STATE_LEN: usize = 1024;
/// Longest `nonce` accepted.
const MAX_NONCE_LEN: usize = 256;
/// Pending sign-ins one network and one browser may hold (their oldest make room): a class behind one
/// NAT fits many times over, while a flood from a few addresses stays a few thousand rows.
const PENDING_LIMITS: PendingLimits = PendingLimits { per_network: 1000, per_browser: 16 };

/// `GET /authorize/resume?ticket=…`: the browser's top-level visit after a successful login. Sets the
/// SSO session cookie on this origin and sends the browser on to the client with a code.
pub async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let params = Params::parse(query.unwrap_or_default().as_bytes(), &["ticket"]);
    let ticket = params.get("ticket").ok_or_else(|| state.stop(StopReason::RequestExpired))?;
    let Some((request, login)) = state.store.redeem_ticket(&tokens::hash(ticket), now()).await? else {
        return Err(state.stop(StopReason::RequestExpired));
    };
    // Only the browser that started the sign-in may finish it: a ticket passed to another browser
    // would sign that browser in as whoever entered the password (login CSRF). It is spent either way.
    if !session::is_same_browser(&state, &headers, request.browser_hash.as_deref()) {
        audit::login_failed("other_browser", &request.client_id, None);
        return Err(state.stop(StopReason::OtherBrowser));
    }
    let cookie = session::start(&state, &headers, login.user_id, login.auth_time).await?;
    let location = issue_code(&state, &request, login.user_id, login.auth_time).await?;
    let mut response = see_other(&location);
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `GET /authorize`.
pub async fn authorize_get(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    authorize(state, ip, headers, Params::parse(query.unwrap_or_default().as_bytes(), AUTHORIZE_PARAMS)).await
}

/// `POST /authorize` with a form body (OIDC Core §3.1.2.1).
pub async fn authorize_post(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    if !super::params::is_form(&headers) {
        return Err(state.stop(StopReason::InvalidRequest));
    }
    authorize(state, ip, headers, Params::parse(&body, AUTHORIZE_PARAMS)).await
}

/// Where errors go once client and redirect URI are trusted.
struct Reply<'a> {
    issuer: &'a str,
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

impl Reply<'_> {
    fn error(&self, code: OAuthCode, description: &str) -> Response {
        let mut pairs = vec![("error", code.as_str()), ("error_description", description)];
        if let Some(state) = self.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", self.issuer));
        see_other(&with_query(self.redirect_uri, &pairs))
    }
}

/// A 303 to `location`, never cached.
pub fn see_other(location: &str) -> Response {
    no_store((StatusCode::SEE_OTHER, [(header::LOCATION, location.to_owned())]).into_response())
}

/// Appends parameters to a URL's query, keeping what it already has.
pub fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match Url::parse(base) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.into()
        }
        // Registered redirect URIs were validated as absolute URLs, so this is unreachable.
        Err(_) => base.to_owned(),
    }
}

/// Valid prompt values, with `none` exclusive.
struct Prompt {
    none: bool,
    login: bool,
}

fn parse_prompt(value: Option<&str>) -> Result<Prompt, String> {
    let values: Vec<&str> = value.unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
    if let Some(unknown) = values.iter().find(|v| !matches!(**v, "none" | "login" | "consent" | "select_account")) {
        return Err(format!("unsupported prompt value `{unknown}`"));
    }
    let none = values.contains(&"none");
    if none && values.len() > 1 {
        return Err("prompt=none cannot be combined with other values".into());
    }
    Ok(Prompt { none, login: values.contains(&"login") })
}

async fn authorize(
    state: AppState,
    ip: std::net::IpAddr,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Error> {
    // 1. Who is asking, and where would the answer go? Until both are trusted, nothing is redirected.
    if params.is_repeated("client_id") {
        return Err(state.stop(StopReason::UnknownClient));
    }
    let client = match params.get("client_id") {
        Some(id) => state.store.client(id).await?,
        None => None,
    };
    let Some(client) = client else {
        return Err(state.stop(StopReason::UnknownClient));
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) if !params.is_repeated("redirect_uri") && client.redirect_uris.iter().any(|r| r == uri) => uri,
        _ => return Err(state.stop(StopReason::InvalidRedirectUri)),
    };

    // 2. Everything else is answered at the redirect URI.
    let reply = Reply {
        issuer: state.config.issuer_id(),
        redirect_uri,
        // A repeated or over-long state is not echoed: it is not the client's.
        state: params.get("state").filter(|s| !params.is_repeated("state") && s.len() <= MAX_STATE_LEN),
    };
    let validated = match validate(&client, &params) {
        Ok(v) => v,
        Err((code, description)) => return Ok(reply.error(code, &description)),
    };

    // An id_token we issued names who the client expects (OIDC Core §3.1.2.1); one signed by a key no
    // longer held says nothing; a forged one is refused.
    let hinted_user = match params.get("id_token_hint").map(|jwt| state.keys.current().check(jwt)) {
        None | Some(Err(Unverified::UnknownKey)) => None,
        Some(Ok(claims)) if claims["aud"] == client.id.as_str() => claims["sub"].as_str().map(str::to_owned),
        Some(_) => return Ok(reply.error(OAuthCode::InvalidRequest, "id_token_hint is not an id_token issued to you")),
    };

    // 3. An SSO session answers at once, unless the client wants a fresh login or expects someone else.
    let now = now();
    let mut session = session::current(&state, &headers).await?;
    if let (Some(expected), Some(current)) = (&hinted_user, &session) {
        let user = state.store.user_by_id(current.user_id).await?;
        if user.is_none_or(|u| &u.username != expected) {
            session = None;
        }
    }
    let fresh_enough = |auth_time: Timestamp| validated.max_age.is_none_or(|max| now - auth_time <= max as i64);
    if let Some(session) = session.filter(|s| !validated.prompt.login && fresh_enough(s.auth_time)) {
        let request = validated.into_request(&client, String::new(), now);
        let location = issue_code(&state, &request, session.user_id, session.auth_time).await?;
        return Ok(see_other(&location));
    }
    if validated.prompt.none {
        let description = match hinted_user {
            Some(_) => "the user named by id_token_hint is not signed in",
            None => "the user is not signed in",
        };
        return Ok(reply.error(OAuthCode::LoginRequired, description));
    }

    // 4. Park the request, tied to this browser, and send the browser to the login page with only an
    // opaque handle.
    let handle = tokens::random_token();
    let (browser, set_cookie) = session::browser_binding(&state, &headers);
    let request = AuthorizationRequest {
        expires_at: now + state.config.tokens.login_request_lifetime as i64,
        browser_hash: Some(tokens::hash(&browser)),
        client_network: Some(crate::throttle::network(ip).to_string()),
        ..validated.into_request(&client, tokens::handle_key(&handle), now)
    };
    state.store.insert_authorization_request(&request, PENDING_LIMITS).await?;
    // An application may name the upstream provider to sign in at (`idp_hint`, or Keycloak's
    // `kc_idp_hint`; a name that is not one is ignored), or there is only one and the operator sends
    // everyone there: then the browser goes straight to it, without the login page.
    let hinted =
        params.get("idp_hint").or_else(|| params.get("kc_idp_hint")).and_then(|id| state.upstreams.provider(id));
    let only = state.upstreams.providers.first().filter(|_| state.config.login.auto_redirect);
    let login = match hinted.or(only) {
        Some(provider) => super::upstream::start_url(&state, &provider.id, &handle),
        None => with_query(&state.config.ui_page("/login"), &[("request", &handle)]),
    };
    let mut response = see_other(&login);
    if let Some(cookie) = set_cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// An authorization request that passed every check.
pub(super) struct Validated {
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    prompt: Prompt,
    max_age: Option<u64>,
    redirect_uri: String,
}

impl Validated {
    fn into_request(self, client: &Client, id: String, now: Timestamp) -> AuthorizationRequest {
        AuthorizationRequest {
            id,
            client_id: client.id.clone(),
            redirect_uri: self.redirect_uri,
            scope: self.scope,
            state: self.state,
            nonce: self.nonce,
            code_challenge: self.code_challenge,
            expires_at: now,
            browser_hash: None,
            client_network: None,
        }
    }
}

pub(super) fn validate(client: &Client, params: &Params) -> Result<Validated, (OAuthCode, String)> {
    use OAuthCode::*;
    let bad = |code: OAuthCode, description: &str| Err((code, description.to_owned()));
    if let Some(key) = params.duplicate() {
        return Err((InvalidRequest, format!("the parameter {key} was given more than once")));
    }
    if let Some(key) = params.oversized() {
        return Err((InvalidRequest, format!("the parameter {key} is too long")));
    }
    if params.get("state").is_some_and(|s| s.len() > MAX_STATE_LEN) {
        return Err((InvalidRequest, format!("state is too long (at most {MAX_STATE_LEN} characters)")));
    }
    if params.get("nonce").is_some_and(|n| n.len() > MAX_NONCE_LEN) {
        return Err((InvalidRequest, format!("nonce is too long (at most {MAX_NONCE_LEN} characters)")));
    }
    if params.get("request").is_some() {
        return bad(RequestNotSupported, "request objects are not supported");
    }
    if params.get("request_uri").is_some() {
        return bad(RequestUriNotSupported, "request_uri is not supported");
    }
    match params.get("response_type") {
        None => return bad(InvalidRequest, "response_type is missing"),
        Some("code") => {}
        Some(_) => return bad(UnsupportedResponseType, "only response_type=code is supported"),
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return bad(InvalidRequest, "only response_mode=query is supported");
    }
    let requested = parse_scope(params.get("scope").unwrap_or(""));
    if !requested.contains(&"openid") {
        return bad(InvalidScope, "the openid scope is required");
    }
    // Unknown scopes and scopes the client may not have are left out of the grant (OIDC Core §3.1.2.1).
    let granted: Vec<&str> = requested.into_iter().filter(|s| client.scopes.iter().any(|c| c == s)).collect();
    if !granted.contains(&"openid") {
        return bad(InvalidScope, "this client may not use the openid scope");
    }
    let code_challenge = match (params.get("code_challenge"), params.get("code_challenge_method")) {
        (Some(challenge), Some("S256")) => {
            // An S256 challenge is a base64url SHA-256: exactly 43 characters.
            if challenge.len() != 43 || !tokens::is_pkce_value(challenge) {
                return bad(InvalidRequest, "code_challenge is not a valid S256 challenge");
            }
            Some(challenge.to_owned())
        }
        (Some(_), None) | (Some(_), Some("plain")) => {
            return bad(InvalidRequest, "code_challenge_method must be S256 (plain is not allowed)")
        }
        (Some(_), Some(_)) => return bad(InvalidRequest, "unsupported code_challenge_method; use S256"),
        (None, Some(_)) => return bad(InvalidRequest, "code_challenge_method given without code_challenge"),
        (None, None) if client.require_pkce || client.public => {
            return bad(InvalidRequest, "PKCE is required: send code_challenge with code_challenge_method=S256")
        }
        (None, None) => None,
    };
    let prompt = parse_prompt(params.get("prompt")).map_err(|d| (InvalidRequest, d))?;
    let max_age = match params.get("max_age") {
        None => None,
        Some(value) => {
            Some(value.parse::<u64>().map_err(|_| (InvalidRequest, "max_age must be a whole number".to_owned()))?)
        }
    };
    Ok(Validated {
        scope: granted.join(" "),
        state: params.get("state").map(str::to_owned),
        nonce: params.get("nonce").map(str::to_owned),
        code_challenge,
        prompt,
        max_age,
        redirect_uri: params.get("redirect_uri").unwrap_or_default().to_owned(),
    })
}

/// Issues an authorization code for a completed request; returns the redirect URI to send the browser to.
pub async fn issue_code(
    state: &AppState,
    request: &AuthorizationRequest,
    user_id: i64,
    auth_time: Timestamp,
) -> Result<String, Error> {
    let code = tokens::random_token();
    let now = now();
    state
        .store
        .create_grant(
            &NewGrant {
                client_id: request.client_id.clone(),
                user_id,
                scope: request.scope.clone(),
                nonce: request.nonce.clone(),
                auth_time,
                redirect_uri: request.redirect_uri.clone(),
                code_challenge: request.code_challenge.clone(),
                code_hash: tokens::hash(&code),
                code_expires_at: now + state.config.tokens.code_lifetime as i64,
            },
            now,
        )
        .await?;
    let issuer = state.config.issuer_id();
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = &request.state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", issuer));
    Ok(with_query(&request.redirect_uri, &pairs))
}
