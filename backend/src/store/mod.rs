//! The one storage interface every handler and CLI command goes through, and its records.
//!
//! SQLite ([`sqlite::SqliteStore`]) is the embedded default; PostgreSQL ([`postgres::PostgresStore`])
//! is for several replicas sharing one database. Both pass the same tests.

/// Readers of the records whose columns are the same in both stores, for one store's row type, its
/// column getter and that getter's error.
macro_rules! record_readers {
    ($row:ty, $get:ident, $error:ty) => {
        fn key_from_row(row: &$row) -> Result<StoredKey, $error> {
            Ok(StoredKey {
                kid: row.$get("kid")?,
                alg: row.$get("alg")?,
                private_key: row.$get("private_key")?,
                created_at: row.$get("created_at")?,
            })
        }

        fn request_from_row(row: &$row) -> Result<AuthorizationRequest, $error> {
            Ok(AuthorizationRequest {
                id: row.$get("id")?,
                client_id: row.$get("client_id")?,
                redirect_uri: row.$get("redirect_uri")?,
                scope: row.$get("scope")?,
                state: row.$get("state")?,
                nonce: row.$get("nonce")?,
                code_challenge: row.$get("code_challenge")?,
                expires_at: row.$get("expires_at")?,
                browser_hash: row.$get("browser_hash")?,
                client_network: row.$get("client_network")?,
            })
        }

        fn upstream_login_from_row(row: &$row) -> Result<UpstreamLogin, $error> {
            Ok(UpstreamLogin {
                upstream: row.$get("upstream")?,
                state_hash: row.$get("upstream_state_hash")?,
                nonce: row.$get("upstream_nonce")?,
                verifier: row.$get("upstream_verifier")?,
            })
        }

        fn identity_from_row(row: &$row) -> Result<UpstreamIdentity, $error> {
            Ok(UpstreamIdentity {
                upstream: row.$get("upstream")?,
                subject: row.$get("subject")?,
                user_id: row.$get("identity_user_id")?,
                name: row.$get("identity_name")?,
                locator: row.$get("locator")?,
                created_at: row.$get("identity_created_at")?,
                last_login_at: row.$get("last_login_at")?,
                checked_at: row.$get("checked_at")?,
            })
        }

        fn grant_from_row(row: &$row) -> Result<Grant, $error> {
            Ok(Grant {
                id: row.$get("id")?,
                client_id: row.$get("client_id")?,
                user_id: row.$get("user_id")?,
                scope: row.$get("scope")?,
                nonce: row.$get("nonce")?,
                auth_time: row.$get("auth_time")?,
                redirect_uri: row.$get("redirect_uri")?,
                code_challenge: row.$get("code_challenge")?,
                code_expires_at: row.$get("code_expires_at")?,
                code_used_at: row.$get("code_used_at")?,
                revoked_at: row.$get("revoked_at")?,
            })
        }
    };
}

/// An upstream identity's columns (table alias `i`), named apart from a user's.
const IDENTITY_COLUMNS: &str = "i.upstream, i.subject, i.user_id AS identity_user_id, i.name AS identity_name, \
     i.locator, i.created_at AS identity_created_at, i.last_login_at, i.checked_at";

mod batch;
pub mod copy;
pub mod metered;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

/// Seconds since the Unix epoch.
pub type Timestamp = i64;

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. a username that exists in another case).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The record to change does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database failed, or could not be reached.
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(Box<dyn std::error::Error + Send + Sync>),
    /// The database's files are not private to Postern.
    #[error("{0}")]
    Unsafe(String),
    /// Refused: it would overwrite or misread data (e.g. copying into a database that is not empty).
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    /// Whether the database could not be reached or is going away (rather than refusing a
    /// statement): a restart or failover, worth retrying.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else { return false };
        if let Some(batch::Shared(error)) = e.downcast_ref::<batch::Shared>() {
            return error.is_unavailable();
        }
        // SQLite: another process held the write lock for longer than a write waits.
        if e.downcast_ref::<rusqlite::Error>().is_some_and(sqlite::is_busy) {
            return true;
        }
        match e.downcast_ref::<sqlx::Error>() {
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            // PostgreSQL's connection exceptions (08…), operator intervention such as a shutdown
            // (57P…), and a write sent to a standby after a failover (25006).
            Some(sqlx::Error::Database(db)) => {
                db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P") || code == "25006")
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(Box::new(e))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(Box::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(Box::new(e))
    }
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where Postern keeps its state: the `database` setting.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (a path, or `sqlite://path`), created on first start.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), which may hold a password.
    Postgres(String),
}

impl Database {
    /// Reads the `database` setting.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            url::Url::parse(value).map_err(|e| format!("`database` is not a valid PostgreSQL URL: {e}"))?;
            return Ok(Database::Postgres(value.to_owned()));
        }
        let path = value.strip_prefix("sqlite://").or_else(|| value.strip_prefix("sqlite:")).unwrap_or(value);
        if path.is_empty() || path.contains("://") {
            return Err(format!("`database` must be a file path, sqlite://path or postgres://…, not `{value}`"));
        }
        Ok(Database::Sqlite(PathBuf::from(path)))
    }
}

/// Shown in logs and errors: a PostgreSQL URL without its password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => match url::Url::parse(url) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("…"));
                    }
                    // Query parameters may carry a password too (`?password=`).
                    url.set_query(None);
                    write!(f, "{url}")
                }
                Err(_) => f.write_str("postgres://…"),
            },
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

impl<'de> serde::Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Database::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// Opens the store `database` names, applying its pending migrations.
pub async fn open(database: &Database) -> StoreResult<Arc<dyn Store>> {
    Ok(match database {
        Database::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(path).await?),
        Database::Postgres(url) => Arc::new(postgres::PostgresStore::open(url).await?),
    })
}

/// A person who can sign in.
#[derive(Debug, Clone)]
pub struct User {
    /// Internal row id.
    pub id: i64,
    /// Lower-case login name; also the `sub` claim.
    pub username: String,
    /// Human-readable name (`name` claim).
    pub display_name: String,
    /// E-mail address, if known.
    pub email: Option<String>,
    /// Whether the address was verified by the operator.
    pub email_verified: bool,
    /// Group names, sorted.
    pub groups: Vec<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// A disabled user cannot sign in and their tokens stop working.
    pub disabled: bool,
    /// Creation time.
    pub created_at: Timestamp,
}

impl User {
    /// Whether the user has a password of Postern's own (people who sign in only through an upstream
    /// have none).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Lower-case login name.
    pub username: String,
    /// Human-readable name.
    pub display_name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// Group names.
    pub groups: Vec<String>,
    /// argon2id PHC string; empty for a user without a password of Postern's own.
    pub password_hash: String,
}

/// A person's identity at an upstream provider, and the Postern user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// The upstream's id in the configuration (`[upstreams.<id>]`).
    pub upstream: String,
    /// The upstream's stable id for the person (LDAP `entryUUID`, OpenID Connect `sub`).
    pub subject: String,
    /// The Postern user.
    pub user_id: i64,
    /// The name the upstream knows them by (LDAP login name, OpenID Connect `preferred_username`).
    pub name: String,
    /// Where to read the person again (LDAP: the entry's DN).
    pub locator: Option<String>,
    /// When the identity was first seen or linked.
    pub created_at: Timestamp,
    /// The last sign-in through the upstream.
    pub last_login_at: Option<Timestamp>,
    /// When the upstream last confirmed the person and their groups.
    pub checked_at: Timestamp,
}

/// What an upstream says about a person, copied onto their Postern user at every sign-in and check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProfile {
    /// The name the upstream knows them by.
    pub name: String,
    /// Where to read them again.
    pub locator: Option<String>,
    /// Display name.
    pub display_name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Whether the upstream vouches for the address.
    pub email_verified: bool,
    /// Groups, already mapped (prefix, allow-list, static groups), sorted.
    pub groups: Vec<String>,
}

/// Where a client's registration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// Declared in the configuration file; re-synchronised at every start.
    Config,
    /// Registered with `postern client add`.
    Cli,
}

impl ClientSource {
    fn as_str(self) -> &'static str {
        match self {
            ClientSource::Config => "config",
            ClientSource::Cli => "cli",
        }
    }
}

/// A registered relying party.
#[derive(Debug, Clone)]
pub struct Client {
    /// The `client_id`.
    pub id: String,
    /// Name shown on the login page.
    pub name: String,
    /// argon2id PHC string of the secret; `None` for public clients.
    pub secret_hash: Option<String>,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes the client may be granted.
    pub scopes: Vec<String>,
    /// Public clients do not authenticate and must use PKCE.
    pub public: bool,
    /// Always include `groups`.
    pub groups_claim: bool,
    /// Refuse authorization requests without PKCE.
    pub require_pkce: bool,
    /// Issue refresh tokens.
    pub refresh_tokens: bool,
    /// Configuration file or CLI.
    pub source: ClientSource,
}

/// A signing key as stored: the private key in PKCS#8 DER, sealed with the key-encryption key.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// JWS algorithm name.
    pub alg: String,
    /// PKCS#8 v1 DER, sealed (see `kek`).
    pub private_key: Vec<u8>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A validated authorization request waiting for the user to sign in.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    /// Key of the opaque handle given to the login page (see `tokens::handle_key`).
    pub id: String,
    /// Requesting client.
    pub client_id: String,
    /// The exact registered redirect URI the request named.
    pub redirect_uri: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Client's `state`, returned byte for byte.
    pub state: Option<String>,
    /// Client's `nonce`, carried into the id_token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// Expiry time.
    pub expires_at: Timestamp,
    /// SHA-256 of the browser-binding cookie of the browser that started the request.
    pub browser_hash: Option<Vec<u8>>,
    /// The network the request came from (an IPv4 address, an IPv6 /64).
    pub client_network: Option<String>,
}

/// A pending request's sign-in at an upstream OpenID Connect provider, under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLogin {
    /// The upstream's id.
    pub upstream: String,
    /// SHA-256 of the `state` sent.
    pub state_hash: Vec<u8>,
    /// The `nonce` the id_token must carry.
    pub nonce: String,
    /// The PKCE verifier of the challenge sent.
    pub verifier: String,
}

/// How many pending sign-in requests one network, and one browser, may hold at a time, so that a flood
/// of `/authorize` cannot fill the disk; past it their oldest make room. Nothing is refused: a page
/// that fires requests from a student's browser must not lock out the rest of the campus NAT.
#[derive(Debug, Clone, Copy)]
pub struct PendingLimits {
    /// Requests per network.
    pub per_network: i64,
    /// Requests per browser.
    pub per_browser: i64,
}

/// Who signed in to a pending request, and the ticket that completes it.
#[derive(Debug, Clone)]
pub struct RequestLogin {
    /// The user.
    pub user_id: i64,
    /// When they entered their password.
    pub auth_time: Timestamp,
    /// SHA-256 of the one-time ticket.
    pub ticket_hash: Vec<u8>,
    /// When the ticket expires.
    pub expires_at: Timestamp,
}

/// A browser's single-sign-on session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The signed-in user.
    pub user_id: i64,
    /// When the user last entered their password.
    pub auth_time: Timestamp,
    /// Expiry time.
    pub expires_at: Timestamp,
}

/// One authorization: the code it started with and every token descended from it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Row id.
    pub id: i64,
    /// Client the code was issued to.
    pub client_id: String,
    /// User who authorized.
    pub user_id: i64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// `nonce` of the authorization request.
    pub nonce: Option<String>,
    /// When the user authenticated.
    pub auth_time: Timestamp,
    /// Redirect URI the code was sent to.
    pub redirect_uri: String,
    /// PKCE challenge the code is bound to.
    pub code_challenge: Option<String>,
    /// Expiry of the authorization code.
    pub code_expires_at: Timestamp,
    /// When the code was redeemed, if it was.
    pub code_used_at: Option<Timestamp>,
    /// When the grant was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// A grant to create together with its authorization code.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// Client.
    pub client_id: String,
    /// User.
    pub user_id: i64,
    /// Granted scopes.
    pub scope: String,
    /// Request nonce.
    pub nonce: Option<String>,
    /// Authentication time.
    pub auth_time: Timestamp,
    /// Redirect URI.
    pub redirect_uri: String,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// SHA-256 of the code.
    pub code_hash: Vec<u8>,
    /// Code expiry.
    pub code_expires_at: Timestamp,
}

/// A token to store, by hash only.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// Scopes the token carries.
    pub scope: String,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// A live access token with what it grants.
#[derive(Debug, Clone)]
pub struct AccessTokenInfo {
    /// Scopes.
    pub scope: String,
    /// Client it was issued to.
    pub client_id: String,
    /// Whether that client always receives the user's groups.
    pub client_groups_claim: bool,
    /// User it speaks for.
    pub user: User,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// A refresh token as found by hash.
#[derive(Debug, Clone)]
pub struct RefreshTokenInfo {
    /// Scopes.
    pub scope: String,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Whether it was already exchanged (rotation).
    pub used: bool,
    /// The grant it belongs to.
    pub grant: Grant,
    /// The user it speaks for.
    pub user: User,
}

/// A throttle's count of failures under one key, as every process sharing the store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleCount {
    /// Failures counted (and not yet leaked away).
    pub failures: i64,
    /// When the count last leaked, in Unix milliseconds.
    pub leaked_at: i64,
    /// Until when attempts are refused, in Unix milliseconds.
    pub blocked_until: i64,
}

/// How [`Store::update_throttle_counts`] changes the count of the `i`-th key: from what is stored
/// (`None`: nothing) to what is to be stored (`None`: nothing).
pub type ThrottleUpdate<'a> = dyn Fn(usize, Option<ThrottleCount>) -> Option<ThrottleCount> + Send + Sync + 'a;

/// The storage interface.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a user; `Conflict` if the name exists in any case.
    async fn create_user(&self, user: NewUser, now: Timestamp) -> StoreResult<User>;
    /// Finds a user by (lower-case) username.
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    /// Finds a user by id.
    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>>;
    /// All users, by name.
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Replaces a user's password hash and, in the same transaction, ends their sessions and revokes
    /// every grant: what the old password started ends with it.
    async fn set_password(&self, username: &str, password_hash: &str, now: Timestamp) -> StoreResult<()>;
    /// Replaces a password hash by a new hash of the same password (current argon2 parameters), unless
    /// the hash changed meanwhile; sessions and grants stay.
    async fn upgrade_password_hash(&self, user_id: i64, old_hash: &str, new_hash: &str) -> StoreResult<()>;
    /// Disables or enables a user; disabling also ends their sessions and revokes every grant.
    async fn set_disabled(&self, username: &str, disabled: bool, now: Timestamp) -> StoreResult<()>;
    /// Replaces a user's groups.
    async fn set_groups(&self, username: &str, groups: &[String]) -> StoreResult<()>;

    /// Finds an upstream identity and the user it belongs to.
    async fn upstream_identity(&self, upstream: &str, subject: &str) -> StoreResult<Option<(UpstreamIdentity, User)>>;
    /// A user's upstream identities, by upstream.
    async fn user_upstream_identities(&self, user_id: i64) -> StoreResult<Vec<UpstreamIdentity>>;
    /// Ends a user's sessions and revokes every grant (an upstream no longer vouches for them).
    async fn end_sessions_and_grants(&self, user_id: i64, now: Timestamp) -> StoreResult<()>;
    /// Every upstream identity, by user id then upstream.
    async fn list_upstream_identities(&self) -> StoreResult<Vec<UpstreamIdentity>>;
    /// Creates a user (no password: `user.password_hash` is ignored) with `identity` linked to it,
    /// atomically (`identity.user_id` is ignored). `Conflict("user")` if the name is taken in any case,
    /// `Conflict("upstream identity")` if the identity is linked already.
    async fn create_upstream_user(
        &self,
        user: NewUser,
        identity: &UpstreamIdentity,
        now: Timestamp,
    ) -> StoreResult<User>;
    /// Links an upstream identity to an existing user; `Conflict("upstream identity")` if it is linked
    /// to anyone already.
    async fn link_upstream_identity(&self, identity: &UpstreamIdentity) -> StoreResult<()>;
    /// Records what the upstream said about a linked person: their user's name, e-mail and groups
    /// become the profile's, the identity is marked checked now (and signed in now, with `sign_in`).
    async fn record_upstream_profile(
        &self,
        upstream: &str,
        subject: &str,
        profile: &UpstreamProfile,
        sign_in: bool,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Creates or replaces a client.
    async fn upsert_client(&self, client: &Client, now: Timestamp) -> StoreResult<()>;
    /// Finds a client.
    async fn client(&self, id: &str) -> StoreResult<Option<Client>>;
    /// All clients, by id.
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Removes a client and everything issued to it; false if there was none.
    async fn remove_client(&self, id: &str) -> StoreResult<bool>;

    /// All signing keys, oldest first (in the order they were stored when created in the same second).
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Stores a new signing key.
    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()>;
    /// Stores `key` unless a key of its algorithm is stored already, atomically (of processes starting
    /// together on an empty database, one key is kept); whether it was stored.
    async fn insert_signing_key_if_none(&self, key: &StoredKey) -> StoreResult<bool>;
    /// Replaces a signing key's stored (sealed) private key.
    async fn set_signing_key_material(&self, kid: &str, private_key: &[u8]) -> StoreResult<()>;
    /// Deletes a signing key (retired: every token it signed has expired).
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()>;

    /// Stores a pending authorization request within `limits`, atomically: its network's and its
    /// browser's oldest requests that nobody has signed in to yet make room.
    async fn insert_authorization_request(
        &self,
        request: &AuthorizationRequest,
        limits: PendingLimits,
    ) -> StoreResult<()>;
    /// Finds a pending request that has not expired and nobody has signed in to yet.
    async fn authorization_request(&self, id: &str, now: Timestamp) -> StoreResult<Option<AuthorizationRequest>>;
    /// Records that `user_id` signed in to a pending request and attaches a one-time ticket; false if
    /// the request is gone, expired or already signed in to (so only one login completes it).
    async fn authenticate_request(&self, id: &str, login: &RequestLogin, now: Timestamp) -> StoreResult<bool>;
    /// Records that a pending request's browser went to an upstream provider (replacing an earlier
    /// start); false if the request is gone, expired or already signed in to.
    async fn start_upstream_login(&self, id: &str, login: &UpstreamLogin, now: Timestamp) -> StoreResult<bool>;
    /// Takes, once, the upstream sign-in whose `state` hashes to `state_hash`, with its request if that
    /// is still pending (not expired, nobody signed in).
    async fn take_upstream_login(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, UpstreamLogin)>>;
    /// Removes and returns the signed-in request a live ticket belongs to.
    async fn redeem_ticket(
        &self,
        ticket_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, RequestLogin)>>;

    /// Creates a session under the hash of its cookie value.
    async fn create_session(&self, id_hash: &[u8], session: &Session, now: Timestamp) -> StoreResult<()>;
    /// Finds a live session (not expired, used within `idle` seconds) whose user is enabled, and
    /// records this use.
    async fn session(&self, id_hash: &[u8], now: Timestamp, idle: Timestamp) -> StoreResult<Option<Session>>;
    /// Ends a session.
    async fn delete_session(&self, id_hash: &[u8]) -> StoreResult<()>;

    /// Creates a grant with its authorization code.
    async fn create_grant(&self, grant: &NewGrant, now: Timestamp) -> StoreResult<i64>;
    /// Finds a grant by the hash of its code, with the user it was issued to (one read: the code
    /// exchange needs both).
    async fn grant_by_code(&self, code_hash: &[u8]) -> StoreResult<Option<(Grant, User)>>;
    /// Marks the code used and stores the tokens, atomically; false if the code was already used.
    async fn redeem_code(
        &self,
        grant_id: i64,
        now: Timestamp,
        access: &NewToken,
        refresh: Option<&NewToken>,
    ) -> StoreResult<bool>;
    /// Revokes a grant and so every token descended from it.
    async fn revoke_grant(&self, grant_id: i64, now: Timestamp) -> StoreResult<()>;

    /// Finds a live access token of an unrevoked grant and an enabled user.
    async fn access_token(&self, hash: &[u8], now: Timestamp) -> StoreResult<Option<AccessTokenInfo>>;
    /// Deletes one access token; true if it existed.
    async fn revoke_access_token(&self, hash: &[u8]) -> StoreResult<bool>;
    /// Finds a refresh token by hash, used or not, with its grant and user.
    async fn refresh_token(&self, hash: &[u8]) -> StoreResult<Option<RefreshTokenInfo>>;
    /// Marks a refresh token used and stores its successors, atomically; false if already used.
    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        now: Timestamp,
        access: &NewToken,
        refresh: &NewToken,
    ) -> StoreResult<bool>;

    /// The throttle counts stored under `keys`, by key (keys without one are absent).
    async fn throttle_counts(&self, keys: &[String]) -> StoreResult<Vec<(String, ThrottleCount)>>;
    /// Replaces each key's throttle count by what `update` makes of it, atomically: updates from several
    /// processes to the same key apply one after the other, none lost.
    async fn update_throttle_counts(
        &self,
        keys: &[String],
        update: &ThrottleUpdate<'_>,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// After a right secret: removes the throttle counts under `keys` and, with `sign_in`, records a
    /// sign-in under that key (a name and the network it came from), in one write.
    async fn forgive_throttle_counts(&self, keys: &[String], sign_in: Option<&str>, now: Timestamp) -> StoreResult<()>;
    /// When a sign-in was last recorded under `key`, if ever (or since it was purged).
    async fn last_sign_in(&self, key: &str) -> StoreResult<Option<Timestamp>>;

    /// Deletes expired requests, sessions, codes and tokens. Several processes sharing the store may
    /// call it at once: one of them does the work, the others return.
    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()>;

    /// Succeeds when the store can take a write now (readiness).
    async fn ping(&self) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_setting_names_a_file_or_a_postgres_url_and_never_shows_its_password() {
        assert_eq!(Database::parse("postern.db").unwrap(), Database::Sqlite("postern.db".into()));
        assert_eq!(Database::parse("sqlite:///var/lib/p.db").unwrap(), Database::Sqlite("/var/lib/p.db".into()));
        assert_eq!(Database::parse("sqlite:p.db").unwrap(), Database::Sqlite("p.db".into()));
        let url = "postgres://postern:s3cret@db.example:5432/postern?sslmode=verify-full&password=s3cret";
        let database = Database::parse(url).unwrap();
        assert_eq!(database, Database::Postgres(url.into()));
        for shown in [database.to_string(), format!("{database:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("db.example:5432/postern"), "{shown}");
        }
        assert!(Database::parse("postgresql://db.example/postern").is_ok());
        for bad in ["", "mysql://db/x", "sqlite://", "postgres://[bad"] {
            assert!(Database::parse(bad).is_err(), "{bad}");
        }
    }
}
