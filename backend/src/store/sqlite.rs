//! [`Store`] on an embedded SQLite file (WAL mode), migrations applied at open.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::*;

/// Size the write-ahead log is kept near: past it, a checkpoint empties the log (see `checkpoint`).
pub const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;
/// SQLite's default page size, which Postern's databases use.
const PAGE_SIZE: i64 = 4096;

/// SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    /// Connections for reads, which WAL lets run beside the writer.
    reader: SqlitePool,
    /// The one connection that writes: writers queue here instead of sleeping in SQLite's busy handler.
    writer: SqlitePool,
}

const USER_COLUMNS: &str = "u.id, u.username, u.display_name, u.email, u.email_verified, u.password_hash, \
     u.disabled, u.created_at, \
     (SELECT json_group_array(name) FROM user_groups g WHERE g.user_id = u.id) AS groups";

const GRANT_COLUMNS: &str = "g.id, g.client_id, g.user_id, g.scope, g.nonce, g.auth_time, g.redirect_uri, \
     g.code_challenge, g.code_expires_at, g.code_used_at, g.revoked_at";

impl SqliteStore {
    /// The read pool (for copying the database elsewhere).
    pub(super) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Opens (creating if missing, owner-only) the database file and applies pending migrations.
    /// Refuses a database that other users can read (it holds password hashes and private keys).
    pub async fn open(path: &Path) -> StoreResult<Self> {
        crate::private_files::create_file(path).map_err(|e| StoreError::Unsafe(format!("{}: {e}", path.display())))?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            crate::private_files::check(&file).map_err(StoreError::Unsafe)?;
        }
        // synchronous=NORMAL in WAL mode: a commit survives Postern crashing or being killed; a power cut
        // or kernel crash may lose the last commits since the last checkpoint (about a second), never
        // the database's consistency.
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // After the log restarts, its file is cut back to this size instead of keeping its peak.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // The writer never checkpoints itself: a checkpoint fsyncs, and every queued write would wait for it.
        let writer_options = options.clone().pragma("wal_autocheckpoint", "0");
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(writer_options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        let store = Self { reader, writer };
        tokio::spawn(store.clone().checkpoint_periodically());
        Ok(store)
    }

    /// Keeps the WAL short without making a request wait for a checkpoint's fsync.
    async fn checkpoint_periodically(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !self.reader.is_closed() {
            tick.tick().await;
            if let Err(e) = self.checkpoint().await {
                tracing::warn!(error = %e, "checkpointing the database failed");
            }
        }
    }

    /// Moves recent writes from the WAL into the database file.
    async fn checkpoint(&self) -> StoreResult<()> {
        // PASSIVE copies what it can without waiting for the writer, which goes on appending to the WAL.
        // Under constant reads it may never catch up, and the log would grow for ever: past a bound,
        // TRUNCATE waits (briefly) for readers to reach the newest snapshot, then empties the log.
        let (_busy, frames, _done): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&self.reader).await?;
        if frames * PAGE_SIZE > WAL_SIZE_LIMIT {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.reader).await?;
        }
        Ok(())
    }

    /// A write transaction, holding the write lock from its first statement: one that read first and
    /// wrote later could find its snapshot outdated by a checkpoint that reset the log, and fail busy.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    async fn user_where(
        &self,
        condition: &str,
        bind: impl FnOnce(QueryAs<'_>) -> QueryAs<'_>,
    ) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u {condition}");
        let rows = bind(sqlx::query(&sql)).fetch_all(&self.reader).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn user_id(&self, username: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT id FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("user"))
    }
}

type QueryAs<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn json_list(value: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(value).map_err(|e| StoreError::Database(Box::new(e)))
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings always serialises")
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    let mut groups = json_list(row.try_get::<&str, _>("groups")?)?;
    groups.sort();
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        email_verified: row.try_get("email_verified")?,
        groups,
        password_hash: row.try_get("password_hash")?,
        disabled: row.try_get("disabled")?,
        created_at: row.try_get("created_at")?,
    })
}

fn client_from_row(row: &SqliteRow) -> StoreResult<Client> {
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        redirect_uris: json_list(row.try_get("redirect_uris")?)?,
        post_logout_redirect_uris: json_list(row.try_get("post_logout_redirect_uris")?)?,
        scopes: json_list(row.try_get("scopes")?)?,
        public: row.try_get("public")?,
        groups_claim: row.try_get("groups_claim")?,
        require_pkce: row.try_get("require_pkce")?,
        refresh_tokens: row.try_get("refresh_tokens")?,
        source: match row.try_get::<&str, _>("source")? {
            "config" => ClientSource::Config,
            _ => ClientSource::Cli,
        },
    })
}

fn session_from_row(row: &SqliteRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        user_id: row.try_get("user_id")?,
        auth_time: row.try_get("auth_time")?,
        expires_at: row.try_get("expires_at")?,
    })
}

record_readers!(SqliteRow);

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

async fn insert_token(
    tx: &mut sqlx::SqliteConnection,
    table: &str,
    grant_id: i64,
    token: &NewToken,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("INSERT INTO {table} (hash, grant_id, scope, expires_at) VALUES (?, ?, ?, ?)"))
        .bind(&token.hash)
        .bind(grant_id)
        .bind(&token.scope)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Revokes the grants whose `column` (`id` or `user_id`) is `value`. The grant rows stay as the record
/// of the revocation; their live tokens go.
async fn revoke_grants(
    tx: &mut sqlx::SqliteConnection,
    column: &str,
    value: i64,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let grants = format!("SELECT id FROM grants WHERE {column} = ?");
    sqlx::query(&format!("UPDATE grants SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL"))
        .bind(now)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DELETE FROM access_tokens WHERE grant_id IN ({grants})"))
        .bind(value)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DELETE FROM refresh_tokens WHERE used_at IS NULL AND grant_id IN ({grants})"))
        .bind(value)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Ends a user's sessions and revokes all their grants (a password change, a disabled account).
async fn end_sessions_and_grants(
    tx: &mut sqlx::SqliteConnection,
    user_id: i64,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = ?").bind(user_id).execute(&mut *tx).await?;
    revoke_grants(tx, "user_id", user_id, now).await
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> StoreResult<User> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, display_name, email, email_verified, password_hash, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(user.email_verified)
        .bind(&user.password_hash)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("user") } else { e.into() })?;
        for group in &user.groups {
            sqlx::query("INSERT OR IGNORE INTO user_groups (user_id, name) VALUES (?, ?)")
                .bind(id)
                .bind(group)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.user_by_id(id).await?.ok_or(StoreError::NotFound("user"))
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        Ok(self.user_where("WHERE u.username = ?", |q| q.bind(username.to_owned())).await?.pop())
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>> {
        Ok(self.user_where("WHERE u.id = ?", |q| q.bind(id)).await?.pop())
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.user_where("ORDER BY u.username", |q| q).await
    }

    async fn set_password(&self, username: &str, password_hash: &str, now: Timestamp) -> StoreResult<()> {
        let id = self.user_id(username).await?;
        let mut tx = self.write().await?;
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        end_sessions_and_grants(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upgrade_password_hash(&self, user_id: i64, old_hash: &str, new_hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?")
            .bind(new_hash)
            .bind(user_id)
            .bind(old_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn set_disabled(&self, username: &str, disabled: bool, now: Timestamp) -> StoreResult<()> {
        let id = self.user_id(username).await?;
        let mut tx = self.write().await?;
        sqlx::query("UPDATE users SET disabled = ? WHERE id = ?").bind(disabled).bind(id).execute(&mut *tx).await?;
        if disabled {
            // Revoked, not merely refused while disabled: enabling the user again must not revive them.
            end_sessions_and_grants(&mut tx, id, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_groups(&self, username: &str, groups: &[String]) -> StoreResult<()> {
        let id = self.user_id(username).await?;
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM user_groups WHERE user_id = ?").bind(id).execute(&mut *tx).await?;
        for group in groups {
            sqlx::query("INSERT OR IGNORE INTO user_groups (user_id, name) VALUES (?, ?)")
                .bind(id)
                .bind(group)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_client(&self, client: &Client, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO clients (id, name, secret_hash, redirect_uris, post_logout_redirect_uris, scopes, public, \
             groups_claim, require_pkce, refresh_tokens, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
             redirect_uris = excluded.redirect_uris, post_logout_redirect_uris = excluded.post_logout_redirect_uris, \
             scopes = excluded.scopes, public = excluded.public, groups_claim = excluded.groups_claim, \
             require_pkce = excluded.require_pkce, refresh_tokens = excluded.refresh_tokens, source = excluded.source",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.secret_hash)
        .bind(to_json(&client.redirect_uris))
        .bind(to_json(&client.post_logout_redirect_uris))
        .bind(to_json(&client.scopes))
        .bind(client.public)
        .bind(client.groups_claim)
        .bind(client.require_pkce)
        .bind(client.refresh_tokens)
        .bind(client.source.as_str())
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        let row = sqlx::query("SELECT * FROM clients WHERE id = ?").bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY id").fetch_all(&self.reader).await?;
        rows.iter().map(client_from_row).collect()
    }

    async fn remove_client(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM clients WHERE id = ?").bind(id).execute(&self.writer).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query("SELECT kid, alg, private_key, created_at FROM signing_keys ORDER BY created_at, rowid")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_key, created_at) VALUES (?, ?, ?, ?)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_key)
            .bind(key.created_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn insert_signing_key_if_none(&self, key: &StoredKey) -> StoreResult<bool> {
        // The one writer connection runs this statement alone: no other key can slip in between.
        let done = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, created_at) SELECT ?1, ?2, ?3, ?4 \
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE alg = ?2)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_key)
        .bind(key.created_at)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_signing_key_material(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        sqlx::query("UPDATE signing_keys SET private_key = ? WHERE kid = ?")
            .bind(private_key)
            .bind(kid)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = ?").bind(kid).execute(&self.writer).await?;
        Ok(())
    }

    async fn insert_authorization_request(&self, r: &AuthorizationRequest, limits: PendingLimits) -> StoreResult<()> {
        let mut tx = self.write().await?;
        // The newest requests stay; older ones nobody has signed in to yet make room.
        let older = |column: &str| {
            format!(
                "DELETE FROM authorization_requests WHERE id IN (SELECT id FROM authorization_requests \
                 WHERE {column} = ?1 AND user_id IS NULL ORDER BY expires_at DESC LIMIT -1 OFFSET ?2)"
            )
        };
        if let Some(network) = &r.client_network {
            let sql = older("client_network");
            sqlx::query(&sql).bind(network).bind(limits.per_network - 1).execute(&mut *tx).await?;
        }
        if let Some(browser) = &r.browser_hash {
            let sql = older("browser_hash");
            sqlx::query(&sql).bind(browser).bind(limits.per_browser - 1).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO authorization_requests (id, client_id, redirect_uri, scope, state, nonce, code_challenge, \
             expires_at, browser_hash, client_network) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.client_id)
        .bind(&r.redirect_uri)
        .bind(&r.scope)
        .bind(&r.state)
        .bind(&r.nonce)
        .bind(&r.code_challenge)
        .bind(r.expires_at)
        .bind(&r.browser_hash)
        .bind(&r.client_network)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn authorization_request(&self, id: &str, now: Timestamp) -> StoreResult<Option<AuthorizationRequest>> {
        let row =
            sqlx::query("SELECT * FROM authorization_requests WHERE id = ? AND expires_at > ? AND user_id IS NULL")
                .bind(id)
                .bind(now)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.as_ref().map(request_from_row).transpose()?)
    }

    async fn authenticate_request(&self, id: &str, login: &RequestLogin, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE authorization_requests SET user_id = ?, auth_time = ?, ticket_hash = ?, expires_at = ? \
             WHERE id = ? AND user_id IS NULL AND expires_at > ?",
        )
        .bind(login.user_id)
        .bind(login.auth_time)
        .bind(&login.ticket_hash)
        .bind(login.expires_at)
        .bind(id)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn redeem_ticket(
        &self,
        ticket_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, RequestLogin)>> {
        let row = sqlx::query(
            "DELETE FROM authorization_requests WHERE ticket_hash = ? AND expires_at > ? AND user_id IS NOT NULL \
             RETURNING *",
        )
        .bind(ticket_hash)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|r| {
            let login = RequestLogin {
                user_id: r.try_get("user_id")?,
                auth_time: r.try_get("auth_time")?,
                ticket_hash: r.try_get("ticket_hash")?,
                expires_at: r.try_get("expires_at")?,
            };
            Ok((request_from_row(&r)?, login))
        })
        .transpose()
    }

    async fn create_session(&self, id_hash: &[u8], s: &Session, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, auth_time, created_at, expires_at, last_seen) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id_hash)
        .bind(s.user_id)
        .bind(s.auth_time)
        .bind(now)
        .bind(s.expires_at)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &[u8], now: Timestamp, idle: Timestamp) -> StoreResult<Option<Session>> {
        let row = sqlx::query(
            "UPDATE sessions SET last_seen = ?1 WHERE id_hash = ?2 AND expires_at > ?1 AND last_seen > ?1 - ?3 \
             AND user_id IN (SELECT id FROM users WHERE disabled = 0) RETURNING user_id, auth_time, expires_at",
        )
        .bind(now)
        .bind(id_hash)
        .bind(idle)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn delete_session(&self, id_hash: &[u8]) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?").bind(id_hash).execute(&self.writer).await?;
        Ok(())
    }

    async fn create_grant(&self, g: &NewGrant, now: Timestamp) -> StoreResult<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO grants (client_id, user_id, scope, nonce, auth_time, redirect_uri, code_hash, code_challenge, \
             code_expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&g.client_id)
        .bind(g.user_id)
        .bind(&g.scope)
        .bind(&g.nonce)
        .bind(g.auth_time)
        .bind(&g.redirect_uri)
        .bind(&g.code_hash)
        .bind(&g.code_challenge)
        .bind(g.code_expires_at)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        Ok(id)
    }

    async fn grant_by_code(&self, code_hash: &[u8]) -> StoreResult<Option<Grant>> {
        let row = sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM grants g WHERE g.code_hash = ?"))
            .bind(code_hash)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.as_ref().map(grant_from_row).transpose()?)
    }

    async fn redeem_code(
        &self,
        grant_id: i64,
        now: Timestamp,
        access: &NewToken,
        refresh: Option<&NewToken>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE grants SET code_used_at = ? WHERE id = ? AND code_used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(grant_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_token(&mut tx, "access_tokens", grant_id, access).await?;
        if let Some(refresh) = refresh {
            insert_token(&mut tx, "refresh_tokens", grant_id, refresh).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_grant(&self, grant_id: i64, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.write().await?;
        revoke_grants(&mut tx, "id", grant_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn access_token(&self, hash: &[u8], now: Timestamp) -> StoreResult<Option<AccessTokenInfo>> {
        let row = sqlx::query(&format!(
            "SELECT t.scope AS token_scope, t.expires_at AS token_expires_at, g.client_id AS token_client, \
             c.groups_claim AS client_groups_claim, {USER_COLUMNS} FROM access_tokens t \
             JOIN grants g ON g.id = t.grant_id JOIN users u ON u.id = g.user_id \
             JOIN clients c ON c.id = g.client_id \
             WHERE t.hash = ? AND t.expires_at > ? AND g.revoked_at IS NULL AND u.disabled = 0"
        ))
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(AccessTokenInfo {
                scope: r.try_get("token_scope")?,
                client_id: r.try_get("token_client")?,
                client_groups_claim: r.try_get("client_groups_claim")?,
                user: user_from_row(&r)?,
                expires_at: r.try_get("token_expires_at")?,
            })
        })
        .transpose()
    }

    async fn revoke_access_token(&self, hash: &[u8]) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE hash = ?").bind(hash).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn refresh_token(&self, hash: &[u8]) -> StoreResult<Option<RefreshTokenInfo>> {
        let row = sqlx::query(&format!(
            "SELECT t.scope AS token_scope, t.expires_at AS token_expires_at, t.used_at AS token_used_at, \
             {GRANT_COLUMNS} FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(RefreshTokenInfo {
                scope: r.try_get("token_scope")?,
                expires_at: r.try_get("token_expires_at")?,
                used: r.try_get::<Option<i64>, _>("token_used_at")?.is_some(),
                grant: grant_from_row(&r)?,
            })
        })
        .transpose()
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        now: Timestamp,
        access: &NewToken,
        refresh: &NewToken,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let grant_id: Option<i64> = sqlx::query_scalar(
            "UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL \
             AND (SELECT revoked_at FROM grants g WHERE g.id = refresh_tokens.grant_id) IS NULL RETURNING grant_id",
        )
        .bind(now)
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(grant_id) = grant_id else {
            return Ok(false);
        };
        insert_token(&mut tx, "access_tokens", grant_id, access).await?;
        insert_token(&mut tx, "refresh_tokens", grant_id, refresh).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn throttle_counts(&self, keys: &[String]) -> StoreResult<Vec<(String, ThrottleCount)>> {
        let placeholders = vec!["?"; keys.len()].join(", ");
        let sql = format!(
            "SELECT key, failures, leaked_at, blocked_until FROM throttle_counts WHERE key IN ({placeholders})"
        );
        let mut query = sqlx::query_as::<_, (String, i64, i64, i64)>(&sql);
        for key in keys {
            query = query.bind(key);
        }
        let rows = query.fetch_all(&self.reader).await?;
        Ok(rows
            .into_iter()
            .map(|(key, failures, leaked_at, blocked_until)| {
                (key, ThrottleCount { failures, leaked_at, blocked_until })
            })
            .collect())
    }

    async fn update_throttle_counts(
        &self,
        keys: &[String],
        update: &ThrottleUpdate<'_>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for (i, key) in keys.iter().enumerate() {
            let old: Option<(i64, i64, i64)> =
                sqlx::query_as("SELECT failures, leaked_at, blocked_until FROM throttle_counts WHERE key = ?")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            let old =
                old.map(|(failures, leaked_at, blocked_until)| ThrottleCount { failures, leaked_at, blocked_until });
            match update(i, old) {
                Some(c) => {
                    sqlx::query(
                        "INSERT INTO throttle_counts (key, failures, leaked_at, blocked_until, updated_at) \
                         VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, \
                         leaked_at = excluded.leaked_at, blocked_until = excluded.blocked_until, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(key)
                    .bind(c.failures)
                    .bind(c.leaked_at)
                    .bind(c.blocked_until)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                None if old.is_some() => {
                    sqlx::query("DELETE FROM throttle_counts WHERE key = ?").bind(key).execute(&mut *tx).await?;
                }
                None => {}
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn forgive_throttle_counts(&self, keys: &[String], sign_in: Option<&str>, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for key in keys {
            sqlx::query("DELETE FROM throttle_counts WHERE key = ?").bind(key).execute(&mut *tx).await?;
        }
        if let Some(key) = sign_in {
            sqlx::query(
                "INSERT INTO known_sign_ins (key, at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET at = excluded.at",
            )
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn last_sign_in(&self, key: &str) -> StoreResult<Option<Timestamp>> {
        Ok(sqlx::query_scalar("SELECT at FROM known_sign_ins WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for sql in [
            "DELETE FROM authorization_requests WHERE expires_at <= ?1",
            "DELETE FROM sessions WHERE expires_at <= ?1",
            "DELETE FROM access_tokens WHERE expires_at <= ?1",
            "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
            // Counts nobody touched for two days have leaked away, whatever their policy.
            "DELETE FROM throttle_counts WHERE updated_at <= ?1 - 2 * 86400",
            "DELETE FROM known_sign_ins WHERE at <= ?1 - 30 * 86400",
            // A grant is kept while any token of it lives, and a day past its code so replays are recognised.
            "DELETE FROM grants WHERE code_expires_at <= ?1 - 86400 \
             AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = grants.id) \
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = grants.id)",
        ] {
            sqlx::query(sql).bind(now).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        // Taking the write lock, then letting it go: reads alone would succeed on a locked database.
        self.write().await?.rollback().await?;
        Ok(())
    }
}
