//! The authorization code flow end to end over HTTP: what JupyterHub and strict OIDC clients see.

mod common;

use common::*;
use oauth2::{AuthorizationCode, TokenResponse as _};
use serde_json::Value;

#[tokio::test]
async fn jupyterhub_login_yields_verified_id_token_and_userinfo() {
    let server = Server::start("");
    server.add_user("Carol", &["e2e-users", "hub-admins"]);
    let client = hub_client(&server);
    let auth = authorization(&client, &[("nonce", "n-0S6_WzA2Mj")]);
    let browser = browser();

    let back = login(&browser, &server, &auth.url, "CAROL", PASSWORD).await;
    assert_eq!(format!("{}://{}{}", back.scheme(), back.authority(), back.path()), HUB_CALLBACK);
    assert_eq!(query(&back, "state").as_deref(), Some(auth.state.secret().as_str()), "state echoed byte for byte");
    assert_eq!(query(&back, "iss").as_deref(), Some(server.issuer.as_str()), "RFC 9207 iss");
    let code = query(&back, "code").unwrap();

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(auth.verifier)
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(tokens.token_type().as_ref(), "bearer");
    assert_eq!(tokens.expires_in().unwrap().as_secs(), 900);
    assert!(tokens.refresh_token().is_some());
    let scopes: Vec<String> = tokens.scopes().unwrap().iter().map(|s| s.to_string()).collect();
    assert_eq!(scopes, ["openid", "profile", "email"]);

    let claims = verify_id_token(&server, tokens.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["preferred_username"], "carol");
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    assert_eq!(claims["at_hash"].as_str().unwrap().len(), 22);
    assert!(claims.get("groups").is_none(), "groups only with the groups scope or groups_claim");

    let response = userinfo(&server, tokens.access_token().secret()).await;
    assert_eq!(response.status(), 200);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["sub"], "carol");
    assert_eq!(info["name"], "Test User");
    assert_eq!(info["email"], "t@example.org");
    assert_eq!(info["email_verified"], true);
}

#[tokio::test]
async fn token_request_exactly_as_jupyterhub_sends_it() {
    // Contract §3: charset on the content type, `data=None`, id and secret in the body.
    let server = Server::start("");
    server.add_user("dave", &["e2e-users"]);
    let client = hub_client(&server);
    let auth = authorization(&client, &[("scope", "openid profile email groups")]);
    let back = login(&browser(), &server, &auth.url, "dave", PASSWORD).await;
    let response = token_form(
        &server,
        &[
            ("code", &query(&back, "code").unwrap()),
            ("grant_type", "authorization_code"),
            ("redirect_uri", HUB_CALLBACK),
            ("data", "None"),
            ("code_verifier", auth.verifier.secret()),
            ("client_id", "jupyterhub"),
            ("client_secret", HUB_SECRET),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    for field in ["access_token", "id_token", "refresh_token", "expires_in", "scope"] {
        assert!(body.get(field).is_some(), "missing {field}");
    }
    assert_eq!(body["refresh_token_expires_in"], 14 * 24 * 3600, "the refresh token's lifetime, for the UI to show");
    let info: Value = userinfo(&server, body["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(info["groups"], serde_json::json!(["e2e-users"]));
    assert_eq!(info["preferred_username"], "dave");

    // POST works too, with the token in the header or in a form body (RFC 6750 §2.2), not both.
    let token = body["access_token"].as_str().unwrap();
    let by_header = http().post(server.url("/userinfo")).bearer_auth(token).send().await.unwrap();
    assert_eq!(by_header.json::<Value>().await.unwrap(), info);
    let form = || {
        http()
            .post(server.url("/userinfo"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("access_token={token}"))
    };
    assert_eq!(form().send().await.unwrap().json::<Value>().await.unwrap(), info);
    let both = form().bearer_auth(token).send().await.unwrap();
    assert_eq!(both.status(), 400);
}

#[tokio::test]
async fn basic_auth_and_public_clients_work() {
    let server = Server::start("");
    server.add_user("erin", &[]);
    let browser = browser();

    // client_secret_basic (the oauth2 crate's default).
    let basic = oauth_client(&server, "jupyterhub", Some(HUB_SECRET), HUB_CALLBACK);
    let auth = authorization(&basic, &[]);
    let back = login(&browser, &server, &auth.url, "erin", PASSWORD).await;
    let tokens = exchange(&basic, &back, auth.verifier).await;
    assert!(tokens.extra_fields().id_token.is_some());

    // A public client: no secret at all, PKCE mandatory.
    let spa = oauth_client(&server, "spa", None, &server.url("/callback")).set_auth_type(oauth2::AuthType::RequestBody);
    let auth = authorization(&spa, &[]);
    let back = browser.get(auth.url.clone()).send().await.unwrap();
    let back = location(&back); // SSO session from the first login: no form.
    let tokens = exchange(&spa, &back, auth.verifier).await;
    verify_id_token(&server, tokens.extra_fields().id_token.as_deref().unwrap(), "spa").await;
}

#[tokio::test]
async fn sso_session_prompt_and_max_age() {
    let server = Server::start("");
    server.add_user("frank", &[]);
    let client = hub_client(&server);
    let browser = browser();

    // prompt=none without a session: login_required at the redirect URI, state and iss kept.
    let auth = authorization(&client, &[("prompt", "none")]);
    let back = location(&browser.get(auth.url.clone()).send().await.unwrap());
    assert_eq!(query(&back, "error").as_deref(), Some("login_required"));
    assert_eq!(query(&back, "state").as_deref(), Some(auth.state.secret().as_str()));
    assert_eq!(query(&back, "iss").as_deref(), Some(server.issuer.as_str()));

    let auth = authorization(&client, &[]);
    let first = login(&browser, &server, &auth.url, "frank", PASSWORD).await;
    let code = query(&first, "code").unwrap();
    let first_tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(auth.verifier)
        .request_async(&http())
        .await
        .unwrap();
    let first_claims =
        verify_id_token(&server, first_tokens.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;

    // Within the session: a code without the form, for prompt=none too; auth_time is the original one.
    for extra in [vec![], vec![("prompt", "none")]] {
        let auth = authorization(&client, &extra);
        let back = location(&browser.get(auth.url.clone()).send().await.unwrap());
        assert_eq!(back.path(), "/hub/oauth_callback", "SSO skips the form");
        let tokens = exchange(&client, &back, auth.verifier).await;
        let claims = verify_id_token(&server, tokens.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
        assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    }

    // id_token_hint: frank's own id_token lets prompt=none answer; another user's asks for a login; a
    // forged one is refused.
    server.add_user("gina", &[]);
    let frank_hint = first_tokens.extra_fields().id_token.clone().unwrap();
    let gina_hint = {
        let auth = authorization(&client, &[]);
        let back = login(&self::browser(), &server, &auth.url, "gina", PASSWORD).await;
        exchange(&client, &back, auth.verifier).await.extra_fields().id_token.clone().unwrap()
    };
    let auth = authorization(&client, &[("prompt", "none"), ("id_token_hint", &frank_hint)]);
    let back = location(&browser.get(auth.url.clone()).send().await.unwrap());
    assert!(query(&back, "code").is_some(), "the hint names the signed-in user: {back}");
    let auth = authorization(&client, &[("prompt", "none"), ("id_token_hint", &gina_hint)]);
    let back = location(&browser.get(auth.url.clone()).send().await.unwrap());
    assert_eq!(query(&back, "error").as_deref(), Some("login_required"), "frank is signed in, not gina");
    let auth = authorization(&client, &[("id_token_hint", &gina_hint)]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/login");
    // frank's header and signature around gina's claims.
    let parts = |t: &str| t.split('.').map(str::to_owned).collect::<Vec<_>>();
    let (f, g) = (parts(&frank_hint), parts(&gina_hint));
    let forged = format!("{}.{}.{}", f[0], g[1], f[2]);
    let auth = authorization(&client, &[("prompt", "none"), ("id_token_hint", &forged)]);
    let back = location(&browser.get(auth.url.clone()).send().await.unwrap());
    assert_eq!(query(&back, "error").as_deref(), Some("invalid_request"));

    // prompt=login and an exceeded max_age both show the form again.
    for extra in [("prompt", "login"), ("max_age", "0")] {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let auth = authorization(&client, &[extra]);
        let response = browser.get(auth.url.clone()).send().await.unwrap();
        assert_eq!(location(&response).path(), "/login", "{extra:?} forces the form");
    }

    // The session cookie is HttpOnly, SameSite=Lax, and not Secure on an http issuer.
    let auth = authorization(&client, &[("prompt", "login")]);
    let login_page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    let response = submit_login(&browser, &server, &query(&login_page, "request").unwrap(), "frank", PASSWORD).await;
    assert!(response.headers().get("set-cookie").is_none(), "the cookie is set by the top-level step");
    let response = resume(&browser, response).await;
    assert_eq!(location(&response).path(), "/hub/oauth_callback");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("postern_session="));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn other_signing_algorithms_verify_against_the_jwks() {
    for alg in ["ES256", "EdDSA"] {
        let server = Server::start(&format!("tokens.signing_alg = \"{alg}\""));
        server.add_user("gina", &[]);
        let discovery: Value =
            http().get(server.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
        assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!([alg]));
        let client = hub_client(&server);
        let auth = authorization(&client, &[]);
        let back = login(&browser(), &server, &auth.url, "gina", PASSWORD).await;
        let tokens = exchange(&client, &back, auth.verifier).await;
        let claims = verify_id_token(&server, tokens.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
        assert_eq!(claims["sub"], "gina");
    }
}

#[tokio::test]
async fn discovery_names_every_endpoint_under_the_issuer() {
    let server = Server::start("");
    let response = http().get(server.url("/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let d: Value = response.json().await.unwrap();
    assert_eq!(d["issuer"], server.issuer);
    for (key, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks.json"),
    ] {
        assert_eq!(d[key], server.url(path));
    }
    assert_eq!(d["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    let jwks: Value = http().get(server.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert!(key.get("d").is_none(), "no private material in the JWKS");
}
