//! Revocation (RFC 7009), introspection (RFC 7662), RP-initiated logout and signing-key rotation.

mod common;

use std::time::{Duration, Instant};

use common::*;
use oauth2::TokenResponse as _;
use serde_json::Value;

async fn signed_in(server: &Server, user: &str) -> (reqwest::Client, TokenResponse) {
    let client = hub_client(server);
    let browser = browser();
    let auth = authorization(&client, &[]);
    let back = login(&browser, server, &auth.url, user, PASSWORD).await;
    (browser, exchange(&client, &back, auth.verifier).await)
}

const HUB: [(&str, &str); 2] = [("client_id", "jupyterhub"), ("client_secret", HUB_SECRET)];

async fn introspect(server: &Server, token: &str) -> Value {
    let mut form = vec![("token", token)];
    form.extend(HUB);
    let response = post_form(server, "/introspect", &form).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn revocation_and_introspection() {
    let server = Server::start("");
    server.add_user("wes", &[]);
    let (_, tokens) = signed_in(&server, "wes").await;
    let access = tokens.access_token().secret().clone();
    let refresh = tokens.refresh_token().unwrap().secret().clone();

    let active = introspect(&server, &access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], "wes");
    assert_eq!(active["client_id"], "jupyterhub");
    assert_eq!(active["scope"], "openid profile email");
    assert!(active["exp"].as_i64().unwrap() > 0);
    assert_eq!(introspect(&server, &refresh).await["token_type"], "refresh_token");
    assert_eq!(introspect(&server, "garbage").await, serde_json::json!({"active": false}));
    // Public clients cannot introspect; other clients see nothing of these tokens.
    let public = post_form(&server, "/introspect", &[("token", &access), ("client_id", "spa")]).await;
    assert_eq!(public.status(), 401);
    let foreign = post_form(
        &server,
        "/introspect",
        &[("token", &access), ("client_id", "legacy"), ("client_secret", LEGACY_SECRET)],
    )
    .await;
    assert_eq!(foreign.json::<Value>().await.unwrap()["active"], false);

    // Revoking: another client's attempt and an unknown token are 200 and change nothing.
    let foreign =
        post_form(&server, "/revoke", &[("token", &access), ("client_id", "legacy"), ("client_secret", LEGACY_SECRET)])
            .await;
    assert_eq!(foreign.status(), 200);
    assert_eq!(userinfo(&server, &access).await.status(), 200);
    let mut unknown = vec![("token", "no-such-token")];
    unknown.extend(HUB);
    assert_eq!(post_form(&server, "/revoke", &unknown).await.status(), 200);
    // The access token alone.
    let mut form = vec![("token", access.as_str()), ("token_type_hint", "access_token")];
    form.extend(HUB);
    assert_eq!(post_form(&server, "/revoke", &form).await.status(), 200);
    assert_eq!(userinfo(&server, &access).await.status(), 401);
    assert_eq!(introspect(&server, &access).await["active"], false);
    assert_eq!(introspect(&server, &refresh).await["active"], true, "the refresh token lives on");
    // The refresh token takes its whole grant with it.
    let (_, second) = signed_in(&server, "wes").await;
    let mut form = vec![("token", second.refresh_token().unwrap().secret().as_str())];
    form.extend(HUB);
    assert_eq!(post_form(&server, "/revoke", &form).await.status(), 200);
    assert_eq!(userinfo(&server, second.access_token().secret()).await.status(), 401);
    assert_eq!(introspect(&server, second.refresh_token().unwrap().secret()).await["active"], false);
    // Wrong client credentials are refused.
    let bad =
        post_form(&server, "/revoke", &[("token", &refresh), ("client_id", "jupyterhub"), ("client_secret", "nope")])
            .await;
    assert_eq!(bad.status(), 401);
}

#[tokio::test]
async fn end_session_bound_by_id_token_hint_signs_out_at_once() {
    let server = Server::start("");
    server.add_user("xena", &[]);
    let (browser, tokens) = signed_in(&server, "xena").await;
    let hint = tokens.extra_fields().id_token.clone().unwrap();
    let url = format!(
        "{}?{}",
        server.url("/end-session"),
        form_urlencoded::Serializer::new(String::new())
            .append_pair("id_token_hint", &hint)
            .append_pair("post_logout_redirect_uri", HUB_LOGGED_OUT)
            .append_pair("state", "s-1")
            .finish()
    );
    let response = browser.get(&url).send().await.unwrap();
    assert!(response.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let back = location(&response);
    assert_eq!(back.as_str(), format!("{HUB_LOGGED_OUT}?state=s-1"));
    // The SSO session is over.
    let auth = authorization(&hub_client(&server), &[]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/login");
}

#[tokio::test]
async fn end_session_by_client_id_asks_first_and_refuses_unregistered_uris() {
    let server = Server::start("");
    server.add_user("yuri", &[]);
    let (browser, _) = signed_in(&server, "yuri").await;
    let query = |uri: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", "jupyterhub")
            .append_pair("post_logout_redirect_uri", uri)
            .finish()
    };
    // An unregistered destination: stopped here, session untouched.
    let response =
        browser.get(format!("{}?{}", server.url("/end-session"), query("https://evil.example/"))).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    // JupyterHub's logout_redirect_url style: no hint, so a confirmation page.
    let page = browser.get(format!("{}?{}", server.url("/end-session"), query(HUB_LOGGED_OUT))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign out of Postern?"));
    let token = html.split("name=\"confirm\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // A forged confirmation changes nothing.
    let forged = browser
        .post(server.url("/end-session"))
        .form(&[("confirm", "forged"), ("client_id", "jupyterhub"), ("post_logout_redirect_uri", HUB_LOGGED_OUT)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 200, "asked again");
    let auth = authorization(&hub_client(&server), &[]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/hub/oauth_callback");
    // The real one signs out.
    let done = browser
        .post(server.url("/end-session"))
        .form(&[("confirm", token.as_str()), ("client_id", "jupyterhub"), ("post_logout_redirect_uri", HUB_LOGGED_OUT)])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&done).as_str(), HUB_LOGGED_OUT);
    let auth = authorization(&hub_client(&server), &[]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/login");
}

#[tokio::test]
async fn key_rotation_keeps_old_keys_published_while_their_tokens_live() {
    let server = Server::start("");
    server.add_user("zoe", &[]);
    let (_, before) = signed_in(&server, "zoe").await;
    let old_token = before.extra_fields().id_token.clone().unwrap();
    let jwks = || async { http().get(server.url("/jwks.json")).send().await.unwrap().json::<Value>().await.unwrap() };
    assert_eq!(jwks().await["keys"].as_array().unwrap().len(), 1);

    let out = server.cli(&["keys", "rotate"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().filter(|l| l.starts_with("RS256 ")).count(), 2, "{listed}");

    // The running server publishes the new key by itself, and goes on signing with the old one until
    // every replica can have published it (30 s after the rotation).
    let rotated = Instant::now();
    let deadline = rotated + Duration::from_secs(20);
    while jwks().await["keys"].as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the new key was not published");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    let (_, published) = signed_in(&server, "zoe").await;
    let published = published.extra_fields().id_token.clone().unwrap();
    assert!(rotated.elapsed() < Duration::from_secs(25), "signed in too late to tell");
    assert_eq!(kid(&old_token), kid(&published), "the old key signs while the new one is only published");
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(rotated.elapsed())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_token = loop {
        let (_, after) = signed_in(&server, "zoe").await;
        let token = after.extra_fields().id_token.clone().unwrap();
        if kid(&token) != kid(&old_token) {
            break token;
        }
        assert!(Instant::now() < deadline, "the new key does not sign");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(jwks().await["keys"][0]["kid"], kid(&new_token), "the signing key comes first");
    verify_id_token(&server, &old_token, "jupyterhub").await;
    verify_id_token(&server, &new_token, "jupyterhub").await;
}

#[tokio::test]
async fn liveness_and_readiness_follow_the_store() {
    use sqlx::Connection;
    let server = Server::start("");
    let get = |path: &'static str| {
        let url = server.url(path);
        async move {
            let response = http().get(url).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get("/healthz/live").await, (200, serde_json::json!({ "status": "live" })));
    assert_eq!(get("/healthz/ready").await, (200, serde_json::json!({ "status": "ready" })));
    let health = server.cli(&["health"], "");
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));

    // SQLite: another process holds the database's write lock. PostgreSQL: the database refuses
    // connections and ends those it had. Postern cannot complete a sign-in, so it is not ready, but
    // alive; once the database is back, it is ready again without a restart.
    let blocker = if server.on_sqlite() {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(server.db_path());
        let mut blocker = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut blocker).await.unwrap();
        Some(blocker)
    } else {
        postgres_database_available(&server, false);
        None
    };
    let (status, body) = get("/healthz/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(get("/healthz/live").await.0, 200);
    let health = server.cli(&["health"], "");
    assert!(!health.status.success());
    assert!(String::from_utf8_lossy(&health.stderr).contains("not ready (503)"));
    match blocker {
        Some(mut blocker) => sqlx::query("ROLLBACK").execute(&mut blocker).await.map(drop).unwrap(),
        None => postgres_database_available(&server, true),
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while get("/healthz/ready").await.0 != 200 {
        assert!(Instant::now() < deadline, "ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it works: a sign-in completes.
    server.add_user("vic", &[]);
    signed_in(&server, "vic").await;
}

/// The value of the sample `name` whose labels include all of `labels`, from a Prometheus scrape.
fn sample(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(&format!("{name} ")) || line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn prometheus_metrics_count_what_happened_on_their_own_listener() {
    let port = free_port();
    let server = Server::start(&format!("metrics.listen = \"127.0.0.1:{port}\""));
    server.add_user("mila", &[]);
    let client = hub_client(&server);
    // A wrong password, then a sign-in, a refresh, a refresh token reused and a code replayed.
    let browser = browser();
    let auth = authorization(&client, &[]);
    let login_page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    let handle = query(&login_page, "request").unwrap();
    assert_eq!(submit_login(&browser, &server, &handle, "mila", "wrong").await.status(), 401);
    let back = location(&resume(&browser, submit_login(&browser, &server, &handle, "mila", PASSWORD).await).await);
    let code = query(&back, "code").unwrap();
    let tokens = exchange(&client, &back, auth.verifier).await;
    let first = tokens.refresh_token().unwrap().secret().clone();
    let hub = [("client_id", "jupyterhub"), ("client_secret", HUB_SECRET)];
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", first.as_str())];
    assert_eq!(token_form(&server, &[&refresh[..], &hub].concat()).await.status(), 200);
    assert_eq!(token_form(&server, &[&refresh[..], &hub].concat()).await.status(), 400, "reused");
    let replay = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", HUB_CALLBACK)];
    assert_eq!(token_form(&server, &[&replay[..], &hub].concat()).await.status(), 400, "replayed");

    let scrape = http().get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    let count = |name: &str, labels: &[&str]| {
        sample(&scrape, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} in:\n{scrape}"))
    };
    assert_eq!(count("postern_logins_total", &["outcome=\"succeeded\""]), 1.0);
    assert_eq!(count("postern_logins_total", &["outcome=\"failed\"", "reason=\"wrong_password\""]), 1.0);
    assert_eq!(count("postern_tokens_issued_total", &["grant_type=\"authorization_code\""]), 1.0);
    assert_eq!(count("postern_tokens_issued_total", &["grant_type=\"refresh_token\""]), 1.0);
    assert_eq!(count("postern_refresh_reuse_total", &[]), 1.0);
    assert_eq!(count("postern_code_replays_total", &[]), 1.0);
    assert_eq!(count("postern_http_requests_total", &["route=\"/token\"", "method=\"POST\"", "status=\"2xx\""]), 2.0);
    assert_eq!(count("postern_http_requests_total", &["route=\"/token\"", "status=\"4xx\""]), 2.0);
    assert_eq!(count("postern_http_request_duration_seconds_count", &["route=\"/api/login\"", "status=\"4xx\""]), 1.0);
    assert_eq!(count("postern_http_request_duration_seconds_count", &["route=\"/api/login\"", "status=\"2xx\""]), 1.0);
    assert!(count("postern_argon2_wait_seconds_count", &[]) >= 3.0, "two passwords and the Hub's secret");
    assert!(count("postern_argon2_duration_seconds_count", &[]) >= 3.0);
    assert_eq!(count("postern_argon2_queue_depth", &[]), 0.0);
    assert!(count("postern_store_duration_seconds_count", &["operation=\"redeem_code\""]) >= 1.0);
    assert!(scrape.contains("# HELP postern_logins_total"), "described");
    // Bounded labels: no username, no client id unless asked for, no path with a handle in it.
    for private in ["mila", "jupyterhub", handle.as_str()] {
        assert!(!scrape.contains(private), "{private} in the scrape");
    }
    // Not on the public listener.
    assert_eq!(http().get(server.url("/metrics")).send().await.unwrap().status(), 404);

    // The operator may opt in to client ids.
    let port = free_port();
    let labelled = Server::start(&format!("metrics.listen = \"127.0.0.1:{port}\"\nmetrics.client_ids = true"));
    labelled.add_user("nils", &[]);
    signed_in(&labelled, "nils").await;
    let scrape = http().get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&scrape, "postern_tokens_issued_total", &["client_id=\"jupyterhub\""]), Some(1.0), "{scrape}");
}
