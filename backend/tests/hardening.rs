//! Hardening: login throttling by address behind a trusted proxy, Origin checks, https-only cookie
//! and header rules, session idle expiry, and logs that never carry a secret.

mod common;

use common::*;
use std::sync::Arc;

use oauth2::TokenResponse as _;
use url::Url;

#[tokio::test]
async fn throttling_follows_x_forwarded_for_only_from_trusted_proxies() {
    let server = Server::start(r#"trusted_proxies = ["127.0.0.1"]"#);
    server.add_user("rosa", &[]);
    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    for i in 0..3 {
        assert_eq!(login_from(&server, &handle, "rosa", "bad", "203.0.113.1").await, 401, "attempt {i}");
    }
    assert_eq!(login_from(&server, &handle, "rosa", PASSWORD, "203.0.113.1").await, 429, "that address waits");
    assert_eq!(login_from(&server, &handle, "rosa", PASSWORD, "203.0.113.2").await, 200, "another address does not");

    // Without trust, the header is ignored: every request counts for the real peer.
    let untrusted = Server::start("");
    let handle = pending_handle(&browser, &untrusted).await;
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"].iter().enumerate() {
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
    // Nor in the database: only hashes of credentials are stored (SQLite: in its files, byte for byte).
    let stored = Db::stored(&server.database).await;
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
    // Times are whole seconds, so a 4 s lifetime lasts between 3 and 4 s.
    let server = Server::start("session.lifetime = 4\nsession.idle_timeout = 3600");
    server.add_user("zoe", &[]);
    let client = hub_client(&server);
    let browser = browser();
    login(&browser, &server, &authorization(&client, &[]).url, "zoe", PASSWORD).await;
    let signed_in = std::time::Instant::now();
    // Kept busy: used every half second, so never idle, for 2 s.
    while signed_in.elapsed() < std::time::Duration::from_secs(2) {
        let auth = authorization(&client, &[]);
        assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/hub/oauth_callback");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(5).saturating_sub(signed_in.elapsed())).await;
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

/// One student's sign-in up to the code, with the login submitted when every student is ready.
async fn student_signs_in(
    server: Arc<Server>,
    client: OidcClient,
    name: String,
    ready: Arc<tokio::sync::Barrier>,
) -> (String, Url, oauth2::PkceCodeVerifier) {
    let browser = browser();
    let auth = authorization(&client, &[]);
    let handle = query(&location(&browser.get(auth.url.clone()).send().await.unwrap()), "request").unwrap();
    ready.wait().await;
    let response = submit_login(&browser, &server, &handle, &name, PASSWORD).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{name} was refused at the login API: {body}\nserver log:\n{}", server.log());
    let next = serde_json::from_str::<shared::LoginResponse>(&body).unwrap().redirect_to;
    let back = location(&browser.get(next).send().await.unwrap());
    (name, back, auth.verifier)
}

/// A workshop: a freshly started Postern, 40 students behind one address (a campus NAT) signing in
/// through the login API at the same moment, then the Hub exchanging their 40 codes at once with its
/// secret not yet verified since the start. Every one gets in; none is counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_class_behind_one_address_signs_in_at_once() {
    const CLASS: usize = 40;
    let server = Server::start("");
    let names: Vec<String> = (0..CLASS).map(|n| format!("student{n:02}")).collect();
    for name in &names {
        server.add_user(name, &[]);
    }
    let server = Arc::new(server);
    let client = hub_client(&server);
    let ready = Arc::new(tokio::sync::Barrier::new(CLASS));
    let mut logins = tokio::task::JoinSet::new();
    for name in names {
        logins.spawn(student_signs_in(server.clone(), client.clone(), name, ready.clone()));
    }
    let signed_in = logins.join_all().await;

    // The Hub's code exchanges, all at once.
    let ready = Arc::new(tokio::sync::Barrier::new(CLASS));
    let mut exchanges = tokio::task::JoinSet::new();
    for (name, back, verifier) in signed_in {
        let (server, ready) = (server.clone(), ready.clone());
        exchanges.spawn(async move {
            let code = query(&back, "code").unwrap();
            ready.wait().await;
            let response = token_form(&server, &hub_code_form(&code, verifier.secret())).await;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(status, 200, "the Hub's exchange for {name} was refused: {body}\nserver log:\n{}", server.log());
            let claims = verify_id_token(&server, body["id_token"].as_str().unwrap(), "jupyterhub").await;
            assert_eq!(claims["preferred_username"], name.as_str());
        });
    }
    exchanges.join_all().await;
    let log = server.log();
    assert!(!log.contains("login_failed") && !log.contains("client_auth_failed"), "nothing failed:\n{log}");
    assert_eq!(log.matches("event=\"login_succeeded\"").count(), CLASS);
}

/// A parallel burst of wrong passwords for many names from one address gets exactly the address's
/// free budget checked; the rest are told to wait, and told it is because of failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parallel_burst_of_wrong_guesses_gets_only_the_free_budget_checked() {
    let server = Arc::new(Server::start(""));
    let handle = pending_handle(&browser(), &server).await;
    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..30 {
        let (server, handle) = (server.clone(), handle.clone());
        guesses.spawn(async move {
            let response = submit_login(&browser(), &server, &handle, &format!("guess{n}"), "wrong").await;
            let status = response.status().as_u16();
            let body: shared::ErrorBody = response.json().await.unwrap();
            (status, body)
        });
    }
    let answers = guesses.join_all().await;
    let checked = answers.iter().filter(|(status, _)| *status == 401).count();
    assert_eq!(checked, 20, "the address's free budget, and no more: {answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 401) {
        assert_eq!(*status, 429);
        assert_eq!(body.error, shared::ErrorCode::TooManyAttempts);
        assert!(body.message.starts_with("Too many failed attempts"), "{}", body.message);
    }
}

/// Wrong client secrets from many addresses, and wrong passwords from the Hub's own address (a notebook
/// on the Hub's host), do not make the Hub's own code exchange wait.
#[tokio::test]
async fn nobody_can_throttle_the_hub_out_of_its_token_endpoint() {
    let server = Server::start(r#"trusted_proxies = ["127.0.0.1"]"#);
    server.add_user("wanda", &[]);
    let hub_address = "192.0.2.80";
    let wrong = |from: String| {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", HUB_CALLBACK),
                ("client_id", "jupyterhub"),
                ("client_secret", "not-the-hub-secret-0123456789"),
            ])
            .finish();
        http()
            .post(server.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", from)
            .body(body)
            .send()
    };
    for n in 0..12 {
        for i in 0..6 {
            let status = wrong(format!("203.0.113.{n}")).await.unwrap().status();
            // Five failures from one address for one client, then that address waits.
            assert_eq!(status, if i < 5 { 401 } else { 429 }, "address {n}, attempt {i}");
        }
    }
    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    for n in 0..25 {
        login_from(&server, &handle, &format!("notebook{n}"), "wrong", hub_address).await;
    }
    assert_eq!(login_from(&server, &handle, "wanda", PASSWORD, hub_address).await, 429, "logins from there wait");

    let client = hub_client(&server);
    let auth = authorization(&client, &[]);
    let back = login(&browser, &server, &auth.url, "wanda", PASSWORD).await;
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", &query(&back, "code").unwrap()),
            ("redirect_uri", HUB_CALLBACK),
            ("code_verifier", auth.verifier.secret()),
            ("client_id", "jupyterhub"),
            ("client_secret", HUB_SECRET),
        ])
        .finish();
    let response = http()
        .post(server.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", hub_address)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the Hub's exchange: {}", response.text().await.unwrap());
}

#[tokio::test]
async fn a_wide_trusted_proxy_range_is_warned_about_at_start() {
    let narrow = Server::start(r#"trusted_proxies = ["127.0.0.1", "172.28.0.0/24"]"#);
    assert!(!narrow.log().contains("wide range"), "{}", narrow.log());
    let wide = Server::start(r#"trusted_proxies = ["10.0.0.0/8"]"#);
    assert!(wide.log().contains("trusted_proxies holds a wide range") && wide.log().contains("10.0.0.0/8"));
}

/// Twenty redemptions of one code, and twenty rotations of one refresh token, at the same instant:
/// one of each succeeds, the grant is revoked, and every loser is audited, also those that lost at the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_raced_replay_is_audited() {
    const RACERS: usize = 20;
    let server = Arc::new(Server::start(""));
    server.add_user("xena", &[]);
    let client = hub_client(&server);
    let race = |form: Vec<(&'static str, String)>| {
        let mut racers = tokio::task::JoinSet::new();
        let ready = Arc::new(tokio::sync::Barrier::new(RACERS));
        for _ in 0..RACERS {
            let (server, ready, form) = (server.clone(), ready.clone(), form.clone());
            racers.spawn(async move {
                let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                ready.wait().await;
                token_form(&server, &form).await.status().as_u16()
            });
        }
        racers.join_all()
    };
    let auth = authorization(&client, &[]);
    let back = login(&browser(), &server, &auth.url, "xena", PASSWORD).await;
    let statuses = race(vec![
        ("grant_type", "authorization_code".into()),
        ("code", query(&back, "code").unwrap()),
        ("redirect_uri", HUB_CALLBACK.into()),
        ("code_verifier", auth.verifier.secret().clone()),
        ("client_id", "jupyterhub".into()),
        ("client_secret", HUB_SECRET.into()),
    ])
    .await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(server.log().matches("event=\"code_replayed\"").count(), RACERS - 1);

    // A fresh sign-in for the refresh race.
    let auth = authorization(&client, &[]);
    let back = login(&browser(), &server, &auth.url, "xena", PASSWORD).await;
    let tokens = exchange(&client, &back, auth.verifier).await;
    let statuses = race(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", tokens.refresh_token().unwrap().secret().clone()),
        ("client_id", "jupyterhub".into()),
        ("client_secret", HUB_SECRET.into()),
    ])
    .await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(server.log().matches("event=\"refresh_reuse_detected\"").count(), RACERS - 1);
    assert_eq!(userinfo(&server, tokens.access_token().secret()).await.status(), 401, "the family is revoked");
}

/// Size of the database: SQLite's file with its write-ahead log and shared-memory index; a PostgreSQL
/// database's size on disk.
async fn database_bytes(server: &Server) -> u64 {
    if !server.on_sqlite() {
        return server.db().await.number("SELECT pg_database_size(current_database())").await as u64;
    }
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let path = format!("{}{suffix}", server.db_path().display());
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        })
        .sum()
}

/// Sends an authorization request from `address` (behind the trusted proxy); returns the login page's
/// request handle.
async fn park(server: Arc<Server>, client: OidcClient, address: String) -> String {
    let auth = authorization(&client, &[]);
    let response = http().get(auth.url.clone()).header("x-forwarded-for", address).send().await.unwrap();
    if response.status() != 303 {
        let log = server.log();
        panic!("answered {}: {}", response.status(), &log[log.len().saturating_sub(3000)..]);
    }
    let to = location(&response);
    assert_eq!(to.path(), "/login", "{to}");
    query(&to, "request").unwrap()
}

/// A flood of 20 000 authorization requests from four addresses keeps at most 1 000 pending sign-ins
/// per address (their oldest make room, nobody is refused), and the database file stays under 4 MiB,
/// 24 MiB with its log (README: "Floods and resource bounds"); a PostgreSQL database grows by less
/// than 24 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorize_flood_cannot_fill_the_disk() {
    const FLOOD: usize = 20_000;
    const WORKERS: usize = 16;
    let server = Arc::new(Server::start(r#"trusted_proxies = ["127.0.0.1"]"#));
    let client = hub_client(&server);
    let before = database_bytes(&server).await;
    let first = park(server.clone(), client.clone(), "203.0.113.1".into()).await;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (server, client) = (server.clone(), client.clone());
        workers.spawn(async move {
            for n in 0..FLOOD / WORKERS {
                park(server.clone(), client.clone(), format!("203.0.113.{}", (w + n) % 4 + 1)).await;
            }
        });
    }
    workers.join_all().await;
    let last = park(server.clone(), client.clone(), "203.0.113.1".into()).await;
    let pending = |handle: String| {
        let url = server.url(&format!("/api/authorization-requests/{handle}"));
        async move { http().get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(pending(first).await, 404, "the address's oldest made room");
    assert_eq!(pending(last).await, 200, "its newest is kept");
    let mut db = server.db().await;
    for n in 1..=4 {
        let sql = format!("SELECT count(*) FROM authorization_requests WHERE client_network = '203.0.113.{n}'");
        assert_eq!(db.number(&sql).await, 1000, "1 000 pending for 203.0.113.{n}");
    }
    assert_eq!(db.number("SELECT count(*) FROM authorization_requests").await, 4000);
    drop(db);
    // Let a checkpoint run, then weigh the files.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let after = database_bytes(&server).await;
    println!("database: {before} B before, {after} B after {FLOOD} authorization requests");
    if server.on_sqlite() {
        let file = std::fs::metadata(server.db_path()).unwrap().len();
        println!("database file without its log: {file} B");
        assert!(file < 4 * 1024 * 1024, "the database file grew to {file} B");
        assert!(after < 24 * 1024 * 1024, "the database and its log grew to {after} B");
    } else {
        assert!(after - before < 24 * 1024 * 1024, "the database grew by {} B", after - before);
    }
}

/// One browser holds at most 16 pending sign-ins: its oldest make room for new ones.
#[tokio::test]
async fn a_browser_holds_a_bounded_number_of_pending_sign_ins() {
    let server = Server::start("");
    let browser = browser();
    let mut handles = Vec::new();
    for _ in 0..20 {
        handles.push(pending_handle(&browser, &server).await);
    }
    let live = |handle: &String| {
        let url = server.url(&format!("/api/authorization-requests/{handle}"));
        let browser = browser.clone();
        async move { browser.get(url).send().await.unwrap().status().as_u16() }
    };
    for (n, handle) in handles.iter().enumerate() {
        let want = if n < 4 { 404 } else { 200 };
        assert_eq!(live(handle).await, want, "request {n}");
    }
}

/// Over-long `state` and `nonce` are refused at the client, and the state is not echoed.
#[tokio::test]
async fn over_long_state_and_nonce_are_refused() {
    let server = Server::start("");
    let client = hub_client(&server);
    for (key, len) in [("state", 1025), ("nonce", 257)] {
        let value = "s".repeat(len);
        let mut url = authorization(&client, &[]).url;
        let pairs: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| k != key).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.query_pairs_mut().clear().extend_pairs(pairs).append_pair(key, &value);
        let to = location(&http().get(url).send().await.unwrap());
        assert_eq!(query(&to, "error").as_deref(), Some("invalid_request"), "{key}");
        // The over-long state is not echoed; a valid one is.
        assert_eq!(query(&to, "state").is_none(), key == "state", "{key}");
    }
}

/// Under constant reads and writes the write-ahead log stays bounded, and is cut back once the load
/// stops (README: "Floods and resource bounds").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_write_ahead_log_stays_bounded_under_constant_reads() {
    if postgres_server().is_some() {
        return println!("SQLite's write-ahead log: nothing to check on PostgreSQL");
    }
    const LIMIT: u64 = 16 * 1024 * 1024; // the store's WAL_SIZE_LIMIT
    let server = Arc::new(Server::start(r#"trusted_proxies = ["127.0.0.1"]"#));
    server.add_user("yuri", &[]);
    let client = hub_client(&server);
    let auth = authorization(&client, &[]);
    let back = login(&browser(), &server, &auth.url, "yuri", PASSWORD).await;
    let access = exchange(&client, &back, auth.verifier).await.access_token().secret().clone();
    let wal = std::path::PathBuf::from(format!("{}-wal", server.db_path().display()));
    let wal_size = move || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (server, access) = (server.clone(), access.clone());
        load.spawn(async move {
            while std::time::Instant::now() < deadline {
                assert_eq!(userinfo(&server, &access).await.status(), 200);
            }
        });
    }
    for w in 0..4 {
        let client = client.clone();
        load.spawn(async move {
            let http = http();
            let mut n = 0;
            while std::time::Instant::now() < deadline {
                let auth = authorization(&client, &[]);
                let address = format!("198.18.{}.{}", w, n % 250 + 1);
                http.get(auth.url.clone()).header("x-forwarded-for", address).send().await.unwrap();
                n += 1;
            }
        });
    }
    let mut peak = 0;
    while std::time::Instant::now() < deadline {
        peak = peak.max(wal_size());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    load.join_all().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let rest = wal_size();
    println!("write-ahead log: {peak} B at its peak under load, {rest} B after");
    assert!(peak < 3 * LIMIT, "the log grew to {peak} B under load");
    assert!(rest <= LIMIT, "the log was not cut back: {rest} B");
}

/// The throttle's counts live in the store: a restart does not wipe an attacker's slate.
#[tokio::test]
async fn throttle_counts_survive_a_restart() {
    let mut server = Server::start(r#"trusted_proxies = ["127.0.0.1"]"#);
    server.add_user("fay", &[]);
    // Six wrong passwords (waiting out each back-off): the pair is then blocked for eight seconds.
    let mut failures = 0;
    while failures < 6 {
        let handle = pending_handle(&browser(), &server).await;
        match login_from(&server, &handle, "fay", "wrong", "203.0.113.3").await {
            401 => failures += 1,
            429 => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            other => panic!("{other}"),
        }
    }
    server.restart();
    let handle = pending_handle(&browser(), &server).await;
    assert_eq!(login_from(&server, &handle, "fay", PASSWORD, "203.0.113.3").await, 429, "still blocked");
}
