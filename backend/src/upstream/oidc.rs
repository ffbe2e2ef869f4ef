//! An OpenID Connect provider as an upstream: the login page's "Continue with …" button sends the
//! browser there, and the provider's answer comes back to a fixed callback URL.
//!
//! Postern is a strict relying party (the `openidconnect` crate does the JOSE work): the code flow
//! with PKCE S256, `state` and `nonce` bound to the browser's pending sign-in, the id_token's signature
//! checked against the provider's JWKS (fetched again, at most once a minute, when it names a key
//! Postern does not have), `iss`, `aud`, `exp` and `nonce` checked, `azp` too when present, and the
//! RFC 9207 `iss` of the authorization response when the provider sends or advertises it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreGenderClaim, CoreGrantType, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{map_groups, Person, UpstreamError};
use crate::config::{OidcClientAuth, OidcConfig};
use crate::store::UpstreamProfile;

/// How long a discovery document is trusted before it is fetched again.
const DISCOVERY_LIFETIME: Duration = Duration::from_secs(3600);
/// The JWKS is fetched again for an unknown key id at most this often, so that forged key ids cannot
/// make Postern hammer the provider.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Clock difference tolerated on `exp` and `iat`.
const CLOCK_SKEW: TimeDelta = TimeDelta::seconds(60);

/// The discovery document's fields Postern reads beyond the standard ones.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct Rfc9207 {
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}
impl AdditionalProviderMetadata for Rfc9207 {}

type Metadata = ProviderMetadata<
    Rfc9207,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Every claim, standard or not, so that any claim path can be mapped.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct AllClaims {
    #[serde(flatten)]
    other: Map<String, Value>,
}
impl AdditionalClaims for AllClaims {}

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

struct Discovered {
    metadata: Metadata,
    fetched: Instant,
    /// When the JWKS was last fetched again for an unknown key id.
    refetched: Option<Instant>,
}

/// What a sign-in at the provider must be finished with: kept with the pending request, never sent.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where to send the browser.
    pub url: url::Url,
    /// The `state` sent (only its hash is stored).
    pub state: String,
    /// The `nonce` the id_token must carry.
    pub nonce: String,
    /// The PKCE verifier of the challenge sent.
    pub verifier: String,
}

/// One configured OpenID Connect provider.
pub struct Provider {
    /// The upstream's id.
    pub id: String,
    /// Its settings.
    pub config: OidcConfig,
    secret: String,
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<Arc<Discovered>>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("id", &self.id).field("issuer", &self.config.issuer).finish()
    }
}

fn unreachable(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unreachable(e.to_string())
}

impl Provider {
    /// Prepares a provider: reads its secret file; contacts nothing yet.
    pub fn new(id: &str, config: &OidcConfig) -> Result<Self, String> {
        let secret = match (&config.client_secret, &config.client_secret_file) {
            (Some(secret), _) => secret.0.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("client_secret_file {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => return Err("no client secret".into()),
        };
        // No redirects (a provider's answer that redirects elsewhere is not followed: SSRF), bounded time.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { id: id.to_owned(), config: config.clone(), secret, http, discovered: Default::default() })
    }

    /// The provider's discovery document and keys, fetched when missing or stale.
    async fn discovered(&self) -> Result<Arc<Discovered>, UpstreamError> {
        let mut cached = self.discovered.lock().await;
        if let Some(d) = cached.as_ref().filter(|d| d.fetched.elapsed() < DISCOVERY_LIFETIME) {
            return Ok(d.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| UpstreamError::Misconfigured(format!("issuer: {e}")))?;
        let metadata = Metadata::discover_async(issuer, &self.http).await.map_err(|e| {
            UpstreamError::Unreachable(format!("discovery at {}: {}", self.config.issuer, error_chain(&e)))
        })?;
        let d = Arc::new(Discovered { metadata, fetched: Instant::now(), refetched: None });
        *cached = Some(d.clone());
        Ok(d)
    }

    /// Fetches the discovery document and keys now, for `postern upstream test`: what was found.
    pub async fn check(&self) -> Result<String, UpstreamError> {
        self.discovered.lock().await.take();
        let d = self.discovered().await?;
        let m = &d.metadata;
        Ok(format!(
            "issuer {}\nauthorization endpoint {}\ntoken endpoint {}\nuserinfo endpoint {}\nsigning keys {}\n\
             RFC 9207 iss {}",
            m.issuer().as_str(),
            m.authorization_endpoint().as_str(),
            m.token_endpoint().map_or("none (required)", |u| u.as_str()),
            m.userinfo_endpoint().map_or("none", |u| u.as_str()),
            m.jwks().keys().len(),
            if m.additional_metadata().authorization_response_iss_parameter_supported { "sent" } else { "not sent" },
        ))
    }

    /// Fetches the JWKS again (an id_token named a key Postern does not have), unless that was done
    /// within the last minute; whether there is a new set to try.
    async fn refetch_jwks(&self, seen: &Arc<Discovered>) -> Result<Option<Arc<Discovered>>, UpstreamError> {
        let mut cached = self.discovered.lock().await;
        let current = cached.clone().unwrap_or_else(|| seen.clone());
        if !Arc::ptr_eq(&current, seen) {
            return Ok(Some(current));
        }
        if current.refetched.is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL) {
            return Ok(None);
        }
        let jwks = CoreJsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| unreachable(format!("JWKS: {}", error_chain(&e))))?;
        let d = Arc::new(Discovered {
            metadata: current.metadata.clone().set_jwks(jwks),
            fetched: current.fetched,
            refetched: Some(Instant::now()),
        });
        *cached = Some(d.clone());
        Ok(Some(d))
    }

    fn client(&self, d: &Discovered, callback: &str) -> Result<Client, UpstreamError> {
        let redirect =
            RedirectUrl::new(callback.to_owned()).map_err(|e| UpstreamError::Misconfigured(e.to_string()))?;
        let auth = match self.config.client_auth {
            OidcClientAuth::ClientSecretBasic => AuthType::BasicAuth,
            OidcClientAuth::ClientSecretPost => AuthType::RequestBody,
        };
        Ok(Client::from_provider_metadata(
            d.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.secret.clone())),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(auth))
    }

    /// Starts a sign-in: where to send the browser, and what finishing it needs.
    pub async fn start(&self, callback: &str) -> Result<Started, UpstreamError> {
        let d = self.discovered().await?;
        let client = self.client(&d, callback)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Started {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Finishes a sign-in with the provider's answer: the code exchanged, the id_token verified, the
    /// claims (with userinfo's) mapped to a person.
    pub async fn finish(
        &self,
        callback: &str,
        code: &str,
        iss: Option<&str>,
        nonce: &str,
        verifier: &str,
    ) -> Result<Person, UpstreamError> {
        let d = self.discovered().await?;
        // RFC 9207: an authorization response from another issuer is a mix-up attack.
        let issuer = d.metadata.issuer().as_str();
        match iss {
            Some(iss) if iss == issuer => {}
            None if !d.metadata.additional_metadata().authorization_response_iss_parameter_supported => {}
            Some(_) => {
                return Err(UpstreamError::Rejected("the authorization response's iss is another issuer's".into()))
            }
            None => {
                return Err(UpstreamError::Rejected("the authorization response lacks the iss it advertises".into()))
            }
        }
        let client = self.client(&d, callback)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| UpstreamError::Misconfigured(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    UpstreamError::Rejected(format!("the token endpoint refused the code: {}", r.error()))
                }
                other => unreachable(format!("token endpoint: {}", error_chain(&other))),
            })?;
        let raw =
            response.id_token().ok_or_else(|| UpstreamError::Rejected("no id_token in the token response".into()))?;
        let id_token: IdToken<AllClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm> =
            raw.to_string().parse().map_err(|e| UpstreamError::Rejected(format!("id_token: {e}")))?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match id_token.claims(&self.verifier(&d), &nonce) {
            Ok(claims) => claims.clone(),
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                // A key Postern has not seen: the provider may have rotated its keys.
                let fresh = self.refetch_jwks(&d).await?.ok_or_else(|| {
                    UpstreamError::Rejected("the id_token is signed with a key the provider does not publish".into())
                })?;
                id_token.claims(&self.verifier(&fresh), &nonce).map_err(rejected)?.clone()
            }
            Err(e) => return Err(rejected(e)),
        };
        if let Some(azp) = claims.authorized_party() {
            if azp.as_str() != self.config.client_id {
                return Err(UpstreamError::Rejected("the id_token was issued to another client (azp)".into()));
            }
        }
        let mut all = match serde_json::to_value(&claims) {
            Ok(Value::Object(map)) => map,
            _ => return Err(UpstreamError::Rejected("the id_token's claims are not an object".into())),
        };
        // Providers that keep profile claims for userinfo (OIDC Core §5.4) get asked there too; the
        // id_token's word wins where both speak.
        if let Ok(request) = client.user_info(response.access_token().clone(), Some(claims.subject().clone())) {
            let info: UserInfoClaims<AllClaims, CoreGenderClaim> =
                request.request_async(&self.http).await.map_err(|e| match e {
                    openidconnect::UserInfoError::ClaimsVerification(e) => {
                        UpstreamError::Rejected(format!("userinfo: {e}"))
                    }
                    other => unreachable(format!("userinfo: {}", error_chain(&other))),
                })?;
            if let Ok(Value::Object(extra)) = serde_json::to_value(&info) {
                for (k, v) in extra {
                    all.entry(k).or_insert(v);
                }
            }
        }
        Ok(self.person(claims.subject().as_str(), &all))
    }

    fn verifier(&self, d: &Discovered) -> CoreIdTokenVerifier<'static> {
        // As a public client's: a symmetric (HS*) id_token, signed with the shared secret, is refused.
        CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            d.metadata.issuer().clone(),
            d.metadata.jwks().clone(),
        )
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha384,
            CoreJwsSigningAlgorithm::RsaSsaPssSha512,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
        .set_time_fn(|| Utc::now() - CLOCK_SKEW)
        .set_issue_time_verifier_fn(|iat| {
            if iat > Utc::now() + CLOCK_SKEW {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        })
    }

    /// The person the claims describe.
    fn person(&self, subject: &str, claims: &Map<String, Value>) -> Person {
        let c = &self.config;
        let text = |path: &str| claim(claims, path).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        let email = text(&c.email_claim).map(str::to_owned);
        // The username claim, else the e-mail address's local part.
        let name = text(&c.username_claim)
            .map(str::to_owned)
            .or_else(|| email.as_deref().and_then(|e| e.split('@').next()).map(str::to_owned))
            .unwrap_or_default();
        let groups: Vec<String> = match c.groups_claim.as_deref().and_then(|path| claim(claims, path)) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Person {
            subject: subject.to_owned(),
            profile: UpstreamProfile {
                display_name: text(&c.name_claim).map(str::to_owned).unwrap_or_else(|| name.clone()),
                email_verified: email.is_some()
                    && claims.get("email_verified").and_then(Value::as_bool).unwrap_or(false),
                email,
                name,
                locator: None,
                groups: map_groups(&groups, &c.allowed_groups, &c.group_prefix, &c.static_groups),
            },
        }
    }
}

/// A claim by dotted path (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn rejected(e: ClaimsVerificationError) -> UpstreamError {
    UpstreamError::Rejected(format!("id_token: {e}"))
}

/// An error with its sources, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_found_by_dotted_path() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"groups": ["a"], "realm_access": {"roles": ["r"]}, "n": 1}"#).unwrap();
        assert_eq!(claim(&claims, "groups"), Some(&serde_json::json!(["a"])));
        assert_eq!(claim(&claims, "realm_access.roles"), Some(&serde_json::json!(["r"])));
        assert_eq!(claim(&claims, "n.x"), None);
        assert_eq!(claim(&claims, "missing"), None);
    }
}
