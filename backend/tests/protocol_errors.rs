//! Every error the authorization and token endpoints must answer, with the exact code and status.

mod common;

use common::*;
use oauth2::basic::BasicErrorResponseType;
use oauth2::{AuthorizationCode, PkceCodeVerifier, RequestTokenError, TokenResponse as _};
use serde_json::Value;

/// Query parameters of an authorization URL, editable.
type Pairs = Vec<(String, String)>;
/// A token request form.
type Form<'a> = Vec<(&'a str, &'a str)>;

async fn authorize_error(url: &url::Url) -> (String, url::Url) {
    let back = location(&http().get(url.clone()).send().await.unwrap());
    (query(&back, "error").unwrap_or_default(), back)
}

/// Logs in and returns a fresh code for `auth`.
async fn code_for(server: &Server, auth: &Authorization, user: &str) -> String {
    let back = login(&browser(), server, &auth.url, user, PASSWORD).await;
    query(&back, "code").unwrap()
}

/// The OAuth error of a code exchange, asserting its status: 400 (RFC 6749 §5.2), 401 for `invalid_client`.
async fn exchange_error(client: &OidcClient, code: &str, verifier: Option<&str>) -> BasicErrorResponseType {
    let mut request = client.exchange_code(AuthorizationCode::new(code.into()));
    if let Some(v) = verifier {
        request = request.set_pkce_verifier(PkceCodeVerifier::new(v.into()));
    }
    let http = Recording::new();
    let error = match request.request_async(&http).await {
        Err(RequestTokenError::ServerResponse(e)) => e.error().clone(),
        other => panic!("expected an OAuth error, got {other:?}"),
    };
    let expected = if error == BasicErrorResponseType::InvalidClient { 401 } else { 400 };
    assert_eq!(http.status(), expected, "status of {error:?}");
    error
}

#[tokio::test]
async fn unknown_client_and_bad_redirect_uri_are_never_redirected() {
    let server = Server::start("");
    let good = authorization(&hub_client(&server), &[]).url;
    let mut cases = Vec::new();
    let mut unknown = good.clone();
    unknown.query_pairs_mut().clear().extend_pairs(good.query_pairs().map(|(k, v)| {
        if k == "client_id" {
            (k.into_owned(), "nobody".to_owned())
        } else {
            (k.into_owned(), v.into_owned())
        }
    }));
    cases.push(unknown);
    for bad in [
        "https://hub.example:8443/hub/oauth_callback/",
        "https://hub.example:9443/hub/oauth_callback",
        "https://HUB.example:8443/hub/oauth_callback",
        "https://hub.example:8443/hub/oauth_callback?x=1",
        "https://attacker.example/hub/oauth_callback",
        "https://hub.example:8443@attacker.example/hub/oauth_callback",
    ] {
        let mut url = good.clone();
        url.query_pairs_mut().clear().extend_pairs(good.query_pairs().map(|(k, v)| {
            if k == "redirect_uri" {
                (k.into_owned(), bad.to_owned())
            } else {
                (k.into_owned(), v.into_owned())
            }
        }));
        cases.push(url);
    }
    let mut missing = good.clone();
    missing.query_pairs_mut().clear().extend_pairs(good.query_pairs().filter(|(k, _)| k != "redirect_uri"));
    cases.push(missing);
    for url in cases {
        let response = http().get(url.clone()).send().await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        assert!(response.headers().get("location").is_none(), "never redirected: {url}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(response.text().await.unwrap().contains("cannot continue"));
    }
}

#[tokio::test]
async fn authorization_request_errors_go_back_with_state_and_iss() {
    let server = Server::start("");
    let client = hub_client(&server);
    let base = authorization(&client, &[]).url;
    let with = |edit: &dyn Fn(&mut Pairs)| {
        let mut pairs: Vec<(String, String)> =
            base.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        edit(&mut pairs);
        let mut url = base.clone();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        url
    };
    let drop_key = |key: &'static str| move |p: &mut Pairs| p.retain(|(k, _)| k != key);
    let set = |key: &'static str, value: &'static str| {
        move |p: &mut Pairs| {
            p.retain(|(k, _)| k != key);
            p.push((key.into(), value.into()));
        }
    };
    let cases: Vec<(url::Url, &str)> = vec![
        (with(&drop_key("code_challenge")), "invalid_request"),
        (with(&set("code_challenge_method", "plain")), "invalid_request"),
        (with(&set("code_challenge", "too-short")), "invalid_request"),
        (with(&drop_key("code_challenge_method")), "invalid_request"),
        (with(&set("scope", "profile email")), "invalid_scope"),
        (with(&set("response_type", "token")), "unsupported_response_type"),
        (with(&drop_key("response_type")), "invalid_request"),
        (with(&set("response_mode", "form_post")), "invalid_request"),
        (with(&set("prompt", "none login")), "invalid_request"),
        (with(&set("max_age", "soon")), "invalid_request"),
        (with(&set("request", "eyJhbGciOiJub25lIn0.e30.")), "request_not_supported"),
        (with(&|p| p.push(("scope".into(), "openid".into()))), "invalid_request"),
    ];
    let state = query(&base, "state").unwrap();
    for (url, expected) in cases {
        let (error, back) = authorize_error(&url).await;
        assert_eq!(error, expected, "{url}");
        assert!(back.as_str().starts_with(HUB_CALLBACK));
        assert_eq!(query(&back, "state").as_deref(), Some(state.as_str()));
        assert_eq!(query(&back, "iss").as_deref(), Some(server.issuer.as_str()));
        assert!(query(&back, "error_description").is_some());
    }
    // Unknown parameters and unknown scopes are ignored.
    let url = with(&|p| {
        p.push(("foo".into(), "bar".into()));
        p.retain(|(k, _)| k != "scope");
        p.push(("scope".into(), "openid unknown-scope".into()));
    });
    let response = http().get(url).send().await.unwrap();
    assert_eq!(location(&response).path(), "/login");
}

#[tokio::test]
async fn code_exchange_errors() {
    let server = Server::start("");
    server.add_user("hank", &[]);
    let client = hub_client(&server);
    let auth = authorization(&client, &[]);
    let code = code_for(&server, &auth, "hank").await;
    let verifier = auth.verifier.secret().to_owned();

    // Wrong or missing verifier, wrong redirect_uri, another client's code: invalid_grant, nothing consumed.
    let other_verifier = "x".repeat(43);
    assert_eq!(exchange_error(&client, &code, Some(&other_verifier)).await, BasicErrorResponseType::InvalidGrant);
    assert_eq!(exchange_error(&client, &code, None).await, BasicErrorResponseType::InvalidGrant);
    let elsewhere = oauth_client(&server, "jupyterhub", Some(HUB_SECRET), "https://hub.example:8443/other")
        .set_auth_type(oauth2::AuthType::RequestBody);
    assert_eq!(exchange_error(&elsewhere, &code, Some(&verifier)).await, BasicErrorResponseType::InvalidGrant);
    let legacy = oauth_client(&server, "legacy", Some(LEGACY_SECRET), HUB_CALLBACK);
    assert_eq!(exchange_error(&legacy, &code, Some(&verifier)).await, BasicErrorResponseType::InvalidGrant);
    // Wrong secret: 401 invalid_client with a challenge.
    let response = token_form(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", HUB_CALLBACK),
            ("code_verifier", &verifier),
            ("client_id", "jupyterhub"),
            ("client_secret", "wrong-secret-0123456789"),
        ],
    )
    .await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_client");

    // After all that the code still works once...
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.clone()))
        .request_async(&http())
        .await
        .unwrap();
    assert_eq!(userinfo(&server, tokens.access_token().secret()).await.status(), 200);
    // ...and a replay fails and revokes what the first exchange issued.
    assert_eq!(exchange_error(&client, &code, Some(&verifier)).await, BasicErrorResponseType::InvalidGrant);
    let response = userinfo(&server, tokens.access_token().secret()).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    let refresh = tokens.refresh_token().unwrap().secret();
    let response = token_form(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "jupyterhub"),
            ("client_secret", HUB_SECRET),
        ],
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

#[tokio::test]
async fn expired_code_is_refused() {
    let server = Server::start("tokens.code_lifetime = 1");
    server.add_user("ivan", &[]);
    let client = hub_client(&server);
    let auth = authorization(&client, &[]);
    let code = code_for(&server, &auth, "ivan").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        exchange_error(&client, &code, Some(auth.verifier.secret())).await,
        BasicErrorResponseType::InvalidGrant
    );
}

#[tokio::test]
async fn legacy_client_without_pkce_and_downgrade_attempt() {
    let server = Server::start("");
    server.add_user("judy", &[]);
    let legacy = oauth_client(&server, "legacy", Some(LEGACY_SECRET), "https://legacy.example/cb");
    let (url, _) =
        legacy.authorize_url(oauth2::CsrfToken::new_random).add_scope(oauth2::Scope::new("openid".into())).url();
    let back = login(&browser(), &server, &url, "judy", PASSWORD).await;
    let code = query(&back, "code").unwrap();
    // A verifier for a code that had no challenge is a downgrade attempt (RFC 9700 §2.1.1).
    assert_eq!(exchange_error(&legacy, &code, Some(&"v".repeat(43))).await, BasicErrorResponseType::InvalidGrant);
    let tokens = legacy.exchange_code(AuthorizationCode::new(code)).request_async(&http()).await.unwrap();
    assert!(tokens.refresh_token().is_none(), "legacy is configured without refresh tokens");
}

#[tokio::test]
async fn token_endpoint_request_errors() {
    let server = Server::start("");
    let hub = [("client_id", "jupyterhub"), ("client_secret", HUB_SECRET)];
    let cases: Vec<(Form, u16, &str)> = vec![
        (vec![("grant_type", "password"), ("username", "a"), ("password", "b")], 400, "unsupported_grant_type"),
        (vec![("grant_type", "client_credentials")], 400, "unsupported_grant_type"),
        (vec![], 400, "invalid_request"),
        (vec![("grant_type", "authorization_code")], 400, "invalid_request"),
        (
            vec![("grant_type", "authorization_code"), ("code", "nope"), ("redirect_uri", HUB_CALLBACK)],
            400,
            "invalid_grant",
        ),
        (vec![("grant_type", "refresh_token"), ("refresh_token", "nope")], 400, "invalid_grant"),
        (vec![("grant_type", "authorization_code"), ("grant_type", "refresh_token")], 400, "invalid_request"),
    ];
    for (form, status, error) in cases {
        let mut form = form;
        form.extend(hub);
        let response = token_form(&server, &form).await;
        assert_eq!(response.status(), status, "{form:?}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], error, "{form:?}");
    }
    // No client authentication, an unknown client, a confidential client without its secret.
    for form in [
        vec![("grant_type", "authorization_code"), ("code", "x")],
        vec![("grant_type", "authorization_code"), ("code", "x"), ("client_id", "nobody"), ("client_secret", "s")],
        vec![("grant_type", "authorization_code"), ("code", "x"), ("client_id", "jupyterhub")],
    ] {
        let response = token_form(&server, &form).await;
        assert_eq!(response.status(), 401, "{form:?}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_client");
    }
    // JSON instead of a form.
    let response = http()
        .post(server.url("/token"))
        .json(&serde_json::json!({"grant_type": "authorization_code", "code": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test]
async fn userinfo_without_a_valid_token() {
    let server = Server::start("");
    let response = http().get(server.url("/userinfo")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let response = userinfo(&server, "not-a-token").await;
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
}

#[tokio::test]
async fn login_api_gives_one_answer_for_every_bad_credential() {
    let server = Server::start("");
    server.add_user("kate", &[]);
    server.add_user("leo", &[]);
    assert!(server.cli(&["user", "disable", "leo"], "").status.success());
    let client = hub_client(&server);
    let browser = browser();
    let auth = authorization(&client, &[]);
    let login_page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    let handle = query(&login_page, "request").unwrap();
    let mut bodies = Vec::new();
    for (user, password) in
        [("kate", "wrong password"), ("nobody", PASSWORD), ("leo", PASSWORD), ("k\u{0430}te", PASSWORD)]
    {
        let response = submit_login(&browser, &server, &handle, user, password).await;
        assert_eq!(response.status(), 401, "{user}");
        bodies.push(response.text().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "indistinguishable: {bodies:?}");
    let body: shared::ErrorBody = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body.error, shared::ErrorCode::InvalidCredentials);

    // Three failures for one username from one address: the next attempt must wait, with Retry-After,
    // even with the right password; then it goes through.
    for n in 0..2 {
        assert_eq!(submit_login(&browser, &server, &handle, "kate", "wrong").await.status(), 401, "failure {n}");
    }
    let throttled = submit_login(&browser, &server, &handle, "kate", PASSWORD).await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "1");
    assert_eq!(throttled.json::<shared::ErrorBody>().await.unwrap().error, shared::ErrorCode::TooManyAttempts);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // The request survives failed attempts and completes once; so does its ticket.
    let ok = submit_login(&browser, &server, &handle, "kate", PASSWORD).await;
    assert_eq!(ok.status(), 200);
    let again = submit_login(&browser, &server, &handle, "kate", PASSWORD).await;
    assert_eq!(again.status(), 404);
    assert_eq!(again.json::<shared::ErrorBody>().await.unwrap().error, shared::ErrorCode::RequestNotFound);
    let ticket_url = ok.json::<shared::LoginResponse>().await.unwrap().redirect_to;
    assert!(ticket_url.starts_with(&server.url("/authorize/resume?ticket=")));
    assert_eq!(location(&browser.get(&ticket_url).send().await.unwrap()).path(), "/hub/oauth_callback");
    let replay = browser.get(&ticket_url).send().await.unwrap();
    assert_eq!(replay.status(), 400, "a ticket is single-use");
    assert!(replay.headers().get("location").is_none());

    // Unknown handles and non-JSON bodies.
    let response = browser.get(server.url("/api/authorization-requests/unknown")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = browser
        .post(server.url("/api/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("request={handle}&username=kate&password=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}
