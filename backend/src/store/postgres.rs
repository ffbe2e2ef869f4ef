//! [`Store`] on PostgreSQL, for several Postern replicas sharing one database.
//!
//! Every rule that must hold across replicas is a row lock or a conditional update inside one
//! transaction: a code is redeemed by the one `UPDATE … WHERE code_used_at IS NULL` that finds it
//! unused, a refresh token rotated by the one that finds it unused, and so on; READ COMMITTED (the
//! default) re-checks such a condition after waiting for a concurrent writer of the same row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};

use super::batch::Batcher;
use super::*;

/// Connections per process: a replica's requests wait for one rather than open more.
const MAX_CONNECTIONS: u32 = 16;
/// The advisory lock held by whichever replica purges expired rows, so that only one does at a time.
const PURGE_LOCK: i64 = 0x706f_7374_6572_6e01;

/// PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    batches: Arc<Batches>,
}

/// The lookups every token request and userinfo makes, each a statement per batch of concurrent calls
/// (see [`Batcher`]): with one statement per call, the database's side of a round trip costs more
/// than the statement itself. Writes are not batched (see `redeem_code`).
struct Batches {
    clients: Batched<String, Option<Client>>,
    grants_by_code: Batched<Vec<u8>, Option<GrantAndUser>>,
    access_tokens: Batched<(Vec<u8>, Timestamp), Option<AccessTokenInfo>>,
}

type Batched<I, O> = Arc<Batcher<I, O>>;
type GrantAndUser = (Grant, User);

impl Batches {
    fn new(pool: &PgPool) -> Self {
        fn on<I: Send + 'static, O: Send + 'static, Fut>(
            pool: &PgPool,
            run: fn(PgPool, Vec<I>) -> Fut,
        ) -> Arc<Batcher<I, O>>
        where
            Fut: std::future::Future<Output = StoreResult<Vec<O>>> + Send + 'static,
        {
            let pool = pool.clone();
            Batcher::new(move |inputs| run(pool.clone(), inputs))
        }
        Self {
            clients: on(pool, clients_by_id),
            grants_by_code: on(pool, grants_by_code),
            access_tokens: on(pool, access_tokens),
        }
    }
}

async fn clients_by_id(pool: PgPool, ids: Vec<String>) -> StoreResult<Vec<Option<Client>>> {
    let rows = sqlx::query("SELECT * FROM clients WHERE id = ANY($1)").bind(&ids).fetch_all(&pool).await?;
    let found = rows
        .iter()
        .map(|row| client_from_row(row).map(|client| (client.id.clone(), client)))
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
}

async fn grants_by_code(pool: PgPool, hashes: Vec<Vec<u8>>) -> StoreResult<Vec<Option<(Grant, User)>>> {
    let rows = sqlx::query(&format!(
        "SELECT g.code_hash, {GRANT_COLUMNS}, {USER_COLUMNS} FROM grants g JOIN users u ON u.id = g.user_id \
         WHERE g.code_hash = ANY($1)"
    ))
    .bind(&hashes)
    .fetch_all(&pool)
    .await?;
    let found = rows
        .iter()
        .map(|r| Ok((r.try_get::<Vec<u8>, _>("code_hash")?, (grant_from_row(r)?, user_from_row(r)?))))
        .collect::<Result<HashMap<_, _>, sqlx::Error>>()?;
    // A code asked for twice in one batch is answered twice (its second redemption is a replay).
    Ok(hashes.iter().map(|hash| found.get(hash).cloned()).collect())
}

async fn access_tokens(pool: PgPool, batch: Vec<(Vec<u8>, Timestamp)>) -> StoreResult<Vec<Option<AccessTokenInfo>>> {
    let (hashes, nows): (Vec<Vec<u8>>, Vec<Timestamp>) = batch.into_iter().unzip();
    let rows = sqlx::query(&format!(
        "SELECT q.i, t.scope AS token_scope, t.expires_at AS token_expires_at, g.client_id AS token_client, \
         c.groups_claim AS client_groups_claim, {USER_COLUMNS} \
         FROM unnest($1::bytea[], $2::bigint[]) WITH ORDINALITY AS q(hash, now, i) \
         JOIN access_tokens t ON t.hash = q.hash JOIN grants g ON g.id = t.grant_id \
         JOIN users u ON u.id = g.user_id JOIN clients c ON c.id = g.client_id \
         WHERE t.expires_at > q.now AND g.revoked_at IS NULL AND NOT u.disabled"
    ))
    .bind(&hashes)
    .bind(&nows)
    .fetch_all(&pool)
    .await?;
    let mut answers = vec![None; hashes.len()];
    for row in rows {
        let i: i64 = row.try_get("i")?;
        let answer = answers.get_mut((i - 1) as usize).ok_or(StoreError::NotFound("batch position"))?;
        *answer = Some(AccessTokenInfo {
            scope: row.try_get("token_scope")?,
            client_id: row.try_get("token_client")?,
            client_groups_claim: row.try_get("client_groups_claim")?,
            user: user_from_row(&row)?,
            expires_at: row.try_get("token_expires_at")?,
        });
    }
    Ok(answers)
}

const USER_COLUMNS: &str = "u.id AS user_id, u.username, u.display_name, u.email, u.email_verified, u.password_hash, \
     u.disabled, u.created_at, ARRAY(SELECT name FROM user_groups g WHERE g.user_id = u.id ORDER BY name) AS groups";

const GRANT_COLUMNS: &str = "g.id, g.client_id, g.user_id, g.scope, g.nonce, g.auth_time, g.redirect_uri, \
     g.code_challenge, g.code_expires_at, g.code_used_at, g.revoked_at";

const REQUEST_COLUMNS: &str = "id, client_id, redirect_uri, scope, state, nonce, code_challenge, expires_at, \
     browser_hash, client_network";
const REQUEST_COLUMNS_QUALIFIED: &str = "r.id, r.client_id, r.redirect_uri, r.scope, r.state, r.nonce, \
     r.code_challenge, r.expires_at, r.browser_hash, r.client_network";

impl PostgresStore {
    /// The connection pool (for copying a database into this one).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connects to `url` and applies pending migrations; replicas starting together take turns (the
    /// migrator holds an advisory lock).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // Fail a request within its time budget when the database is away, rather than queue it.
            .acquire_timeout(Duration::from_secs(5))
            // A round trip before every use would double the cost of a query; a connection the server
            // closed fails its next query instead, and the pool drops it.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let batches = Arc::new(Batches::new(&pool));
        Ok(Self { pool, batches })
    }

    async fn user_where(&self, condition: &str, bind: impl FnOnce(Query<'_>) -> Query<'_>) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u {condition}");
        let rows = bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    async fn user_id(&self, username: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT id FROM users WHERE lower(username) = lower($1)")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("user"))
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        email_verified: row.try_get("email_verified")?,
        groups: row.try_get("groups")?,
        password_hash: row.try_get("password_hash")?,
        disabled: row.try_get("disabled")?,
        created_at: row.try_get("created_at")?,
    })
}

fn client_from_row(row: &PgRow) -> Result<Client, sqlx::Error> {
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        redirect_uris: row.try_get("redirect_uris")?,
        post_logout_redirect_uris: row.try_get("post_logout_redirect_uris")?,
        scopes: row.try_get("scopes")?,
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

record_readers!(PgRow, try_get, sqlx::Error);

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Revokes the grants whose `column` (`id` or `user_id`) is `value`. The grant rows stay as the record
/// of the revocation; their live tokens go. Updating the grants first locks them: a rotation or a code
/// redemption of the same grant running meanwhile either finished before (and its tokens are deleted
/// here) or waits and then finds the grant revoked.
async fn revoke_grants(tx: &mut PgConnection, column: &str, value: i64, now: Timestamp) -> Result<(), sqlx::Error> {
    let grants = format!("SELECT id FROM grants WHERE {column} = $1");
    sqlx::query(&format!("UPDATE grants SET revoked_at = $1 WHERE {column} = $2 AND revoked_at IS NULL"))
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
async fn end_sessions_and_grants(tx: &mut PgConnection, user_id: i64, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    revoke_grants(tx, "user_id", user_id, now).await
}

async fn replace_groups(tx: &mut PgConnection, user_id: i64, groups: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_groups WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO user_groups (user_id, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .bind(groups)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn insert_identity(conn: &mut PgConnection, identity: &UpstreamIdentity) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO upstream_identities (upstream, subject, user_id, name, locator, created_at, last_login_at, checked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&identity.upstream)
    .bind(&identity.subject)
    .bind(identity.user_id)
    .bind(&identity.name)
    .bind(&identity.locator)
    .bind(identity.created_at)
    .bind(identity.last_login_at)
    .bind(identity.checked_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("upstream identity") } else { e.into() })?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> StoreResult<User> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, display_name, email, email_verified, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
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
        replace_groups(&mut tx, id, &user.groups).await?;
        tx.commit().await?;
        self.user_by_id(id).await?.ok_or(StoreError::NotFound("user"))
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        Ok(self.user_where("WHERE lower(u.username) = lower($1)", |q| q.bind(username.to_owned())).await?.pop())
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>> {
        Ok(self.user_where("WHERE u.id = $1", |q| q.bind(id)).await?.pop())
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.user_where("ORDER BY u.username", |q| q).await
    }

    async fn set_password(&self, username: &str, password_hash: &str, now: Timestamp) -> StoreResult<()> {
        let id = self.user_id(username).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        end_sessions_and_grants(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upgrade_password_hash(&self, user_id: i64, old_hash: &str, new_hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new_hash)
            .bind(user_id)
            .bind(old_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_disabled(&self, username: &str, disabled: bool, now: Timestamp) -> StoreResult<()> {
        let id = self.user_id(username).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2").bind(disabled).bind(id).execute(&mut *tx).await?;
        if disabled {
            // Revoked, not merely refused while disabled: enabling the user again must not revive them.
            end_sessions_and_grants(&mut tx, id, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_groups(&self, username: &str, groups: &[String]) -> StoreResult<()> {
        let id = self.user_id(username).await?;
        let mut tx = self.pool.begin().await?;
        replace_groups(&mut tx, id, groups).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upstream_identity(&self, upstream: &str, subject: &str) -> StoreResult<Option<(UpstreamIdentity, User)>> {
        let sql = format!(
            "SELECT {IDENTITY_COLUMNS}, {USER_COLUMNS} FROM upstream_identities i JOIN users u ON u.id = i.user_id \
             WHERE i.upstream = $1 AND i.subject = $2"
        );
        let row = sqlx::query(&sql).bind(upstream).bind(subject).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| Ok::<_, sqlx::Error>((identity_from_row(&r)?, user_from_row(&r)?))).transpose()?)
    }

    async fn user_upstream_identities(&self, user_id: i64) -> StoreResult<Vec<UpstreamIdentity>> {
        let sql =
            format!("SELECT {IDENTITY_COLUMNS} FROM upstream_identities i WHERE i.user_id = $1 ORDER BY i.upstream");
        let rows = sqlx::query(&sql).bind(user_id).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(identity_from_row).collect::<Result<_, _>>()?)
    }

    async fn end_sessions_and_grants(&self, user_id: i64, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        end_sessions_and_grants(&mut tx, user_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_upstream_identities(&self) -> StoreResult<Vec<UpstreamIdentity>> {
        let sql = format!("SELECT {IDENTITY_COLUMNS} FROM upstream_identities i ORDER BY i.user_id, i.upstream");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(identity_from_row).collect::<Result<_, _>>()?)
    }

    async fn create_upstream_user(
        &self,
        user: NewUser,
        identity: &UpstreamIdentity,
        now: Timestamp,
    ) -> StoreResult<User> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, display_name, email, email_verified, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, '', $5) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(user.email_verified)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("user") } else { e.into() })?;
        replace_groups(&mut tx, id, &user.groups).await?;
        insert_identity(&mut tx, &UpstreamIdentity { user_id: id, ..identity.clone() }).await?;
        tx.commit().await?;
        self.user_by_id(id).await?.ok_or(StoreError::NotFound("user"))
    }

    async fn link_upstream_identity(&self, identity: &UpstreamIdentity) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert_identity(&mut conn, identity).await
    }

    async fn record_upstream_profile(
        &self,
        upstream: &str,
        subject: &str,
        profile: &UpstreamProfile,
        sign_in: bool,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let user_id: i64 = sqlx::query_scalar(
            "UPDATE upstream_identities SET name = $1, locator = $2, checked_at = $3, \
             last_login_at = CASE WHEN $4 THEN $3 ELSE last_login_at END \
             WHERE upstream = $5 AND subject = $6 RETURNING user_id",
        )
        .bind(&profile.name)
        .bind(&profile.locator)
        .bind(now)
        .bind(sign_in)
        .bind(upstream)
        .bind(subject)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("upstream identity"))?;
        sqlx::query("UPDATE users SET display_name = $1, email = $2, email_verified = $3 WHERE id = $4")
            .bind(&profile.display_name)
            .bind(&profile.email)
            .bind(profile.email_verified)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        replace_groups(&mut tx, user_id, &profile.groups).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_client(&self, client: &Client, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO clients (id, name, secret_hash, redirect_uris, post_logout_redirect_uris, scopes, public, \
             groups_claim, require_pkce, refresh_tokens, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
             redirect_uris = excluded.redirect_uris, post_logout_redirect_uris = excluded.post_logout_redirect_uris, \
             scopes = excluded.scopes, public = excluded.public, groups_claim = excluded.groups_claim, \
             require_pkce = excluded.require_pkce, refresh_tokens = excluded.refresh_tokens, source = excluded.source",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.secret_hash)
        .bind(&client.redirect_uris)
        .bind(&client.post_logout_redirect_uris)
        .bind(&client.scopes)
        .bind(client.public)
        .bind(client.groups_claim)
        .bind(client.require_pkce)
        .bind(client.refresh_tokens)
        .bind(client.source.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.batches.clients.call(id.to_owned()).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(client_from_row).collect::<Result<_, _>>()?)
    }

    async fn remove_client(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM clients WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query("SELECT kid, alg, private_key, created_at FROM signing_keys ORDER BY created_at, seq")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_key, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_key)
            .bind(key.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_signing_key_if_none(&self, key: &StoredKey) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Replicas starting together on an empty database take turns here; the first one's key stays.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('signing key ' || $1, 0))")
            .bind(&key.alg)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, created_at) SELECT $1, $2, $3, $4 \
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE alg = $2)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_key)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_signing_key_material(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
            .bind(private_key)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = $1").bind(kid).execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_authorization_request(&self, r: &AuthorizationRequest, limits: PendingLimits) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The newest requests stay; older ones nobody has signed in to yet make room. A transaction-scoped
        // lock per network and per browser keeps two replicas from both making room for one slot.
        let make_room = |column: &str| {
            format!(
                "DELETE FROM authorization_requests WHERE id IN (SELECT id FROM authorization_requests \
                 WHERE {column} = $1 AND user_id IS NULL ORDER BY expires_at DESC OFFSET $2)"
            )
        };
        if let Some(network) = &r.client_network {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('pending network ' || $1, 0))")
                .bind(network)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&make_room("client_network"))
                .bind(network)
                .bind(limits.per_network - 1)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(browser) = &r.browser_hash {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('pending browser ' || encode($1, 'hex'), 0))")
                .bind(browser)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&make_room("browser_hash"))
                .bind(browser)
                .bind(limits.per_browser - 1)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO authorization_requests ({REQUEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
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
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM authorization_requests WHERE id = $1 AND expires_at > $2 AND user_id IS NULL"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(request_from_row).transpose()?)
    }

    async fn start_upstream_login(&self, id: &str, login: &UpstreamLogin, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE authorization_requests SET upstream = $1, upstream_state_hash = $2, upstream_nonce = $3, \
             upstream_verifier = $4 WHERE id = $5 AND user_id IS NULL AND expires_at > $6",
        )
        .bind(&login.upstream)
        .bind(&login.state_hash)
        .bind(&login.nonce)
        .bind(&login.verifier)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn take_upstream_login(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, UpstreamLogin)>> {
        // One statement: the state is spent (of two callbacks racing with it, one gets the row), and
        // the request comes back as it was before the update.
        let row = sqlx::query(&format!(
            "WITH spent AS (SELECT id, upstream_state_hash, upstream_nonce, upstream_verifier \
                 FROM authorization_requests WHERE upstream_state_hash = $1 FOR UPDATE), \
             cleared AS (UPDATE authorization_requests r SET upstream_state_hash = NULL, upstream_nonce = NULL, \
                 upstream_verifier = NULL FROM spent WHERE r.id = spent.id \
                 RETURNING r.id, r.expires_at, r.user_id, spent.upstream_state_hash, spent.upstream_nonce, \
                 spent.upstream_verifier) \
             SELECT {REQUEST_COLUMNS_QUALIFIED}, r.upstream, c.upstream_state_hash, c.upstream_nonce, \
                 c.upstream_verifier FROM cleared c JOIN authorization_requests r ON r.id = c.id \
             WHERE c.expires_at > $2 AND c.user_id IS NULL"
        ))
        .bind(state_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Ok::<_, sqlx::Error>((request_from_row(&r)?, upstream_login_from_row(&r)?))).transpose()?)
    }

    async fn authenticate_request(&self, id: &str, login: &RequestLogin, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE authorization_requests SET user_id = $1, auth_time = $2, ticket_hash = $3, expires_at = $4 \
             WHERE id = $5 AND user_id IS NULL AND expires_at > $6",
        )
        .bind(login.user_id)
        .bind(login.auth_time)
        .bind(&login.ticket_hash)
        .bind(login.expires_at)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn redeem_ticket(
        &self,
        ticket_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, RequestLogin)>> {
        let row = sqlx::query(&format!(
            "DELETE FROM authorization_requests WHERE ticket_hash = $1 AND expires_at > $2 AND user_id IS NOT NULL \
             RETURNING {REQUEST_COLUMNS}, user_id, auth_time, ticket_hash"
        ))
        .bind(ticket_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let login = RequestLogin {
            user_id: row.try_get("user_id")?,
            auth_time: row.try_get("auth_time")?,
            ticket_hash: row.try_get("ticket_hash")?,
            expires_at: row.try_get("expires_at")?,
        };
        Ok(Some((request_from_row(&row)?, login)))
    }

    async fn create_session(&self, id_hash: &[u8], s: &Session, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, auth_time, created_at, expires_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $4)",
        )
        .bind(id_hash)
        .bind(s.user_id)
        .bind(s.auth_time)
        .bind(now)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &[u8], now: Timestamp, idle: Timestamp) -> StoreResult<Option<Session>> {
        let row = sqlx::query(
            "UPDATE sessions SET last_seen = $1 WHERE id_hash = $2 AND expires_at > $1 AND last_seen > $1 - $3 \
             AND user_id IN (SELECT id FROM users WHERE NOT disabled) RETURNING user_id, auth_time, expires_at",
        )
        .bind(now)
        .bind(id_hash)
        .bind(idle)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Session {
            user_id: row.try_get("user_id")?,
            auth_time: row.try_get("auth_time")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    async fn delete_session(&self, id_hash: &[u8]) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(&self.pool).await?;
        Ok(())
    }

    async fn create_grant(&self, g: &NewGrant, now: Timestamp) -> StoreResult<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO grants (client_id, user_id, scope, nonce, auth_time, redirect_uri, code_hash, code_challenge, \
             code_expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
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
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn grant_by_code(&self, code_hash: &[u8]) -> StoreResult<Option<(Grant, User)>> {
        self.batches.grants_by_code.call(code_hash.to_vec()).await
    }

    async fn redeem_code(
        &self,
        grant_id: i64,
        now: Timestamp,
        access: &NewToken,
        refresh: Option<&NewToken>,
    ) -> StoreResult<bool> {
        // One statement, so one round trip and atomic without a transaction around it. Two replicas
        // redeeming one code: the second waits for the first's row lock, then finds the code used and
        // inserts nothing. Not batched: a write can wait on the log, and a batch would make every
        // request in it wait too (measured: p99 608 ms at c=64 after a burst of writes, against 83 ms).
        let refresh = refresh.map(|r| (&r.hash, &r.scope, r.expires_at));
        let redeemed: bool = sqlx::query_scalar(
            "WITH redeemed AS (UPDATE grants SET code_used_at = $1 WHERE id = $2 AND code_used_at IS NULL \
             AND revoked_at IS NULL RETURNING id), \
             access AS (INSERT INTO access_tokens (hash, grant_id, scope, expires_at) SELECT $3, id, $4, $5 FROM redeemed), \
             refresh AS (INSERT INTO refresh_tokens (hash, grant_id, scope, expires_at) \
             SELECT $6, id, $7, $8 FROM redeemed WHERE $6::bytea IS NOT NULL) \
             SELECT EXISTS (SELECT 1 FROM redeemed)",
        )
        .bind(now)
        .bind(grant_id)
        .bind(&access.hash)
        .bind(&access.scope)
        .bind(access.expires_at)
        .bind(refresh.map(|r| r.0))
        .bind(refresh.map(|r| r.1))
        .bind(refresh.map(|r| r.2))
        .fetch_one(&self.pool)
        .await?;
        Ok(redeemed)
    }

    async fn revoke_grant(&self, grant_id: i64, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        revoke_grants(&mut tx, "id", grant_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn access_token(&self, hash: &[u8], now: Timestamp) -> StoreResult<Option<AccessTokenInfo>> {
        self.batches.access_tokens.call((hash.to_vec(), now)).await
    }

    async fn revoke_access_token(&self, hash: &[u8]) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE hash = $1").bind(hash).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn refresh_token(&self, hash: &[u8]) -> StoreResult<Option<RefreshTokenInfo>> {
        let row = sqlx::query(&format!(
            "SELECT t.scope AS token_scope, t.expires_at AS token_expires_at, t.used_at AS token_used_at, \
             {GRANT_COLUMNS}, {USER_COLUMNS} FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id \
             JOIN users u ON u.id = g.user_id WHERE t.hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(RefreshTokenInfo {
            scope: row.try_get("token_scope")?,
            expires_at: row.try_get("token_expires_at")?,
            used: row.try_get::<Option<i64>, _>("token_used_at")?.is_some(),
            grant: grant_from_row(&row)?,
            user: user_from_row(&row)?,
        }))
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        now: Timestamp,
        access: &NewToken,
        refresh: &NewToken,
    ) -> StoreResult<bool> {
        // One statement. The grant is share-locked first: a revocation running meanwhile either committed
        // first (the grant is seen revoked and nothing changes) or waits until these tokens are stored
        // (and then deletes them). The one rotation that finds the token unused wins; a concurrent one
        // waits for its row lock and then finds it used (reuse).
        let rotated: bool = sqlx::query_scalar(
            "WITH live AS (SELECT g.id FROM grants g WHERE g.id = (SELECT grant_id FROM refresh_tokens WHERE hash = $2) \
             AND g.revoked_at IS NULL FOR SHARE), \
             rotated AS (UPDATE refresh_tokens t SET used_at = $1 FROM live WHERE t.hash = $2 AND t.used_at IS NULL \
             AND t.grant_id = live.id RETURNING t.grant_id), \
             access AS (INSERT INTO access_tokens (hash, grant_id, scope, expires_at) \
             SELECT $3, grant_id, $4, $5 FROM rotated), \
             refresh AS (INSERT INTO refresh_tokens (hash, grant_id, scope, expires_at) \
             SELECT $6, grant_id, $7, $8 FROM rotated) \
             SELECT EXISTS (SELECT 1 FROM rotated)",
        )
        .bind(now)
        .bind(old_hash)
        .bind(&access.hash)
        .bind(&access.scope)
        .bind(access.expires_at)
        .bind(&refresh.hash)
        .bind(&refresh.scope)
        .bind(refresh.expires_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(rotated)
    }

    async fn throttle_counts(&self, keys: &[String]) -> StoreResult<Vec<(String, ThrottleCount)>> {
        let rows: Vec<(String, i64, i64, i64)> =
            sqlx::query_as("SELECT key, failures, leaked_at, blocked_until FROM throttle_counts WHERE key = ANY($1)")
                .bind(keys)
                .fetch_all(&self.pool)
                .await?;
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
        let mut tx = self.pool.begin().await?;
        // Locked in key order, so that two replicas updating overlapping keys cannot deadlock; a row is
        // made first if missing, so that there is one to lock (a zero count means the same as none).
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        for i in order {
            let key = &keys[i];
            sqlx::query(
                "INSERT INTO throttle_counts (key, failures, leaked_at, blocked_until, updated_at) \
                 VALUES ($1, 0, 0, 0, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let (failures, leaked_at, blocked_until): (i64, i64, i64) = sqlx::query_as(
                "SELECT failures, leaked_at, blocked_until FROM throttle_counts WHERE key = $1 FOR UPDATE",
            )
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            let old =
                (failures > 0 || blocked_until > 0).then_some(ThrottleCount { failures, leaked_at, blocked_until });
            match update(i, old) {
                Some(c) => {
                    sqlx::query(
                        "UPDATE throttle_counts SET failures = $2, leaked_at = $3, blocked_until = $4, updated_at = $5 \
                         WHERE key = $1",
                    )
                    .bind(key)
                    .bind(c.failures)
                    .bind(c.leaked_at)
                    .bind(c.blocked_until)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM throttle_counts WHERE key = $1").bind(key).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn forgive_throttle_counts(&self, keys: &[String], sign_in: Option<&str>, now: Timestamp) -> StoreResult<()> {
        // Plain deletes and an upsert of the name's own row: nothing shared is locked, so a class
        // signing in at once from one address does not queue on that address's count.
        let mut tx = self.pool.begin().await?;
        if !keys.is_empty() {
            sqlx::query("DELETE FROM throttle_counts WHERE key = ANY($1)").bind(keys).execute(&mut *tx).await?;
        }
        if let Some(key) = sign_in {
            sqlx::query(
                "INSERT INTO known_sign_ins (key, at) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET at = excluded.at",
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
        Ok(sqlx::query_scalar("SELECT at FROM known_sign_ins WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let ours: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PURGE_LOCK).fetch_one(&mut *tx).await?;
        if !ours {
            // Another replica is purging right now.
            return Ok(());
        }
        for sql in [
            "DELETE FROM authorization_requests WHERE expires_at <= $1",
            "DELETE FROM sessions WHERE expires_at <= $1",
            "DELETE FROM access_tokens WHERE expires_at <= $1",
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
            // Counts nobody touched for two days have leaked away, whatever their policy.
            "DELETE FROM throttle_counts WHERE updated_at <= $1 - 2 * 86400",
            "DELETE FROM known_sign_ins WHERE at <= $1 - 30 * 86400",
            // A grant is kept while any token of it lives, and a day past its code so replays are recognised.
            "DELETE FROM grants WHERE code_expires_at <= $1 - 86400 \
             AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = grants.id) \
             AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = grants.id)",
        ] {
            sqlx::query(sql).bind(now).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        // A hot standby answers reads but refuses every write: not ready.
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&self.pool).await?;
        if standby {
            return Err(StoreError::Database("the database is a read-only standby".into()));
        }
        Ok(())
    }
}
