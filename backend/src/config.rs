//! Configuration: one TOML file plus `POSTERN_*` environment overrides, validated once at start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::keys::Algorithm;
use crate::store::Database;

/// Environment variable prefix; nested keys are separated by `__`
/// (`POSTERN_TOKENS__SIGNING_ALG`, `POSTERN_CLIENTS__JUPYTERHUB__SECRET`).
pub const ENV_PREFIX: &str = "POSTERN_";

/// The configuration's top-level keys: the only `POSTERN_*` environment variables read (with
/// `POSTERN_CONFIG`, the file's name). Any other is ignored: a script's own `POSTERN_BIN`, or the
/// `POSTERN_PORT`, `POSTERN_SERVICE_HOST`, … that Kubernetes gives every pod of a Service named postern.
const KEYS: &[&str] = &[
    "issuer",
    "listen",
    "trusted_proxies",
    "database",
    "key_encryption_key_file",
    "key_encryption_key",
    "ui",
    "tokens",
    "session",
    "argon2",
    "metrics",
    "clients",
    "upstreams",
    "login",
];

/// Everything Postern reads from its configuration file and environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public URL of this provider, exactly as relying parties see it (scheme, host, port, path).
    pub issuer: Url,
    /// Address the HTTP server binds to.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed, for throttling and
    /// logs: addresses or CIDR ranges (`"127.0.0.1"`, `"172.28.0.0/16"`).
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// The store: an SQLite file's path (or `sqlite://path`), or a `postgres://…` URL.
    #[serde(default = "defaults::database")]
    pub database: Database,
    /// File of the key-encryption key that seals private keys in the database (generated owner-only
    /// on first start); default `postern.kek` beside the configuration file.
    #[serde(default)]
    pub key_encryption_key_file: Option<PathBuf>,
    /// The key-encryption key itself (base64; several, newest first, during a rotation), instead of the
    /// file: `POSTERN_KEY_ENCRYPTION_KEY`.
    #[serde(default)]
    pub key_encryption_key: Option<Secret>,
    /// The configuration file this was read from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The login UI.
    #[serde(default)]
    pub ui: UiSettings,
    /// Token lifetimes and signing.
    #[serde(default)]
    pub tokens: TokenConfig,
    /// The browser's single-sign-on session.
    #[serde(default)]
    pub session: SessionConfig,
    /// Password hashing cost.
    #[serde(default)]
    pub argon2: Argon2Config,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Relying parties declared in the file, keyed by client id.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientConfig>,
    /// Where else people may sign in (LDAP directories, OpenID Connect providers), keyed by an id of
    /// the operator's choosing.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// What the login page offers.
    #[serde(default)]
    pub login: LoginConfig,
}

/// What the login page offers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// The username and password form (local accounts and LDAP directories); off, the page shows only
    /// the upstream providers' buttons.
    pub local_accounts: bool,
    /// Send the browser straight to the one OpenID Connect upstream, without showing the login page
    /// (needs `local_accounts = false` and exactly one such upstream).
    pub auto_redirect: bool,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self { local_accounts: true, auto_redirect: false }
    }
}

/// An upstream identity provider (`[upstreams.<id>]`), by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum UpstreamConfig {
    /// An LDAP directory (OpenLDAP, Active Directory) checked by the password form.
    Ldap(Box<LdapConfig>),
    /// An OpenID Connect provider the login page offers a button for.
    Oidc(Box<OidcConfig>),
}

/// An OpenID Connect provider: Postern is its relying party (code flow, PKCE, nonce, a verified id_token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The button reads "Continue with <name>".
    pub name: String,
    /// The provider's issuer, exactly as its discovery document spells it (a trailing `/` or not:
    /// kept as written, since the id_token's `iss` must match it character for character).
    pub issuer: String,
    /// Postern's client id there.
    pub client_id: String,
    /// Its secret (prefer `client_secret_file` or `POSTERN_UPSTREAMS__<ID>__CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// A file holding the secret (trailing newline ignored).
    pub client_secret_file: Option<PathBuf>,
    /// How the secret is sent: `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub client_auth: OidcClientAuth,
    /// Scopes asked for (`openid` is always added).
    #[serde(default = "defaults::oidc_scopes")]
    pub scopes: Vec<String>,
    /// The claim whose value becomes the username of a new account (else the e-mail's local part).
    #[serde(default = "defaults::oidc_username_claim")]
    pub username_claim: String,
    /// The display name's claim.
    #[serde(default = "defaults::oidc_name_claim")]
    pub name_claim: String,
    /// The e-mail address's claim.
    #[serde(default = "defaults::oidc_email_claim")]
    pub email_claim: String,
    /// The claim holding the person's groups, as a path (`groups`, `realm_access.roles`); none imported
    /// when unset.
    pub groups_claim: Option<String>,
    /// Only these groups are imported (all when empty), compared before `group_prefix`.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Put before every imported group's name, apart from `static_groups`.
    #[serde(default)]
    pub group_prefix: String,
    /// Groups every person from this provider gets.
    #[serde(default)]
    pub static_groups: Vec<String>,
    /// Create a Postern account at a person's first sign-in; when false, an operator links them first.
    #[serde(default = "defaults::yes")]
    pub provision: bool,
    /// Seconds any one request to the provider may take.
    #[serde(default = "defaults::oidc_timeout")]
    pub timeout: u64,
}

/// How Postern authenticates at an OpenID Connect provider's token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OidcClientAuth {
    /// HTTP Basic (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// In the form body.
    ClientSecretPost,
}

impl UpstreamConfig {
    /// What the login page and logs call it.
    pub fn display_name(&self) -> &str {
        match self {
            UpstreamConfig::Ldap(ldap) => &ldap.name,
            UpstreamConfig::Oidc(oidc) => &oidc.name,
        }
    }
}

/// An LDAP directory: find the person with a service account, then bind as them with their password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Shown to people (e.g. "Campus account").
    #[serde(default = "defaults::ldap_name")]
    pub name: String,
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls = true`.
    pub url: Url,
    /// Upgrade an `ldap://` connection with StartTLS before anything is sent.
    #[serde(default)]
    pub starttls: bool,
    /// CA certificates (PEM) that the directory's certificate must chain to; the system's when unset.
    pub ca_file: Option<PathBuf>,
    /// Accept plain `ldap://` without StartTLS: passwords then cross the network in the clear.
    #[serde(default)]
    pub allow_insecure: bool,
    /// The service account that searches for people; anonymous search when unset.
    pub bind_dn: Option<String>,
    /// Its password (prefer `bind_password_file` or `POSTERN_UPSTREAMS__<ID>__BIND_PASSWORD`).
    pub bind_password: Option<Secret>,
    /// A file holding its password (trailing newline ignored).
    pub bind_password_file: Option<PathBuf>,
    /// Where people are searched (subtree).
    pub user_base: String,
    /// Which entry is the person: `{username}` becomes the name typed, escaped (RFC 4515).
    #[serde(default = "defaults::ldap_user_filter")]
    pub user_filter: String,
    /// The attribute that identifies a person for good, whatever renames: `entryUUID` (OpenLDAP),
    /// `objectGUID` (Active Directory).
    #[serde(default = "defaults::ldap_id_attribute")]
    pub id_attribute: String,
    /// The attribute whose value becomes the Postern username of a new account.
    #[serde(default = "defaults::ldap_username_attribute")]
    pub username_attribute: String,
    /// The display name's attribute.
    #[serde(default = "defaults::ldap_name_attribute")]
    pub name_attribute: String,
    /// The e-mail address's attribute (vouched for by the directory: `email_verified` is true).
    #[serde(default = "defaults::ldap_email_attribute")]
    pub email_attribute: String,
    /// The person's attribute that lists their groups' DNs (`memberOf`), when `group_base` is unset.
    #[serde(default = "defaults::ldap_groups_attribute")]
    pub groups_attribute: String,
    /// Find groups by searching here instead (subtree), with `group_filter`.
    pub group_base: Option<String>,
    /// Which entries under `group_base` are the person's groups: `{dn}` becomes their DN, escaped.
    #[serde(default = "defaults::ldap_group_filter")]
    pub group_filter: String,
    /// The attribute of a group entry that names it (`cn`); for `memberOf`, the DN's first value.
    #[serde(default = "defaults::ldap_group_name_attribute")]
    pub group_name_attribute: String,
    /// Only these directory groups are imported (all when empty), compared before `group_prefix`.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Put before every imported group's name (e.g. `campus:`), apart from `static_groups`.
    #[serde(default)]
    pub group_prefix: String,
    /// Groups every person from this directory gets.
    #[serde(default)]
    pub static_groups: Vec<String>,
    /// Create a Postern account at a person's first sign-in; when false, an operator links them first.
    #[serde(default = "defaults::yes")]
    pub provision: bool,
    /// A refresh re-reads the person and their groups when the last read is older than this (seconds).
    #[serde(default = "defaults::ldap_recheck_interval")]
    pub recheck_interval: u64,
    /// While the directory cannot be reached, refreshes go on with the last groups read for this long
    /// (seconds since that read), then fail.
    #[serde(default = "defaults::ldap_offline_grace")]
    pub offline_grace: u64,
    /// Seconds any one connection or operation may take.
    #[serde(default = "defaults::ldap_timeout")]
    pub timeout: u64,
}

/// Where the login UI lives and how it presents itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// Public URL of the UI when it is served from another origin (split deployment); unset when
    /// Postern serves the UI itself on the issuer's origin.
    pub url: Option<Url>,
    /// Directory of the built UI (`trunk build --release` output) that Postern serves.
    pub dir: PathBuf,
    /// Product name shown by the UI.
    pub product_name: String,
    /// Logo image URL shown by the UI.
    pub logo_url: Option<String>,
    /// Register the UI's own "try a sign-in" client (`postern-ui`).
    pub self_test_client: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            url: None,
            dir: PathBuf::from("dist"),
            product_name: "Postern".into(),
            logo_url: None,
            self_test_client: true,
        }
    }
}

/// Client id of the UI's own relying party.
pub const SELF_TEST_CLIENT_ID: &str = "postern-ui";

/// Token lifetimes (seconds) and the id_token signing algorithm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// JWS algorithm for id_tokens: RS256, ES256 or EdDSA.
    pub signing_alg: Algorithm,
    /// Lifetime of access tokens and id_tokens.
    pub access_token_lifetime: u64,
    /// Lifetime of a refresh token; every rotation starts a new one.
    pub refresh_token_lifetime: u64,
    /// Longest a refresh-token family lives, from the sign-in that started it: rotation never extends it.
    pub refresh_max_lifetime: u64,
    /// Lifetime of an authorization code (at most 60).
    pub code_lifetime: u64,
    /// How long the login page may take to complete a pending authorization request.
    pub login_request_lifetime: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            signing_alg: Algorithm::RS256,
            access_token_lifetime: 900,
            refresh_token_lifetime: 14 * 24 * 3600,
            refresh_max_lifetime: 30 * 24 * 3600,
            code_lifetime: 60,
            login_request_lifetime: 600,
        }
    }
}

/// Prometheus metrics: off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the metrics listener (`GET /metrics`), apart from the public one; keep it private.
    pub listen: Option<SocketAddr>,
    /// Label sign-in and token counters with the client id (bounded by the clients registered).
    pub client_ids: bool,
}

/// SSO session settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Absolute lifetime of the SSO session in seconds, from the password login.
    pub lifetime: u64,
    /// The session ends after this many seconds without use.
    pub idle_timeout: u64,
    /// Name of the session cookie (prefixed `__Host-` when the issuer is https).
    pub cookie_name: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { lifetime: 8 * 3600, idle_timeout: 2 * 3600, cookie_name: "postern_session".into() }
    }
}

/// argon2id parameters; the defaults are OWASP's (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism.
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

/// A relying party declared in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Name shown on the login page.
    pub name: Option<String>,
    /// Plain secret (hashed before it is stored); prefer `secret_hash` or an environment variable.
    pub secret: Option<String>,
    /// argon2id PHC string of the secret, as printed by `postern hash-secret`.
    pub secret_hash: Option<String>,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact URIs the end-session endpoint may return to.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// A public client (browser or native app) has no secret and must use PKCE.
    #[serde(default)]
    pub public: bool,
    /// Scopes the client may be granted.
    #[serde(default = "defaults::scopes")]
    pub scopes: Vec<String>,
    /// Always put the user's groups into tokens and userinfo, even without the `groups` scope.
    #[serde(default)]
    pub groups_claim: bool,
    /// Require PKCE; only a confidential legacy client may turn this off.
    #[serde(default = "defaults::yes")]
    pub require_pkce: bool,
    /// Issue refresh tokens to this client.
    #[serde(default = "defaults::yes")]
    pub refresh_tokens: bool,
    /// Accept plain-http redirect URIs on network addresses (codes then travel unencrypted).
    #[serde(default)]
    pub allow_insecure_redirect_uris: bool,
}

/// A configured secret: never shown by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Addresses or CIDR ranges; a bare address is a range of one.
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an IP address or CIDR range")))
        })
        .collect()
}

mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn database() -> crate::store::Database {
        crate::store::Database::Sqlite(PathBuf::from("postern.db"))
    }
    pub fn scopes() -> Vec<String> {
        crate::claims::SUPPORTED_SCOPES.iter().map(|s| s.to_string()).collect()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn ldap_name() -> String {
        "Directory account".into()
    }
    pub fn ldap_user_filter() -> String {
        "(&(objectClass=person)(uid={username}))".into()
    }
    pub fn ldap_id_attribute() -> String {
        "entryUUID".into()
    }
    pub fn ldap_username_attribute() -> String {
        "uid".into()
    }
    pub fn ldap_name_attribute() -> String {
        "cn".into()
    }
    pub fn ldap_email_attribute() -> String {
        "mail".into()
    }
    pub fn ldap_groups_attribute() -> String {
        "memberOf".into()
    }
    pub fn ldap_group_filter() -> String {
        "(member={dn})".into()
    }
    pub fn ldap_group_name_attribute() -> String {
        "cn".into()
    }
    pub fn ldap_recheck_interval() -> u64 {
        300
    }
    pub fn ldap_offline_grace() -> u64 {
        24 * 3600
    }
    pub fn ldap_timeout() -> u64 {
        5
    }
    pub fn oidc_scopes() -> Vec<String> {
        ["openid", "profile", "email"].map(String::from).to_vec()
    }
    pub fn oidc_username_claim() -> String {
        "preferred_username".into()
    }
    pub fn oidc_name_claim() -> String {
        "name".into()
    }
    pub fn oidc_email_claim() -> String {
        "email".into()
    }
    pub fn oidc_timeout() -> u64 {
        10
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named on the command line does not exist.
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    /// Parsing or typing error; figment's message names the key.
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value that parses but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl Config {
    /// Reads the file (if given) and the environment, then validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Unknown keys in the file are errors (a typo must not pass silently); in the environment, only
        // variables naming one of Postern's keys are read.
        let env = Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            let known = KEYS.iter().any(|k| k.eq_ignore_ascii_case(top));
            if !known && !top.eq_ignore_ascii_case("config") {
                tracing::debug!(variable = %format!("{ENV_PREFIX}{}", key.as_str().to_ascii_uppercase()), "not a configuration key; ignored");
            }
            known
        });
        figment = figment.merge(env);
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.source = file.map(Path::to_path_buf);
        config.validate()?;
        Ok(config)
    }

    /// Where the key-encryption key file is: as configured, else `postern.kek` beside the
    /// configuration file (or in the working directory without one).
    pub fn key_encryption_key_path(&self) -> PathBuf {
        match (&self.key_encryption_key_file, &self.source) {
            (Some(path), _) => path.clone(),
            (None, Some(file)) => file.with_file_name("postern.kek"),
            (None, None) => PathBuf::from("postern.kek"),
        }
    }

    /// The key-encryption key: from `key_encryption_key` when set, else from its file, generated
    /// when missing if `create_if_missing` (at start-up, not when reloading).
    pub fn key_encryption_key(&self, create_if_missing: bool) -> Result<crate::kek::Kek, crate::kek::KekError> {
        match &self.key_encryption_key {
            Some(Secret(text)) => crate::kek::Kek::from_text(text, "key_encryption_key"),
            None => crate::kek::Kek::from_file(&self.key_encryption_key_path(), create_if_missing),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_base_url("issuer", &self.issuer)?;
        if let Some(ui) = &self.ui.url {
            check_base_url("ui.url", ui)?;
        }
        if self.ui.product_name.trim().is_empty() {
            return Err(invalid("ui.product_name", "must not be empty"));
        }
        if self.ui.self_test_client && self.clients.contains_key(SELF_TEST_CLIENT_ID) {
            return Err(invalid(
                format!("clients.{SELF_TEST_CLIENT_ID}"),
                "this id belongs to the UI's self-test client; pick another or set ui.self_test_client = false",
            ));
        }
        let t = &self.tokens;
        if !(1..=60).contains(&t.code_lifetime) {
            return Err(invalid("tokens.code_lifetime", "must be between 1 and 60 seconds"));
        }
        for (key, value) in [
            ("tokens.access_token_lifetime", t.access_token_lifetime),
            ("tokens.refresh_token_lifetime", t.refresh_token_lifetime),
            ("tokens.refresh_max_lifetime", t.refresh_max_lifetime),
            ("tokens.login_request_lifetime", t.login_request_lifetime),
            ("session.lifetime", self.session.lifetime),
            ("session.idle_timeout", self.session.idle_timeout),
        ] {
            // Ten years at most: past that, adding a lifetime to a time could overflow.
            if !(1..=10 * 365 * 24 * 3600).contains(&value) {
                return Err(invalid(key, "must be between 1 second and 10 years"));
            }
        }
        let name = &self.session.cookie_name;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(invalid("session.cookie_name", "must be letters, digits, '_' or '-'"));
        }
        crate::password::Passwords::new(&self.argon2).map_err(|e| invalid("argon2", e.to_string()))?;
        for (id, client) in &self.clients {
            client.validate(id)?;
        }
        for (id, upstream) in &self.upstreams {
            check_upstream_id(id).map_err(|m| invalid(format!("upstreams.{id}"), m))?;
            match upstream {
                UpstreamConfig::Ldap(ldap) => ldap.validate(id)?,
                UpstreamConfig::Oidc(oidc) => oidc.validate(id)?,
            }
        }
        let providers = self.upstreams.values().filter(|u| matches!(u, UpstreamConfig::Oidc(_))).count();
        if self.login.auto_redirect && (self.login.local_accounts || providers != 1) {
            return Err(invalid(
                "login.auto_redirect",
                "needs local_accounts = false and exactly one OpenID Connect upstream to send everyone to",
            ));
        }
        if !self.login.local_accounts && providers == 0 {
            return Err(invalid("login.local_accounts", "with no OpenID Connect upstream, nobody could sign in"));
        }
        Ok(())
    }

    /// The issuer identifier as it appears in tokens and discovery (no trailing slash).
    pub fn issuer_id(&self) -> &str {
        self.issuer.as_str().trim_end_matches('/')
    }

    /// Where the login page lives: the UI's URL, or the issuer when Postern serves the UI itself.
    pub fn ui_base(&self) -> &Url {
        self.ui.url.as_ref().unwrap_or(&self.issuer)
    }

    /// A URL under the issuer, e.g. `endpoint("/token")`.
    pub fn endpoint(&self, path: &str) -> String {
        join(&self.issuer, path)
    }

    /// A URL under the UI's base.
    pub fn ui_page(&self, path: &str) -> String {
        join(self.ui_base(), path)
    }

    /// The UI's origin when it differs from the issuer's (split deployment): the one origin CORS allows.
    pub fn cross_origin_ui(&self) -> Option<String> {
        let ui = self.ui.url.as_ref()?;
        (ui.origin() != self.issuer.origin()).then(|| ui.origin().ascii_serialization())
    }

    /// Whether Postern serves the built UI itself: no separate UI URL, and a build in `ui.dir`.
    pub fn serves_ui_files(&self) -> bool {
        self.ui.url.is_none() && self.ui.dir.join("index.html").is_file()
    }

    /// The session cookie's name: `__Host-` prefixed on https, so the browser pins it to this host.
    pub fn session_cookie(&self) -> String {
        self.cookie_name(&self.session.cookie_name)
    }

    /// The cookie that ties a pending sign-in to the browser that started it.
    pub fn browser_cookie(&self) -> String {
        self.cookie_name(&format!("{}_browser", self.session.cookie_name))
    }

    fn cookie_name(&self, base: &str) -> String {
        if self.secure_cookies() {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// Every origin the login API accepts requests from: the issuer's and the UI's.
    pub fn allowed_origins(&self) -> Vec<String> {
        let mut origins = vec![self.issuer.origin().ascii_serialization()];
        origins.extend(self.cross_origin_ui());
        origins
    }

    /// Whether cookies must carry `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.issuer.scheme() == "https"
    }
}

fn join(base: &Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

fn check_base_url(key: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid(key, "must be an http or https URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key, "must not have a query or fragment"));
    }
    if url.path() != "/" && url.path().ends_with('/') {
        return Err(invalid(key, "must not end with '/'"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key, "must not contain credentials"));
    }
    Ok(())
}

/// An upstream's id: 1-32 lower-case ASCII letters, digits or `-`, starting with a letter (it names
/// the upstream in URLs, logs and, on a name collision, in usernames).
pub fn check_upstream_id(id: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("an upstream id is 1-32 lower-case ASCII letters, digits or '-', starting with a letter".into())
    }
}

/// Checks an upstream's static groups and group prefix. (Both kinds repeat these fields rather than
/// share a flattened struct: serde cannot flatten into a struct that denies unknown fields.)
fn check_group_mapping(
    key: &dyn Fn(&str) -> String,
    static_groups: &[String],
    prefix: &str,
) -> Result<(), ConfigError> {
    for group in static_groups {
        crate::users::check_group(group).map_err(|m| invalid(key("static_groups"), m))?;
    }
    if !prefix.is_empty() {
        crate::users::check_group(&format!("{prefix}x")).map_err(|m| invalid(key("group_prefix"), m))?;
    }
    Ok(())
}

impl LdapConfig {
    fn validate(&self, id: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("upstreams.{id}.{field}");
        match self.url.scheme() {
            "ldaps" if self.starttls => return Err(invalid(key("starttls"), "StartTLS is for ldap:// URLs")),
            "ldaps" => {}
            "ldap" if self.starttls || self.allow_insecure => {}
            "ldap" => {
                return Err(invalid(
                    key("url"),
                    "ldap:// sends passwords in the clear: use ldaps://, or starttls = true (allow_insecure = true only for a test directory)",
                ))
            }
            _ => return Err(invalid(key("url"), "must be an ldaps:// or ldap:// URL")),
        }
        if self.url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(key("url"), "must name a host"));
        }
        if !matches!(self.url.path(), "" | "/") || self.url.query().is_some() {
            return Err(invalid(key("url"), "must be scheme://host[:port] only (the search base is user_base)"));
        }
        if self.name.trim().is_empty() {
            return Err(invalid(key("name"), "must not be empty"));
        }
        if self.bind_password.is_some() && self.bind_password_file.is_some() {
            return Err(invalid(key("bind_password"), "set either bind_password or bind_password_file, not both"));
        }
        if self.bind_dn.is_none() && (self.bind_password.is_some() || self.bind_password_file.is_some()) {
            return Err(invalid(key("bind_dn"), "a bind password needs the bind_dn it belongs to"));
        }
        if self.bind_dn.is_some() && self.bind_password.is_none() && self.bind_password_file.is_none() {
            return Err(invalid(key("bind_password"), "the service account needs bind_password or bind_password_file"));
        }
        if self.user_base.trim().is_empty() {
            return Err(invalid(key("user_base"), "must name where people are searched"));
        }
        if !self.user_filter.contains("{username}") {
            return Err(invalid(key("user_filter"), "must contain {username}"));
        }
        if ldap3::parse_filter(self.user_filter.replace("{username}", "x")).is_err() {
            return Err(invalid(key("user_filter"), "is not a valid LDAP filter (RFC 4515)"));
        }
        if self.group_base.is_some() {
            if !self.group_filter.contains("{dn}") {
                return Err(invalid(key("group_filter"), "must contain {dn}"));
            }
            if ldap3::parse_filter(self.group_filter.replace("{dn}", "x")).is_err() {
                return Err(invalid(key("group_filter"), "is not a valid LDAP filter (RFC 4515)"));
            }
        }
        for attribute in [
            &self.id_attribute,
            &self.username_attribute,
            &self.name_attribute,
            &self.email_attribute,
            &self.groups_attribute,
            &self.group_name_attribute,
        ] {
            if attribute.is_empty() || !attribute.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b';') {
                return Err(invalid(key("attributes"), format!("`{attribute}` is not an attribute name")));
            }
        }
        check_group_mapping(&key, &self.static_groups, &self.group_prefix)?;
        for (field, value) in [("recheck_interval", self.recheck_interval), ("offline_grace", self.offline_grace)] {
            if !(1..=10 * 365 * 24 * 3600).contains(&value) {
                return Err(invalid(key(field), "must be between 1 second and 10 years"));
            }
        }
        if !(1..=120).contains(&self.timeout) {
            return Err(invalid(key("timeout"), "must be between 1 and 120 seconds"));
        }
        Ok(())
    }
}

impl OidcConfig {
    fn validate(&self, id: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("upstreams.{id}.{field}");
        let issuer = Url::parse(&self.issuer).map_err(|e| invalid(key("issuer"), format!("not a URL: {e}")))?;
        let loopback = matches!(issuer.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(issuer.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || issuer.host_str() == Some("localhost");
        match issuer.scheme() {
            "https" => {}
            // A provider on the same machine (tests, a sidecar) may speak plain http.
            "http" if loopback => {}
            _ => return Err(invalid(key("issuer"), "must be an https URL")),
        }
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(invalid(key("issuer"), "must not have a query or fragment"));
        }
        if self.name.trim().is_empty() {
            return Err(invalid(key("name"), "must not be empty"));
        }
        if self.client_id.is_empty() {
            return Err(invalid(key("client_id"), "must not be empty"));
        }
        match (&self.client_secret, &self.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(key("client_secret"), "set either client_secret or client_secret_file, not both"))
            }
            (None, None) => return Err(invalid(key("client_secret"), "needs client_secret or client_secret_file")),
            _ => {}
        }
        for (field, claim) in [
            ("username_claim", &self.username_claim),
            ("name_claim", &self.name_claim),
            ("email_claim", &self.email_claim),
        ] {
            if claim.is_empty() {
                return Err(invalid(key(field), "must name a claim"));
            }
        }
        if self.groups_claim.as_deref().is_some_and(|c| c.is_empty() || c.split('.').any(str::is_empty)) {
            return Err(invalid(key("groups_claim"), "must be a claim name or a dotted path"));
        }
        check_group_mapping(&key, &self.static_groups, &self.group_prefix)?;
        if !(1..=120).contains(&self.timeout) {
            return Err(invalid(key("timeout"), "must be between 1 and 120 seconds"));
        }
        Ok(())
    }
}

impl ClientConfig {
    fn validate(&self, id: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("clients.{id}.{field}");
        crate::clients::check_client_id(id).map_err(|m| invalid(format!("clients.{id}"), m))?;
        match (self.public, &self.secret, &self.secret_hash) {
            (true, None, None) => {}
            (true, _, _) => return Err(invalid(key("secret"), "a public client has no secret")),
            (false, Some(_), Some(_)) => {
                return Err(invalid(key("secret"), "set either `secret` or `secret_hash`, not both"))
            }
            (false, None, None) => {
                return Err(invalid(key("secret"), "a confidential client needs `secret` or `secret_hash`"))
            }
            (false, Some(secret), None) if secret.len() < 16 => {
                return Err(invalid(key("secret"), "must be at least 16 characters"))
            }
            (false, None, Some(hash)) if !hash.starts_with("$argon2id$") => {
                return Err(invalid(key("secret_hash"), "must be an argon2id PHC string"))
            }
            _ => {}
        }
        if self.public && !self.require_pkce {
            return Err(invalid(key("require_pkce"), "a public client must use PKCE"));
        }
        if self.redirect_uris.is_empty() {
            return Err(invalid(key("redirect_uris"), "at least one redirect URI is required"));
        }
        for (i, uri) in self.redirect_uris.iter().enumerate() {
            crate::clients::check_redirect_uri(uri, self.allow_insecure_redirect_uris)
                .map_err(|m| invalid(format!("{}[{i}]", key("redirect_uris")), m))?;
        }
        for (i, uri) in self.post_logout_redirect_uris.iter().enumerate() {
            crate::clients::check_redirect_uri(uri, self.allow_insecure_redirect_uris)
                .map_err(|m| invalid(format!("{}[{i}]", key("post_logout_redirect_uris")), m))?;
        }
        crate::clients::check_scopes(&self.scopes).map_err(|m| invalid(key("scopes"), m))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_read_from_the_environment_is_a_configuration_key() {
        for key in KEYS {
            let toml = format!("issuer = \"https://a.example\"\n{key} = 1\n");
            let error = Figment::new().merge(Toml::string(&toml)).extract::<Config>().unwrap_err().to_string();
            assert!(!error.contains("unknown field"), "{key}: {error}");
        }
    }

    #[test]
    fn upstreams_are_checked_before_anything_starts() {
        let check = |toml: &str| {
            let config: Config = Figment::new()
                .merge(Toml::string(&format!("issuer = \"https://id.example\"\n{toml}")))
                .extract()
                .map_err(|e| e.to_string())?;
            config.validate().map_err(|e| e.to_string())
        };
        let oidc = |issuer: &str| {
            format!("[upstreams.uni]\nkind = \"oidc\"\nname = \"Uni\"\nissuer = \"{issuer}\"\nclient_id = \"p\"\nclient_secret = \"s\"\n")
        };
        let ldap = |url: &str, extra: &str| {
            format!("[upstreams.campus]\nkind = \"ldap\"\nurl = \"{url}\"\nuser_base = \"dc=x\"\n{extra}\n")
        };
        assert!(check(&oidc("https://sso.example/realms/x")).is_ok());
        assert!(check(&oidc("http://127.0.0.1:3000")).is_ok(), "a provider on loopback may be plain http");
        assert!(check(&oidc("http://sso.example")).unwrap_err().contains("https"));
        assert!(check(&ldap("ldaps://ldap.example", "")).is_ok());
        assert!(check(&ldap("ldap://ldap.example", "starttls = true")).is_ok());
        assert!(check(&ldap("ldap://ldap.example", "")).unwrap_err().contains("clear"));
        assert!(check(&ldap("ldap://ldap.example", "allow_insecure = true")).is_ok());
        assert!(check(&ldap("ldaps://ldap.example", "user_filter = \"(uid=x)\"")).unwrap_err().contains("{username}"));
        assert!(check(&ldap("ldaps://ldap.example", "user_filter = \"(uid={username}\""))
            .unwrap_err()
            .contains("RFC 4515"));
        assert!(check(&ldap("ldaps://ldap.example", "bind_password = \"x\"")).unwrap_err().contains("bind_dn"));
        assert!(check(&ldap("ldaps://ldap.example", "unknown = 1")).unwrap_err().contains("unknown"));
        assert!(check(&oidc("https://sso.example").replace("uni", "Not_An_Id")).unwrap_err().contains("upstream id"));
        assert!(check("[login]\nlocal_accounts = false").unwrap_err().contains("nobody could sign in"));
        let auto = format!("[login]\nauto_redirect = true\n{}", oidc("https://sso.example"));
        assert!(check(&auto).unwrap_err().contains("local_accounts = false"));
        let auto = format!("[login]\nauto_redirect = true\nlocal_accounts = false\n{}", oidc("https://sso.example"));
        assert!(check(&auto).is_ok());
    }
}
