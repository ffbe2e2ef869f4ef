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
        .header("origin", server.origin())
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
    for i in 0..4 {
        assert_eq!(login_from(&server, &handle, "rosa", "bad", "203.0.113.1").await, 401, "attempt {i}");
    }
    assert_eq!(login_from(&server, &handle, "rosa", PASSWORD, "203.0.113.1").await, 429, "that address waits");
    assert_eq!(login_from(&server, &handle, "rosa", PASSWORD, "203.0.113.2").await, 200, "another address does not");

    // Without trust, the header is ignored: every request counts for the real peer.
    let untrusted = Server::start("");
    let handle = pending_handle(&browser, &untrusted).await;
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"].iter().enumerate() {
        assert_eq!(login_from(&untrusted, &handle, "u", "bad", ip).await, 401, "attempt {i}");
    }
    assert_eq!(login_from(&untrusted, &handle, "u", "bad", "198.51.100.9").await, 429);
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

/// The value of the cookie `name` a response sets.
fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap().to_owned()))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

#[tokio::test]
async fn logs_never_carry_a_password_code_token_or_secret() {
    // Everything down to debug, from Postern and every library it uses.
    let server = Server::start_verbose("");
    server.add_user("vera", &["staff"]);
    let client = hub_client(&server);
    let browser = browser();

    // A sign-in with one wrong password first, step by step to see every credential the browser gets.
    let auth = authorization(&client, &[]);
    let start = browser.get(auth.url.clone()).send().await.unwrap();
    let browser_cookie = set_cookie(&start, "postern_session_browser");
    let handle = query(&location(&start), "request").unwrap();
    let wrong = "a-wrong-password-value";
    assert_eq!(submit_login(&browser, &server, &handle, "vera", wrong).await.status(), 401);
    let done = submit_login(&browser, &server, &handle, "vera", PASSWORD).await;
    let ticket_url = done.json::<shared::LoginResponse>().await.unwrap().redirect_to;
    let ticket = ticket_url.split("ticket=").nth(1).unwrap().to_owned();
    let resumed = browser.get(&ticket_url).send().await.unwrap();
    let session_cookie = set_cookie(&resumed, "postern_session");
    let back = location(&resumed);
    let code = query(&back, "code").unwrap();
    let tokens = exchange(&client, &back, auth.verifier).await;
    let id_token = tokens.extra_fields().id_token.clone().unwrap();
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

    // A wrong client secret; a second sign-in from the SSO session, whose tokens are introspected and
    // revoked; a logout with an id_token_hint.
    let wrong_secret = "a-wrong-client-secret-value";
    let bad_client = [("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", "jupyterhub")];
    let response = token_form(&server, &[&bad_client[..], &[("client_secret", wrong_secret)]].concat()).await;
    assert_eq!(response.status(), 401);
    let auth = authorization(&client, &[]);
    let back = location(&browser.get(auth.url.clone()).send().await.unwrap());
    let second_code = query(&back, "code").unwrap();
    let second = exchange(&client, &back, auth.verifier).await;
    let new_access = second.access_token().secret();
    let new_refresh = second.refresh_token().unwrap().secret();
    let hub = [("client_id", "jupyterhub"), ("client_secret", HUB_SECRET)];
    let response = post_form(&server, "/introspect", &[&[("token", new_access.as_str())][..], &hub].concat()).await;
    assert_eq!(response.status(), 200);
    let response = post_form(&server, "/revoke", &[&[("token", new_refresh.as_str())][..], &hub].concat()).await;
    assert_eq!(response.status(), 200);
    let logout = url::Url::parse_with_params(
        &server.url("/end-session"),
        [("id_token_hint", id_token.as_str()), ("post_logout_redirect_uri", HUB_LOGGED_OUT), ("state", "st-9")],
    )
    .unwrap();
    assert_eq!(location(&browser.get(logout).send().await.unwrap()).path(), "/hub/logged-out");

    let log = server.log();
    for event in [
        "login_failed",
        "login_succeeded",
        "tokens_issued",
        "refresh_reuse_detected",
        "client_auth_failed",
        "token_revoked",
        "logout",
    ] {
        assert!(log.contains(&format!("event=\"{event}\"")), "audit event {event} missing:\n{log}");
    }
    assert!(log.contains("DEBUG"), "the log is at debug level");
    let secrets = [
        PASSWORD,
        wrong,
        HUB_SECRET,
        wrong_secret,
        &code,
        tokens.access_token().secret(),
        &refresh,
        refreshed.access_token().secret(),
        refreshed.refresh_token().unwrap().secret(),
        &second_code,
        new_access,
        new_refresh,
        &id_token,
        &handle,
        &ticket,
        &browser_cookie,
        &session_cookie,
        auth.state.secret(),
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret ({} chars) is in the log:\n{log}", secret.len());
    }
    // Nor in the database: only hashes of credentials are stored.
    let mut stored = std::fs::read(server.db_path()).unwrap();
    stored.extend(std::fs::read(server.db_path().with_extension("db-wal")).unwrap_or_default());
    for secret in secrets.iter().filter(|s| **s != auth.state.secret()) {
        assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "a credential is stored in the clear");
    }
}

#[tokio::test]
async fn a_login_ticket_works_only_in_the_browser_that_started_the_sign_in() {
    let server = Server::start("");
    server.add_user("wes", &[]);
    // The attacker signs in to a request of their own and sends the ticket link to a victim.
    let attacker = browser();
    let handle = pending_handle(&attacker, &server).await;
    let done = submit_login(&attacker, &server, &handle, "wes", PASSWORD).await;
    let ticket_url = done.json::<shared::LoginResponse>().await.unwrap().redirect_to;
    let victim = browser();
    let response = victim.get(&ticket_url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("set-cookie").is_none(), "no session for the victim");
    assert!(response.text().await.unwrap().contains("started in a different browser"));
    let auth = authorization(&hub_client(&server), &[]);
    assert_eq!(location(&victim.get(auth.url).send().await.unwrap()).path(), "/login", "the victim is not signed in");
    assert_eq!(attacker.get(&ticket_url).send().await.unwrap().status(), 400, "the ticket is spent");
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_busy() {
    let server = Server::start("session.lifetime = 2\nsession.idle_timeout = 3600");
    server.add_user("zoe", &[]);
    let client = hub_client(&server);
    let browser = browser();
    login(&browser, &server, &authorization(&client, &[]).url, "zoe", PASSWORD).await;
    // Kept busy: used every half second, so never idle.
    for _ in 0..3 {
        let auth = authorization(&client, &[]);
        assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/hub/oauth_callback");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let auth = authorization(&client, &[]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/login", "lifetime over");
}

#[tokio::test]
async fn security_headers_and_no_cors_unless_configured() {
    let server = Server::start("");
    server.add_user("ana", &[]);
    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    let pending = browser.get(server.url(&format!("/api/authorization-requests/{handle}"))).send().await.unwrap();
    let failed = submit_login(&browser, &server, &handle, "ana", "wrong").await;
    let succeeded = submit_login(&browser, &server, &handle, "ana", PASSWORD).await;
    let discovery = http().get(server.url("/.well-known/openid-configuration")).send().await.unwrap();
    for (what, response) in [("pending request", &pending), ("failed login", &failed), ("login", &succeeded)] {
        assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
    }
    for (what, response) in [("login API", &succeeded), ("discovery", &discovery)] {
        let h = response.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
        assert_eq!(h["x-frame-options"], "DENY", "{what}");
        assert_eq!(h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'", "{what}");
        assert!(h.get("strict-transport-security").is_none(), "{what}: no HSTS over plain http");
    }
    // No UI on another origin is configured, so no origin gets CORS at /token or /userinfo.
    for path in ["/token", "/userinfo"] {
        let preflight = http()
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", "https://ui.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(preflight.headers().get("access-control-allow-origin").is_none(), "{path} preflight");
        let post = http().post(server.url(path)).header("origin", "https://ui.example").send().await.unwrap();
        assert!(post.headers().get("access-control-allow-origin").is_none(), "{path}");
    }
}
