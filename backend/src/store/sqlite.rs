//! [`Store`] on an embedded SQLite file (WAL mode), migrations applied at open.
//!
//! Statements run on the calling thread (rusqlite): an indexed lookup in a warm page cache takes
//! microseconds, less than handing it to a connection thread and back (sqlx's way, measured 2.5×
//! slower on userinfo). Reads run on the writer connection while it is free (its page cache stays
//! warm), else on a connection from a small pool, which WAL lets run beside the one writer. Writers
//! queue for the writer connection, one transaction per store call, except the token endpoint's
//! writes, which are committed together when they arrive together. Migrations go through sqlx's
//! migrator, as on PostgreSQL, so `_sqlx_migrations` stays the record.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection as _};

use super::batch::Batcher;
use super::*;

/// Size the write-ahead log is kept near: past it, a checkpoint empties the log (see `checkpoint`).
pub const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;
/// SQLite's default page size, which Postern's databases use.
const PAGE_SIZE: i64 = 4096;
/// Read connections kept open when idle; more are opened while more reads run at once.
const MAX_IDLE_READERS: usize = 4;
/// How often the log is checkpointed after writes. Often enough that under load it stays well below
/// [`WAL_SIZE_LIMIT`] and is rewritten in place from its start: checkpointed once a second, a busy
/// server's log passed the limit every time, and truncating it (which holds the write lock) and
/// growing the file again cost every write (measured: max latency of a code exchange 105 → 77 ms).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Connections>,
    /// Code redemptions and refresh rotations that arrive together, committed together.
    together: Arc<Batcher<TokenWrite, StoreResult<bool>>>,
}

/// A token request's write, which may share its transaction with others (group commit): each one's
/// answer is what it would be alone, in arrival order, and a batch's commit is one append to the log
/// instead of one per request.
enum TokenWrite {
    /// [`Store::redeem_code`]'s arguments.
    Redeem { grant_id: i64, now: Timestamp, access: NewToken, refresh: Option<NewToken> },
    /// [`Store::rotate_refresh_token`]'s arguments.
    Rotate { old_hash: Vec<u8>, now: Timestamp, access: NewToken, refresh: NewToken },
}

impl TokenWrite {
    /// Makes the write in `tx`; whether it took (the code unused, the token current and its grant live).
    fn apply(&self, tx: &Connection) -> rusqlite::Result<bool> {
        let (grant_id, access, refresh) = match self {
            Self::Redeem { grant_id, now, access, refresh } => {
                let redeemed = tx
                    .prepare_cached(
                        "UPDATE grants SET code_used_at = ? WHERE id = ? AND code_used_at IS NULL AND revoked_at IS NULL",
                    )?
                    .execute(params![now, grant_id])?;
                (Some(*grant_id).filter(|_| redeemed == 1), access, refresh.as_ref())
            }
            Self::Rotate { old_hash, now, access, refresh } => {
                let grant_id = tx
                    .prepare_cached(
                        "UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL \
                         AND (SELECT revoked_at FROM grants g WHERE g.id = refresh_tokens.grant_id) IS NULL \
                         RETURNING grant_id",
                    )?
                    .query_row(params![now, old_hash], |r| r.get(0))
                    .optional()?;
                (grant_id, access, Some(refresh))
            }
        };
        let Some(grant_id) = grant_id else { return Ok(false) };
        insert_token(tx, "access_tokens", grant_id, access)?;
        if let Some(refresh) = refresh {
            insert_token(tx, "refresh_tokens", grant_id, refresh)?;
        }
        Ok(true)
    }
}

/// Commits `writes` in one transaction; should one of them fail, each goes again alone, so that
/// only its own caller sees the error.
async fn commit_together(inner: Arc<Connections>, writes: Vec<TokenWrite>) -> StoreResult<Vec<StoreResult<bool>>> {
    let mut conn = inner.writer.lock().await;
    {
        let tx = WriteTransaction::begin(&mut conn).await?;
        let applied: rusqlite::Result<Vec<bool>> = writes.iter().map(|w| w.apply(tx.0)).collect();
        match applied {
            Ok(applied) => {
                tx.commit()?;
                inner.written.store(true, Ordering::Relaxed);
                return Ok(applied.into_iter().map(Ok).collect());
            }
            Err(e) if writes.len() == 1 => return Ok(vec![Err(e.into())]),
            Err(_) => {} // rolled back as `tx` drops
        }
    }
    let mut answers = Vec::with_capacity(writes.len());
    for write in &writes {
        let tx = WriteTransaction::begin(&mut conn).await?;
        answers.push(match write.apply(tx.0) {
            Ok(applied) => tx.commit().map(|()| applied).map_err(StoreError::from),
            Err(e) => Err(e.into()),
        });
        inner.written.store(true, Ordering::Relaxed);
    }
    Ok(answers)
}

struct Connections {
    path: PathBuf,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    /// The one connection that writes: writers queue here instead of sleeping in SQLite's busy handler.
    writer: tokio::sync::Mutex<Connection>,
    /// Its own connection for checkpoints, kept: opening one per checkpoint would leave each one's
    /// memory in whichever thread's malloc arena it happened to use.
    checkpointer: Mutex<Connection>,
    /// Whether anything was committed since the last checkpoint (an idle server skips them).
    written: AtomicBool,
}

const USER_COLUMNS: &str = "u.id AS user_id, u.username, u.display_name, u.email, u.email_verified, u.password_hash, \
     u.disabled, u.created_at, \
     (SELECT json_group_array(name) FROM user_groups g WHERE g.user_id = u.id) AS groups";

const GRANT_COLUMNS: &str = "g.id, g.client_id, g.user_id, g.scope, g.nonce, g.auth_time, g.redirect_uri, \
     g.code_challenge, g.code_expires_at, g.code_used_at, g.revoked_at";

/// Opens one connection with Postern's settings.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // synchronous=NORMAL in WAL mode: a commit survives Postern crashing or being killed; a power cut
    // or kernel crash may lose the last commits since the last checkpoint (about a second), never
    // the database's consistency. After the log restarts, its file is cut back to journal_size_limit
    // instead of keeping its peak.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if missing, owner-only) the database file and applies pending migrations.
    /// Refuses a database that other users can read (it holds password hashes and private keys).
    pub async fn open(path: &Path) -> StoreResult<Self> {
        crate::private_files::create_file(path).map_err(|e| StoreError::Unsafe(format!("{}: {e}", path.display())))?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            crate::private_files::check(&file).map_err(StoreError::Unsafe)?;
        }
        let mut migrator = sqlite_options(path)?.journal_mode(SqliteJournalMode::Wal).connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut migrator).await?;
        migrator.close().await?;
        let writer = connect(path)?;
        // The writer never checkpoints itself: a checkpoint fsyncs, and every queued write would wait for it.
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        // Nor does it sleep in SQLite's busy handler, which would hold the runtime's thread: a write lock
        // held by another process is waited for asynchronously (`WriteTransaction::begin`).
        writer.busy_timeout(Duration::ZERO)?;
        let inner = Arc::new(Connections {
            path: path.to_owned(),
            readers: Mutex::default(),
            writer: tokio::sync::Mutex::new(writer),
            checkpointer: Mutex::new(connect(path)?),
            written: AtomicBool::new(true),
        });
        let together = Batcher::new({
            let inner = Arc::clone(&inner);
            move |writes| commit_together(Arc::clone(&inner), writes)
        });
        let store = Self { inner, together };
        tokio::spawn(checkpoint_periodically(Arc::downgrade(&store.inner)));
        Ok(store)
    }

    /// A connection of sqlx's to the same file, read-only (for copying the database elsewhere).
    pub(super) async fn sqlx_reader(&self) -> StoreResult<sqlx::SqliteConnection> {
        Ok(sqlite_options(&self.inner.path)?.read_only(true).connect().await?)
    }

    /// Runs `work` on the writer connection when no write holds it, else on an idle read connection.
    fn read<T>(&self, work: impl Fn(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        // A commit empties every other connection's page cache (SQLite starts their next read cold,
        // from the file and the log), never the writer's own: under writes, reads there find their
        // pages in memory. The writer holds no write lock between transactions, so a read there waits
        // for nobody; should another process hold a lock it needs, the read goes to a pool connection.
        if let Ok(conn) = self.inner.writer.try_lock() {
            match work(&conn) {
                Err(e) if is_busy(&e) => {}
                done => return Ok(done?),
            }
        }
        let idle = self.inner.readers.lock().expect("not poisoned").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.inner.path)?,
        };
        let result = work(&conn);
        let mut readers = self.inner.readers.lock().expect("not poisoned");
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        Ok(result?)
    }

    /// Runs `work` in a write transaction, which holds the write lock from its first statement: one that
    /// read first and wrote later could find its snapshot outdated by a checkpoint that reset the log,
    /// and fail busy. `work` returning an error (or panicking) rolls everything back.
    async fn write<T>(&self, work: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.inner.writer.lock().await;
        let tx = WriteTransaction::begin(&mut conn).await?;
        let result = work(tx.0)?;
        tx.commit()?;
        self.inner.written.store(true, Ordering::Relaxed);
        Ok(result)
    }

    /// Runs one statement on the writer, in a transaction of its own; returns the rows it changed.
    async fn execute(&self, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
        self.write(|tx| Ok(tx.prepare_cached(sql)?.execute(params)?)).await
    }

    fn user_where(&self, condition: &str, params: impl rusqlite::Params + Copy) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u {condition}");
        self.read(|c| c.prepare_cached(&sql)?.query_map(params, user_from_row)?.collect())
    }
}

fn sqlite_options(path: &Path) -> StoreResult<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str("sqlite:")?.filename(path).busy_timeout(Duration::from_secs(5)))
}

/// How long a write waits for another process (a CLI command, a backup) to release the write lock.
const WRITE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// An immediate transaction on the writer connection, rolled back unless committed.
struct WriteTransaction<'a>(&'a mut Connection, bool);

impl<'a> WriteTransaction<'a> {
    /// Takes the write lock, waiting (without holding the thread) while another process has it.
    async fn begin(conn: &'a mut Connection) -> StoreResult<Self> {
        let deadline = tokio::time::Instant::now() + WRITE_LOCK_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            match conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => return Ok(Self(conn, false)),
                Err(e) if is_busy(&e) && tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.0.execute_batch("COMMIT")?;
        self.1 = true;
        Ok(())
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        if !self.1 {
            if let Err(e) = self.0.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a write transaction failed");
            }
        }
    }
}

/// Whether another connection holds the lock this one needs.
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DatabaseBusy)
}

/// Keeps the WAL short without making a request wait for a checkpoint's fsync; ends with the store.
async fn checkpoint_periodically(store: Weak<Connections>) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    loop {
        tick.tick().await;
        let Some(connections) = store.upgrade() else { return };
        if !connections.written.swap(false, Ordering::Relaxed) {
            continue;
        }
        let done = tokio::task::spawn_blocking(move || {
            let complete = checkpoint(&connections.checkpointer.lock().expect("not poisoned"));
            if !matches!(complete, Ok(true)) {
                // Frames a reader still needed stay in the log: try again at the next tick.
                connections.written.store(true, Ordering::Relaxed);
            }
            complete
        })
        .await
        .expect("a checkpoint does not panic");
        if let Err(e) = done {
            tracing::warn!(error = %e, "checkpointing the database failed");
        }
    }
}

/// Moves recent writes from the WAL into the database file; whether all of them went.
fn checkpoint(conn: &Connection) -> rusqlite::Result<bool> {
    // PASSIVE copies what it can without waiting for the writer, which goes on appending to the WAL.
    // Under constant reads it may never catch up, and the log would grow for ever: past a bound,
    // TRUNCATE waits (briefly) for readers to reach the newest snapshot, then empties the log.
    let (frames, copied): (i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))?;
    if frames * PAGE_SIZE > WAL_SIZE_LIMIT {
        return conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok(r.get::<_, i64>(0)? == 0));
    }
    Ok(copied == frames)
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
        id: row.get("user_id")?,
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

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session { user_id: row.get("user_id")?, auth_time: row.get("auth_time")?, expires_at: row.get("expires_at")? })
}

record_readers!(Row<'_>, get, rusqlite::Error);

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

fn insert_identity(tx: &Connection, identity: &UpstreamIdentity) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO upstream_identities (upstream, subject, user_id, name, locator, created_at, last_login_at, checked_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        identity.upstream,
        identity.subject,
        identity.user_id,
        identity.name,
        identity.locator,
        identity.created_at,
        identity.last_login_at,
        identity.checked_at
    ])
    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("upstream identity") } else { e.into() })?;
    Ok(())
}

fn insert_token(tx: &Connection, table: &str, grant_id: i64, token: &NewToken) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!("INSERT INTO {table} (hash, grant_id, scope, expires_at) VALUES (?, ?, ?, ?)"))?
        .execute(params![token.hash, grant_id, token.scope, token.expires_at])?;
    Ok(())
}

fn user_id(tx: &Connection, username: &str) -> StoreResult<i64> {
    tx.prepare_cached("SELECT id FROM users WHERE username = ?")?
        .query_row([username], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound("user"))
}

fn insert_groups(tx: &Connection, user_id: i64, groups: &[String]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO user_groups (user_id, name) VALUES (?, ?)")?;
    for group in groups {
        insert.execute(params![user_id, group])?;
    }
    Ok(())
}

/// Revokes the grants whose `column` (`id` or `user_id`) is `value`. The grant rows stay as the record
/// of the revocation; their live tokens go.
fn revoke_grants(tx: &Connection, column: &str, value: i64, now: Timestamp) -> rusqlite::Result<()> {
    let grants = format!("SELECT id FROM grants WHERE {column} = ?1");
    tx.execute(
        &format!("UPDATE grants SET revoked_at = ?2 WHERE {column} = ?1 AND revoked_at IS NULL"),
        params![value, now],
    )?;
    tx.execute(&format!("DELETE FROM access_tokens WHERE grant_id IN ({grants})"), [value])?;
    tx.execute(&format!("DELETE FROM refresh_tokens WHERE used_at IS NULL AND grant_id IN ({grants})"), [value])?;
    Ok(())
}

/// Ends a user's sessions and revokes all their grants (a password change, a disabled account).
fn end_sessions_and_grants(tx: &Connection, user_id: i64, now: Timestamp) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])?;
    revoke_grants(tx, "user_id", user_id, now)
}

fn throttle_count(row: &Row<'_>) -> rusqlite::Result<ThrottleCount> {
    Ok(ThrottleCount {
        failures: row.get("failures")?,
        leaked_at: row.get("leaked_at")?,
        blocked_until: row.get("blocked_until")?,
    })
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

    async fn set_password(&self, username: &str, password_hash: &str, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
            let id = user_id(tx, username)?;
            tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", params![password_hash, id])?;
            Ok(end_sessions_and_grants(tx, id, now)?)
        })
        .await
    }

    async fn upgrade_password_hash(&self, user_id: i64, old_hash: &str, new_hash: &str) -> StoreResult<()> {
        self.execute(
            "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
            (new_hash, user_id, old_hash),
        )
        .await?;
        Ok(())
    }

    async fn set_disabled(&self, username: &str, disabled: bool, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
            let id = user_id(tx, username)?;
            tx.execute("UPDATE users SET disabled = ? WHERE id = ?", params![disabled, id])?;
            if disabled {
                // Revoked, not merely refused while disabled: enabling the user again must not revive them.
                end_sessions_and_grants(tx, id, now)?;
            }
            Ok(())
        })
        .await
    }

    async fn set_groups(&self, username: &str, groups: &[String]) -> StoreResult<()> {
        self.write(|tx| {
            let id = user_id(tx, username)?;
            tx.execute("DELETE FROM user_groups WHERE user_id = ?", [id])?;
            Ok(insert_groups(tx, id, groups)?)
        })
        .await
    }

    async fn upstream_identity(&self, upstream: &str, subject: &str) -> StoreResult<Option<(UpstreamIdentity, User)>> {
        let sql = format!(
            "SELECT {IDENTITY_COLUMNS}, {USER_COLUMNS} FROM upstream_identities i JOIN users u ON u.id = i.user_id \
             WHERE i.upstream = ? AND i.subject = ?"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row([upstream, subject], |r| Ok((identity_from_row(r)?, user_from_row(r)?)))
                .optional()
        })
    }

    async fn user_upstream_identities(&self, user_id: i64) -> StoreResult<Vec<UpstreamIdentity>> {
        let sql =
            format!("SELECT {IDENTITY_COLUMNS} FROM upstream_identities i WHERE i.user_id = ? ORDER BY i.upstream");
        self.read(|c| c.prepare_cached(&sql)?.query_map([user_id], identity_from_row)?.collect())
    }

    async fn end_sessions_and_grants(&self, user_id: i64, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| Ok(end_sessions_and_grants(tx, user_id, now)?)).await
    }

    async fn list_upstream_identities(&self) -> StoreResult<Vec<UpstreamIdentity>> {
        let sql = format!("SELECT {IDENTITY_COLUMNS} FROM upstream_identities i ORDER BY i.user_id, i.upstream");
        self.read(|c| c.prepare(&sql)?.query_map([], identity_from_row)?.collect())
    }

    async fn create_upstream_user(
        &self,
        user: NewUser,
        identity: &UpstreamIdentity,
        now: Timestamp,
    ) -> StoreResult<User> {
        let id = self
            .write(|tx| {
                let id: i64 = tx
                    .query_row(
                        "INSERT INTO users (username, display_name, email, email_verified, password_hash, created_at) \
                         VALUES (?, ?, ?, ?, '', ?) RETURNING id",
                        params![user.username, user.display_name, user.email, user.email_verified, now],
                        |r| r.get(0),
                    )
                    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("user") } else { e.into() })?;
                insert_groups(tx, id, &user.groups)?;
                insert_identity(tx, &UpstreamIdentity { user_id: id, ..identity.clone() })?;
                Ok(id)
            })
            .await?;
        self.user_by_id(id).await?.ok_or(StoreError::NotFound("user"))
    }

    async fn link_upstream_identity(&self, identity: &UpstreamIdentity) -> StoreResult<()> {
        self.write(|tx| insert_identity(tx, identity)).await
    }

    async fn record_upstream_profile(
        &self,
        upstream: &str,
        subject: &str,
        profile: &UpstreamProfile,
        sign_in: bool,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.write(|tx| {
            let user_id: i64 = tx
                .prepare_cached(
                    "UPDATE upstream_identities SET name = ?, locator = ?, checked_at = ?3, \
                     last_login_at = CASE WHEN ?4 THEN ?3 ELSE last_login_at END \
                     WHERE upstream = ? AND subject = ? RETURNING user_id",
                )?
                .query_row(params![profile.name, profile.locator, now, sign_in, upstream, subject], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::NotFound("upstream identity"))?;
            tx.prepare_cached("UPDATE users SET display_name = ?, email = ?, email_verified = ? WHERE id = ?")?
                .execute(params![profile.display_name, profile.email, profile.email_verified, user_id])?;
            tx.prepare_cached("DELETE FROM user_groups WHERE user_id = ?")?.execute([user_id])?;
            Ok(insert_groups(tx, user_id, &profile.groups)?)
        })
        .await
    }

    async fn upsert_client(&self, client: &Client, now: Timestamp) -> StoreResult<()> {
        self.execute(
            "INSERT INTO clients (id, name, secret_hash, redirect_uris, post_logout_redirect_uris, scopes, public, \
             groups_claim, require_pkce, refresh_tokens, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
             redirect_uris = excluded.redirect_uris, post_logout_redirect_uris = excluded.post_logout_redirect_uris, \
             scopes = excluded.scopes, public = excluded.public, groups_claim = excluded.groups_claim, \
             require_pkce = excluded.require_pkce, refresh_tokens = excluded.refresh_tokens, source = excluded.source",
            (
                &client.id,
                &client.name,
                &client.secret_hash,
                to_json(&client.redirect_uris),
                to_json(&client.post_logout_redirect_uris),
                to_json(&client.scopes),
                client.public,
                client.groups_claim,
                client.require_pkce,
                client.refresh_tokens,
                client.source.as_str(),
                now
            ),
        )
        .await?;
        Ok(())
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
        Ok(self.execute("DELETE FROM clients WHERE id = ?", [id]).await? > 0)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read(|c| {
            c.prepare_cached("SELECT kid, alg, private_key, created_at FROM signing_keys ORDER BY created_at, rowid")?
                .query_map([], key_from_row)?
                .collect()
        })
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        self.execute(
            "INSERT INTO signing_keys (kid, alg, private_key, created_at) VALUES (?, ?, ?, ?)",
            (&key.kid, &key.alg, &key.private_key, key.created_at),
        )
        .await?;
        Ok(())
    }

    async fn insert_signing_key_if_none(&self, key: &StoredKey) -> StoreResult<bool> {
        // An immediate transaction holds the write lock: no other key can slip in between.
        let inserted = self
            .execute(
                "INSERT INTO signing_keys (kid, alg, private_key, created_at) SELECT ?1, ?2, ?3, ?4 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE alg = ?2)",
                (&key.kid, &key.alg, &key.private_key, key.created_at),
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn set_signing_key_material(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        self.execute("UPDATE signing_keys SET private_key = ? WHERE kid = ?", (private_key, kid)).await?;
        Ok(())
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()> {
        self.execute("DELETE FROM signing_keys WHERE kid = ?", [kid]).await?;
        Ok(())
    }

    async fn insert_authorization_request(&self, r: &AuthorizationRequest, limits: PendingLimits) -> StoreResult<()> {
        self.write(|tx| {
            // The newest requests stay; older ones nobody has signed in to yet make room.
            let older = |column: &str| {
                format!(
                    "DELETE FROM authorization_requests WHERE id IN (SELECT id FROM authorization_requests \
                     WHERE {column} = ?1 AND user_id IS NULL ORDER BY expires_at DESC LIMIT -1 OFFSET ?2)"
                )
            };
            if let Some(network) = &r.client_network {
                tx.prepare_cached(&older("client_network"))?.execute(params![network, limits.per_network - 1])?;
            }
            if let Some(browser) = &r.browser_hash {
                tx.prepare_cached(&older("browser_hash"))?.execute(params![browser, limits.per_browser - 1])?;
            }
            tx.prepare_cached(
                "INSERT INTO authorization_requests (id, client_id, redirect_uri, scope, state, nonce, code_challenge, \
                 expires_at, browser_hash, client_network) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                r.id,
                r.client_id,
                r.redirect_uri,
                r.scope,
                r.state,
                r.nonce,
                r.code_challenge,
                r.expires_at,
                r.browser_hash,
                r.client_network
            ])?;
            Ok(())
        })
        .await
    }

    async fn authorization_request(&self, id: &str, now: Timestamp) -> StoreResult<Option<AuthorizationRequest>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT * FROM authorization_requests WHERE id = ? AND expires_at > ? AND user_id IS NULL",
            )?
            .query_row(params![id, now], request_from_row)
            .optional()
        })
    }

    async fn start_upstream_login(&self, id: &str, login: &UpstreamLogin, now: Timestamp) -> StoreResult<bool> {
        let done = self
            .execute(
                "UPDATE authorization_requests SET upstream = ?, upstream_state_hash = ?, upstream_nonce = ?, \
                 upstream_verifier = ? WHERE id = ? AND user_id IS NULL AND expires_at > ?",
                (&login.upstream, &login.state_hash, &login.nonce, &login.verifier, id, now),
            )
            .await?;
        Ok(done == 1)
    }

    async fn take_upstream_login(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, UpstreamLogin)>> {
        // The state is spent whatever follows: a second callback with it finds nothing.
        self.write(|tx| {
            let found = tx
                .prepare_cached(
                    "SELECT * FROM authorization_requests WHERE upstream_state_hash = ? AND expires_at > ? \
                     AND user_id IS NULL",
                )?
                .query_row(params![state_hash, now], |r| Ok((request_from_row(r)?, upstream_login_from_row(r)?)))
                .optional()?;
            tx.prepare_cached(
                "UPDATE authorization_requests SET upstream_state_hash = NULL, upstream_nonce = NULL, \
                 upstream_verifier = NULL WHERE upstream_state_hash = ?",
            )?
            .execute([state_hash])?;
            Ok(found)
        })
        .await
    }

    async fn authenticate_request(&self, id: &str, login: &RequestLogin, now: Timestamp) -> StoreResult<bool> {
        let done = self
            .execute(
                "UPDATE authorization_requests SET user_id = ?, auth_time = ?, ticket_hash = ?, expires_at = ? \
                 WHERE id = ? AND user_id IS NULL AND expires_at > ?",
                (login.user_id, login.auth_time, &login.ticket_hash, login.expires_at, id, now),
            )
            .await?;
        Ok(done == 1)
    }

    async fn redeem_ticket(
        &self,
        ticket_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, RequestLogin)>> {
        self.write(|tx| {
            let redeemed = tx
                .prepare_cached(
                    "DELETE FROM authorization_requests WHERE ticket_hash = ? AND expires_at > ? \
                     AND user_id IS NOT NULL RETURNING *",
                )?
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
            Ok(redeemed)
        })
        .await
    }

    async fn create_session(&self, id_hash: &[u8], s: &Session, now: Timestamp) -> StoreResult<()> {
        self.execute(
            "INSERT INTO sessions (id_hash, user_id, auth_time, created_at, expires_at, last_seen) \
             VALUES (?, ?, ?, ?, ?, ?)",
            (id_hash, s.user_id, s.auth_time, now, s.expires_at, now),
        )
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &[u8], now: Timestamp, idle: Timestamp) -> StoreResult<Option<Session>> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE sessions SET last_seen = ?1 WHERE id_hash = ?2 AND expires_at > ?1 \
                     AND last_seen > ?1 - ?3 AND user_id IN (SELECT id FROM users WHERE disabled = 0) \
                     RETURNING user_id, auth_time, expires_at",
                )?
                .query_row(params![now, id_hash, idle], session_from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_session(&self, id_hash: &[u8]) -> StoreResult<()> {
        self.execute("DELETE FROM sessions WHERE id_hash = ?", [id_hash]).await?;
        Ok(())
    }

    async fn create_grant(&self, g: &NewGrant, now: Timestamp) -> StoreResult<i64> {
        self.write(|tx| {
            Ok(tx
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
                )?)
        })
        .await
    }

    async fn grant_by_code(&self, code_hash: &[u8]) -> StoreResult<Option<(Grant, User)>> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS}, {USER_COLUMNS} FROM grants g JOIN users u ON u.id = g.user_id WHERE g.code_hash = ?"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?.query_row([code_hash], |r| Ok((grant_from_row(r)?, user_from_row(r)?))).optional()
        })
    }

    async fn redeem_code(
        &self,
        grant_id: i64,
        now: Timestamp,
        access: &NewToken,
        refresh: Option<&NewToken>,
    ) -> StoreResult<bool> {
        let write = TokenWrite::Redeem { grant_id, now, access: access.clone(), refresh: refresh.cloned() };
        self.together.call(write).await?
    }

    async fn revoke_grant(&self, grant_id: i64, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| Ok(revoke_grants(tx, "id", grant_id, now)?)).await
    }

    async fn access_token(&self, hash: &[u8], now: Timestamp) -> StoreResult<Option<AccessTokenInfo>> {
        let sql = format!(
            "SELECT t.scope AS token_scope, t.expires_at AS token_expires_at, g.client_id AS token_client, \
             c.groups_claim AS client_groups_claim, {USER_COLUMNS} FROM access_tokens t \
             JOIN grants g ON g.id = t.grant_id JOIN users u ON u.id = g.user_id \
             JOIN clients c ON c.id = g.client_id \
             WHERE t.hash = ? AND t.expires_at > ? AND g.revoked_at IS NULL AND u.disabled = 0"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row(params![hash, now], |r| {
                    Ok(AccessTokenInfo {
                        scope: r.get("token_scope")?,
                        client_id: r.get("token_client")?,
                        client_groups_claim: r.get("client_groups_claim")?,
                        user: user_from_row(r)?,
                        expires_at: r.get("token_expires_at")?,
                    })
                })
                .optional()
        })
    }

    async fn revoke_access_token(&self, hash: &[u8]) -> StoreResult<bool> {
        Ok(self.execute("DELETE FROM access_tokens WHERE hash = ?", [hash]).await? == 1)
    }

    async fn refresh_token(&self, hash: &[u8]) -> StoreResult<Option<RefreshTokenInfo>> {
        let sql = format!(
            "SELECT t.scope AS token_scope, t.expires_at AS token_expires_at, t.used_at AS token_used_at, \
             {GRANT_COLUMNS}, {USER_COLUMNS} FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id \
             JOIN users u ON u.id = g.user_id WHERE t.hash = ?"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row([hash], |r| {
                    Ok(RefreshTokenInfo {
                        scope: r.get("token_scope")?,
                        expires_at: r.get("token_expires_at")?,
                        used: r.get::<_, Option<i64>>("token_used_at")?.is_some(),
                        grant: grant_from_row(r)?,
                        user: user_from_row(r)?,
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
        let write =
            TokenWrite::Rotate { old_hash: old_hash.to_vec(), now, access: access.clone(), refresh: refresh.clone() };
        self.together.call(write).await?
    }

    async fn throttle_counts(&self, keys: &[String]) -> StoreResult<Vec<(String, ThrottleCount)>> {
        let placeholders = vec!["?"; keys.len()].join(", ");
        let sql = format!(
            "SELECT key, failures, leaked_at, blocked_until FROM throttle_counts WHERE key IN ({placeholders})"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map(params_from_iter(keys), |r| Ok((r.get("key")?, throttle_count(r)?)))?
                .collect()
        })
    }

    async fn update_throttle_counts(
        &self,
        keys: &[String],
        update: &ThrottleUpdate<'_>,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.write(|tx| {
            for (i, key) in keys.iter().enumerate() {
                let old = tx
                    .prepare_cached("SELECT failures, leaked_at, blocked_until FROM throttle_counts WHERE key = ?")?
                    .query_row([key], throttle_count)
                    .optional()?;
                match update(i, old) {
                    Some(c) => {
                        tx.prepare_cached(
                            "INSERT INTO throttle_counts (key, failures, leaked_at, blocked_until, updated_at) \
                             VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, \
                             leaked_at = excluded.leaked_at, blocked_until = excluded.blocked_until, \
                             updated_at = excluded.updated_at",
                        )?
                        .execute(params![
                            key,
                            c.failures,
                            c.leaked_at,
                            c.blocked_until,
                            now
                        ])?;
                    }
                    None if old.is_some() => {
                        tx.prepare_cached("DELETE FROM throttle_counts WHERE key = ?")?.execute([key])?;
                    }
                    None => {}
                }
            }
            Ok(())
        })
        .await
    }

    async fn forgive_throttle_counts(&self, keys: &[String], sign_in: Option<&str>, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
            for key in keys {
                tx.prepare_cached("DELETE FROM throttle_counts WHERE key = ?")?.execute([key])?;
            }
            if let Some(key) = sign_in {
                tx.prepare_cached(
                    "INSERT INTO known_sign_ins (key, at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET at = excluded.at",
                )?
                .execute(params![key, now])?;
            }
            Ok(())
        })
        .await
    }

    async fn last_sign_in(&self, key: &str) -> StoreResult<Option<Timestamp>> {
        self.read(|c| {
            c.prepare_cached("SELECT at FROM known_sign_ins WHERE key = ?")?.query_row([key], |r| r.get(0)).optional()
        })
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| {
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
                tx.execute(sql, [now])?;
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        // Taking the write lock, then letting it go: reads alone would succeed on a locked database.
        let mut conn = self.inner.writer.lock().await;
        drop(WriteTransaction::begin(&mut conn).await?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(hash: u8) -> NewToken {
        NewToken { hash: vec![hash; 32], scope: "openid".into(), expires_at: 2_000_000_000 }
    }

    /// A store with a user, a client and `grants` unredeemed codes; the grants' ids.
    async fn store_with_codes(dir: &Path, grants: u8) -> (SqliteStore, Vec<i64>) {
        let store = SqliteStore::open(&dir.join("postern.db")).await.unwrap();
        let user = NewUser {
            username: "xena".into(),
            display_name: "Xena".into(),
            email: None,
            email_verified: false,
            groups: vec![],
            password_hash: String::new(),
        };
        let user = store.create_user(user, 1).await.unwrap();
        let client = Client {
            id: "hub".into(),
            name: "Hub".into(),
            secret_hash: None,
            redirect_uris: vec!["https://hub.example/cb".into()],
            post_logout_redirect_uris: vec![],
            scopes: vec!["openid".into()],
            public: true,
            groups_claim: false,
            require_pkce: true,
            refresh_tokens: true,
            source: ClientSource::Cli,
        };
        store.upsert_client(&client, 1).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..grants {
            let grant = NewGrant {
                client_id: "hub".into(),
                user_id: user.id,
                scope: "openid".into(),
                nonce: None,
                auth_time: 1,
                redirect_uri: "https://hub.example/cb".into(),
                code_challenge: None,
                code_hash: vec![i; 32],
                code_expires_at: 2_000_000_000,
            };
            ids.push(store.create_grant(&grant, 1).await.unwrap());
        }
        (store, ids)
    }

    #[tokio::test]
    async fn writes_committed_together_answer_as_each_would_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, grants) = store_with_codes(dir.path(), 2).await;
        let redeem = |grant_id, hash| TokenWrite::Redeem { grant_id, now: 5, access: token(hash), refresh: None };
        // The same code twice in one batch: the first redeems it, the second finds it used.
        let answers =
            commit_together(Arc::clone(&store.inner), vec![redeem(grants[0], 1), redeem(grants[0], 2)]).await.unwrap();
        let answers: Vec<bool> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, [true, false]);
        assert!(store.access_token(&[1; 32], 5).await.unwrap().is_some());
        assert!(store.access_token(&[2; 32], 5).await.unwrap().is_none(), "the loser inserted nothing");

        // One write of a batch failing (its token's hash is taken) fails alone, and leaves its code unused.
        let answers =
            commit_together(Arc::clone(&store.inner), vec![redeem(grants[1], 1), redeem(grants[0], 3)]).await.unwrap();
        assert!(answers[0].is_err(), "a duplicate token hash is refused");
        assert!(!answers[1].as_ref().unwrap(), "the other write is answered as alone");
        let (grant, _) = store.grant_by_code(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(grant.code_used_at, None, "the failed write is rolled back");
        assert!(store.redeem_code(grants[1], 6, &token(4), Some(&token(5))).await.unwrap());
        assert!(store.refresh_token(&[5; 32]).await.unwrap().is_some());
    }
}
