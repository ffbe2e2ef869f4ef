//! Several `postern serve` replicas of one provider on one PostgreSQL database, each request of a
//! sign-in landing on another replica: nothing that matters may live in one process. These run in
//! the PostgreSQL pass of `scripts/test` (`POSTERN_TEST_POSTGRES`); SQLite is one process's store.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use oauth2::{RefreshToken, TokenResponse as _, TokenUrl};
use reqwest::Url;
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
    let form = hub_code_form(&code, auth.verifier.secret());
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

/// Tokens the load was given: what must still work afterwards.
struct Answered {
    access: String,
    refresh: String,
}

/// What a load saw: the tokens it was answered with, the answers that were not the expected ones
/// (replica, status, body), and the requests that got no answer at all.
#[derive(Default)]
struct Seen {
    answered: Vec<Answered>,
    unexpected: Vec<(usize, u16, String)>,
    unanswered: usize,
}

/// Sign-ins in a loop on several tasks, each request on the next replica in turn (a round-robin
/// balancer): /authorize, the login API, the top-level resume, the code exchange.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(r: &[Server], users: &[String]) -> Self {
        let ports: Arc<Vec<u16>> = Arc::new(r.iter().map(|s| s.port).collect());
        let (issuer, client) = (r[0].origin(), hub_client(&r[0]));
        let (stop, seen, turn) =
            (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Seen::default())), Arc::new(AtomicUsize::new(0)));
        let mut tasks = tokio::task::JoinSet::new();
        for user in users {
            let (ports, issuer, client, user) = (ports.clone(), issuer.clone(), client.clone(), user.clone());
            let (stop, seen, turn) = (stop.clone(), seen.clone(), turn.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let next = || {
                        let i = turn.fetch_add(1, Ordering::Relaxed) % ports.len();
                        (i, ports[i])
                    };
                    match sign_in_round_robin(&client, &issuer, &user, next).await {
                        Ok(answered) => seen.lock().unwrap().answered.push(answered),
                        Err(Some(unexpected)) => seen.lock().unwrap().unexpected.push(unexpected),
                        Err(None) => {
                            seen.lock().unwrap().unanswered += 1;
                            // A balancer would mark the replica down; this one just tries the next.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            });
        }
        Load { stop, seen, tasks }
    }

    fn answered(&self) -> usize {
        self.seen.lock().unwrap().answered.len()
    }

    async fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// `url` sent to the replica on `port` instead.
fn at(url: &str, port: u16) -> Url {
    let mut url = Url::parse(url).unwrap();
    url.set_port(Some(port)).unwrap();
    url
}

/// One sign-in, each step at the replica `next` picks. `Err(Some(…))`: an answer other than the
/// expected one; `Err(None)`: a request got no answer (its replica is down).
async fn sign_in_round_robin(
    client: &OidcClient,
    issuer: &str,
    user: &str,
    mut next: impl FnMut() -> (usize, u16),
) -> Result<Answered, Option<(usize, u16, String)>> {
    let browser = browser();
    async fn expect(
        i: usize,
        response: reqwest::Result<reqwest::Response>,
        status: u16,
    ) -> Result<reqwest::Response, Option<(usize, u16, String)>> {
        let response = response.map_err(|_| None)?;
        if response.status().as_u16() == status {
            return Ok(response);
        }
        let got = response.status().as_u16();
        Err(Some((i, got, response.text().await.unwrap_or_default())))
    }
    let auth = authorization(client, &[]);
    let (i, port) = next();
    let response = expect(i, browser.get(at(auth.url.as_str(), port)).send().await, 303).await?;
    let handle = query(&location(&response), "request").unwrap();
    let (i, port) = next();
    let login = shared::LoginRequest { request: handle, username: user.into(), password: PASSWORD.into() };
    let sent =
        browser.post(at(&format!("{issuer}/api/login"), port)).header("origin", issuer).json(&login).send().await;
    let response = expect(i, sent, 200).await?;
    let resume = response.json::<shared::LoginResponse>().await.map_err(|_| None)?.redirect_to;
    let (i, port) = next();
    let response = expect(i, browser.get(at(&resume, port)).send().await, 303).await?;
    let code = query(&location(&response), "code").unwrap();
    let (i, port) = next();
    let form = hub_code_form(&code, auth.verifier.secret());
    let sent = http().post(at(&format!("{issuer}/token"), port)).form(&form).send().await;
    let tokens: Value = expect(i, sent, 200).await?.json().await.map_err(|_| None)?;
    Ok(Answered {
        access: tokens["access_token"].as_str().unwrap().to_owned(),
        refresh: tokens["refresh_token"].as_str().unwrap().to_owned(),
    })
}

/// Every token the load was answered with still works, through `replica`.
async fn every_answer_holds(replica: &Server, seen: &Seen) {
    for (n, answered) in seen.answered.iter().enumerate() {
        assert_eq!(userinfo(replica, &answered.access).await.status(), 200, "access token {n}");
        let refresh = [
            ("grant_type", "refresh_token"),
            ("refresh_token", answered.refresh.as_str()),
            ("client_id", "jupyterhub"),
            ("client_secret", HUB_SECRET),
        ];
        assert_eq!(token_form(replica, &refresh).await.status(), 200, "refresh token {n}");
    }
}

async fn readiness(replica: &Server) -> u16 {
    http().get(replica.url("/healthz/ready")).send().await.map_or(0, |r| r.status().as_u16())
}

/// Waits until every replica's readiness answers `status`, failing with `what` after `within`.
async fn await_readiness(r: &[Server], status: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    for replica in r {
        while readiness(replica).await != status {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_nothing_it_answered() {
    let Some(r) = replicas(3) else { return };
    let users: Vec<String> = (0..6).map(|n| format!("load{n}")).collect();
    for user in &users {
        r[0].add_user(user, &[]);
    }
    let load = Load::start(&r, &users);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SIGKILL: no shutdown, requests in flight on it get no answer.
    let killed = Command::new("kill").args(["-KILL", &r[1].pid().to_string()]).status().unwrap();
    assert!(killed.success());
    let at_kill = load.answered();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = load.stop().await;

    println!(
        "answered {at_kill} sign-ins before the kill, {} in all; {} requests unanswered",
        seen.answered.len(),
        seen.unanswered
    );
    assert!(at_kill > 0, "the load was running before the kill");
    assert!(seen.answered.len() > at_kill + 5, "the other replicas went on: {} then {}", at_kill, seen.answered.len());
    assert!(seen.unanswered > 0, "requests reached the killed replica");
    assert!(seen.unexpected.is_empty(), "every answer was the expected one: {:?}", seen.unexpected);
    // Nothing answered is lost, whichever replica answered it, the killed one included.
    every_answer_holds(&r[2], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_restarted_under_load_makes_replicas_unready_then_they_recover_by_themselves() {
    if postgres_server().is_none() {
        return println!("this test restarts a PostgreSQL server: it runs in the PostgreSQL pass of scripts/test");
    }
    // A cluster of its own: the suite's is shared with tests running beside this one.
    let cluster = Cluster::start();
    let r = Server::replicas_on(&new_postgres_database(&cluster.url), 2, "");
    let users: Vec<String> = (0..4).map(|n| format!("load{n}")).collect();
    for user in &users {
        r[0].add_user(user, &[]);
    }
    let load = Load::start(&r, &users);
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.halt();
    await_readiness(&r, 503, Duration::from_secs(15), "not ready while the database is down").await;
    let during = load.answered();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(load.answered(), during, "no sign-in completes without the database");

    cluster.resume();
    await_readiness(&r, 200, Duration::from_secs(30), "ready again without a restart").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.stop().await;
    println!(
        "answered {during} sign-ins before the outage, {} in all; {} answers during it, {} requests unanswered",
        seen.answered.len(),
        seen.unexpected.len(),
        seen.unanswered
    );
    assert!(seen.answered.len() > during, "sign-ins completed again after the restart");
    // What went wrong during the outage said so plainly: 503 with a retry hint or the login API's
    // error, never a success, never a stack trace.
    assert!(!seen.unexpected.is_empty(), "the outage was seen");
    for (replica, status, body) in &seen.unexpected {
        assert_eq!(*status, 503, "replica {replica}: {body}");
        assert!(body.contains("temporarily_unavailable"), "replica {replica}: {body}");
    }
    for replica in &r {
        assert!(!replica.log().contains("panicked"), "{}", replica.log());
    }
    every_answer_holds(&r[1], &seen).await;
}
