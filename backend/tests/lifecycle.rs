//! Refresh-token rotation, disabled users, restarts, the CLI and configuration errors.

mod common;

use common::*;
use oauth2::basic::BasicErrorResponseType;
use oauth2::{RefreshToken, RequestTokenError, TokenResponse as _};
use serde_json::Value;

async fn sign_in(server: &Server, client: &OidcClient, user: &str) -> TokenResponse {
    let auth = authorization(client, &[]);
    let back = login(&browser(), server, &auth.url, user, PASSWORD).await;
    exchange(client, &back, auth.verifier).await
}

/// A browser signed in as `user`, with the tokens the client got.
async fn signed_in_browser(server: &Server, client: &OidcClient, user: &str) -> (reqwest::Client, TokenResponse) {
    let browser = browser();
    let auth = authorization(client, &[]);
    let back = login(&browser, server, &auth.url, user, PASSWORD).await;
    (browser, exchange(client, &back, auth.verifier).await)
}

/// Asserts that the tokens are dead and the browser's session is gone; returns the handle of the
/// login form the next authorization shows.
async fn assert_all_ended(
    server: &Server,
    client: &OidcClient,
    browser: &reqwest::Client,
    tokens: &TokenResponse,
) -> String {
    assert_eq!(userinfo(server, tokens.access_token().secret()).await.status(), 401);
    assert_eq!(
        refresh(client, tokens.refresh_token().unwrap().secret()).await.unwrap_err(),
        BasicErrorResponseType::InvalidGrant
    );
    let auth = authorization(client, &[]);
    let login_page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    assert_eq!(login_page.path(), "/login", "the session ended");
    query(&login_page, "request").unwrap()
}

/// A refresh, or its OAuth error (asserted to come with 400, or 401 for `invalid_client`).
async fn refresh(client: &OidcClient, token: &str) -> Result<TokenResponse, BasicErrorResponseType> {
    let http = Recording::new();
    match client.exchange_refresh_token(&RefreshToken::new(token.into())).request_async(&http).await {
        Ok(tokens) => Ok(tokens),
        Err(RequestTokenError::ServerResponse(e)) => {
            let expected = if *e.error() == BasicErrorResponseType::InvalidClient { 401 } else { 400 };
            assert_eq!(http.status(), expected, "status of {:?}", e.error());
            Err(e.error().clone())
        }
        Err(other) => panic!("transport error: {other:?}"),
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let server = Server::start("");
    server.add_user("mia", &[]);
    let client = hub_client(&server);
    let first = sign_in(&server, &client, "mia").await;
    let r1 = first.refresh_token().unwrap().secret().clone();

    let second = refresh(&client, &r1).await.unwrap();
    let r2 = second.refresh_token().unwrap().secret().clone();
    assert_ne!(r1, r2, "rotated");
    let claims = verify_id_token(&server, second.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
    assert_eq!(claims["sub"], "mia");
    assert!(claims.get("nonce").is_none());
    assert_eq!(userinfo(&server, second.access_token().secret()).await.status(), 200);

    // Narrowing the scope is allowed; widening is not.
    let narrowed = client
        .exchange_refresh_token(&RefreshToken::new(r2.clone()))
        .add_scope(oauth2::Scope::new("openid".into()))
        .request_async(&http())
        .await
        .unwrap();
    let r3 = narrowed.refresh_token().unwrap().secret().clone();
    let info: Value = userinfo(&server, narrowed.access_token().secret()).await.json().await.unwrap();
    assert!(info.get("name").is_none(), "profile was dropped");
    let widen = client
        .exchange_refresh_token(&RefreshToken::new(r3.clone()))
        .add_scope(oauth2::Scope::new("groups".into()))
        .request_async(&http())
        .await;
    assert!(
        matches!(widen, Err(RequestTokenError::ServerResponse(ref e)) if *e.error() == BasicErrorResponseType::InvalidScope)
    );
    // The narrowing was that response's alone: the refresh token kept the grant's scope (RFC 6749 §6).
    let restored = refresh(&client, &r3).await.unwrap();
    let info: Value = userinfo(&server, restored.access_token().secret()).await.json().await.unwrap();
    assert_eq!(info["name"], "Test User", "profile is back: {info}");

    // Reusing r1 (already rotated) revokes everything of this grant, r3 included.
    assert_eq!(refresh(&client, &r1).await.unwrap_err(), BasicErrorResponseType::InvalidGrant);
    assert_eq!(refresh(&client, &r3).await.unwrap_err(), BasicErrorResponseType::InvalidGrant);
    assert_eq!(userinfo(&server, narrowed.access_token().secret()).await.status(), 401);

    // Another client cannot use mia's refresh token.
    let other = sign_in(&server, &client, "mia").await;
    let spa = oauth_client(&server, "spa", None, &server.url("/callback")).set_auth_type(oauth2::AuthType::RequestBody);
    let stolen = refresh(&spa, other.refresh_token().unwrap().secret()).await.unwrap_err();
    assert_eq!(stolen, BasicErrorResponseType::InvalidGrant);
    assert!(
        refresh(&client, other.refresh_token().unwrap().secret()).await.is_ok(),
        "the failed theft changed nothing"
    );
}

#[tokio::test]
async fn a_password_change_ends_the_sessions_and_tokens_the_old_password_started() {
    let server = Server::start("");
    server.add_user("pia", &[]);
    server.add_user("quentin", &[]);
    let client = hub_client(&server);
    let (browser, tokens) = signed_in_browser(&server, &client, "pia").await;
    let bystander = sign_in(&server, &client, "quentin").await;

    let out = server.cli(&["user", "set-password", "pia"], "a brand new password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Only the new password works at the form.
    let handle = assert_all_ended(&server, &client, &browser, &tokens).await;
    assert_eq!(submit_login(&browser, &server, &handle, "pia", PASSWORD).await.status(), 401);
    assert_eq!(submit_login(&browser, &server, &handle, "pia", "a brand new password").await.status(), 200);
    // Nobody else's tokens were touched.
    assert_eq!(userinfo(&server, bystander.access_token().secret()).await.status(), 200);
    assert!(refresh(&client, bystander.refresh_token().unwrap().secret()).await.is_ok());
}

#[tokio::test]
async fn a_refresh_family_ends_at_its_absolute_lifetime_whatever_the_rotations() {
    // Times are whole seconds, so the family lives between 4 and 5 s.
    let server = Server::start("tokens.refresh_max_lifetime = 5");
    server.add_user("rae", &[]);
    let client = hub_client(&server);
    let signed_in = std::time::Instant::now();
    let mut token = sign_in(&server, &client, "rae").await.refresh_token().unwrap().secret().clone();
    token = refresh(&client, &token).await.unwrap().refresh_token().unwrap().secret().clone();
    tokio::time::sleep(std::time::Duration::from_secs(6).saturating_sub(signed_in.elapsed())).await;
    assert_eq!(
        refresh(&client, &token).await.unwrap_err(),
        BasicErrorResponseType::InvalidGrant,
        "rotation did not extend it"
    );
    // A new sign-in starts a new family.
    let fresh = sign_in(&server, &client, "rae").await;
    assert!(refresh(&client, fresh.refresh_token().unwrap().secret()).await.is_ok());
}

#[tokio::test]
async fn a_hash_made_with_older_argon2_parameters_is_replaced_at_the_next_sign_in() {
    let mut server = Server::start("argon2.memory_kib = 8192\nargon2.iterations = 1");
    server.add_user("sol", &[]);
    server.reconfigure("");
    let client = hub_client(&server);
    sign_in(&server, &client, "sol").await;
    assert_eq!(server.log().matches("password hash upgraded").count(), 1, "{}", server.log());
    sign_in(&server, &client, "sol").await;
    assert_eq!(server.log().matches("password hash upgraded").count(), 1, "upgraded once");
}

#[tokio::test]
async fn a_disabled_user_loses_login_refresh_userinfo_and_session() {
    let server = Server::start("");
    server.add_user("ned", &[]);
    let client = hub_client(&server);
    let (browser, tokens) = signed_in_browser(&server, &client, "ned").await;

    let out = server.cli(&["user", "disable", "NED"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The login fails at the form.
    let handle = assert_all_ended(&server, &client, &browser, &tokens).await;
    assert_eq!(submit_login(&browser, &server, &handle, "ned", PASSWORD).await.status(), 401);

    // Enabled again, the user signs in; the tokens from before stay dead.
    assert!(server.cli(&["user", "enable", "ned"], "").status.success());
    sign_in(&server, &client, "ned").await;
    assert_eq!(userinfo(&server, tokens.access_token().secret()).await.status(), 401);
    assert!(refresh(&client, tokens.refresh_token().unwrap().secret()).await.is_err());
}

#[tokio::test]
async fn a_restart_keeps_users_clients_keys_sessions_and_refresh_tokens() {
    let mut server = Server::start("");
    server.add_user("olga", &["staff"]);
    let out = server.cli(&["client", "add", "notebook", "--redirect-uri", "https://nb.example/cb"], "");
    assert!(out.status.success());
    let client = hub_client(&server);
    let browser = browser();
    let auth = authorization(&client, &[]);
    let back = login(&browser, &server, &auth.url, "olga", PASSWORD).await;
    let tokens = exchange(&client, &back, auth.verifier).await;
    let jwks_before: Value = http().get(server.url("/jwks.json")).send().await.unwrap().json().await.unwrap();

    server.restart();

    let jwks_after: Value = http().get(server.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks_before, jwks_after, "signing keys survive a restart");
    // The old id_token still verifies; the access token still works; the refresh token rotates.
    verify_id_token(&server, tokens.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
    assert_eq!(userinfo(&server, tokens.access_token().secret()).await.status(), 200);
    let refreshed = refresh(&client, tokens.refresh_token().unwrap().secret()).await.unwrap();
    let info: Value = userinfo(&server, refreshed.access_token().secret()).await.json().await.unwrap();
    assert_eq!(info["sub"], "olga");
    // The session cookie still signs the browser in; the CLI client is still registered.
    let auth = authorization(&client, &[]);
    assert_eq!(location(&browser.get(auth.url.clone()).send().await.unwrap()).path(), "/hub/oauth_callback");
    let list = String::from_utf8(server.cli(&["client", "list"], "").stdout).unwrap();
    assert!(list.contains("notebook") && list.contains("jupyterhub"), "{list}");
    let users = String::from_utf8(server.cli(&["user", "list"], "").stdout).unwrap();
    assert!(users.contains("olga") && users.contains("staff"), "{users}");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn the_database_and_the_key_encryption_key_are_owner_only_and_private_keys_sealed() {
    let mut server = Server::start("");
    server.add_user("pat", &[]);
    let kek = server.dir.path().join("postern.kek");
    let db = server.db_path();
    let mut files = vec![kek.clone()];
    if server.on_sqlite() {
        files.extend([db.clone(), db.with_extension("db-wal"), db.with_extension("db-shm")]);
    }
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // The private key is sealed: no PKCS#8 key in the clear anywhere in the database.
    let client = hub_client(&server);
    sign_in(&server, &client, "pat").await;
    server.stop();
    let keys = server.db().await.private_keys().await;
    assert!(!keys.is_empty() && keys.iter().all(|k| k.starts_with(b"PKEK1")), "keys are stored sealed");
    let mut bytes = Db::stored(&server.database).await;
    bytes.extend(keys.concat());
    // An RSA PKCS#8 key in the clear: version 0, then the rsaEncryption algorithm identifier.
    let rsa_pkcs8 = [0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    assert!(!bytes.windows(rsa_pkcs8.len()).any(|w| w == rsa_pkcs8), "no private key in the clear");

    // A database others can read is refused, with what to run.
    if server.on_sqlite() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = server.cli(&["keys", "list"], "");
        assert!(!out.status.success());
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(message.contains("chmod 600") && message.contains("postern.db"), "{message}");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Without its key-encryption key the database's private keys cannot be read, and Postern says so.
    let saved = std::fs::read(&kek).unwrap();
    std::fs::remove_file(&kek).unwrap();
    let out = server.cli(&["keys", "list"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key-encryption key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&kek, saved).unwrap();
    assert!(server.cli(&["keys", "list"], "").status.success());
}

#[tokio::test]
async fn rotating_the_key_encryption_key_re_seals_every_private_key_while_serving() {
    let mut server = Server::start("");
    server.add_user("quin", &[]);
    let client = hub_client(&server);
    let before = sign_in(&server, &client, "quin").await;
    let kek = server.dir.path().join("postern.kek");
    let old_key = std::fs::read_to_string(&kek).unwrap();
    assert!(server.cli(&["keys", "rotate"], "").status.success(), "two signing keys to re-seal");

    let out = server.cli(&["keys", "rotate-encryption-key"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_key = std::fs::read_to_string(&kek).unwrap();
    assert_ne!(old_key, new_key);
    assert_eq!(new_key.lines().count(), 1, "the old key is gone");
    assert_eq!(mode(&kek), 0o600);

    // The running server and a restarted one both go on signing and verifying.
    let after = sign_in(&server, &client, "quin").await;
    verify_id_token(&server, after.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
    server.restart();
    verify_id_token(&server, before.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
    sign_in(&server, &client, "quin").await;
    // The old key no longer opens anything.
    std::fs::write(&kek, old_key).unwrap();
    assert!(!server.cli(&["keys", "list"], "").status.success());
}

/// A start never deletes a client an earlier configuration declared: in a rolling deploy a replica
/// restarting with the older file would delete the newer client and every token issued to it.
/// The operator removes it, once no configuration declares it.
#[tokio::test]
async fn a_start_with_an_older_configuration_keeps_a_newer_client() {
    let newer =
        r#"clients.lab = { secret = "lab-secret-0123456789abcdef", redirect_uris = ["https://lab.example/cb"] }"#;
    let mut server = Server::start(newer);
    server.add_user("gus", &[]);
    let lab = oauth_client(&server, "lab", Some("lab-secret-0123456789abcdef"), "https://lab.example/cb");
    let tokens = sign_in(&server, &lab, "gus").await;

    // A replica with the configuration from before `lab` existed starts on the same database.
    server.reconfigure("");
    assert!(server.log().contains("is not in this one: kept"), "a warning names the situation");
    assert_eq!(userinfo(&server, tokens.access_token().secret()).await.status(), 200, "its tokens live");
    let listed = String::from_utf8(server.cli(&["client", "list"], "").stdout).unwrap();
    assert!(listed.lines().any(|l| l.starts_with("lab ")), "{listed}");

    // Declared nowhere any more: the operator removes it, and what was issued to it ends.
    let out = server.cli(&["client", "remove", "lab"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(userinfo(&server, tokens.access_token().secret()).await.status(), 401);
}

#[tokio::test]
async fn cli_registered_jupyterhub_client_works_as_printed() {
    let server = Server::start("");
    server.add_user("pat", &["hub-users", "hub-admins"]);
    let out = server.cli(
        &[
            "client",
            "add",
            "hub2",
            "--jupyterhub",
            "--redirect-uri",
            "https://hub2.example/hub/oauth_callback",
            "--allowed-groups",
            "hub-users",
            "--admin-groups",
            "hub-admins",
        ],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let secret = printed
        .lines()
        .find_map(|l| l.strip_prefix("c.GenericOAuthenticator.client_secret = "))
        .map(|s| s.trim_matches('"').to_owned())
        .expect("the snippet carries the secret");
    for line in [
        "c.JupyterHub.authenticator_class = \"generic-oauth\"",
        "c.GenericOAuthenticator.client_id = \"hub2\"",
        &format!("c.GenericOAuthenticator.authorize_url = \"{}/authorize\"", server.issuer),
        &format!("c.GenericOAuthenticator.token_url = \"{}/token\"", server.issuer),
        &format!("c.GenericOAuthenticator.userdata_url = \"{}/userinfo\"", server.issuer),
        "c.GenericOAuthenticator.oauth_callback_url = \"https://hub2.example/hub/oauth_callback\"",
        "c.GenericOAuthenticator.scope = [\"openid\", \"profile\", \"email\", \"groups\"]",
        "c.GenericOAuthenticator.username_claim = \"preferred_username\"",
        "c.GenericOAuthenticator.manage_groups = True",
        "c.GenericOAuthenticator.auth_state_groups_key = \"oauth_user.groups\"",
        "c.GenericOAuthenticator.allowed_groups = {\"hub-users\"}",
        "c.GenericOAuthenticator.admin_groups = {\"hub-admins\"}",
    ] {
        assert!(printed.contains(line), "missing {line:?} in:\n{printed}");
    }
    // The printed secret authenticates, and groups reach userinfo.
    let client = oauth_client(&server, "hub2", Some(&secret), "https://hub2.example/hub/oauth_callback")
        .set_auth_type(oauth2::AuthType::RequestBody);
    let tokens = sign_in(&server, &client, "pat").await;
    let info: Value = userinfo(&server, tokens.access_token().secret()).await.json().await.unwrap();
    assert_eq!(info["groups"], serde_json::json!(["hub-admins", "hub-users"]));
    // The secret is stored hashed, never in the clear.
    let db = Db::stored(&server.database).await;
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

    // Removing it stops it.
    assert!(server.cli(&["client", "remove", "hub2"], "").status.success());
    assert!(refresh(&client, tokens.refresh_token().unwrap().secret()).await.is_err());
    // A config-declared client cannot be removed from the CLI.
    assert!(!server.cli(&["client", "remove", "jupyterhub"], "").status.success());

    // Without the profile scope the Hub is told to use sub, which every token's userinfo carries.
    let args = ["client", "add", "hub3", "--jupyterhub", "--redirect-uri", "https://hub3.example/cb", "--scopes"];
    let out = server.cli(&[&args[..], &["openid,email"]].concat(), "");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("c.GenericOAuthenticator.username_claim = \"sub\""), "{printed}");
    assert!(printed.contains("c.GenericOAuthenticator.allow_all = True"), "{printed}");
    assert!(!printed.contains("manage_groups"), "no groups reach this client:\n{printed}");

    // Plain http beyond loopback only when the operator says so.
    let insecure = ["client", "add", "hub4", "--redirect-uri", "http://hub4.example/cb"];
    let out = server.cli(&insecure, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_insecure_redirect_uris"));
    assert!(server.cli(&[&insecure[..], &["--allow-insecure-redirect-uris"]].concat(), "").status.success());
    assert!(server.cli(&["client", "add", "cli5", "--redirect-uri", "http://127.0.0.1:9/cb"], "").status.success());
}

#[test]
fn cli_user_management() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    let database = new_database(dir.path());
    std::fs::write(&config, format!("issuer = \"http://127.0.0.1:1\"\ndatabase = \"{database}\"\n")).unwrap();
    let ok = |args: &[&str], stdin: &str| {
        let out = run_cli(&config, args, stdin);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["user", "add", "Quinn", "--groups", "a,b"], "a long password\n");
    // Case-insensitive uniqueness, password rules, username rules.
    assert!(!run_cli(&config, &["user", "add", "QUINN"], "another password\n").status.success());
    assert!(!run_cli(&config, &["user", "add", "rita"], "short\n").status.success());
    assert!(!run_cli(&config, &["user", "add", "bad/name"], "a long password\n").status.success());
    assert_eq!(ok(&["user", "groups", "quinn"], "").trim(), "a,b");
    assert_eq!(ok(&["user", "groups", "quinn", "c"], "").trim(), "c");
    assert_eq!(ok(&["user", "groups", "quinn", "--clear"], "").trim(), "");
    ok(&["user", "set-password", "quinn"], "a new long password\n");
    assert!(!run_cli(&config, &["user", "set-password", "nobody"], "a new long password\n").status.success());
    let list = ok(&["user", "list"], "");
    assert!(list.contains("quinn") && list.contains("active"));
    // The password is never stored in the clear.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = runtime.block_on(Db::stored(&database));
    assert!(!db.windows(8).any(|w| w == b"a new lo"));
}

#[test]
fn stray_postern_variables_in_the_environment_are_ignored_but_unknown_file_keys_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    let database = new_database(dir.path());
    std::fs::write(&config, format!("issuer = \"https://a.example\"\ndatabase = \"{database}\"\n")).unwrap();
    let run = |extra_env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_postern"));
        command.arg("--config").arg(&config).args(["client", "list"]).env("RUST_LOG", "debug");
        for (k, v) in extra_env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    // What a script exports, and what Kubernetes injects for a Service named postern.
    let stray = [
        ("POSTERN_BIN", "/usr/local/bin/postern"),
        ("POSTERN_PORT", "tcp://10.96.0.12:8080"),
        ("POSTERN_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
        ("POSTERN_PORT_8080_TCP_PROTO", "tcp"),
        ("POSTERN_SERVICE_HOST", "10.96.0.12"),
        ("POSTERN_SERVICE_PORT", "8080"),
    ];
    let out = run(&stray);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("POSTERN_SERVICE_HOST"),
        "a debug line names what was ignored"
    );
    // Postern's own keys still come from the environment, and are still checked.
    let out = run(&[("POSTERN_TOKENS__CODE_LIFETIME", "600")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens.code_lifetime"));
    // A typo in the file is still an error.
    std::fs::write(&config, "issuer = \"https://a.example\"\nlisten_address = \"127.0.0.1:1\"\n").unwrap();
    let out = run(&stray);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_address"));
}

#[test]
fn invalid_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    let cases = [
        ("issuer = \"not a url\"\n", "issuer"),
        ("issuer = \"https://a.example/\"\nlisten = \"nowhere\"\n", "listen"),
        ("issuer = \"https://a.example/x/\"\n", "issuer"),
        ("issuer = \"https://a.example\"\ntokens.code_lifetime = 600\n", "tokens.code_lifetime"),
        ("issuer = \"https://a.example\"\ntokens.signing_alg = \"HS256\"\n", "signing_alg"),
        ("issuer = \"https://a.example\"\nsesion.lifetime = 5\n", "sesion"),
        (
            "issuer = \"https://a.example\"\n[clients.hub]\nsecret = \"0123456789abcdef\"\nredirect_uris = [\"https://h.example/cb#x\"]\n",
            "clients.hub.redirect_uris[0]",
        ),
        ("issuer = \"https://a.example\"\n[clients.hub]\nredirect_uris = [\"https://h.example/cb\"]\n", "clients.hub.secret"),
        (
            "issuer = \"https://a.example\"\n[clients.hub]\nsecret = \"0123456789abcdef\"\nredirect_uris = [\"http://h.example/cb\"]\n",
            "clients.hub.redirect_uris[0]",
        ),
    ];
    for (toml, key) in cases {
        std::fs::write(&config, toml).unwrap();
        let out = run_cli(&config, &["serve"], "");
        assert!(!out.status.success(), "{toml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key} not named for {toml:?}: {stderr}");
    }
    // A missing file, and an environment override that breaks the config.
    let out = run_cli(&dir.path().join("missing.toml"), &["serve"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    std::fs::write(&config, "issuer = \"https://a.example\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["--config", config.to_str().unwrap(), "user", "list"])
        .env("POSTERN_TOKENS__ACCESS_TOKEN_LIFETIME", "0")
        .env("POSTERN_DATABASE", new_database(dir.path()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens.access_token_lifetime"));
}

#[test]
fn the_example_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../postern.example.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["--config", example, "client", "list"])
        .env("POSTERN_DATABASE", new_database(dir.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
