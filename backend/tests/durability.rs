//! Durability: SIGKILL in the middle of a stream of logins and refreshes loses nothing that was
//! answered, and leaves the store consistent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use oauth2::{RefreshToken, TokenResponse as _};
use sha2::{Digest, Sha256};

/// Sign-ins followed by two rotations each, for ever; every refresh token handed out is appended to
/// `handed_out` the moment its response arrives.
async fn stream(server: Arc<Server>, user: &str, handed_out: Arc<Mutex<Vec<String>>>) {
    let client = hub_client(&server);
    loop {
        let auth = authorization(&client, &[]);
        let back = login(&browser(), &server, &auth.url, user, PASSWORD).await;
        let mut tokens = exchange(&client, &back, auth.verifier).await;
        handed_out.lock().unwrap().push(tokens.refresh_token().unwrap().secret().clone());
        for _ in 0..2 {
            let refresh = RefreshToken::new(tokens.refresh_token().unwrap().secret().clone());
            tokens = client.exchange_refresh_token(&refresh).request_async(&http()).await.unwrap();
            handed_out.lock().unwrap().push(tokens.refresh_token().unwrap().secret().clone());
        }
    }
}

#[tokio::test]
async fn sigkill_during_logins_and_refreshes_loses_nothing_answered() {
    let server = Arc::new(Server::start(""));
    let users = ["amy", "ben", "cat", "dan"];
    for user in users {
        server.add_user(user, &["staff"]);
    }
    let out = server.cli(&["client", "add", "extra", "--redirect-uri", "https://extra.example/cb"], "");
    assert!(out.status.success());
    let jwks_before = http().get(server.url("/jwks.json")).send().await.unwrap().text().await.unwrap();

    // Four streams; each records every refresh token it was handed, in order.
    let handed_out: Vec<Arc<Mutex<Vec<String>>>> = users.iter().map(|_| Arc::default()).collect();
    let mut streams = Vec::new();
    for (user, tokens) in users.into_iter().zip(&handed_out) {
        streams.push(tokio::spawn(stream(server.clone(), user, tokens.clone())));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let killed = std::process::Command::new("kill").args(["-KILL", &server.pid().to_string()]).status().unwrap();
    assert!(killed.success(), "SIGKILL mid-stream");
    for stream in streams {
        stream.abort();
        let _ = stream.await;
    }
    let mut server = Arc::try_unwrap(server).ok().expect("the streams are gone");
    let handed_out: Vec<Vec<String>> = handed_out.iter().map(|t| t.lock().unwrap().clone()).collect();
    let total: usize = handed_out.iter().map(Vec::len).sum();
    assert!(handed_out.iter().all(|t| !t.is_empty()), "every stream got tokens before the kill");

    server.restart();
    // The store is consistent, and every refresh token handed out is stored; the newest of each stream
    // is unused, or used by a rotation that committed but whose answer the kill cut off.
    let mut db = server.db().await;
    if let Db::Sqlite(sqlite) = &mut db {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(sqlite).await.unwrap();
        assert_eq!(check, "ok");
    }
    let mut newest_used = Vec::new();
    for tokens in &handed_out {
        for token in tokens {
            let used = db.refresh_token_used(&Sha256::digest(token.as_bytes())).await;
            assert!(used.is_some(), "a refresh token handed out before the kill is not stored");
        }
        let newest = tokens.last().unwrap();
        newest_used.push(db.refresh_token_used(&Sha256::digest(newest.as_bytes())).await.unwrap());
    }
    drop(db);

    // Users, clients and keys are intact: every user signs in again, the JWKS is the same.
    let listed = String::from_utf8(server.cli(&["user", "list"], "").stdout).unwrap();
    for user in users {
        assert!(listed.contains(user), "{user} missing:\n{listed}");
    }
    let clients = String::from_utf8(server.cli(&["client", "list"], "").stdout).unwrap();
    assert!(clients.contains("extra") && clients.contains("jupyterhub"));
    let jwks_after = http().get(server.url("/jwks.json")).send().await.unwrap().text().await.unwrap();
    assert_eq!(jwks_before, jwks_after);
    let client = hub_client(&server);
    for user in users {
        let auth = authorization(&client, &[]);
        let back = login(&browser(), &server, &auth.url, user, PASSWORD).await;
        exchange(&client, &back, auth.verifier).await;
    }
    // The newest refresh token of each stream still works, unless its rotation had committed.
    for (tokens, used) in handed_out.iter().zip(newest_used) {
        let newest = RefreshToken::new(tokens.last().unwrap().clone());
        let refreshed = client.exchange_refresh_token(&newest).request_async(&http()).await;
        assert_eq!(refreshed.is_ok(), !used, "newest refresh token after the kill: {refreshed:?}");
    }
    println!("{total} refresh tokens handed out before SIGKILL; all stored and intact after restart");
}
