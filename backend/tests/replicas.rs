//! Several `postern serve` replicas of one provider on one PostgreSQL database, each request of a
//! sign-in landing on another replica: nothing that matters may live in one process. These run in
//! the PostgreSQL pass of `scripts/test` (`POSTERN_TEST_POSTGRES`); SQLite is one process's store.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use oauth2::{RefreshToken, TokenResponse as _, TokenUrl};
use serde_json::Value;

/// `n` replicas started at once on a new database, or `None` in the SQLite pass.
fn replicas(n: usize) -> Option<Vec<Server>> {
    if postgres_server().is_none() {
        println!("replicas share a PostgreSQL database: this test runs in the PostgreSQL pass of scripts/test");
        return None;
    }
    Some(Server::replicas(n, ""))
}

/// The Hub's client, sending browsers to `authorize_at` and redeeming codes at `token_at`.
fn hub_across(authorize_at: &Server, token_at: &Server) -> OidcClient {
    hub_client(authorize_at).set_token_uri(TokenUrl::new(token_at.url("/token")).unwrap())
}

async fn kids(server: &Server) -> Vec<String> {
    let jwks: Value = http().get(server.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

fn kid(id_token: &str) -> String {
    jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn a_sign_in_crosses_replicas_and_a_code_raced_through_two_is_redeemed_once() {
    let Some(r) = replicas(3) else { return };
    r[0].add_user("ada", &["staff"]);

    // /authorize on one replica, the login API on the next, the top-level resume on the issuer's,
    // the code exchange on the third: one sign-in.
    let client = hub_across(&r[1], &r[2]);
    let auth = authorization(&client, &[("scope", "openid profile groups")]);
    let back = login(&browser(), &r[2], &auth.url, "ada", PASSWORD).await;
    let tokens = exchange(&client, &back, auth.verifier).await;
    let claims = verify_id_token(&r[1], tokens.extra_fields().id_token.as_deref().unwrap(), "jupyterhub").await;
    assert_eq!(claims["sub"], "ada");
    for replica in &r {
        let info: Value = userinfo(replica, tokens.access_token().secret()).await.json().await.unwrap();
        assert_eq!(info["groups"], serde_json::json!(["staff"]));
    }

    // One code, redeemed through two replicas at the same instant.
    let auth = authorization(&client, &[]);
    let back = login(&browser(), &r[0], &auth.url, "ada", PASSWORD).await;
    let code = query(&back, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", HUB_CALLBACK),
        ("code_verifier", auth.verifier.secret()),
        ("client_id", "jupyterhub"),
        ("client_secret", HUB_SECRET),
    ];
    let (one, two) = tokio::join!(token_form(&r[1], &form), token_form(&r[2], &form));
    let statuses = [one.status().as_u16(), two.status().as_u16()];
    let bodies: Vec<Value> = [one.json::<Value>().await.unwrap(), two.json::<Value>().await.unwrap()].into();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "exactly one redemption wins: {bodies:?}");
    let loser = statuses.iter().position(|s| *s != 200).unwrap();
    assert_eq!((statuses[loser], bodies[loser]["error"].as_str()), (400, Some("invalid_grant")));
    // The replay rule holds across replicas: the second use revokes what the first was given.
    let winner = &bodies[1 - loser];
    let access = winner["access_token"].as_str().unwrap();
    for replica in &r {
        assert_eq!(userinfo(replica, access).await.status(), 401, "revoked after the replay");
    }
    let audited: usize = r.iter().map(|s| s.log().matches("event=\"code_replayed\"").count()).sum();
    assert_eq!(audited, 1, "the replay is audited once");
}

#[tokio::test]
async fn a_refresh_token_reused_on_another_replica_revokes_the_family_everywhere() {
    let Some(r) = replicas(3) else { return };
    r[0].add_user("bo", &[]);
    let client = hub_across(&r[0], &r[0]);
    let auth = authorization(&client, &[]);
    let back = login(&browser(), &r[0], &auth.url, "bo", PASSWORD).await;
    let first = exchange(&client, &back, auth.verifier).await;
    let old = RefreshToken::new(first.refresh_token().unwrap().secret().clone());

    // Rotated on one replica, then the old token replayed on another.
    let rotated = hub_across(&r[0], &r[1]).exchange_refresh_token(&old).request_async(&http()).await.unwrap();
    let reused = hub_across(&r[0], &r[2]).exchange_refresh_token(&old).request_async(&http()).await;
    assert!(reused.is_err(), "the reused token is refused");
    // The whole family is revoked, whichever replica is asked.
    let newest = RefreshToken::new(rotated.refresh_token().unwrap().secret().clone());
    assert!(hub_across(&r[0], &r[0]).exchange_refresh_token(&newest).request_async(&http()).await.is_err());
    for replica in &r {
        assert_eq!(userinfo(replica, rotated.access_token().secret()).await.status(), 401);
    }
    let audited: usize = r.iter().map(|s| s.log().matches("event=\"refresh_reuse_detected\"").count()).sum();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn replicas_make_one_first_key_and_publish_a_rotated_key_before_any_signs_with_it() {
    let Some(r) = replicas(3) else { return };
    // Started together on an empty database: one key between them.
    let first = kids(&r[0]).await;
    assert_eq!(first.len(), 1, "{first:?}");
    for replica in &r[1..] {
        assert_eq!(kids(replica).await, first);
    }
    r[0].add_user("cy", &[]);

    let out = r[0].cli(&["keys", "rotate"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotated = Instant::now();
    // Watch every replica's JWKS and sign in round-robin until every replica signs with the new key.
    let mut published: HashMap<usize, Duration> = HashMap::new();
    let mut signed: HashMap<usize, Duration> = HashMap::new();
    let mut new_kid = None;
    let mut n = 0;
    while signed.len() < r.len() {
        assert!(rotated.elapsed() < Duration::from_secs(75), "the new key never signed everywhere: {signed:?}");
        for (i, replica) in r.iter().enumerate() {
            if let Some(kid) = kids(replica).await.into_iter().find(|k| !first.contains(k)) {
                new_kid = Some(kid);
                published.entry(i).or_insert(rotated.elapsed());
            }
        }
        let i = n % r.len();
        n += 1;
        let client = hub_across(&r[i], &r[i]);
        let auth = authorization(&client, &[]);
        let back = login(&browser(), &r[i], &auth.url, "cy", PASSWORD).await;
        let tokens = exchange(&client, &back, auth.verifier).await;
        let id_token = tokens.extra_fields().id_token.clone().unwrap();
        if Some(kid(&id_token)) == new_kid {
            signed.entry(i).or_insert(rotated.elapsed());
            // Whatever replica a relying party asks for the JWKS, it finds the key.
            for replica in &r {
                verify_id_token(replica, &id_token, "jupyterhub").await;
            }
        } else {
            assert_eq!(kid(&id_token), first[0], "only the old or the new key signs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last_published = published.values().max().unwrap();
    let first_signed = signed.values().min().unwrap();
    println!("published by every replica within {last_published:?}; first signature after {first_signed:?}");
    assert_eq!(published.len(), r.len());
    assert!(last_published < first_signed, "a replica signed before every replica published the key");
}

#[tokio::test]
async fn failed_logins_on_one_replica_throttle_the_others_and_a_known_address_is_known_everywhere() {
    if postgres_server().is_none() {
        return println!("replicas share a PostgreSQL database: this test runs in the PostgreSQL pass");
    }
    let r = Server::replicas(3, r#"trusted_proxies = ["127.0.0.1"]"#);
    r[0].add_user("di", &[]);
    r[0].add_user("eve", &[]);
    let handle = || async { pending_handle(&browser(), &r[0]).await };

    // Three wrong passwords for di from one address, each through another replica: the free budget.
    for replica in &r {
        assert_eq!(login_from(replica, &handle().await, "di", "not her password", "203.0.113.1").await, 401);
    }
    // The next attempt waits, whichever replica it reaches, before its password is even checked.
    for replica in &r {
        assert_eq!(login_from(replica, &handle().await, "di", PASSWORD, "203.0.113.1").await, 429);
    }

    // eve signs in from her usual address through one replica; then wrong guesses for her name from
    // ten other addresses, through all three, hold the name back for unknown addresses everywhere,
    // but not for the address she signed in from, which every replica knows.
    assert_eq!(login_from(&r[1], &handle().await, "eve", PASSWORD, "198.51.100.7").await, 200);
    for n in 0..10 {
        let replica = &r[n % 3];
        let status = login_from(replica, &handle().await, "eve", "guess", &format!("192.0.2.{}", n + 1)).await;
        assert_eq!(status, 401, "guess {n}");
    }
    assert_eq!(login_from(&r[0], &handle().await, "eve", PASSWORD, "192.0.2.200").await, 429, "a new address waits");
    assert_eq!(login_from(&r[2], &handle().await, "eve", PASSWORD, "198.51.100.7").await, 200, "hers does not");

    // A right password on one replica clears the failures counted on the others: two wrong, one
    // right, two wrong again, and the next is still checked (five failures uncleared would wait).
    r[0].add_user("fay", &[]);
    for replica in &r[..2] {
        assert_eq!(login_from(replica, &handle().await, "fay", "typo", "203.0.113.2").await, 401);
    }
    assert_eq!(login_from(&r[2], &handle().await, "fay", PASSWORD, "203.0.113.2").await, 200);
    for replica in &r[..2] {
        assert_eq!(login_from(replica, &handle().await, "fay", "typo", "203.0.113.2").await, 401);
    }
    assert_eq!(login_from(&r[2], &handle().await, "fay", PASSWORD, "203.0.113.2").await, 200, "the count was cleared");
}
