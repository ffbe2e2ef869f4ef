//! `postern database copy`: moves everything an SQLite database holds (users, groups and upstream
//! identities, clients, sealed signing keys, pending sign-ins, sessions, grants and their tokens,
//! throttle counts) into an empty PostgreSQL database, in one transaction, so that a site can go from
//! one process to replicas without signing anyone out.

use sqlx::postgres::PgArguments;
use sqlx::sqlite::SqliteRow;
use sqlx::Connection;
use sqlx::{Arguments, Row};

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{StoreError, StoreResult};

/// How a column is stored on each side.
#[derive(Clone, Copy)]
enum Kind {
    /// INTEGER / BIGINT.
    Int,
    /// TEXT on both.
    Text,
    /// INTEGER 0/1 / BOOLEAN.
    Bool,
    /// BLOB / BYTEA.
    Bytes,
    /// A JSON array in TEXT / TEXT[].
    List,
}

use Kind::*;

/// A table's columns, named as on both sides.
type Columns = &'static [(&'static str, Kind)];

/// Every table, parents before children, with the columns both schemas share. The order clause keeps
/// signing keys in the order they were made (PostgreSQL numbers them as they are inserted).
const TABLES: &[(&str, Columns, &str)] = &[
    (
        "users",
        &[
            ("id", Int),
            ("username", Text),
            ("display_name", Text),
            ("email", Text),
            ("email_verified", Bool),
            ("password_hash", Text),
            ("disabled", Bool),
            ("created_at", Int),
        ],
        "id",
    ),
    ("user_groups", &[("user_id", Int), ("name", Text)], "user_id, name"),
    (
        "upstream_identities",
        &[
            ("upstream", Text),
            ("subject", Text),
            ("user_id", Int),
            ("name", Text),
            ("locator", Text),
            ("created_at", Int),
            ("last_login_at", Int),
            ("checked_at", Int),
        ],
        "upstream, subject",
    ),
    (
        "clients",
        &[
            ("id", Text),
            ("name", Text),
            ("secret_hash", Text),
            ("redirect_uris", List),
            ("post_logout_redirect_uris", List),
            ("scopes", List),
            ("public", Bool),
            ("groups_claim", Bool),
            ("require_pkce", Bool),
            ("refresh_tokens", Bool),
            ("source", Text),
            ("created_at", Int),
        ],
        "id",
    ),
    ("signing_keys", &[("kid", Text), ("alg", Text), ("private_key", Bytes), ("created_at", Int)], "created_at, rowid"),
    (
        "authorization_requests",
        &[
            ("id", Text),
            ("client_id", Text),
            ("redirect_uri", Text),
            ("scope", Text),
            ("state", Text),
            ("nonce", Text),
            ("code_challenge", Text),
            ("expires_at", Int),
            ("user_id", Int),
            ("auth_time", Int),
            ("ticket_hash", Bytes),
            ("browser_hash", Bytes),
            ("client_network", Text),
            ("upstream", Text),
            ("upstream_state_hash", Bytes),
            ("upstream_nonce", Text),
            ("upstream_verifier", Text),
        ],
        "id",
    ),
    (
        "sessions",
        &[
            ("id_hash", Bytes),
            ("user_id", Int),
            ("auth_time", Int),
            ("created_at", Int),
            ("expires_at", Int),
            ("last_seen", Int),
        ],
        "id_hash",
    ),
    (
        "grants",
        &[
            ("id", Int),
            ("client_id", Text),
            ("user_id", Int),
            ("scope", Text),
            ("nonce", Text),
            ("auth_time", Int),
            ("redirect_uri", Text),
            ("code_hash", Bytes),
            ("code_challenge", Text),
            ("code_expires_at", Int),
            ("code_used_at", Int),
            ("revoked_at", Int),
            ("created_at", Int),
        ],
        "id",
    ),
    ("access_tokens", &[("hash", Bytes), ("grant_id", Int), ("scope", Text), ("expires_at", Int)], "hash"),
    (
        "refresh_tokens",
        &[("hash", Bytes), ("grant_id", Int), ("scope", Text), ("expires_at", Int), ("used_at", Int)],
        "hash",
    ),
    (
        "throttle_counts",
        &[("key", Text), ("failures", Int), ("leaked_at", Int), ("blocked_until", Int), ("updated_at", Int)],
        "key",
    ),
    ("known_sign_ins", &[("key", Text), ("at", Int)], "key"),
];

/// Rows copied, per table, in [`TABLES`] order.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies every row of `from` into `to`, which must hold none: all or nothing. The source is read in
/// one transaction, so the copy is one consistent moment of it (stop the servers first, or what they
/// write afterwards stays behind).
pub async fn sqlite_to_postgres(from: &SqliteStore, to: &PostgresStore) -> StoreResult<Copied> {
    let mut source = from.sqlx_reader().await?;
    let mut source = source.begin().await?;
    let mut target = to.pool().begin().await?;
    for (table, _, _) in TABLES {
        let any: bool =
            sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {table})")).fetch_one(&mut *target).await?;
        if any {
            return Err(StoreError::Refused(format!(
                "the PostgreSQL database already holds {table}: copy only into an empty database"
            )));
        }
    }
    let mut copied = Vec::new();
    for (table, columns, order) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let rows = sqlx::query(&format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", ")))
            .fetch_all(&mut *source)
            .await?;
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let insert = format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), placeholders.join(", "));
        for row in &rows {
            let arguments = arguments(table, columns, row)?;
            sqlx::query_with(&insert, arguments).execute(&mut *target).await?;
        }
        copied.push((*table, rows.len() as u64));
    }
    // Ids made later continue after the copied ones.
    for table in ["users", "grants"] {
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
        ))
        .execute(&mut *target)
        .await?;
    }
    target.commit().await?;
    Ok(copied)
}

/// One SQLite row as PostgreSQL insert arguments.
fn arguments(table: &str, columns: &[(&str, Kind)], row: &SqliteRow) -> StoreResult<PgArguments> {
    let mut arguments = PgArguments::default();
    for (i, (name, kind)) in columns.iter().enumerate() {
        let added = match kind {
            Int => arguments.add(row.try_get::<Option<i64>, _>(i)?),
            Text => arguments.add(row.try_get::<Option<String>, _>(i)?),
            Bool => arguments.add(row.try_get::<Option<i64>, _>(i)?.map(|v| v != 0)),
            Bytes => arguments.add(row.try_get::<Option<Vec<u8>>, _>(i)?),
            List => {
                let json: String = row.try_get(i)?;
                let list: Vec<String> = serde_json::from_str(&json).map_err(|e| {
                    StoreError::Refused(format!("{table}.{name} holds something other than a JSON list: {e}"))
                })?;
                arguments.add(list)
            }
        };
        added.map_err(StoreError::Database)?;
    }
    Ok(arguments)
}
