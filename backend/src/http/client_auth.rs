//! Client authentication at the token endpoint: `client_secret_basic`, `client_secret_post`, or `none`
//! for public clients (RFC 6749 §2.3.1).

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use subtle::ConstantTimeEq;

use super::error::OAuthCode;
use super::params::Params;
use super::{AppState, Error};
use crate::audit;
use crate::store::Client;

/// Credentials from an `Authorization: Basic` header, form-urldecoded as RFC 6749 §2.3.1 requires.
#[derive(Debug, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The client id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

/// Parses an `Authorization` header value as Basic credentials; `Err` if it is Basic but malformed,
/// `Ok(None)` if it is another scheme.
pub fn parse_basic(value: &str) -> Result<Option<BasicCredentials>, &'static str> {
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| "the Basic credentials are not valid base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (id, secret) = text.split_once(':').ok_or("the Basic credentials have no ':'")?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    Ok(Some(BasicCredentials { id: unescape(id), secret: unescape(secret) }))
}

fn invalid_client(description: &str) -> Error {
    Error::oauth(OAuthCode::InvalidClient, description)
}

/// Authenticates the client of a token request by whichever single method it used. A secret already
/// verified is accepted from memory; the first check of a secret is made once however many requests
/// carry it at the same moment (the Hub's concurrent code exchanges after a restart), and only wrong
/// secrets count against the client's throttle, per client and address.
pub async fn authenticate(state: &AppState, headers: &HeaderMap, params: &Params, ip: IpAddr) -> Result<Client, Error> {
    let basic = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(value)) => parse_basic(value).map_err(|d| Error::oauth(OAuthCode::InvalidRequest, d))?,
        Some(Err(_)) => return Err(Error::oauth(OAuthCode::InvalidRequest, "the Authorization header is not ASCII")),
    };
    let (id, secret) = match (basic, params.get("client_id"), params.get("client_secret")) {
        (Some(_), _, Some(_)) => {
            return Err(Error::oauth(OAuthCode::InvalidRequest, "use one client authentication method, not two"))
        }
        (Some(b), Some(body_id), None) if body_id != b.id => {
            return Err(Error::oauth(OAuthCode::InvalidRequest, "client_id does not match the Authorization header"))
        }
        (Some(b), _, None) => (b.id, Some(b.secret)),
        (None, Some(id), secret) => (id.to_owned(), secret.map(str::to_owned)),
        (None, None, _) => return Err(invalid_client("client authentication is missing")),
    };
    let Some(client) = state.store.client(&id).await? else {
        return Err(invalid_client("unknown client"));
    };
    match (&client.secret_hash, secret) {
        (None, None) if client.public => Ok(client),
        (None, Some(_)) => Err(invalid_client("a public client has no secret")),
        (Some(_), None) | (None, None) => Err(invalid_client("this client must authenticate with its secret")),
        (Some(hash), Some(secret)) => {
            if state.verified_secrets.matches(&client.id, hash, &secret) {
                return Ok(client);
            }
            // Twins carrying the same secret wait here for the first one's answer.
            let flight = state.verified_secrets.flight(&client.id, &secret);
            let _turn = flight.lock().await;
            if state.verified_secrets.matches(&client.id, hash, &secret) {
                return Ok(client);
            }
            let attempt = match state.client_throttle.attempt(&client.id, ip).await {
                Ok(attempt) => attempt,
                Err(refusal) => {
                    audit::client_auth_failed("throttled", &client.id, ip);
                    return Err(Error::Throttled { refusal, oauth: true });
                }
            };
            if state.passwords.verify(secret.clone(), Some(hash.clone())).await {
                attempt.succeeded().await;
                state.verified_secrets.remember(&client.id, hash, &secret);
                Ok(client)
            } else {
                attempt.failed().await;
                audit::client_auth_failed("wrong_secret", &client.id, ip);
                Err(invalid_client("client authentication failed"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_forms() {
        let ok = parse_basic("Basic amh1YjpzM2NyZXQ=").unwrap().unwrap();
        assert_eq!(ok, BasicCredentials { id: "jhub".into(), secret: "s3cret".into() });
        // "a%3Ab:c%2B" -> id "a:b", secret "c+"
        let escaped = parse_basic(&format!("basic {}", STANDARD.encode("a%3Ab:c%2B"))).unwrap().unwrap();
        assert_eq!(escaped, BasicCredentials { id: "a:b".into(), secret: "c+".into() });
        assert_eq!(parse_basic("Bearer xyz"), Ok(None));
        assert!(parse_basic("Basic !!!").is_err());
        assert!(parse_basic(&format!("Basic {}", STANDARD.encode("nocolon"))).is_err());
    }
}

/// Client secrets already verified with argon2id, remembered as SHA-256 digests so that every
/// token request does not pay a password-grade hash. Client secrets are long random strings (at
/// least 16 characters from the config, 256 bits from the CLI), for which a fast digest held in
/// memory only is enough; the entry is bound to the stored hash, so changing the secret forgets it.
#[derive(Default)]
pub struct VerifiedSecrets {
    entries: Mutex<HashMap<String, (String, [u8; 32])>>,
    /// One lock per (client, secret digest) being checked right now: single flight.
    flights: Mutex<HashMap<FlightKey, Weak<Flight>>>,
}

impl VerifiedSecrets {
    fn matches(&self, client_id: &str, stored_hash: &str, secret: &str) -> bool {
        let entries = self.entries.lock().expect("not poisoned");
        entries
            .get(client_id)
            .is_some_and(|(hash, digest)| hash == stored_hash && bool::from(digest.ct_eq(&secret_digest(secret))))
    }

    fn remember(&self, client_id: &str, stored_hash: &str, secret: &str) {
        let mut entries = self.entries.lock().expect("not poisoned");
        entries.insert(client_id.to_owned(), (stored_hash.to_owned(), secret_digest(secret)));
    }

    /// The lock that requests checking this secret for this client share while one of them checks it.
    fn flight(&self, client_id: &str, secret: &str) -> Arc<Flight> {
        let mut flights = self.flights.lock().expect("not poisoned");
        // Locks nobody holds any more are dropped as the map is used, so it stays as small as the traffic.
        flights.retain(|_, lock| lock.strong_count() > 0);
        let key = (client_id.to_owned(), secret_digest(secret));
        if let Some(lock) = flights.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(Flight::default());
        flights.insert(key, Arc::downgrade(&lock));
        lock
    }
}

/// Held by the one request checking a secret; its twins wait for it.
type Flight = tokio::sync::Mutex<()>;
/// A client id and the SHA-256 of the secret presented for it.
type FlightKey = (String, [u8; 32]);

fn secret_digest(secret: &str) -> [u8; 32] {
    crate::tokens::hash(secret).try_into().expect("SHA-256 is 32 bytes")
}
