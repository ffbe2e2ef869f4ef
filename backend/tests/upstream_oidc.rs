//! Signing in at an upstream OpenID Connect provider behind Postern, against a real third-party
//! provider (panva's oidc-provider, e2e/upstream-op.mjs): accounts made with the provider's claims
//! and groups, a collision that never merges, and every bad answer (wrong audience, wrong nonce,
//! expired, a signature by another key, a key never published, a mixed-up issuer, a cancelled
//! sign-in, a provider that is down) ending on the error page with nothing sent to the application.

mod common;

use common::*;
use oauth2::TokenResponse as _;
use serde_json::Value;
use url::Url;

const ID: &str = "uni";

fn start(extra: &str, provider_extra: &str) -> (Server, Provider) {
    // The provider must know Postern's callback, and Postern the provider's issuer: pick Postern's port first.
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let provider = Provider::start(&issuer, ID);
    let server = Server::start_on_port(&format!("{extra}\n{}", provider.upstream(ID, provider_extra)), port);
    (server, provider)
}

/// How a sign-in through the provider ended at Postern.
enum Ended {
    /// Back at the Hub with a code, redeemed: the claims the Hub sees at userinfo.
    AtHub(Value),
    /// On Postern's error page: its status and text.
    Stopped(u16, String),
}

/// A Hub sign-in in `browser` up to the provider's answer: Postern's callback URL (not followed yet),
/// and the Hub's side of the authorization.
async fn to_provider_and_back(
    server: &Server,
    provider: &Provider,
    browser: &reqwest::Client,
    login: &str,
) -> (Url, Authorization) {
    let hub = hub_client(server);
    let auth = authorization(&hub, &[("scope", "openid profile email groups")]);
    let page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    let handle = query(&page, "request").expect("the login page");
    let pending = pending_request(browser, server, &handle).await;
    let button = pending.upstreams.iter().find(|b| b.id == ID).expect("a button for the provider");
    assert_eq!(button.name, "Uni");
    let to_provider = location(&browser.get(&button.url).send().await.unwrap());
    assert!(to_provider.as_str().starts_with(&provider.issuer), "{to_provider}");
    assert_eq!(query(&to_provider, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(query(&to_provider, "response_type").as_deref(), Some("code"));
    assert!(query(&to_provider, "nonce").is_some() && query(&to_provider, "state").is_some());
    assert_eq!(query(&to_provider, "redirect_uri").unwrap(), format!("{}/upstreams/{ID}/callback", server.issuer));
    (provider.sign_in(browser, to_provider, login).await, auth)
}

/// Follows the provider's answer through Postern; at the Hub, redeems the code.
async fn follow(server: &Server, browser: &reqwest::Client, callback: Url, auth: Authorization) -> Ended {
    let response = browser.get(callback).send().await.unwrap();
    if response.status() != 303 {
        let status = response.status().as_u16();
        return Ended::Stopped(status, response.text().await.unwrap());
    }
    let resume = location(&response);
    assert_eq!(resume.path(), "/authorize/resume", "{resume}");
    let back = location(&browser.get(resume).send().await.unwrap());
    let tokens = exchange(&hub_client(server), &back, auth.verifier).await;
    Ended::AtHub(userinfo(server, tokens.access_token().secret()).await.json().await.unwrap())
}

async fn sign_in_with(server: &Server, provider: &Provider, browser: &reqwest::Client, login: &str) -> Ended {
    let (callback, auth) = to_provider_and_back(server, provider, browser, login).await;
    follow(server, browser, callback, auth).await
}

fn at_hub(ended: Ended) -> Value {
    match ended {
        Ended::AtHub(claims) => claims,
        Ended::Stopped(status, text) => panic!("stopped with {status}: {text}"),
    }
}

fn stopped(ended: Ended) -> (u16, String) {
    match ended {
        Ended::Stopped(status, text) => (status, text),
        Ended::AtHub(claims) => panic!("expected the error page, came back to the Hub as {claims}"),
    }
}

#[tokio::test]
async fn an_upstream_sign_in_makes_the_account_with_the_providers_claims_and_groups() {
    let (server, provider) = start("", r#"static_groups = ["uni"]"#);
    let claims = at_hub(sign_in_with(&server, &provider, &browser(), "alice").await);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice Upstream");
    assert_eq!(claims["email"], "alice@uni.example");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], serde_json::json!(["e2e-users", "hub-admins", "staff", "uni"]));
    assert!(server.log().contains("upstream_login_succeeded"));
    let users = server.cli(&["user", "list"], "");
    let users = String::from_utf8_lossy(&users.stdout);
    assert!(users.lines().any(|l| l.starts_with("alice") && l.contains(ID)), "{users}");
    // Again, in another browser: the same account.
    assert_eq!(at_hub(sign_in_with(&server, &provider, &browser(), "alice").await)["sub"], "alice");
    assert_eq!(server.db().await.number("SELECT count(*) FROM users").await, 1);
    // The provider's word on e-mail is kept: bob's address is not verified there.
    assert_eq!(at_hub(sign_in_with(&server, &provider, &browser(), "bob").await)["email_verified"], false);
}

#[tokio::test]
async fn a_local_account_with_the_same_name_is_never_merged_with_the_upstream_person() {
    let (server, provider) = start("", "");
    server.add_user("alice", &["visitors"]);
    let claims = at_hub(sign_in_with(&server, &provider, &browser(), "alice").await);
    assert_eq!(claims["sub"], "alice-uni");
    let local = server.cli(&["user", "groups", "alice"], "");
    assert_eq!(String::from_utf8_lossy(&local.stdout).trim(), "visitors", "the local account is untouched");
}

#[tokio::test]
async fn every_untrustworthy_answer_ends_on_the_error_page_and_the_application_gets_nothing() {
    let (server, provider) = start("", "");
    // A provider that rotated its key: the new JWKS is fetched, and the sign-in goes through.
    provider.set_mode("rotated").await;
    assert_eq!(at_hub(sign_in_with(&server, &provider, &browser(), "alice").await)["sub"], "alice");
    for mode in ["wrong-aud", "wrong-nonce", "expired", "badsig", "unknown-key"] {
        provider.set_mode(mode).await;
        let (status, page) = stopped(sign_in_with(&server, &provider, &browser(), "alice").await);
        assert_eq!(status, 400, "{mode}");
        assert!(page.contains("could not be trusted"), "{mode}: {page}");
    }
    assert_eq!(server.db().await.number("SELECT count(*) FROM grants").await, 1, "no code but the rotated one's");
    let log = server.log();
    assert!(log.contains("reason=\"invalid_response\"") || log.contains("reason=invalid_response"), "{log}");
    for cause in ["audiences", "nonce mismatch", "expired", "signature verification failed", "does not publish"] {
        assert!(log.to_lowercase().contains(&cause.to_lowercase()), "the log names the cause ({cause}): {log}");
    }

    // A provider that rotated its key: the new JWKS is fetched, and the sign-in goes through.

    // An authorization response naming another issuer (RFC 9207 mix-up) is refused.
    let browser = browser();
    let (mut callback, auth) = to_provider_and_back(&server, &provider, &browser, "alice").await;
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "iss" { "https://evil.example".into() } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    callback.query_pairs_mut().clear().extend_pairs(pairs);
    let (_, page) = stopped(follow(&server, &browser, callback, auth).await);
    assert!(page.contains("could not be trusted"), "{page}");
}

#[tokio::test]
async fn the_providers_answer_is_bound_to_the_browser_and_used_once() {
    let (server, provider) = start("", "");
    let browser = browser();
    let (callback, auth) = to_provider_and_back(&server, &provider, &browser, "alice").await;
    // Another browser given the answer is refused, and that spends it.
    let (_, page) = stopped(follow(&server, &common::browser(), callback.clone(), auth).await);
    assert!(page.contains("different browser"), "{page}");
    let again = browser.get(callback).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("expired or was already used"));
    assert_eq!(server.db().await.number("SELECT count(*) FROM grants").await, 0);
}

#[tokio::test]
async fn a_cancelled_sign_in_or_a_provider_that_is_down_ends_on_the_error_page_and_local_accounts_go_on() {
    let (mut server, mut provider) = start("", "");
    server.add_user("guest", &[]);
    // The person cancels at the provider: it answers access_denied.
    let browser = browser();
    let hub = hub_client(&server);
    let auth = authorization(&hub, &[]);
    let page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    let handle = query(&page, "request").unwrap();
    let start = server.url(&format!("/upstreams/{ID}/start?request={handle}"));
    let to_provider = location(&browser.get(start.as_str()).send().await.unwrap());
    let interaction = provider_location(&browser.get(to_provider).send().await.unwrap());
    let abort = interaction.join(&format!("{}/abort", interaction.path())).unwrap();
    let to_postern = provider_location(&browser.get(abort).send().await.unwrap());
    let to_postern = provider_location(&browser.get(to_postern).send().await.unwrap());
    assert_eq!(query(&to_postern, "error").as_deref(), Some("access_denied"));
    let response = browser.get(to_postern).send().await.unwrap();
    assert_eq!(response.status(), 400, "{:?}", response.headers().get("location"));
    assert!(response.text().await.unwrap().contains("cancelled or refused"));
    assert!(server.log().contains("reason=\"denied\"") || server.log().contains("reason=denied"));

    // The provider goes away: its button ends on the error page (once Postern needs to ask it: a
    // restarted Postern has no discovery document yet); passwords still work.
    provider.stop();
    server.restart();
    let browser = common::browser();
    let auth = authorization(&hub, &[]);
    let page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    let handle = query(&page, "request").unwrap();
    let response = browser.get(server.url(&format!("/upstreams/{ID}/start?request={handle}"))).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("cannot be reached"));
    let back = login(&browser, &server, &auth.url, "guest", PASSWORD).await;
    assert!(query(&back, "code").is_some(), "local accounts do not depend on the provider");
}

#[tokio::test]
async fn a_page_of_buttons_only_refuses_passwords_and_auto_redirect_skips_it() {
    let (server, provider) = start("[login]\nlocal_accounts = false", "");
    server.add_user("guest", &[]);
    let browser = browser();
    let handle = pending_handle(&browser, &server).await;
    let pending = pending_request(&browser, &server, &handle).await;
    assert!(!pending.local_accounts);
    let refused = submit_login(&browser, &server, &handle, "guest", PASSWORD).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("buttons"));
    drop((server, provider));

    let (server, provider) = start("[login]\nlocal_accounts = false\nauto_redirect = true", "");
    let auth = authorization(&hub_client(&server), &[]);
    let first = location(&browser.get(auth.url.clone()).send().await.unwrap());
    assert_eq!(first.path(), format!("/upstreams/{ID}/start"), "no login page: {first}");
    let to_provider = location(&browser.get(first).send().await.unwrap());
    assert!(to_provider.as_str().starts_with(&provider.issuer));
}

/// A redirect's target, whatever the 30x (the provider answers 302 and 303).
fn provider_location(response: &reqwest::Response) -> Url {
    assert!(response.status().is_redirection(), "expected a redirect, got {}", response.status());
    response.url().join(response.headers()["location"].to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_cli_tests_a_provider_and_links_its_subject_to_an_existing_account() {
    let (server, provider) = start("", "");
    let list = String::from_utf8(server.cli(&["upstream", "list"], "").stdout).unwrap();
    assert!(list.contains(ID) && list.contains("oidc") && list.contains(&provider.issuer), "{list}");
    let test = server.cli(&["upstream", "test", ID], "");
    let report = String::from_utf8_lossy(&test.stdout);
    assert!(test.status.success(), "{}", String::from_utf8_lossy(&test.stderr));
    for expected in ["discovery and keys fetched", "token endpoint", "signing keys 1", "RFC 9207 iss sent"] {
        assert!(report.contains(expected), "{expected}: {report}");
    }
    assert!(report.contains(&format!("{}/upstreams/{ID}/callback", server.issuer)), "{report}");

    server.add_user("ada", &["staff"]);
    let linked = server.cli(&["user", "link", "ada", ID, "--as", "carol"], "");
    assert!(linked.status.success(), "{}", String::from_utf8_lossy(&linked.stderr));
    let claims = at_hub(sign_in_with(&server, &provider, &browser(), "carol").await);
    assert_eq!(claims["sub"], "ada", "the provider's carol lands in the linked account");

    let mut down = provider;
    down.stop();
    let failed = server.cli(&["upstream", "test", ID], "");
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("unreachable"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

#[tokio::test]
async fn an_application_may_name_the_provider_to_sign_in_at() {
    let (server, provider) = start("", "");
    let hub = hub_client(&server);
    for hint in ["idp_hint", "kc_idp_hint"] {
        let browser = browser();
        let auth = authorization(&hub, &[(hint, ID)]);
        let first = location(&browser.get(auth.url.clone()).send().await.unwrap());
        assert_eq!(first.path(), format!("/upstreams/{ID}/start"), "{hint}: straight to the provider");
        let callback = provider.sign_in(&browser, location(&browser.get(first).send().await.unwrap()), "alice").await;
        assert_eq!(at_hub(follow(&server, &browser, callback, auth).await)["sub"], "alice", "{hint}");
    }
    // A name that is no provider's shows the login page as usual.
    let auth = authorization(&hub, &[("idp_hint", "nowhere")]);
    assert_eq!(location(&browser().get(auth.url.clone()).send().await.unwrap()).path(), "/login");
}
