//! `/token` (RFC 6749 §4.1.3 and §6, RFC 7636 §4.6): code exchange and refresh-token rotation.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use shared::TokenResponse;

use std::net::IpAddr;

use super::client_auth::authenticate;
use super::client_ip::ClientIp;
use super::error::{no_store, OAuthCode};
use super::params::{is_form, Params};
use super::{now, AppState, Error};
use crate::audit;
use crate::claims::{has_scope, parse_scope, user_claims};
use crate::store::{Client, Grant, NewToken, Timestamp, User};
use crate::tokens::{self, pkce_s256_matches};
use crate::upstream::accounts::{self, Recheck};

fn invalid_grant(description: &str) -> Error {
    Error::oauth(OAuthCode::InvalidGrant, description)
}

/// `POST /token`.
pub async fn token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    if !is_form(&headers) {
        return Err(Error::oauth(OAuthCode::InvalidRequest, "the body must be application/x-www-form-urlencoded"));
    }
    let params = Params::parse(
        &body,
        &[
            "grant_type",
            "code",
            "redirect_uri",
            "code_verifier",
            "refresh_token",
            "scope",
            "client_id",
            "client_secret",
        ],
    );
    if let Some(key) = params.duplicate() {
        return Err(Error::oauth(OAuthCode::InvalidRequest, format!("the parameter {key} was given more than once")));
    }
    if let Some(key) = params.oversized() {
        return Err(Error::oauth(OAuthCode::InvalidRequest, format!("the parameter {key} is too long")));
    }
    let grant_type =
        params.get("grant_type").ok_or_else(|| Error::oauth(OAuthCode::InvalidRequest, "grant_type is missing"))?;
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(Error::oauth(
            OAuthCode::UnsupportedGrantType,
            "supported grant types: authorization_code, refresh_token",
        ));
    }
    let client = authenticate(&state, &headers, &params, ip).await?;
    let response = match grant_type {
        "authorization_code" => exchange_code(&state, &client, &params, ip).await?,
        _ => refresh(&state, &client, &params, ip).await?,
    };
    Ok(no_store(Json(response).into_response()))
}

async fn exchange_code(state: &AppState, client: &Client, params: &Params, ip: IpAddr) -> Result<TokenResponse, Error> {
    let code = params.get("code").ok_or_else(|| Error::oauth(OAuthCode::InvalidRequest, "code is missing"))?;
    let now = now();
    // A code that is not this client's is answered as unknown and changes nothing.
    let (grant, user) = match state.store.grant_by_code(&tokens::hash(code)).await? {
        Some((grant, user)) if grant.client_id == client.id => (grant, user),
        _ => return Err(invalid_grant("the authorization code is invalid")),
    };
    if grant.code_used_at.is_some() {
        // RFC 6749 §4.1.2: a replayed code revokes every token issued from it.
        state.store.revoke_grant(grant.id, now).await?;
        audit::code_replayed(&client.id, grant.id, ip);
        return Err(invalid_grant("the authorization code was already used"));
    }
    if grant.revoked_at.is_some() || grant.code_expires_at <= now {
        return Err(invalid_grant("the authorization code has expired"));
    }
    if params.get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err(invalid_grant("redirect_uri does not match the authorization request"));
    }
    match (&grant.code_challenge, params.get("code_verifier")) {
        (Some(challenge), Some(verifier)) if pkce_s256_matches(verifier, challenge) => {}
        (Some(_), Some(_)) => return Err(invalid_grant("code_verifier does not match the code_challenge")),
        (Some(_), None) => return Err(invalid_grant("code_verifier is missing")),
        // RFC 9700 §2.1.1: a verifier without a challenge is a downgrade attempt.
        (None, Some(_)) => return Err(invalid_grant("code_verifier sent but no code_challenge was")),
        // /authorize already insists on PKCE for these clients; a grant without it is not theirs to redeem.
        (None, None) if client.public || client.require_pkce => return Err(invalid_grant("this client must use PKCE")),
        (None, None) => {}
    }
    let user = active(user)?;
    let issued = Issued::new(state, client, &grant, &grant.scope, &grant.scope, now);
    let redeemed =
        state.store.redeem_code(grant.id, now, &issued.access_record(), issued.refresh_record().as_ref()).await?;
    if !redeemed {
        // Lost a race with another redemption of the same code: that is a replay too, audited as one.
        state.store.revoke_grant(grant.id, now).await?;
        audit::code_replayed(&client.id, grant.id, ip);
        return Err(invalid_grant("the authorization code was already used"));
    }
    audit::tokens_issued("authorization_code", &client.id, &user.username, ip);
    issued.response(state, client, &user, &grant, grant.nonce.as_deref())
}

async fn refresh(state: &AppState, client: &Client, params: &Params, ip: IpAddr) -> Result<TokenResponse, Error> {
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| Error::oauth(OAuthCode::InvalidRequest, "refresh_token is missing"))?;
    if !client.refresh_tokens {
        return Err(Error::oauth(OAuthCode::UnauthorizedClient, "this client may not use refresh tokens"));
    }
    let now = now();
    let hash = tokens::hash(presented);
    let info = match state.store.refresh_token(&hash).await? {
        Some(info) if info.grant.client_id == client.id => info,
        _ => return Err(invalid_grant("the refresh token is invalid")),
    };
    if info.used {
        // A rotated token came back: someone holds a copy. Revoke the whole family (RFC 9700 §4.14.2).
        state.store.revoke_grant(info.grant.id, now).await?;
        audit::refresh_reuse_detected(&client.id, info.grant.id, ip);
        return Err(invalid_grant("the refresh token was already used"));
    }
    if info.grant.revoked_at.is_some() || info.expires_at <= now {
        return Err(invalid_grant("the refresh token has expired or was revoked"));
    }
    if info.grant.auth_time.saturating_add(state.config.tokens.refresh_max_lifetime as i64) <= now {
        return Err(invalid_grant("the refresh token has reached its maximum lifetime; sign in again"));
    }
    // RFC 6749 §6: a narrower scope narrows what is issued now; the refresh token keeps its own.
    let scope = match params.get("scope") {
        None => info.scope.clone(),
        Some(requested) => {
            let requested = parse_scope(requested);
            if requested.iter().any(|s| !has_scope(&info.scope, s)) {
                return Err(Error::oauth(OAuthCode::InvalidScope, "a refresh cannot widen the granted scope"));
            }
            requested.join(" ")
        }
    };
    let user = match accounts::recheck(state.store.as_ref(), &state.upstreams, active(info.user)?, now).await? {
        Recheck::Current(user) => user,
        Recheck::Gone { upstream } => {
            audit::upstream_account_gone(&upstream, &client.id, ip);
            return Err(invalid_grant("the directory no longer vouches for this account; sign in again"));
        }
        Recheck::Unavailable { upstream, error } => {
            return Err(Error::UpstreamUnavailable(format!("{upstream}: {error}")));
        }
    };
    let issued = Issued::new(state, client, &info.grant, &scope, &info.scope, now);
    let refresh_record = issued.refresh_record().expect("clients reaching here may have refresh tokens");
    if !state.store.rotate_refresh_token(&hash, now, &issued.access_record(), &refresh_record).await? {
        // Lost a race with another rotation of the same token: reuse, audited as such.
        state.store.revoke_grant(info.grant.id, now).await?;
        audit::refresh_reuse_detected(&client.id, info.grant.id, ip);
        return Err(invalid_grant("the refresh token was already used"));
    }
    audit::tokens_issued("refresh_token", &client.id, &user.username, ip);
    issued.response(state, client, &user, &info.grant, None)
}

/// The grant's user, unless disabled meanwhile.
fn active(user: User) -> Result<User, Error> {
    if user.disabled {
        return Err(invalid_grant("the user is disabled"));
    }
    Ok(user)
}

/// Fresh tokens, before and after they are stored.
struct Issued {
    access_token: String,
    refresh_token: Option<String>,
    /// Scope of the access token and id_token.
    scope: String,
    /// Scope of the refresh token: the grant's, whatever this request narrowed.
    refresh_scope: String,
    now: Timestamp,
    access_lifetime: u64,
    /// Seconds the refresh token lives: its own lifetime, within the family's absolute one.
    refresh_lifetime: u64,
}

impl Issued {
    fn new(state: &AppState, client: &Client, grant: &Grant, scope: &str, refresh_scope: &str, now: Timestamp) -> Self {
        let tokens = &state.config.tokens;
        let family_ends = grant.auth_time.saturating_add(tokens.refresh_max_lifetime as i64);
        let refresh_lifetime = tokens.refresh_token_lifetime.min(family_ends.saturating_sub(now).max(0) as u64);
        Self {
            access_token: tokens::random_token(),
            // A family at its absolute end gets no successor: the client signs the user in again.
            refresh_token: (client.refresh_tokens && refresh_lifetime > 0).then(tokens::random_token),
            scope: scope.to_owned(),
            refresh_scope: refresh_scope.to_owned(),
            now,
            access_lifetime: tokens.access_token_lifetime,
            refresh_lifetime,
        }
    }

    fn access_record(&self) -> NewToken {
        NewToken {
            hash: tokens::hash(&self.access_token),
            scope: self.scope.clone(),
            expires_at: self.now + self.access_lifetime as i64,
        }
    }

    fn refresh_record(&self) -> Option<NewToken> {
        self.refresh_token.as_ref().map(|t| NewToken {
            hash: tokens::hash(t),
            scope: self.refresh_scope.clone(),
            expires_at: self.now + self.refresh_lifetime as i64,
        })
    }

    fn response(
        self,
        state: &AppState,
        client: &Client,
        user: &User,
        grant: &Grant,
        nonce: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        let id_token = if has_scope(&self.scope, "openid") {
            Some(self.id_token(state, client, user, grant, nonce)?)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token: self.access_token,
            token_type: "Bearer".into(),
            expires_in: self.access_lifetime,
            scope: self.scope,
            id_token,
            refresh_token_expires_in: self.refresh_token.is_some().then_some(self.refresh_lifetime),
            refresh_token: self.refresh_token,
        })
    }

    fn id_token(
        &self,
        state: &AppState,
        client: &Client,
        user: &User,
        grant: &Grant,
        nonce: Option<&str>,
    ) -> Result<String, Error> {
        let keys = state.keys.current();
        let key = keys.active();
        let mut claims: Map<String, Value> = user_claims(user, &self.scope, client.groups_claim);
        claims.insert("iss".into(), state.config.issuer_id().into());
        claims.insert("aud".into(), client.id.clone().into());
        claims.insert("iat".into(), self.now.into());
        claims.insert("exp".into(), (self.now + self.access_lifetime as i64).into());
        claims.insert("auth_time".into(), grant.auth_time.into());
        claims.insert("amr".into(), vec!["pwd"].into());
        claims.insert("at_hash".into(), key.alg().half_hash(&self.access_token).into());
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), nonce.into());
        }
        Ok(key.sign_jwt(&claims)?)
    }
}
