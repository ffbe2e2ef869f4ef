//! Durability: SIGKILL in the middle of a stream of logins and refreshes loses nothing that was
//! answered, and leaves SQLite consistent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use oauth2::{RefreshToken, TokenResponse as _};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

/// One sign-in and two rotations; returns the last refresh token handed out.
async fn family(server: &Server, user: &str) -> String {
    let client = hub_client(server);
    let auth = authorization(&client, &[]);
    let back = login(&browser(), server, &auth.url, user, PASSWORD).await;
    let mut tokens = exchange(&client, &back, auth.verifier).await;
    for _ in 0..2 {
        let refresh = RefreshToken::new(tokens.refresh_token().unwrap().secret().clone());
        tokens = client.exchange_refresh_token(&refresh).request_async(&http()).await.unwrap();
    }
    tokens.refresh_token().unwrap().secret().clone()
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

    // Four streams of families; every family that finished is recorded.
    let finished = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut streams = Vec::new();
    for user in users {
        let (finished, server) = (finished.clone(), server.clone());
        streams.push(tokio::spawn(async move {
            loop {
                let token = family(&server, user).await;
                finished.lock().unwrap().push(token);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let killed = std::process::Command::new("kill").args(["-KILL", &server.pid().to_string()]).status().unwrap();
    assert!(killed.success(), "SIGKILL mid-stream");
    for stream in streams {
        stream.abort();
        let _ = stream.await;
    }
    let mut server = Arc::try_unwrap(server).ok().expect("the streams are gone");
    let answered = finished.lock().unwrap().clone();
    assert!(answered.len() >= 4, "only {} families finished before the kill", answered.len());

    server.restart();
    // SQLite is consistent.
    let options = SqliteConnectOptions::new().filename(server.db_path()).read_only(true);
    let mut db = SqliteConnection::connect_with(&options).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut db).await.unwrap();
    assert_eq!(check, "ok");
    // Users, clients and keys are intact.
    let listed = String::from_utf8(server.cli(&["user", "list"], "").stdout).unwrap();
    for user in users {
        assert!(listed.contains(user), "{user} missing:\n{listed}");
    }
    let clients = String::from_utf8(server.cli(&["client", "list"], "").stdout).unwrap();
    assert!(clients.contains("extra") && clients.contains("jupyterhub"));
    let jwks_after = http().get(server.url("/jwks.json")).send().await.unwrap().text().await.unwrap();
    assert_eq!(jwks_before, jwks_after);
    // Every refresh token that was handed out still works.
    let client = hub_client(&server);
    for token in &answered {
        let refreshed = client.exchange_refresh_token(&RefreshToken::new(token.clone())).request_async(&http()).await;
        assert!(refreshed.is_ok(), "a refresh token handed out before the kill was lost: {refreshed:?}");
    }
    println!("{} families answered before SIGKILL; all intact after restart", answered.len());
}
