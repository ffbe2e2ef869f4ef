//! Test kit: a real `postern` process on a temporary SQLite file, or on its own database in the
//! PostgreSQL server `POSTERN_TEST_POSTGRES` names (scripts/test runs the suite both ways), driven
//! over HTTP.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, ExtraTokenFields, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

mod directory;
mod provider;
#[allow(unused_imports)]
pub use directory::*;
#[allow(unused_imports)]
pub use provider::*;

/// JupyterHub's callback, as registered for the `jupyterhub` test client.
pub const HUB_CALLBACK: &str = "https://hub.example:8443/hub/oauth_callback";
/// Where the `jupyterhub` test client may be sent after a logout.
pub const HUB_LOGGED_OUT: &str = "https://hub.example:8443/hub/logged-out";
/// Secret of the `jupyterhub` test client.
pub const HUB_SECRET: &str = "hub-secret-0123456789abcdef";
/// Secret of the `legacy` test client (PKCE not required).
pub const LEGACY_SECRET: &str = "legacy-secret-0123456789abcdef";
/// Password every test user gets unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running Postern with its own directory, database and port.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub issuer: String,
    /// Where the process listens (the issuer unless a test gave another).
    pub local: String,
    child: Option<Child>,
    extra: String,
    ui_dir: PathBuf,
    /// `RUST_LOG` for the process.
    log_filter: String,
    /// The `database` setting: the SQLite file in `dir`, or a PostgreSQL database of its own.
    pub database: String,
}

/// The PostgreSQL server the suite runs on (`postgres://user@host:port`), or `None` for SQLite.
pub fn postgres_server() -> Option<String> {
    std::env::var("POSTERN_TEST_POSTGRES").ok().filter(|url| !url.is_empty())
}

/// Runs one statement on the PostgreSQL server's maintenance database, from any thread.
fn postgres_admin(server: &str, statement: String) {
    let url = format!("{server}/postgres");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            use sqlx::{Connection, Executor};
            let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
            db.execute(statement.as_str()).await.unwrap();
        })
    })
    .join()
    .unwrap();
}

/// Lets a server's PostgreSQL database take connections again, or refuses them and ends those it has
/// (as when the database goes away).
pub fn postgres_database_available(server: &Server, available: bool) {
    let (cluster, name) = server.database.rsplit_once('/').unwrap();
    postgres_admin(cluster, format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {available}"));
    if !available {
        postgres_admin(
            cluster,
            format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
        );
    }
}

/// A PostgreSQL cluster of a test's own (`scripts/postgres`), for tests that stop the database server;
/// removed when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// `postgres://user@host:port`, the same after a restart.
    pub url: String,
}

impl Cluster {
    fn script(args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres");
        let out = Command::new(script).args(args).output().unwrap();
        assert!(out.status.success(), "scripts/postgres {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = Self::script(&["start", dir.path().to_str().unwrap()]);
        Cluster { dir, url }
    }

    /// Shuts the server down (fast: connections are ended), keeping its data.
    pub fn halt(&self) {
        Self::script(&["halt", self.dir.path().to_str().unwrap()]);
    }

    /// Starts the halted server again, on the same port.
    pub fn resume(&self) {
        Self::script(&["start", self.dir.path().to_str().unwrap()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        Self::script(&["stop", self.dir.path().to_str().unwrap()]);
    }
}

/// The `database` setting for a new, empty store: `postern.db` in `dir`, or a new database on the
/// suite's PostgreSQL server.
pub fn new_database(dir: &Path) -> String {
    match postgres_server() {
        Some(server) => new_postgres_database(&server),
        None => dir.join("postern.db").display().to_string(),
    }
}

/// A new, empty database on the suite's PostgreSQL server; its URL.
pub fn new_postgres_database(server: &str) -> String {
    let name = format!("postern_test_{:016x}", rand::random::<u64>());
    postgres_admin(server, format!("CREATE DATABASE {name}"));
    format!("{server}/{name}")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// Starts a server whose config is the standard test config plus `extra` TOML (its top-level keys
    /// are placed first, its tables last).
    pub fn start(extra: &str) -> Self {
        Self::start_as(extra, None)
    }

    /// Like [`Server::start`], with a public issuer other than the local address (as behind a proxy).
    pub fn start_as(extra: &str, issuer: Option<&str>) -> Self {
        let server = Self::prepare(extra, issuer, None);
        server.spawn_and_wait()
    }

    /// A server that is not started yet, on `database` (or a new one).
    fn prepare(extra: &str, issuer: Option<&str>, database: Option<&str>) -> Self {
        Self::prepare_on(extra, issuer, database, free_port())
    }

    /// Like [`Server::start`], on a port chosen beforehand (for an upstream that must know the callback).
    pub fn start_on_port(extra: &str, port: u16) -> Self {
        Self::prepare_on(extra, None, None, port).spawn_and_wait()
    }

    fn prepare_on(extra: &str, issuer: Option<&str>, database: Option<&str>, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let local = format!("http://127.0.0.1:{port}");
        let issuer = issuer.map_or(local.clone(), str::to_owned);
        // No built UI unless a test asks for one: errors then come as Postern's own HTML page.
        let ui_dir = dir.path().join("no-ui");
        let database = database.map_or_else(|| new_database(dir.path()), str::to_owned);
        let server = Server {
            dir,
            port,
            issuer,
            local,
            child: None,
            extra: extra.to_owned(),
            ui_dir,
            log_filter: "info".into(),
            database,
        };
        server.write_config();
        server
    }

    fn spawn_and_wait(mut self) -> Self {
        self.spawn();
        self
    }

    /// Like [`Server::start`], on an SQLite file in its directory whichever store the suite runs on.
    pub fn start_on_sqlite(extra: &str) -> Self {
        let mut server = Self::prepare(extra, None, Some(""));
        server.database = server.db_path().display().to_string();
        server.write_config();
        server.spawn_and_wait()
    }

    /// Restarts the server on `database` (its data copied there first).
    pub fn move_to(&mut self, database: &str) {
        database.clone_into(&mut self.database);
        self.write_config();
        self.restart();
    }

    /// `n` replicas of one provider: one issuer (the first replica's address, as a load balancer's
    /// would be), one database, one key-encryption key (`extra` is given to each), started at once.
    pub fn replicas(n: usize, extra: &str) -> Vec<Server> {
        Self::replicas_on(&new_database(tempfile::tempdir().unwrap().path()), n, extra)
    }

    /// Like [`Server::replicas`], on `database`.
    pub fn replicas_on(database: &str, n: usize, extra: &str) -> Vec<Server> {
        let database = database.to_owned();
        let kek = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let extra = format!("key_encryption_key = \"{kek}\"\n{extra}");
        let first = Self::prepare(&extra, None, Some(&database));
        let issuer = first.issuer.clone();
        let mut replicas = vec![first];
        replicas.extend((1..n).map(|_| Self::prepare(&extra, Some(&issuer), Some(&database))));
        // Every process starts before any is waited for: they race through migrations and first keys.
        for replica in &mut replicas {
            replica.start_process();
        }
        for replica in &mut replicas {
            replica.wait_until_up();
        }
        replicas
    }

    /// Like [`Server::start`], logging everything down to `debug`, its dependencies included.
    pub fn start_verbose(extra: &str) -> Self {
        let mut server = Self::start(extra);
        server.log_filter = "debug".into();
        server.restart();
        server
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("postern.toml")
    }

    /// The SQLite file (tests of what only SQLite has: files, their modes, the WAL).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("postern.db")
    }

    /// Whether this server runs on SQLite.
    pub fn on_sqlite(&self) -> bool {
        !self.database.starts_with("postgres")
    }

    /// A connection to this server's database, to look at what it stored.
    pub async fn db(&self) -> Db {
        Db::open(&self.database).await
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postern.log")
    }

    fn write_config(&self) {
        // The extra's top-level keys go first, its tables last, so that tests may give either.
        let split =
            if self.extra.starts_with('[') { 0 } else { self.extra.find("\n[").map_or(self.extra.len(), |i| i + 1) };
        let (extra, tables) = self.extra.split_at(split);
        let config = format!(
            r#"{extra}
issuer = "{issuer}"
listen = "127.0.0.1:{port}"
database = "{db}"

[ui]
dir = "{ui_dir}"

[clients.jupyterhub]
name = "JupyterHub"
secret = "{HUB_SECRET}"
redirect_uris = ["{HUB_CALLBACK}"]
post_logout_redirect_uris = ["{HUB_LOGGED_OUT}"]

[clients.spa]
name = "Postern UI"
public = true
redirect_uris = ["{issuer}/callback"]

[clients.legacy]
secret = "{LEGACY_SECRET}"
require_pkce = false
refresh_tokens = false
scopes = ["openid", "profile"]
redirect_uris = ["https://legacy.example/cb"]

{tables}
"#,
            issuer = self.issuer,
            port = self.port,
            db = self.database,
            ui_dir = self.ui_dir.display(),
        );
        std::fs::write(self.config_path(), config).unwrap();
    }

    fn spawn(&mut self) {
        self.start_process();
        self.wait_until_up();
    }

    fn start_process(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_postern"))
            .arg("--config")
            .arg(self.config_path())
            .arg("serve")
            .env("RUST_LOG", &self.log_filter)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/.well-known/openid-configuration", self.local);
        loop {
            if let Ok(resp) = http_status(&url) {
                if resp == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postern exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "postern did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the process (SIGKILL: nothing may depend on a clean shutdown) and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts the process with `extra` in place of the configuration it was started with.
    pub fn reconfigure(&mut self, extra: &str) {
        self.extra = extra.to_owned();
        self.write_config();
        self.restart();
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a `postern` CLI command against this server's config, feeding `stdin`.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run_cli(&self.config_path(), args, stdin)
    }

    /// Creates a user with [`PASSWORD`] through the CLI.
    pub fn add_user(&self, username: &str, groups: &[&str]) {
        let groups = groups.join(",");
        let mut args =
            vec!["user", "add", username, "--name", "Test User", "--email", "t@example.org", "--email-verified"];
        if !groups.is_empty() {
            args.extend(["--groups", &groups]);
        }
        let out = self.cli(&args, &format!("{PASSWORD}\n"));
        assert!(out.status.success(), "user add failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The issuer's origin, as a browser on Postern's own login page names it in `Origin`.
    pub fn origin(&self) -> String {
        Url::parse(&self.issuer).unwrap().origin().ascii_serialization()
    }

    /// A URL on the running process.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.local, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the CLI with a config file.
pub fn run_cli(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Status of a GET, without an async runtime (the kit starts servers from plain threads too).
fn http_status(url: &str) -> Result<u16, std::io::Error> {
    use std::io::Read;
    let url = Url::parse(url).unwrap();
    let mut stream = std::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))?;
    write!(stream, "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", url.path())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// A browser: keeps cookies, never follows redirects by itself.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A server-to-server HTTP client for the oauth2 crate (must not follow redirects).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// An HTTP client for the oauth2 crate that remembers the status of its last response, so that tests
/// can assert the status of an OAuth error as well as its code.
#[derive(Default)]
pub struct Recording {
    client: reqwest::Client,
    last_status: std::sync::atomic::AtomicU16,
}

impl Recording {
    /// A client that does not follow redirects, as the oauth2 crate requires.
    pub fn new() -> Self {
        Self { client: http(), last_status: Default::default() }
    }

    /// The status of the last response.
    pub fn status(&self) -> u16 {
        self.last_status.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for Recording {
    type Error = oauth2::HttpClientError<reqwest::Error>;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.client.call(request).await?;
            self.last_status.store(response.status().as_u16(), std::sync::atomic::Ordering::SeqCst);
            Ok(response)
        })
    }
}

/// The id_token next to the standard token response fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    pub id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenFields {}

pub type TokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;

pub type OidcClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// An oauth2 client for one of the test clients.
pub fn oauth_client(server: &Server, id: &str, secret: Option<&str>, redirect: &str) -> OidcClient {
    let client = oauth2::Client::new(ClientId::new(id.into()))
        .set_auth_uri(AuthUrl::new(server.url("/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(server.url("/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(redirect.into()).unwrap());
    match secret {
        Some(secret) => client.set_client_secret(ClientSecret::new(secret.into())),
        None => client,
    }
}

/// The JupyterHub client as JupyterHub configures it: secret in the body.
pub fn hub_client(server: &Server) -> OidcClient {
    oauth_client(server, "jupyterhub", Some(HUB_SECRET), HUB_CALLBACK).set_auth_type(oauth2::AuthType::RequestBody)
}

/// An authorization request the test is about to send.
pub struct Authorization {
    pub url: Url,
    pub state: CsrfToken,
    pub verifier: PkceCodeVerifier,
}

/// Builds an authorization URL with PKCE S256 and the scopes JupyterHub asks for (or `extra`'s `scope`),
/// plus `extra` parameters.
pub fn authorization(client: &OidcClient, extra: &[(&str, &str)]) -> Authorization {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let scope = extra.iter().find(|(k, _)| *k == "scope").map_or("openid profile email", |(_, v)| *v);
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scope.split(' ').map(|s| Scope::new(s.into())))
        .set_pkce_challenge(challenge);
    for (k, v) in extra.iter().filter(|(k, _)| *k != "scope") {
        request = request.add_extra_param(*k, *v);
    }
    let (url, state) = request.url();
    Authorization { url, state, verifier }
}

/// The `Location` of a redirect response, asserting it is a 303.
pub fn location(response: &reqwest::Response) -> Url {
    assert_eq!(response.status(), 303, "expected a 303 redirect");
    Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
}

/// One query parameter of a URL.
pub fn query(url: &Url, key: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// Sends the authorization request, expects the login page, logs in as `username`; returns where the
/// browser is sent (the client's redirect URI with code, state and iss).
pub async fn login(browser: &reqwest::Client, server: &Server, auth_url: &Url, username: &str, password: &str) -> Url {
    let response = browser.get(auth_url.clone()).send().await.unwrap();
    let login_page = location(&response);
    assert_eq!(login_page.path(), "/login", "expected the login page, got {login_page}");
    let handle = query(&login_page, "request").expect("login page URL carries the request handle");
    let pending = pending_request(browser, server, &handle).await;
    assert!(!pending.client_name.is_empty());
    let response = submit_login(browser, server, &handle, username, password).await;
    assert_eq!(response.status(), 200, "login failed: {}", response.text().await.unwrap());
    let body: shared::LoginResponse = response.json().await.unwrap();
    // The browser's top-level visit that sets the session cookie and goes on to the client.
    location(&browser.get(body.redirect_to).send().await.unwrap())
}

/// What the login page learns about a pending request.
pub async fn pending_request(browser: &reqwest::Client, server: &Server, handle: &str) -> shared::PendingRequest {
    let url = server.url(&format!("/api/authorization-requests/{handle}"));
    browser.get(url).send().await.unwrap().json().await.unwrap()
}

/// Starts a sign-in for the Hub in `browser`; returns the login page's request handle.
pub async fn pending_handle(browser: &reqwest::Client, server: &Server) -> String {
    let auth = authorization(&hub_client(server), &[]);
    let login_page = location(&browser.get(auth.url.clone()).send().await.unwrap());
    query(&login_page, "request").unwrap()
}

/// The status of a login API call that a trusted proxy forwards for `forwarded_for`.
pub async fn login_from(server: &Server, handle: &str, user: &str, password: &str, forwarded_for: &str) -> u16 {
    http()
        .post(server.url("/api/login"))
        .header("origin", server.origin())
        .header("x-forwarded-for", forwarded_for)
        .json(&shared::LoginRequest { request: handle.into(), username: user.into(), password: password.into() })
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Completes a successful login API response in the browser; returns the resume response.
pub async fn resume(browser: &reqwest::Client, response: reqwest::Response) -> reqwest::Response {
    assert_eq!(response.status(), 200, "login failed");
    let body: shared::LoginResponse = response.json().await.unwrap();
    browser.get(body.redirect_to).send().await.unwrap()
}

/// POSTs credentials to the login API.
pub async fn submit_login(
    browser: &reqwest::Client,
    server: &Server,
    handle: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    browser
        .post(server.url("/api/login"))
        .header("origin", server.origin())
        .json(&shared::LoginRequest { request: handle.into(), username: username.into(), password: password.into() })
        .send()
        .await
        .unwrap()
}

/// Exchanges the code the browser brought `back` (with PKCE), expecting success.
pub async fn exchange(client: &OidcClient, back: &Url, verifier: PkceCodeVerifier) -> TokenResponse {
    let code = oauth2::AuthorizationCode::new(query(back, "code").expect("the redirect carries a code"));
    client.exchange_code(code).set_pkce_verifier(verifier).request_async(&http()).await.unwrap()
}

/// Verifies an id_token against the server's JWKS; returns its claims.
pub async fn verify_id_token(server: &Server, id_token: &str, audience: &str) -> Value {
    let jwks: JwkSet = http().get(server.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    let header = decode_header(id_token).unwrap();
    let kid = header.kid.expect("id_token has a kid");
    let jwk = jwks.find(&kid).expect("the kid is in the JWKS");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&server.issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["iss", "sub", "aud", "exp", "iat"]);
    decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims
}

/// Calls userinfo with a bearer token.
pub async fn userinfo(server: &Server, token: &str) -> reqwest::Response {
    http().get(server.url("/userinfo")).bearer_auth(token).send().await.unwrap()
}

/// Posts a raw form to `/token`, as JupyterHub does.
/// The Hub's code exchange as a form: PKCE and `client_secret_post`, as JupyterHub sends it.
pub fn hub_code_form<'a>(code: &'a str, verifier: &'a str) -> [(&'static str, &'a str); 6] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", HUB_CALLBACK),
        ("code_verifier", verifier),
        ("client_id", "jupyterhub"),
        ("client_secret", HUB_SECRET),
    ]
}

pub async fn token_form(server: &Server, form: &[(&str, &str)]) -> reqwest::Response {
    post_form(server, "/token", form).await
}

/// Posts a raw `application/x-www-form-urlencoded; charset=utf-8` form to `path`.
pub async fn post_form(server: &Server, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    http()
        .post(server.url(path))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A look into a server's database, whichever store it runs on.
pub enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    /// Opens the store a `database` setting names (SQLite read-only).
    pub async fn open(database: &str) -> Db {
        use sqlx::Connection;
        if database.starts_with("postgres") {
            Db::Postgres(sqlx::PgConnection::connect(database).await.unwrap())
        } else {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(database).read_only(true);
            Db::Sqlite(sqlx::SqliteConnection::connect_with(&options).await.unwrap())
        }
    }

    /// Everything the store holds, as bytes to search for what must not be there: SQLite's files byte
    /// for byte (the WAL included), PostgreSQL's rows as text.
    pub async fn stored(database: &str) -> Vec<u8> {
        if database.starts_with("postgres") {
            return Db::open(database).await.snapshot().await.into_bytes();
        }
        ["", "-wal"]
            .iter()
            .flat_map(|suffix| std::fs::read(format!("{database}{suffix}")).unwrap_or_default())
            .collect()
    }

    /// The stored (sealed) private keys.
    pub async fn private_keys(&mut self) -> Vec<Vec<u8>> {
        let sql = "SELECT private_key FROM signing_keys";
        match self {
            Db::Sqlite(db) => sqlx::query_scalar(sql).fetch_all(db).await.unwrap(),
            Db::Postgres(db) => sqlx::query_scalar(sql).fetch_all(db).await.unwrap(),
        }
    }

    /// The one integer a query returns (`SELECT count(*) …`); the SQL must mean the same on both stores.
    pub async fn number(&mut self, sql: &str) -> i64 {
        match self {
            Db::Sqlite(db) => sqlx::query_scalar(sql).fetch_one(db).await.unwrap(),
            Db::Postgres(db) => sqlx::query_scalar(sql).fetch_one(db).await.unwrap(),
        }
    }

    /// Whether the refresh token with this SHA-256 is stored (`None`: not stored) and was used.
    pub async fn refresh_token_used(&mut self, hash: &[u8]) -> Option<bool> {
        let used: Option<Option<i64>> = match self {
            Db::Sqlite(db) => sqlx::query_scalar("SELECT used_at FROM refresh_tokens WHERE hash = ?")
                .bind(hash)
                .fetch_optional(db)
                .await
                .unwrap(),
            Db::Postgres(db) => sqlx::query_scalar("SELECT used_at FROM refresh_tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(db)
                .await
                .unwrap(),
        };
        used.map(|u| u.is_some())
    }

    /// Every row of every table of Postern's, as text, tables by name and rows in order.
    pub async fn snapshot(&mut self) -> String {
        let tables = match self {
            Db::Sqlite(db) => {
                sqlx::query_scalar::<_, String>(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_sqlx%' ORDER BY name",
                )
                .fetch_all(db)
                .await
            }
            Db::Postgres(db) => {
                sqlx::query_scalar::<_, String>(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                     AND tablename NOT LIKE '_sqlx%' ORDER BY tablename",
                )
                .fetch_all(db)
                .await
            }
        }
        .unwrap();
        let mut out = String::new();
        for table in tables {
            let rows = match self {
                Db::Sqlite(db) => {
                    use sqlx::Row;
                    let columns: Vec<String> = sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .fetch_all(&mut *db)
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| format!("quote({})", r.get::<String, _>(0)))
                        .collect();
                    let sql = format!("SELECT {} FROM {table} ORDER BY 1", columns.join(" || '|' || "));
                    sqlx::query_scalar::<_, String>(&sql).fetch_all(db).await
                }
                Db::Postgres(db) => {
                    let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
                    sqlx::query_scalar::<_, String>(&sql).fetch_all(db).await
                }
            }
            .unwrap()
            .join("\n");
            out += &format!("== {table}\n{rows}\n");
        }
        out
    }
}
