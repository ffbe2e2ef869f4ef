//! Signing in with an LDAP directory behind Postern, against a real slapd: accounts made at the first
//! sign-in with the directory's groups, a name collision that never merges two people, wrong passwords
//! throttled, filter injection refused, a directory that is down or untrusted, and local accounts
//! beside it all.

mod common;

use common::*;
use std::time::Duration;

use oauth2::TokenResponse as _;
use serde_json::Value;

/// Signs `username` in to the Hub with `password`; the claims the Hub would see in userinfo.
async fn hub_sign_in(server: &Server, username: &str, password: &str) -> Value {
    let browser = browser();
    let hub = hub_client(server);
    let auth = authorization(&hub, &[("scope", "openid profile email groups")]);
    let back = login(&browser, server, &auth.url, username, password).await;
    let tokens = exchange(&hub, &back, auth.verifier).await;
    userinfo(server, tokens.access_token().secret()).await.json().await.unwrap()
}

/// The login API's status and error body for one attempt from `address`.
async fn attempt(server: &Server, username: &str, password: &str, address: &str) -> (u16, Value) {
    let handle = pending_handle(&browser(), server).await;
    let response = http()
        .post(server.url("/api/login"))
        .header("origin", server.origin())
        .header("x-forwarded-for", address)
        .json(&shared::LoginRequest { request: handle, username: username.into(), password: password.into() })
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args, "");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_directory_person_signs_in_with_their_groups_and_a_second_sign_in_brings_the_changes() {
    let directory = Directory::start().await;
    let server = Server::start(&directory.upstream("campus", r#"static_groups = ["campus"]"#));

    let claims = hub_sign_in(&server, "Alice", "alice-pw").await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["email"], "alice@example.org");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], serde_json::json!(["admins", "campus", "staff"]));
    let users = cli_ok(&server, &["user", "list"]);
    let line = users.lines().find(|l| l.starts_with("alice")).unwrap_or_else(|| panic!("{users}"));
    assert!(line.contains("campus"), "user list says where alice comes from: {users}");
    assert!(server.log().contains("upstream_login_succeeded"), "audited");

    // The directory changes; the next sign-in brings it, the same account and the same sub.
    directory.remove_from_group("staff", "alice").await;
    let again = hub_sign_in(&server, "alice", "alice-pw").await;
    assert_eq!(again["sub"], "alice");
    assert_eq!(again["groups"], serde_json::json!(["admins", "campus"]));
    assert_eq!(server.db().await.number("SELECT count(*) FROM users").await, 1, "no second account");

    // A name with filter syntax in it finds nobody, whatever it is built to match.
    for name in ["*", "alice)(uid=*", "*)(|(uid=*", "al*", "alice\\", "(uid=alice)"] {
        let (status, body) = attempt(&server, name, "alice-pw", "127.0.0.1").await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"], "invalid_credentials", "{name}");
    }
    // A person whose name holds filter syntax is found by exactly that name.
    directory.add_person("o*(dd)", "Odd Name", "odd-pw").await;
    let (status, body) = attempt(&server, "o*(dd)", "odd-pw", "127.0.0.1").await;
    assert_eq!(status, 403, "found and checked, but the name cannot be a username: {body}");
    assert_eq!(body["error"], "account_unavailable");
}

#[tokio::test]
async fn wrong_directory_passwords_are_refused_and_throttled_like_local_ones() {
    let directory = Directory::start().await;
    let server = Server::start(&format!("trusted_proxies = [\"127.0.0.1\"]\n{}", directory.upstream("campus", "")));
    for i in 0..3 {
        let (status, body) = attempt(&server, "bob", "nope", "203.0.113.7").await;
        assert_eq!(status, 401, "attempt {i}: {body}");
        assert_eq!(body["message"], "Incorrect username or password.");
    }
    let (status, _) = attempt(&server, "bob", "bob-pw", "203.0.113.7").await;
    assert_eq!(status, 429, "that address waits, even with the right password");
    let (status, _) = attempt(&server, "bob", "", "203.0.113.8").await;
    assert_eq!(status, 401, "an empty password is never a bind");
    let (status, _) = attempt(&server, "bob", "bob-pw", "203.0.113.9").await;
    assert_eq!(status, 200, "another address signs in");
    assert!(server.log().contains("reason=\"wrong_password\"") || server.log().contains("reason=wrong_password"));
    assert!(!server.log().contains("bob-pw"), "no password in any log line");
}

#[tokio::test]
async fn a_local_account_with_the_same_name_is_never_merged_with_the_directory_person() {
    let directory = Directory::start().await;
    let server = Server::start(&directory.upstream("campus", ""));
    // A visitor's local account happens to have the directory person's name.
    server.add_user("carol", &["visitors"]);

    let directory_carol = hub_sign_in(&server, "carol", "carol-pw").await;
    assert_eq!(directory_carol["sub"], "carol-campus", "a name of its own: {directory_carol}");
    assert_eq!(directory_carol["name"], "Carol Danvers");
    let local_carol = hub_sign_in(&server, "carol", PASSWORD).await;
    assert_eq!(local_carol["sub"], "carol");
    assert_eq!(local_carol["groups"], serde_json::json!(["visitors"]));
    // The directory person signs in again: the same second account.
    assert_eq!(hub_sign_in(&server, "carol", "carol-pw").await["sub"], "carol-campus");
    assert_eq!(server.db().await.number("SELECT count(*) FROM users").await, 2);
}

#[tokio::test]
async fn disabling_a_directory_person_in_postern_blocks_them_whatever_the_directory_says() {
    let directory = Directory::start().await;
    let server = Server::start(&directory.upstream("campus", ""));
    hub_sign_in(&server, "bob", "bob-pw").await;
    cli_ok(&server, &["user", "disable", "bob"]);
    let (status, body) = attempt(&server, "bob", "bob-pw", "127.0.0.1").await;
    assert_eq!(status, 401, "{body}");
    cli_ok(&server, &["user", "enable", "bob"]);
    assert_eq!(attempt(&server, "bob", "bob-pw", "127.0.0.1").await.0, 200);
}

#[tokio::test]
async fn without_provisioning_only_linked_people_sign_in() {
    let directory = Directory::start().await;
    let server = Server::start(&directory.upstream("campus", "provision = false"));
    let (status, body) = attempt(&server, "alice", "alice-pw", "127.0.0.1").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "account_unavailable");
    assert!(body["message"].as_str().unwrap().contains("administrator"));
    assert!(server.log().contains("not_provisioned"));
    assert_eq!(server.db().await.number("SELECT count(*) FROM users").await, 0, "nothing made");
}

#[tokio::test]
async fn a_directory_that_is_down_or_untrusted_ends_with_a_clear_error_and_local_accounts_go_on() {
    let mut directory = Directory::start().await;
    let server = Server::start(&directory.upstream("campus", "timeout = 2"));
    server.add_user("guest", &[]);
    directory.stop();
    let (status, body) = attempt(&server, "alice", "alice-pw", "127.0.0.1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "upstream_unavailable");
    assert!(body["message"].as_str().unwrap().contains("cannot be reached"));
    assert!(server.log().contains("reason=\"unreachable\"") || server.log().contains("reason=unreachable"));
    // Local accounts do not depend on it.
    assert_eq!(hub_sign_in(&server, "guest", PASSWORD).await["sub"], "guest");

    // A directory whose certificate chains to another CA is not talked to.
    let directory = Directory::start().await;
    let other_ca = tempfile::tempdir().unwrap();
    make_certificates(other_ca.path());
    let config = directory
        .upstream("campus", "")
        .replace(&directory.ca_file().display().to_string(), &other_ca.path().join("ca.crt").display().to_string());
    let untrusting = Server::start(&config);
    let (status, body) = attempt(&untrusting, "alice", "alice-pw", "127.0.0.1").await;
    assert_eq!(status, 503, "{body}");
    assert!(untrusting.log().contains("TLS"), "the log names the cause: {}", untrusting.log());
}

#[tokio::test]
async fn starttls_works_and_plain_ldap_needs_the_operators_say_so() {
    let directory = Directory::start().await;
    let starttls = directory.upstream("campus", "starttls = true").replace(&directory.ldaps, &directory.ldap);
    let server = Server::start(&starttls);
    assert_eq!(hub_sign_in(&server, "bob", "bob-pw").await["sub"], "bob");

    let plain = directory.upstream("campus", "").replace(&directory.ldaps, &directory.ldap);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(&config, format!("issuer = \"http://127.0.0.1:9\"\n{plain}")).unwrap();
    let out = run_cli(&config, &["user", "list"], "");
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("upstreams.campus.url") && error.contains("clear"), "{error}");
    let insecure = Server::start(&format!("{plain}allow_insecure = true\n"));
    assert_eq!(hub_sign_in(&insecure, "carol", "carol-pw").await["sub"], "carol");
}

/// Refreshes with `token` as the Hub; the new tokens, or the error's status and body.
async fn refresh(server: &Server, token: &str) -> Result<(String, String), (u16, Value)> {
    let response = token_form(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", "jupyterhub"),
            ("client_secret", HUB_SECRET),
        ],
    )
    .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    if status != 200 {
        return Err((status, body));
    }
    Ok((body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned()))
}

async fn groups(server: &Server, access_token: &str) -> Value {
    let info: Value = userinfo(server, access_token).await.json().await.unwrap();
    info["groups"].clone()
}

#[tokio::test]
async fn the_hubs_refresh_follows_the_directory_and_offboarding_needs_no_new_sign_in() {
    let mut directory = Directory::start().await;
    let server = Server::start(&directory.upstream("campus", "recheck_interval = 2\noffline_grace = 4\ntimeout = 2"));
    let browser = browser();
    let hub = hub_client(&server);
    let auth = authorization(&hub, &[("scope", "openid profile groups")]);
    let back = login(&browser, &server, &auth.url, "alice", "alice-pw").await;
    let tokens = exchange(&hub, &back, auth.verifier).await;
    let mut refresh_token = tokens.refresh_token().unwrap().secret().clone();
    assert_eq!(groups(&server, tokens.access_token().secret()).await, serde_json::json!(["admins", "staff"]));

    // Within the interval nothing is asked (times are whole seconds: under a second has passed, so at
    // most one is counted); past it, the directory's groups arrive with the refresh.
    directory.remove_from_group("staff", "alice").await;
    let (access, next) = refresh(&server, &refresh_token).await.unwrap();
    assert_eq!(groups(&server, &access).await, serde_json::json!(["admins", "staff"]), "not re-read yet");
    refresh_token = next;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (access, next) = refresh(&server, &refresh_token).await.unwrap();
    assert_eq!(groups(&server, &access).await, serde_json::json!(["admins"]), "re-read at the refresh");
    refresh_token = next;

    // The directory goes down: the last groups hold for the grace period, then refreshes fail, and
    // nothing is rotated meanwhile.
    directory.stop();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, next) = refresh(&server, &refresh_token).await.expect("within the grace period");
    refresh_token = next;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, body) = refresh(&server, &refresh_token).await.unwrap_err();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    directory.resume();
    let (_, next) = refresh(&server, &refresh_token).await.expect("the same token works once the directory is back");
    refresh_token = next;

    // Removed from the directory: the Hub's next refresh fails, and the browser's session is gone.
    directory.delete_person("alice").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = refresh(&server, &refresh_token).await.unwrap_err();
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(server.log().contains("upstream_account_gone"));
    let again = authorization(&hub, &[]);
    let page = location(&browser.get(again.url.clone()).send().await.unwrap());
    assert_eq!(page.path(), "/login", "no single sign-on left: {page}");
    assert_eq!(attempt(&server, "alice", "alice-pw", "127.0.0.1").await.0, 401);
}

#[tokio::test]
async fn groups_found_by_a_group_search_are_filtered_and_prefixed() {
    let directory = Directory::start().await;
    let server = Server::start(&directory.upstream(
        "campus",
        &format!(
            "group_base = \"ou=groups,{BASE}\"\ngroup_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\"\n\
             allowed_groups = [\"staff\"]\ngroup_prefix = \"campus:\"\nstatic_groups = [\"hub-users\"]"
        ),
    ));
    let claims = hub_sign_in(&server, "alice", "alice-pw").await;
    assert_eq!(claims["groups"], serde_json::json!(["campus:staff", "hub-users"]));
}

#[tokio::test]
async fn the_cli_tests_a_directory_and_links_a_person_to_an_existing_account() {
    let directory = Directory::start().await;
    let server = Server::start(&directory.upstream("campus", ""));
    let list = cli_ok(&server, &["upstream", "list"]);
    assert!(list.contains("campus") && list.contains("ldap") && list.contains(&directory.ldaps), "{list}");
    let report = cli_ok(&server, &["upstream", "test", "campus", "--user", "alice"]);
    for expected in
        ["bound as cn=postern", "uid=alice,ou=people", "username:       alice", "admins,staff", "alice@example.org"]
    {
        assert!(report.contains(expected), "{expected}: {report}");
    }
    let nobody = server.cli(&["upstream", "test", "campus", "--user", "zed"], "");
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("finds nobody"));

    // What is wrong is named: the service account's password, the search base.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    let broken = |from: &str, to: &str| {
        std::fs::write(
            &config,
            format!("issuer = \"http://127.0.0.1:9\"\n{}", directory.upstream("campus", "").replace(from, to)),
        )
        .unwrap();
        let out = run_cli(&config, &["upstream", "test", "campus"], "");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(broken(SERVICE_PASSWORD, "wrong-secret").contains("service account"));
    assert!(broken("ou=people,", "ou=nobody,").contains("does not exist"));
    assert!(broken(&directory.ldaps, "ldaps://127.0.0.1:9").contains("unreachable"));

    // An operator links bob's directory account to the existing local account ada.
    server.add_user("ada", &[]);
    let linked = cli_ok(&server, &["user", "link", "ada", "campus", "--as", "bob"]);
    assert!(linked.contains("ada may now sign in as bob"), "{linked}");
    let claims = hub_sign_in(&server, "bob", "bob-pw").await;
    assert_eq!(claims["sub"], "ada", "the directory person lands in the linked account");
    assert_eq!(claims["groups"], serde_json::json!(["staff"]));
    assert_eq!(hub_sign_in(&server, "ada", PASSWORD).await["sub"], "ada", "the local password still works");
    let users = cli_ok(&server, &["user", "list"]);
    assert!(users.lines().any(|l| l.starts_with("ada") && l.contains("local,campus")), "{users}");
    // One directory person, one account.
    server.add_user("eve", &[]);
    let twice = server.cli(&["user", "link", "eve", "campus", "--as", "bob"], "");
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("linked to an account already"));
    let unknown = server.cli(&["user", "link", "eve", "nowhere", "--as", "bob"], "");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no upstream `nowhere`"));
}
