//! [`Store`] on an embedded SQLite file (WAL mode), migrations applied at open.
//!
//! Statements run on the calling thread: an indexed lookup in a warm page cache takes microseconds, less
//! than handing it to another thread and back would. Reads use a small pool of connections, which WAL
//! lets run beside the one writer; writers queue for the writer connection, one transaction at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use sha2::{Digest, Sha384};

use super::*;

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    /// Idle read connections; one is opened when none is free.
    readers: Mutex<Vec<Connection>>,
    /// The one connection that writes.
    writer: tokio::sync::Mutex<Connection>,
    /// Its own connection for checkpoints, kept: opening one per checkpoint would leave the memory of
    /// each in whichever thread's malloc arena it happened to use.
    checkpointer: Arc<Mutex<Connection>>,
}

/// Schema changes, applied in order. Databases made by earlier versions (which used sqlx) recorded them in
/// `_sqlx_migrations`, so that table stays the record.
const MIGRATIONS: [(i64, &str, &str); 3] = [
    (1, "initial", include_str!("../../migrations/0001_initial.sql")),
    (2, "login ticket", include_str!("../../migrations/0002_login_ticket.sql")),
    (3, "session idle", include_str!("../../migrations/0003_session_idle.sql")),
];

const USER_COLUMNS: &str = "u.id, u.username, u.display_name, u.email, u.email_verified, u.password_hash, \
     u.disabled, u.created_at, \
     (SELECT json_group_array(name) FROM user_groups g WHERE g.user_id = u.id) AS groups";

const GRANT_COLUMNS: &str = "g.id, g.client_id, g.user_id, g.scope, g.nonce, g.auth_time, g.redirect_uri, \
     g.code_challenge, g.code_expires_at, g.code_used_at, g.revoked_at";

const REQUEST_COLUMNS: &str = "id, client_id, redirect_uri, scope, state, nonce, code_challenge, expires_at";

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let mut writer = connect(path)?;
        // The writer never checkpoints itself: a checkpoint fsyncs, and every queued write would wait for it.
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        migrate(&mut writer)?;
        Ok(Self {
            path: path.to_owned(),
            readers: Mutex::default(),
            writer: tokio::sync::Mutex::new(writer),
            checkpointer: Arc::new(Mutex::new(connect(path)?)),
        })
    }

    fn read<T>(&self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let idle = self.readers.lock().expect("not poisoned").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let result = work(&conn);
        let mut readers = self.readers.lock().expect("not poisoned");
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        Ok(result?)
    }

    async fn write<T>(&self, work: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer.lock().await;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let result = work(&tx)?;
        tx.commit()?;
        Ok(result)
    }

    fn user_where(&self, condition: &str, params: impl rusqlite::Params) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u {condition}");
        self.read(|c| c.prepare_cached(&sql)?.query_map(params, user_from_row)?.collect())
    }
}

const MAX_IDLE_READERS: usize = 4;

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
    )?;
    for (version, description, sql) in MIGRATIONS {
        // Immediate: a CLI command and the server starting together apply each migration once.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = ? AND success)",
            [version],
            |r| r.get(0),
        )?;
        if !applied {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (?, ?, 1, ?, 0)",
                params![version, description, Sha384::digest(sql.as_bytes()).to_vec()],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn json_list(value: &str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(value)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings always serialises")
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let mut groups = json_list(&row.get::<_, String>("groups")?)?;
    groups.sort();
    Ok(User {
        id: row.get("id")?,
        username: row.get("username")?,
        display_name: row.get("display_name")?,
        email: row.get("email")?,
        email_verified: row.get("email_verified")?,
        groups,
        password_hash: row.get("password_hash")?,
        disabled: row.get("disabled")?,
        created_at: row.get("created_at")?,
    })
}

fn client_from_row(row: &Row<'_>) -> rusqlite::Result<Client> {
    Ok(Client {
        id: row.get("id")?,
        name: row.get("name")?,
        secret_hash: row.get("secret_hash")?,
        redirect_uris: json_list(&row.get::<_, String>("redirect_uris")?)?,
        post_logout_redirect_uris: json_list(&row.get::<_, String>("post_logout_redirect_uris")?)?,
        scopes: json_list(&row.get::<_, String>("scopes")?)?,
        public: row.get("public")?,
        groups_claim: row.get("groups_claim")?,
        require_pkce: row.get("require_pkce")?,
        refresh_tokens: row.get("refresh_tokens")?,
        source: match row.get::<_, String>("source")?.as_str() {
            "config" => ClientSource::Config,
            _ => ClientSource::Cli,
        },
    })
}

fn grant_from_row(row: &Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: row.get("id")?,
        client_id: row.get("client_id")?,
        user_id: row.get("user_id")?,
        scope: row.get("scope")?,
        nonce: row.get("nonce")?,
        auth_time: row.get("auth_time")?,
        redirect_uri: row.get("redirect_uri")?,
        code_challenge: row.get("code_challenge")?,
        code_expires_at: row.get("code_expires_at")?,
        code_used_at: row.get("code_used_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

fn request_from_row(row: &Row<'_>) -> rusqlite::Result<AuthorizationRequest> {
    Ok(AuthorizationRequest {
        id: row.get("id")?,
        client_id: row.get("client_id")?,
        redirect_uri: row.get("redirect_uri")?,
        scope: row.get("scope")?,
        state: row.get("state")?,
        nonce: row.get("nonce")?,
        code_challenge: row.get("code_challenge")?,
        expires_at: row.get("expires_at")?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

fn insert_token(tx: &Transaction<'_>, table: &str, grant_id: i64, token: &NewToken) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!("INSERT INTO {table} (hash, grant_id, scope, expires_at) VALUES (?, ?, ?, ?)"))?
        .execute(params![token.hash, grant_id, token.scope, token.expires_at])?;
    Ok(())
}

fn user_id(tx: &Transaction<'_>, username: &str) -> StoreResult<i64> {
    tx.query_row("SELECT id FROM users WHERE username = ?", [username], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound("user"))
}

fn insert_groups(tx: &Transaction<'_>, user_id: i64, groups: &[String]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO user_groups (user_id, name) VALUES (?, ?)")?;
    for group in groups {
        insert.execute(params![user_id, group])?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> StoreResult<User> {
        let id = self
            .write(|tx| {
                let id: i64 = tx
                    .query_row(
                        "INSERT INTO users (username, display_name, email, email_verified, password_hash, created_at) \
                         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                        params![
                            user.username,
                            user.display_name,
                            user.email,
                            user.email_verified,
                            user.password_hash,
                            now
                        ],
                        |r| r.get(0),
                    )
                    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("user") } else { e.into() })?;
                insert_groups(tx, id, &user.groups)?;
                Ok(id)
            })
            .await?;
        self.user_by_id(id).await?.ok_or(StoreError::NotFound("user"))
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        Ok(self.user_where("WHERE u.username = ?", [username])?.pop())
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>> {
        Ok(self.user_where("WHERE u.id = ?", [id])?.pop())
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.user_where("ORDER BY u.username", [])
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> StoreResult<()> {
        self.write(|tx| {
            let changed =
                tx.execute("UPDATE users SET password_hash = ? WHERE username = ?", params![password_hash, username])?;
            if changed == 0 {
                return Err(StoreError::NotFound("user"));
            }
            Ok(())
        })
        .await
    }

    async fn set_disabled(&self, username: &str, disabled: bool) -> StoreResult<()> {
        self.write(|tx| {
            let id = user_id(tx, username)?;
            tx.execute("UPDATE users SET disabled = ? WHERE id = ?", params![disabled, id])?;
            if disabled {
                tx.execute("DELETE FROM sessions WHERE user_id = ?", [id])?;
            }
            Ok(())
        })
        .await
    }

    async fn set_groups(&self, username: &str, groups: &[String]) -> StoreResult<()> {
        self.write(|tx| {
            let id = user_id(tx, username)?;
            tx.execute("DELETE FROM user_groups WHERE user_id = ?", [id])?;
            insert_groups(tx, id, groups)?;
            Ok(())
        })
        .await
    }

    async fn upsert_client(&self, client: &Client, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO clients (id, name, secret_hash, redirect_uris, post_logout_redirect_uris, scopes, public, \
                 groups_claim, require_pkce, refresh_tokens, source, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
                 redirect_uris = excluded.redirect_uris, post_logout_redirect_uris = excluded.post_logout_redirect_uris, \
                 scopes = excluded.scopes, public = excluded.public, groups_claim = excluded.groups_claim, \
                 require_pkce = excluded.require_pkce, refresh_tokens = excluded.refresh_tokens, source = excluded.source",
                params![
                    client.id,
                    client.name,
                    client.secret_hash,
                    to_json(&client.redirect_uris),
                    to_json(&client.post_logout_redirect_uris),
                    to_json(&client.scopes),
                    client.public,
                    client.groups_claim,
                    client.require_pkce,
                    client.refresh_tokens,
                    client.source.as_str(),
                    now
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.read(|c| {
            c.prepare_cached("SELECT * FROM clients WHERE id = ?")?.query_row([id], client_from_row).optional()
        })
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.read(|c| c.prepare_cached("SELECT * FROM clients ORDER BY id")?.query_map([], client_from_row)?.collect())
    }

    async fn remove_client(&self, id: &str) -> StoreResult<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM clients WHERE id = ?", [id])? > 0)).await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read(|c| {
            c.prepare_cached("SELECT kid, alg, private_key, created_at FROM signing_keys ORDER BY created_at, rowid")?
                .query_map([], |r| {
                    Ok(StoredKey { kid: r.get(0)?, alg: r.get(1)?, private_key: r.get(2)?, created_at: r.get(3)? })
                })?
                .collect()
        })
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO signing_keys (kid, alg, private_key, created_at) VALUES (?, ?, ?, ?)",
                params![key.kid, key.alg, key.private_key, key.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_authorization_request(&self, r: &AuthorizationRequest) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO authorization_requests (id, client_id, redirect_uri, scope, state, nonce, \
                 code_challenge, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                r.id,
                r.client_id,
                r.redirect_uri,
                r.scope,
                r.state,
                r.nonce,
                r.code_challenge,
                r.expires_at
            ])?;
            Ok(())
        })
        .await
    }

    async fn authorization_request(&self, id: &str, now: Timestamp) -> StoreResult<Option<AuthorizationRequest>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {REQUEST_COLUMNS} FROM authorization_requests WHERE id = ? AND expires_at > ? AND user_id IS NULL"
            ))?
            .query_row(params![id, now], request_from_row)
            .optional()
        })
    }

    async fn authenticate_request(&self, id: &str, login: &RequestLogin, now: Timestamp) -> StoreResult<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE authorization_requests SET user_id = ?, auth_time = ?, ticket_hash = ?, expires_at = ? \
                 WHERE id = ? AND user_id IS NULL AND expires_at > ?",
                )?
                .execute(params![login.user_id, login.auth_time, login.ticket_hash, login.expires_at, id, now])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn redeem_ticket(
        &self,
        ticket_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, RequestLogin)>> {
        self.write(|tx| {
            let found = tx
                .prepare_cached(&format!(
                    "DELETE FROM authorization_requests WHERE ticket_hash = ? AND expires_at > ? AND user_id IS NOT NULL \
                     RETURNING {REQUEST_COLUMNS}, user_id, auth_time, ticket_hash"
                ))?
                .query_row(params![ticket_hash, now], |r| {
                    let login = RequestLogin {
                        user_id: r.get("user_id")?,
                        auth_time: r.get("auth_time")?,
                        ticket_hash: r.get("ticket_hash")?,
                        expires_at: r.get("expires_at")?,
                    };
                    Ok((request_from_row(r)?, login))
                })
                .optional()?;
            Ok(found)
        })
        .await
    }

    async fn create_session(&self, id_hash: &[u8], s: &Session, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO sessions (id_hash, user_id, auth_time, created_at, expires_at, last_seen) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![id_hash, s.user_id, s.auth_time, now, s.expires_at, now])?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &[u8], now: Timestamp, idle: Timestamp) -> StoreResult<Option<Session>> {
        self.write(|tx| {
            let session = tx
                .prepare_cached(
                    "UPDATE sessions SET last_seen = ?1 WHERE id_hash = ?2 AND expires_at > ?1 AND last_seen > ?1 - ?3 \
                     AND user_id IN (SELECT id FROM users WHERE disabled = 0) RETURNING user_id, auth_time, expires_at",
                )?
                .query_row(params![now, id_hash, idle], |r| {
                    Ok(Session { user_id: r.get(0)?, auth_time: r.get(1)?, expires_at: r.get(2)? })
                })
                .optional()?;
            Ok(session)
        })
        .await
    }

    async fn delete_session(&self, id_hash: &[u8]) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE id_hash = ?", [id_hash])?;
            Ok(())
        })
        .await
    }

    async fn create_grant(&self, g: &NewGrant, now: Timestamp) -> StoreResult<i64> {
        self.write(|tx| {
            let id = tx
                .prepare_cached(
                    "INSERT INTO grants (client_id, user_id, scope, nonce, auth_time, redirect_uri, code_hash, \
                     code_challenge, code_expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )?
                .query_row(
                    params![
                        g.client_id,
                        g.user_id,
                        g.scope,
                        g.nonce,
                        g.auth_time,
                        g.redirect_uri,
                        g.code_hash,
                        g.code_challenge,
                        g.code_expires_at,
                        now
                    ],
                    |r| r.get(0),
                )?;
            Ok(id)
        })
        .await
    }

    async fn grant_by_code(&self, code_hash: &[u8]) -> StoreResult<Option<Grant>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants g WHERE g.code_hash = ?"))?
                .query_row([code_hash], grant_from_row)
                .optional()
        })
    }

    async fn redeem_code(
        &self,
        grant_id: i64,
        now: Timestamp,
        access: &NewToken,
        refresh: Option<&NewToken>,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE grants SET code_used_at = ? WHERE id = ? AND code_used_at IS NULL AND revoked_at IS NULL",
                )?
                .execute(params![now, grant_id])?;
            if changed != 1 {
                return Ok(false);
            }
            insert_token(tx, "access_tokens", grant_id, access)?;
            if let Some(refresh) = refresh {
                insert_token(tx, "refresh_tokens", grant_id, refresh)?;
            }
            Ok(true)
        })
        .await
    }

    async fn revoke_grant(&self, grant_id: i64, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute("UPDATE grants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", params![now, grant_id])?;
            // The grant row stays as the record of the revocation; its tokens go.
            tx.execute("DELETE FROM access_tokens WHERE grant_id = ?", [grant_id])?;
            tx.execute("DELETE FROM refresh_tokens WHERE grant_id = ? AND used_at IS NULL", [grant_id])?;
            Ok(())
        })
        .await
    }

    async fn access_token(&self, hash: &[u8], now: Timestamp) -> StoreResult<Option<AccessTokenInfo>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT t.scope AS token_scope, t.expires_at AS token_expires_at, g.client_id AS token_client, \
                 {USER_COLUMNS} FROM access_tokens t \
                 JOIN grants g ON g.id = t.grant_id JOIN users u ON u.id = g.user_id \
                 WHERE t.hash = ? AND t.expires_at > ? AND g.revoked_at IS NULL AND u.disabled = 0"
            ))?
            .query_row(params![hash, now], |r| {
                Ok(AccessTokenInfo {
                    scope: r.get("token_scope")?,
                    client_id: r.get("token_client")?,
                    user: user_from_row(r)?,
                    expires_at: r.get("token_expires_at")?,
                })
            })
            .optional()
        })
    }

    async fn revoke_access_token(&self, hash: &[u8]) -> StoreResult<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM access_tokens WHERE hash = ?", [hash])? == 1)).await
    }

    async fn refresh_token(&self, hash: &[u8]) -> StoreResult<Option<RefreshTokenInfo>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT t.scope AS token_scope, t.expires_at AS token_expires_at, t.used_at AS token_used_at, \
                 {GRANT_COLUMNS} FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?"
            ))?
            .query_row([hash], |r| {
                Ok(RefreshTokenInfo {
                    scope: r.get("token_scope")?,
                    expires_at: r.get("token_expires_at")?,
                    used: r.get::<_, Option<i64>>("token_used_at")?.is_some(),
                    grant: grant_from_row(r)?,
                })
            })
            .optional()
        })
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        now: Timestamp,
        access: &NewToken,
        refresh: &NewToken,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let grant_id: Option<i64> = tx
                .prepare_cached(
                    "UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL \
                     AND (SELECT revoked_at FROM grants g WHERE g.id = refresh_tokens.grant_id) IS NULL \
                     RETURNING grant_id",
                )?
                .query_row(params![now, old_hash], |r| r.get(0))
                .optional()?;
            let Some(grant_id) = grant_id else {
                return Ok(false);
            };
            insert_token(tx, "access_tokens", grant_id, access)?;
            insert_token(tx, "refresh_tokens", grant_id, refresh)?;
            Ok(true)
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
            for sql in [
                "DELETE FROM authorization_requests WHERE expires_at <= ?1",
                "DELETE FROM sessions WHERE expires_at <= ?1",
                "DELETE FROM access_tokens WHERE expires_at <= ?1",
                "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
                // A grant is kept while any token of it lives, and a day past its code so replays are recognised.
                "DELETE FROM grants WHERE code_expires_at <= ?1 - 86400 \
                 AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = grants.id) \
                 AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = grants.id)",
            ] {
                tx.execute(sql, [now])?;
            }
            Ok(())
        })
        .await
    }

    async fn checkpoint(&self) -> StoreResult<()> {
        // PASSIVE copies what it can without waiting for the writer, which goes on appending to the WAL. It
        // fsyncs, so it runs on a blocking thread.
        let checkpointer = self.checkpointer.clone();
        tokio::task::spawn_blocking(move || {
            let conn = checkpointer.lock().expect("not poisoned");
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
        .expect("a checkpoint does not panic")
    }
}
