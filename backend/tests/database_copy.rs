//! `postern database copy`: a site on SQLite moves to PostgreSQL without anyone noticing — users,
//! upstream identities, clients, keys, sessions, tokens and throttle counts all arrive. Runs in the
//! PostgreSQL pass.

mod common;

use common::*;
use oauth2::{RefreshToken, TokenResponse as _};
use serde_json::Value;

const TABLES: [&str; 12] = [
    "users",
    "user_groups",
    "upstream_identities",
    "clients",
    "signing_keys",
    "authorization_requests",
    "sessions",
    "grants",
    "access_tokens",
    "refresh_tokens",
    "throttle_counts",
    "known_sign_ins",
];

async fn row_counts(database: &str) -> Vec<i64> {
    let mut db = Db::open(database).await;
    let mut counts = Vec::new();
    for table in TABLES {
        counts.push(db.number(&format!("SELECT count(*) FROM {table}")).await);
    }
    counts
}

#[tokio::test]
async fn an_sqlite_site_moves_to_postgresql_with_its_users_clients_keys_sessions_and_tokens() {
    let Some(cluster) = postgres_server() else {
        return println!("copying into PostgreSQL needs one: this test runs in the PostgreSQL pass of scripts/test");
    };
    let directory = Directory::start().await;
    let mut server =
        Server::start_on_sqlite(&format!("trusted_proxies = [\"127.0.0.1\"]\n{}", directory.upstream("campus", "")));
    server.add_user("ada", &["staff"]);
    let added = server.cli(&["client", "add", "notebook", "--redirect-uri", "https://nb.example/cb"], "");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    // A signed-in browser, the Hub's tokens, a failed attempt counted, and a sign-in still pending.
    let browser = browser();
    let hub = hub_client(&server);
    let auth = authorization(&hub, &[]);
    let back = login(&browser, &server, &auth.url, "ada", PASSWORD).await;
    let tokens = exchange(&hub, &back, auth.verifier).await;
    let id_token = tokens.extra_fields().id_token.clone().unwrap();
    // Someone from the directory, whose account links them to it.
    let auth_alice = authorization(&hub, &[]);
    login(&common::browser(), &server, &auth_alice.url, "alice", "alice-pw").await;
    let stranger = pending_handle(&common::browser(), &server).await;
    assert_eq!(login_from(&server, &stranger, "ada", "wrong", "203.0.113.9").await, 401);
    server.stop();
    let sqlite = server.database.clone();
    let before = row_counts(&sqlite).await;
    assert!(before.iter().all(|n| *n > 0), "every table has something to copy: {before:?}");

    let postgres = new_postgres_database(&cluster);
    let copied = server.cli(&["database", "copy", &sqlite, &postgres], "");
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    let report = String::from_utf8_lossy(&copied.stdout);
    assert!(report.contains("users") && report.contains("refresh_tokens"), "{report}");
    assert_eq!(row_counts(&postgres).await, before, "every row arrived");
    // Every table of the schema is among those counted (a new table must be copied too).
    let mut schema = Db::open(&postgres).await;
    let tables = schema
        .number("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\\_sqlx%'")
        .await;
    assert_eq!(tables, TABLES.len() as i64);

    // A second copy into the same database is refused, and changes nothing.
    let again = server.cli(&["database", "copy", &sqlite, &postgres], "");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(row_counts(&postgres).await, before);
    // So is a copy from a file that is not there (it would copy nothing), or the wrong way round.
    let missing = server.dir.path().join("missing.db").display().to_string();
    assert!(!server.cli(&["database", "copy", &missing, &postgres], "").status.success());
    assert!(!std::path::Path::new(&missing).exists());
    assert!(!server.cli(&["database", "copy", &postgres, &sqlite], "").status.success());

    // The same provider on PostgreSQL: tokens, the session, the keys and the counts carried over.
    server.move_to(&postgres);
    let info: Value = userinfo(&server, tokens.access_token().secret()).await.json().await.unwrap();
    assert_eq!(info["preferred_username"], "ada");
    let refresh = RefreshToken::new(tokens.refresh_token().unwrap().secret().clone());
    let refreshed = hub.exchange_refresh_token(&refresh).request_async(&http()).await.expect("the refresh token works");
    let new_id_token = refreshed.extra_fields().id_token.clone().unwrap();
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_eq!(kid(&new_id_token), kid(&id_token), "the same signing key");
    verify_id_token(&server, &new_id_token, "jupyterhub").await;
    // The browser's session: a new authorization goes straight back to the Hub with a code.
    let again = authorization(&hub, &[]);
    let straight = location(&browser.get(again.url.clone()).send().await.unwrap());
    assert!(query(&straight, "code").is_some(), "signed in without a password: {straight}");
    // The CLI's client, and ids that go on after the copied ones.
    let clients = server.cli(&["client", "list"], "");
    assert!(String::from_utf8_lossy(&clients.stdout).contains("notebook"));
    server.add_user("bob", &[]);
    let mut db = server.db().await;
    assert_eq!(db.number("SELECT count(*) FROM users").await, 3);
    // The directory person signs in to the same account on PostgreSQL.
    let auth_alice = authorization(&hub, &[]);
    login(&common::browser(), &server, &auth_alice.url, "alice", "alice-pw").await;
    assert_eq!(db.number("SELECT count(*) FROM users").await, 3, "alice's account was found, not made again");
    assert_eq!(
        db.number("SELECT count(*) FROM throttle_counts WHERE failures > 0").await,
        before[TABLES.iter().position(|t| *t == "throttle_counts").unwrap()]
    );
}
