//! The UI's own relying-party helpers: PKCE S256, random state, and reading an id_token's claims.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the browser keeps between starting a sign-in and its callback (in sessionStorage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignIn {
    /// PKCE verifier.
    pub verifier: String,
    /// Expected `state`.
    pub state: String,
    /// Expected `nonce`.
    pub nonce: String,
}

/// sessionStorage key of the [`PendingSignIn`].
pub const STORAGE_KEY: &str = "postern.sign-in";

/// 256 random bits from the browser's CSPRNG, base64url-encoded (43 characters).
pub fn random_string() -> String {
    let mut bytes = [0u8; 32];
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .and_then(|c| c.get_random_values_with_u8_array(&mut bytes).ok())
        .expect("the browser provides crypto.getRandomValues");
    B64.encode(bytes)
}

/// The S256 `code_challenge` of a verifier (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// The payload of a compact JWS, parsed as JSON. The signature is not checked here: the UI shows
/// the claims; the server that issued them is the one the UI trusts.
pub fn jwt_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

/// The authorization URL for the UI's own sign-in.
pub fn authorization_url(api_base: &str, client_id: &str, redirect_uri: &str, pending: &PendingSignIn) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid profile email groups")
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge(&pending.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{api_base}/authorize?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_example_challenge() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn reads_claims_of_a_jws() {
        let jwt = format!("e30.{}.sig", B64.encode(br#"{"sub":"carol"}"#));
        assert_eq!(jwt_claims(&jwt).unwrap()["sub"], "carol");
        assert!(jwt_claims("garbage").is_none());
    }

    #[test]
    fn authorization_url_carries_pkce_and_state() {
        let p = PendingSignIn { verifier: "v".repeat(43), state: "s t".into(), nonce: "n".into() };
        let url = authorization_url("https://api.example", "postern-ui", "https://ui.example/callback", &p);
        assert!(url.starts_with("https://api.example/authorize?response_type=code&client_id=postern-ui"));
        assert!(url.contains("state=s+t") && url.contains("code_challenge_method=S256"));
        assert!(url.contains("redirect_uri=https%3A%2F%2Fui.example%2Fcallback"));
    }
}
