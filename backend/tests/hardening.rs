//! Hardening: login throttling by address behind a trusted proxy, Origin checks, https-only cookie
//! and header rules, session idle expiry, and logs that never carry a secret.

mod common;

use common::*;
use oauth2::TokenResponse as _;

async fn pending_handle(browser: &reqwest::Client, server: &Server) -> String {
    let auth = authorization(&hub_client(server), &[]);
    let login_page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    query(&login_page, "request").unwrap()
}

async fn login_from(server: &Server, handle: &str, user: &str, password: &str, forwarded_for: &str) -> u16 {
    http()
        .post(server.url("/api/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&shared::LoginRequest { request: handle.into(), username: user.into(), password: password.into() })
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn throttling_follows_x_forwarded_for_only_from_trusted_proxies() {
    let server = Server::start(r#"trusted_proxies = ["127.0.0.1"]"#);
    server.add_user("rosa", &[]);
    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    for (i, user) in ["a", "b", "c", "d"].iter().enumerate() {
        assert_eq!(login_from(&server, &handle, user, "bad", "203.0.113.1").await, 401, "attempt {i}");
    }
    assert_eq!(login_from(&server, &handle, "e", "bad", "203.0.113.1").await, 429, "that address waits");
    assert_eq!(login_from(&server, &handle, "rosa", PASSWORD, "203.0.113.2").await, 200, "another address does not");

    // Without trust, the header is ignored: every request counts for the real peer.
    let untrusted = Server::start("");
    let handle = pending_handle(&browser, &untrusted).await;
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"].iter().enumerate() {
        assert_eq!(login_from(&untrusted, &handle, &format!("u{i}"), "bad", ip).await, 401);
    }
    assert_eq!(login_from(&untrusted, &handle, "u9", "bad", "198.51.100.9").await, 429);
}

#[tokio::test]
async fn the_login_api_refuses_other_origins() {
    let server = Server::start("");
    server.add_user("sam", &[]);
    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    let post = |origin: &'static str| {
        http()
            .post(server.url("/api/login"))
            .header("origin", origin)
            .json(&shared::LoginRequest { request: handle.clone(), username: "sam".into(), password: PASSWORD.into() })
            .send()
    };
    let refused = post("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 400);
    let issuer_origin: &'static str = Box::leak(server.issuer.clone().into_boxed_str());
    assert_eq!(post(issuer_origin).await.unwrap().status(), 200, "the issuer's own origin is fine");
}

#[tokio::test]
async fn https_issuer_gets_host_prefixed_secure_cookies_and_hsts() {
    let server = Server::start_as("", Some("https://login.example"));
    server.add_user("tina", &[]);
    let response = http().get(server.url("/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(response.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["issuer"], "https://login.example");

    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    let done = submit_login(&browser, &server, &handle, "tina", PASSWORD).await;
    let next = done.json::<shared::LoginResponse>().await.unwrap().redirect_to;
    // The public URL points at the proxy; go to the process directly.
    let local = next.replace("https://login.example", &server.local);
    let response = browser.get(local).send().await.unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("__Host-postern_session="), "{cookie}");
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Domain"), "{cookie}");
}

#[tokio::test]
async fn an_idle_session_expires() {
    let server = Server::start("session.idle_timeout = 1");
    server.add_user("uma", &[]);
    let client = hub_client(&server);
    let browser = browser();
    login(&browser, &server, &authorization(&client, &[]).url, "uma", PASSWORD).await;
    let auth = authorization(&client, &[]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/hub/oauth_callback");
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let auth = authorization(&client, &[]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/login", "idle too long");
}

#[tokio::test]
async fn logs_never_carry_a_password_code_token_or_secret() {
    let server = Server::start("");
    server.add_user("vera", &["staff"]);
    let client = hub_client(&server);
    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    let wrong = "a-wrong-password-value";
    assert_eq!(submit_login(&browser, &server, &handle, "vera", wrong).await.status(), 401);
    let auth = authorization(&client, &[]);
    let back = login(&browser, &server, &auth.url, "vera", PASSWORD).await;
    let code = query(&back, "code").unwrap();
    let tokens = exchange(&client, &back, auth.verifier).await;
    let refresh = tokens.refresh_token().unwrap().secret().clone();
    let refreshed = client
        .exchange_refresh_token(&oauth2::RefreshToken::new(refresh.clone()))
        .request_async(&http())
        .await
        .unwrap();
    // Reuse of the rotated token: an audit event, still no secret.
    assert!(client
        .exchange_refresh_token(&oauth2::RefreshToken::new(refresh.clone()))
        .request_async(&http())
        .await
        .is_err());
    userinfo(&server, refreshed.access_token().secret()).await;

    let log = server.log();
    for event in ["login_failed", "login_succeeded", "tokens_issued", "refresh_reuse_detected"] {
        assert!(log.contains(&format!("event=\"{event}\"")), "audit event {event} missing:\n{log}");
    }
    let secrets = [
        PASSWORD,
        wrong,
        HUB_SECRET,
        &code,
        tokens.access_token().secret(),
        &refresh,
        refreshed.access_token().secret(),
        refreshed.refresh_token().unwrap().secret(),
        tokens.extra_fields().id_token.as_deref().unwrap(),
        &handle,
        auth.state.secret(),
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret ({} chars) is in the log:\n{log}", secret.len());
    }
}
