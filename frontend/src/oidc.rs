//! The UI's own relying party ("Try a sign-in"): PKCE S256 and random values from the `oauth2` crate,
//! the sign-in and sign-out URLs, and reading an id_token's claims.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use oauth2::{CsrfToken, PkceCodeChallenge, PkceCodeVerifier};
use serde::{Deserialize, Serialize};

/// What the browser keeps between starting a sign-in and its callback (in sessionStorage).
#[derive(Serialize, Deserialize)]
pub struct PendingSignIn {
    /// PKCE verifier.
    pub verifier: PkceCodeVerifier,
    /// Expected `state`.
    pub state: CsrfToken,
    /// Expected `nonce`.
    pub nonce: String,
}

impl PendingSignIn {
    /// Fresh random values from the browser's CSPRNG (oauth2's generators use getrandom's `js` backend).
    pub fn new() -> Self {
        let (_, verifier) = PkceCodeChallenge::new_random_sha256();
        // oauth2 has no nonce type; a nonce is the same kind of unguessable value as a state.
        let nonce = CsrfToken::new_random().into_secret();
        PendingSignIn { verifier, state: CsrfToken::new_random(), nonce }
    }
}

impl Default for PendingSignIn {
    fn default() -> Self {
        Self::new()
    }
}

/// sessionStorage key of the [`PendingSignIn`].
pub const STORAGE_KEY: &str = "postern.sign-in";
/// sessionStorage key of the `state` sent with a sign-out, checked on `/signed-out`.
pub const SIGN_OUT_STATE_KEY: &str = "postern.sign-out";

/// The absolute URL of one of the UI's own pages, on the origin it is served from.
pub fn ui_url(path: &str) -> String {
    let origin = web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default();
    format!("{origin}{path}")
}

/// The payload of a compact JWS, parsed as JSON. The signature is not checked here: the UI shows
/// the claims; the server that issued them is the one the UI trusts.
pub fn jwt_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

/// The authorization URL for the UI's own sign-in.
pub fn authorization_url(api_base: &str, client_id: &str, redirect_uri: &str, pending: &PendingSignIn) -> String {
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&pending.verifier);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid profile email groups")
        .append_pair("state", pending.state.secret())
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", challenge.method().as_str())
        .finish();
    format!("{api_base}/authorize?{query}")
}

/// An RP-initiated logout request (OpenID Connect RP-Initiated Logout 1.0 §2): the id_token ties it to
/// the session's user, so Postern ends the session without asking.
pub fn end_session_url(endpoint: &str, id_token: &str, post_logout_redirect_uri: &str, state: &CsrfToken) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("id_token_hint", id_token)
        .append_pair("post_logout_redirect_uri", post_logout_redirect_uri)
        .append_pair("state", state.secret())
        .finish();
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{separator}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_example_challenge() {
        let verifier = PkceCodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            PkceCodeChallenge::from_code_verifier_sha256(&verifier).as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn fresh_values_are_long_and_distinct() {
        let (a, b) = (PendingSignIn::new(), PendingSignIn::new());
        assert_eq!(a.verifier.secret().len(), 43, "32 random bytes, base64url");
        assert_ne!(a.state.secret(), b.state.secret());
        assert_ne!(a.nonce, a.state.secret().as_str());
    }

    #[test]
    fn pending_sign_in_survives_session_storage() {
        let p = PendingSignIn::new();
        let back: PendingSignIn = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.verifier.secret(), p.verifier.secret());
        assert_eq!(back.state.secret(), p.state.secret());
    }

    #[test]
    fn reads_claims_of_a_jws() {
        let jwt = format!("e30.{}.sig", B64.encode(br#"{"sub":"carol"}"#));
        assert_eq!(jwt_claims(&jwt).unwrap()["sub"], "carol");
        assert!(jwt_claims("garbage").is_none());
    }

    #[test]
    fn authorization_url_carries_pkce_and_state() {
        let p = PendingSignIn {
            verifier: PkceCodeVerifier::new("v".repeat(43)),
            state: CsrfToken::new("s t".into()),
            nonce: "n".into(),
        };
        let url = authorization_url("https://api.example", "postern-ui", "https://ui.example/callback", &p);
        assert!(url.starts_with("https://api.example/authorize?response_type=code&client_id=postern-ui"));
        assert!(url.contains("state=s+t") && url.contains("code_challenge_method=S256"));
        assert!(url.contains("redirect_uri=https%3A%2F%2Fui.example%2Fcallback"));
    }

    #[test]
    fn end_session_url_carries_hint_destination_and_state() {
        let state = CsrfToken::new("st".into());
        let url = end_session_url("https://api.example/end-session", "a.b.c", "https://ui.example/signed-out", &state);
        assert_eq!(
            url,
            "https://api.example/end-session?id_token_hint=a.b.c\
             &post_logout_redirect_uri=https%3A%2F%2Fui.example%2Fsigned-out&state=st"
        );
        assert!(
            end_session_url("https://x/logout?tenant=1", "t", "u", &state).starts_with("https://x/logout?tenant=1&")
        );
    }
}
