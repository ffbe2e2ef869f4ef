//! `cargo xtask bench`: a closed-loop load benchmark of a release `postern` on loopback, side by side
//! with panva's oidc-provider (`bench/peer`) under the same workload, with the physical floors
//! (argon2id verifications and JWT signatures per second on one core) measured in the same run.
//! Every answer is validated; one wrong answer fails the run.

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use backend::config::Argon2Config;
use backend::keys::{Algorithm, SigningKey};
use backend::password::Passwords;

// The same client, users and password on both servers.
const CLIENT_ID: &str = "bench";
const CLIENT_SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const REDIRECT: &str = "https://app.example/cb";
const PASSWORD: &str = "correct horse battery staple";
const USERS: usize = 8;
const SCOPE: &str = "openid profile email";

/// How the run is shaped.
pub struct Options {
    /// Seconds per scenario and concurrency.
    pub seconds: f64,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// The scenarios to run (all when empty).
    pub scenarios: Vec<Scenario>,
    /// Core for the servers (`taskset`); the load generator should run on another.
    pub server_core: Option<usize>,
    /// Run the same workload against oidc-provider too.
    pub peer: bool,
    /// Measure the login page's time to an interactive form in headless Chromium.
    pub ui: bool,
    /// Where results.json goes.
    pub out: PathBuf,
    /// The `postern` binary to measure (a release build, except in a smoke run).
    pub postern: PathBuf,
    /// The stores to run Postern on, each as a server of its own.
    pub stores: Vec<Store>,
    /// A PostgreSQL server (`postgres://user@host:port`) for the PostgreSQL store, with
    /// `pg_stat_statements` loaded (`scripts/postgres` with `POSTERN_PG_DURABLE=1`).
    pub postgres: Option<String>,
    /// Count the rows written on PostgreSQL (waits for its statistics before and after each counted run).
    pub rows_written: bool,
}

/// Where Postern keeps its state in a run.
#[derive(Clone, Copy, PartialEq, Debug, clap::ValueEnum)]
pub enum Store {
    /// A file in a temporary directory.
    Sqlite,
    /// A new database on `--postgres`.
    Postgres,
}

/// What the benchmark measures.
#[derive(Clone, Copy, PartialEq, Debug, clap::ValueEnum)]
pub enum Scenario {
    /// `/.well-known/openid-configuration`.
    Discovery,
    /// The JWK Set.
    Jwks,
    /// `/userinfo` with a live access token.
    Userinfo,
    /// Redeeming codes issued beforehand, with PKCE and `client_secret_post`.
    CodeExchange,
    /// Refresh-token grants, rotating every time.
    Refresh,
    /// Authorize, log in with the password (argon2id), redeem the code, call userinfo; every virtual
    /// browser from its own address.
    FullLogin,
    /// The same with every virtual browser behind one address (a class behind a campus NAT): Postern's
    /// per-address throttle must queue them, never refuse them.
    FullLoginOneAddress,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::Discovery,
        Scenario::Jwks,
        Scenario::Userinfo,
        Scenario::CodeExchange,
        Scenario::Refresh,
        Scenario::FullLogin,
        Scenario::FullLoginOneAddress,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Discovery => "discovery",
            Scenario::Jwks => "jwks",
            Scenario::Userinfo => "userinfo",
            Scenario::CodeExchange => "code exchange (/token)",
            Scenario::Refresh => "refresh (/token)",
            Scenario::FullLogin => "full login flow",
            Scenario::FullLoginOneAddress => "full login flow, one address",
        }
    }
}

#[derive(Serialize)]
struct ScenarioResult {
    server: &'static str,
    scenario: &'static str,
    concurrency: usize,
    requests: usize,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu: f64,
    /// PostgreSQL's CPU meanwhile (every process of its cluster), for Postern on PostgreSQL.
    database_cpu: Option<f64>,
    /// Resident memory right after the run.
    server_rss_mib: f64,
}

/// The database work one operation of a scenario cost, counted over one run of it.
#[derive(Serialize)]
struct DatabaseWork {
    server: &'static str,
    scenario: &'static str,
    concurrency: usize,
    operations: usize,
    /// Calls into Postern's store interface (`postern_store_duration_seconds_count`).
    store_calls: f64,
    /// PostgreSQL only (`pg_stat_statements`): statements, each one round trip, BEGIN and COMMIT included.
    statements: Option<f64>,
    /// Of which INSERT, UPDATE or DELETE.
    write_statements: Option<f64>,
    /// Rows those wrote.
    rows_written: Option<f64>,
    /// Explicit transactions (COMMITs).
    transactions: Option<f64>,
}

#[derive(Serialize)]
struct Memory {
    server: &'static str,
    rss_idle_mib: f64,
    rss_peak_mib: f64,
}

#[derive(Serialize)]
struct UiTiming {
    runs: usize,
    /// Navigation start to a usable form (the pending request shown, the username field focused).
    form_interactive_median_ms: f64,
    form_interactive_max_ms: f64,
    wasm_bytes: u64,
    wasm_brotli_bytes: u64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    seconds_per_run: f64,
    /// The mean of a measurement before and one after the load (the ratios use it).
    argon2_verify_per_s_one_core: f64,
    signatures_per_s_one_core: f64,
    /// Each floor as measured before and after the load: how much the machine drifted meanwhile.
    argon2_before_after: [f64; 2],
    signatures_before_after: [f64; 2],
    signing_alg: &'static str,
    peer: Option<String>,
    memory: Vec<Memory>,
    ui: Option<UiTiming>,
    results: Vec<ScenarioResult>,
    database_work: Vec<DatabaseWork>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Postern,
    Peer,
}

/// A server under test, on a temporary store, pinned to a core; killed on drop.
struct Target {
    kind: Kind,
    /// Its name in the results: `postern`, `postern-pg` or `oidc-provider`.
    label: &'static str,
    /// Postern's metrics listener, when it has one.
    metrics: Option<String>,
    /// Postern's PostgreSQL database, when it runs on one.
    database: Option<String>,
    /// That PostgreSQL cluster's postmaster.
    postmaster: Option<u32>,
    child: Child,
    base: String,
    endpoints: Endpoints,
    _dir: Option<TempDir>,
}

/// The endpoints a relying party reads from discovery.
#[derive(Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    userinfo: String,
    jwks: String,
}

impl Target {
    fn name(&self) -> &'static str {
        self.label
    }

    /// The server's own pid (taskset execs it, so the child is the server).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn authorize_url(&self, challenge: &str) -> String {
        format!(
            "{}?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope={}&state=s\
             &code_challenge={challenge}&code_challenge_method=S256",
            self.endpoints.authorization,
            urlencode(REDIRECT),
            urlencode(SCOPE)
        )
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn proc_status(pid: u32, field: &str) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `/proc/PID/stat`'s fields after the command name (which is in parentheses and may contain
/// spaces), as numbers: 0 is the state (not a number), 1 the parent's pid, 11 and 12 user and system
/// ticks, 13 and 14 those of the children it has reaped.
fn proc_stat(pid: u32) -> Vec<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0)).collect()
}

/// User plus system CPU seconds of every thread of the process.
fn cpu_seconds(pid: u32) -> f64 {
    let fields = proc_stat(pid);
    fields.get(11..13).map_or(0.0, |t| t.iter().sum::<f64>()) / 100.0
}

/// CPU seconds of a PostgreSQL cluster: its postmaster, the backends and workers it runs, and those
/// that have ended (their time is added to the postmaster's children's when it reaps them).
fn cluster_cpu_seconds(postmaster: u32) -> f64 {
    let own = proc_stat(postmaster).get(11..15).map_or(0.0, |t| t.iter().sum::<f64>()) / 100.0;
    let children: f64 = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).get(1) == Some(&f64::from(postmaster)))
        .map(cpu_seconds)
        .sum();
    own + children
}

/// The pid of the postmaster serving `database` (the parent of its checkpointer).
fn postmaster(database: &str) -> anyhow::Result<u32> {
    let checkpointer: u32 = psql(database, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")?
        .parse()
        .context("PostgreSQL's checkpointer pid")?;
    let parent = proc_stat(checkpointer).get(1).copied().unwrap_or(0.0);
    ensure!(parent > 1.0, "PostgreSQL must run on this machine to measure its CPU");
    Ok(parent as u32)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn pinned(core: Option<usize>, program: &Path) -> Command {
    match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &core.to_string()]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

async fn discover(
    kind: Kind,
    label: &'static str,
    child: Child,
    base: String,
    dir: Option<TempDir>,
) -> anyhow::Result<Target> {
    let doc: Value = http_client()
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let url = |key: &str| doc[key].as_str().map(str::to_owned).with_context(|| format!("discovery has no {key}"));
    let endpoints = Endpoints {
        authorization: url("authorization_endpoint")?,
        token: url("token_endpoint")?,
        userinfo: url("userinfo_endpoint")?,
        jwks: url("jwks_uri")?,
    };
    Ok(Target { kind, label, metrics: None, database: None, postmaster: None, child, base, endpoints, _dir: dir })
}

/// Postern on `store` (`postgres`: a new database on that server), with its metrics listener on.
async fn start_postern(
    root: &Path,
    bin: &Path,
    core: Option<usize>,
    store: Store,
    postgres: Option<&str>,
) -> anyhow::Result<Target> {
    let dir = std::env::temp_dir().join(format!("postern-bench-{}-{store:?}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let dir = TempDir(dir);
    let (port, metrics_port) = (free_port()?, free_port()?);
    let base = format!("http://127.0.0.1:{port}");
    let database = match (store, postgres) {
        (Store::Sqlite, _) => dir.0.join("postern.db").display().to_string(),
        (Store::Postgres, Some(server)) => new_postgres_database(server)?,
        (Store::Postgres, None) => bail!("the PostgreSQL store needs --postgres"),
    };
    let config = dir.0.join("postern.toml");
    fs::write(
        &config,
        format!(
            "issuer = \"{base}\"\ntrusted_proxies = [\"127.0.0.1\"]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{database}\"\n\
             metrics.listen = \"127.0.0.1:{metrics_port}\"\n\n[ui]\ndir = \"{}\"\n\
             self_test_client = false\n\n[clients.{CLIENT_ID}]\nsecret = \"{CLIENT_SECRET}\"\n\
             redirect_uris = [\"{REDIRECT}\"]\n",
            root.join("dist").display()
        ),
    )?;
    ensure!(bin.is_file(), "build it first: {} is missing", bin.display());
    for i in 0..USERS {
        let mut add = Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "user", "add", &format!("user{i}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        use std::io::Write;
        add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes())?;
        ensure!(add.wait()?.success(), "user add failed");
    }
    let child = pinned(core, bin)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting postern")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "postern did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let label = match store {
        Store::Sqlite => "postern",
        Store::Postgres => "postern-pg",
    };
    let mut target = discover(Kind::Postern, label, child, base, Some(dir)).await?;
    target.metrics = Some(format!("http://127.0.0.1:{metrics_port}/metrics"));
    if store == Store::Postgres {
        target.postmaster = Some(postmaster(&database)?);
        target.database = Some(database);
    }
    Ok(target)
}

/// `psql` on `database`: the one line `sql` prints.
fn psql(database: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql").args([database, "-XqtA", "-v", "ON_ERROR_STOP=1", "-c", sql]).output()?;
    ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A new database on `server`, with `pg_stat_statements` to count what Postern asks of it.
fn new_postgres_database(server: &str) -> anyhow::Result<String> {
    let name = format!("postern_bench_{}", std::process::id());
    psql(&format!("{server}/postgres"), &format!("DROP DATABASE IF EXISTS {name}"))?;
    psql(&format!("{server}/postgres"), &format!("CREATE DATABASE {name}"))?;
    let database = format!("{server}/{name}");
    psql(&database, "CREATE EXTENSION pg_stat_statements")
        .context("pg_stat_statements must be loaded: start the server with POSTERN_PG_DURABLE=1 scripts/postgres")?;
    Ok(database)
}

/// Counters of the database work done so far: store calls, then (PostgreSQL) statements, write
/// statements, rows written, COMMITs.
/// PostgreSQL's idle backends publish their table statistics after at most this long.
const STATISTICS_DELAY: Duration = Duration::from_secs(11);

/// Rows written come from the tables' statistics, which an idle backend publishes up to ten seconds
/// late: `settle` waits for them (a smoke run does not, and reports no rows).
async fn database_counters(target: &Target, settle: bool) -> anyhow::Result<[f64; 5]> {
    let mut counters = [0.0; 5];
    if let Some(metrics) = &target.metrics {
        let scrape = http_client().get(metrics).send().await?.error_for_status()?.text().await?;
        counters[0] = scrape
            .lines()
            .filter(|l| l.starts_with("postern_store_duration_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
    }
    if let Some(database) = &target.database {
        if settle {
            tokio::time::sleep(STATISTICS_DELAY).await;
        }
        // Writes are counted wherever they sit (a CTE's INSERT or UPDATE too), rows written from the
        // tables' own counters: pg_stat_statements' rows are what a statement returned.
        let line = psql(
            database,
            "SELECT coalesce(sum(calls), 0), \
                    coalesce(sum(calls) FILTER (WHERE query ~* '\\m(insert|update|delete)\\M'), 0), \
                    (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables), \
                    coalesce(sum(calls) FILTER (WHERE query ~* '^\\s*commit'), 0) \
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )?;
        for (i, value) in line.split('|').enumerate().take(4) {
            counters[i + 1] = value.parse().with_context(|| format!("pg_stat_statements: {line}"))?;
        }
        if !settle {
            counters[3] = f64::NAN;
        }
    }
    Ok(counters)
}

/// oidc-provider from `bench/peer` (installed by `scripts/setup`), configured like Postern.
async fn start_peer(root: &Path, core: Option<usize>) -> anyhow::Result<Target> {
    let peer = root.join("bench/peer");
    ensure!(peer.join("node_modules").is_dir(), "the peer is not installed: run scripts/setup");
    let port = free_port()?;
    let node = which("node").context("node is not installed")?;
    let mut child = pinned(core, &node)
        .arg("server.mjs")
        .current_dir(&peer)
        .env("PORT", port.to_string())
        .env("USERS", USERS.to_string())
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("REDIRECT_URI", REDIRECT)
        .env("PASSWORD", PASSWORD)
        .env("NODE_ENV", "production")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting oidc-provider")?;
    // It prints one line once its users are hashed and it listens.
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        bail!("oidc-provider did not start");
    }
    discover(Kind::Peer, "oidc-provider", child, format!("http://127.0.0.1:{port}"), None).await
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

fn pkce() -> (String, String) {
    let verifier = B64.encode(rand_bytes());
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("random");
    b
}

fn location(response: &reqwest::Response) -> anyhow::Result<url::Url> {
    let status = response.status();
    ensure!(status == 302 || status == 303, "expected a redirect, got {status}");
    let base = url::Url::parse(response.url().as_str())?;
    Ok(base.join(response.headers()["location"].to_str()?)?)
}

fn param(url: &url::Url, key: &str) -> anyhow::Result<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned()).with_context(|| format!("no {key} in {url}"))
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The cookies one browser holds for one server.
#[derive(Clone, Default)]
struct Cookies(Vec<(String, String)>);

impl Cookies {
    fn absorb(&mut self, response: &reqwest::Response) {
        for header in response.headers().get_all("set-cookie") {
            let Some((name, value)) = header.to_str().ok().and_then(|h| h.split(';').next()?.split_once('=')) else {
                continue;
            };
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.0.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }

    fn header(&self) -> String {
        self.0.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }
}

/// Follows the browser's redirects until one reaches the client; returns the code it carries.
async fn follow_to_client(
    http: &reqwest::Client,
    mut response: reqwest::Response,
    cookies: &mut Cookies,
) -> anyhow::Result<String> {
    for _ in 0..4 {
        cookies.absorb(&response);
        let next = location(&response)?;
        if next.as_str().starts_with(REDIRECT) {
            ensure!(param(&next, "state")? == "s", "state not echoed");
            return param(&next, "code");
        }
        response = http.get(next).header("cookie", cookies.header()).send().await?;
    }
    bail!("too many redirects before reaching the client")
}

/// The full browser login from a fresh browser; returns (code, verifier, the browser's cookies).
async fn full_login(
    http: &reqwest::Client,
    t: &Target,
    user: &str,
    address: &str,
) -> anyhow::Result<(String, String, Cookies)> {
    let (verifier, challenge) = pkce();
    let mut cookies = Cookies::default();
    let start = http.get(t.authorize_url(&challenge)).send().await?;
    cookies.absorb(&start);
    let login_page = location(&start)?;
    let after_login = match t.kind {
        // Postern's login page posts JSON to the login API, then sends the browser on with a top-level GET.
        Kind::Postern => {
            let done = http
                .post(format!("{}/api/login", t.base))
                .header("origin", &t.base)
                .header("x-forwarded-for", address)
                .json(&serde_json::json!({"request": param(&login_page, "request")?, "username": user, "password": PASSWORD}))
                .send()
                .await?;
            ensure!(done.status() == 200, "login answered {}", done.status());
            let next: Value = done.json().await?;
            // The browser that started the sign-in finishes it: its cookies go along.
            http.get(next["redirect_to"].as_str().context("redirect_to")?)
                .header("cookie", cookies.header())
                .send()
                .await?
        }
        // oidc-provider's interaction takes a form post on the interaction URL.
        Kind::Peer => {
            http.post(format!("{}/login", login_page.as_str().trim_end_matches('/')))
                .header("cookie", cookies.header())
                .form(&[("username", user), ("password", PASSWORD)])
                .send()
                .await?
        }
    };
    let code = follow_to_client(http, after_login, &mut cookies).await?;
    Ok((code, verifier, cookies))
}

/// A code from the SSO session (no password): what the code-exchange scenario redeems.
async fn sso_code(http: &reqwest::Client, t: &Target, cookies: &mut Cookies) -> anyhow::Result<(String, String)> {
    let (verifier, challenge) = pkce();
    let response = http.get(t.authorize_url(&challenge)).header("cookie", cookies.header()).send().await?;
    let code = follow_to_client(http, response, cookies).await.context("an SSO authorization")?;
    Ok((code, verifier))
}

fn check_tokens(response: reqwest::StatusCode, tokens: &Value) -> anyhow::Result<()> {
    ensure!(response == 200, "token answered {response}: {tokens}");
    ensure!(tokens["token_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")), "not a bearer token");
    ensure!(tokens["access_token"].as_str().is_some_and(|t| t.len() >= 32), "bad access token");
    ensure!(tokens["refresh_token"].as_str().is_some_and(|t| t.len() >= 32), "no refresh token");
    ensure!(tokens["expires_in"].as_u64().is_some_and(|e| e > 0), "no expires_in");
    Ok(())
}

async fn token(http: &reqwest::Client, t: &Target, grant: &str) -> anyhow::Result<Value> {
    let response = http
        .post(&t.endpoints.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{grant}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"))
        .send()
        .await?;
    let status = response.status();
    let tokens: Value = response.json().await?;
    check_tokens(status, &tokens)?;
    Ok(tokens)
}

async fn exchange(http: &reqwest::Client, t: &Target, code: &str, verifier: &str) -> anyhow::Result<Value> {
    let grant = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
        urlencode(code),
        urlencode(REDIRECT)
    );
    let tokens = token(http, t, &grant).await?;
    ensure!(tokens["id_token"].as_str().is_some_and(|t| t.split('.').count() == 3), "no id_token");
    Ok(tokens)
}

async fn userinfo(http: &reqwest::Client, t: &Target, access_token: &str, user: &str) -> anyhow::Result<()> {
    let response = http.get(&t.endpoints.userinfo).bearer_auth(access_token).send().await?;
    ensure!(response.status() == 200, "userinfo answered {}", response.status());
    let body: Value = response.json().await?;
    ensure!(body["sub"] == user, "userinfo for the wrong user: {body}");
    Ok(())
}

/// Per-worker state a scenario carries between iterations.
#[derive(Clone, Default)]
struct Worker {
    user: String,
    /// The address this virtual browser signs in from (`X-Forwarded-For`; Postern trusts the generator as
    /// its proxy): its own, or the one all share.
    address: String,
    cookies: Cookies,
    access: String,
    refresh: String,
    codes: Vec<(String, String)>,
}

async fn one(scenario: Scenario, http: &reqwest::Client, t: &Target, w: &mut Worker) -> anyhow::Result<()> {
    match scenario {
        // Typed, so validating costs the load generator as little as possible.
        Scenario::Discovery => {
            #[derive(serde::Deserialize)]
            struct Metadata {
                issuer: String,
            }
            let r = http.get(format!("{}/.well-known/openid-configuration", t.base)).send().await?;
            ensure!(r.status() == 200, "discovery answered {}", r.status());
            ensure!(r.json::<Metadata>().await?.issuer == t.base, "wrong issuer");
        }
        Scenario::Jwks => {
            #[derive(serde::Deserialize)]
            struct Jwks {
                keys: Vec<serde::de::IgnoredAny>,
            }
            let r = http.get(&t.endpoints.jwks).send().await?;
            ensure!(r.status() == 200, "jwks answered {}", r.status());
            ensure!(!r.json::<Jwks>().await?.keys.is_empty(), "empty JWKS");
        }
        Scenario::Userinfo => userinfo(http, t, &w.access, &w.user).await?,
        Scenario::CodeExchange => {
            let (code, verifier) = w.codes.pop().context("ran out of pre-issued codes")?;
            exchange(http, t, &code, &verifier).await?;
        }
        Scenario::Refresh => {
            let tokens = token(http, t, &format!("grant_type=refresh_token&refresh_token={}", w.refresh)).await?;
            let rotated = tokens["refresh_token"].as_str().unwrap_or_default();
            ensure!(rotated != w.refresh, "the refresh token was not rotated");
            w.refresh = rotated.to_owned();
        }
        Scenario::FullLogin | Scenario::FullLoginOneAddress => {
            let (code, verifier, _) = full_login(http, t, &w.user, &w.address).await?;
            let tokens = exchange(http, t, &code, &verifier).await?;
            userinfo(http, t, tokens["access_token"].as_str().unwrap_or_default(), &w.user).await?;
        }
    }
    Ok(())
}

async fn run_scenario(
    scenario: Scenario,
    concurrency: usize,
    seconds: f64,
    target: &Arc<Target>,
    workers: Vec<Worker>,
) -> anyhow::Result<ScenarioResult> {
    let cpu_before = cpu_seconds(target.pid());
    let database_before = target.postmaster.map(cluster_cpu_seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for mut w in workers.into_iter().take(concurrency) {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                if scenario == Scenario::CodeExchange && w.codes.is_empty() {
                    break;
                }
                let t = Instant::now();
                one(scenario, &http, &target, &mut w).await.context(target.name())?;
                latencies.push(t.elapsed().as_micros() as u32);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(target.pid()) - cpu_before;
    let database_cpu =
        target.postmaster.zip(database_before).map(|(pm, before)| (cluster_cpu_seconds(pm) - before) / wall);
    ensure!(!latencies.is_empty(), "{} {}: no request completed", target.name(), scenario.name());
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Ok(ScenarioResult {
        server: target.name(),
        scenario: scenario.name(),
        concurrency,
        requests: latencies.len(),
        throughput: latencies.len() as f64 / wall,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: *latencies.last().unwrap() as f64 / 1000.0,
        server_cpu: cpu / wall,
        database_cpu,
        server_rss_mib: proc_status(target.pid(), "VmRSS:"),
    })
}

/// Prepares per-worker state (sessions, tokens, codes) outside the timed part, workers in parallel.
async fn prepare(scenario: Scenario, t: &Arc<Target>, n: usize, seconds: f64) -> anyhow::Result<Vec<Worker>> {
    // Enough codes for the run at a generous rate (codes live 60 s on both servers).
    let rate = match t.kind {
        Kind::Postern => 3000.0,
        Kind::Peer => 1000.0,
    };
    let codes_each = ((rate * seconds) as usize / n).clamp(4, 2000);
    let mut tasks = Vec::new();
    for i in 0..n {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            let mut w = Worker {
                user: format!("user{}", i % USERS),
                address: if scenario == Scenario::FullLoginOneAddress {
                    "198.51.100.7".to_owned()
                } else {
                    format!("10.0.{}.{}", i / 250, i % 250 + 1)
                },
                ..Default::default()
            };
            if matches!(scenario, Scenario::Userinfo | Scenario::CodeExchange | Scenario::Refresh) {
                let (code, verifier, cookies) = full_login(&http, &t, &w.user, &w.address).await?;
                let tokens = exchange(&http, &t, &code, &verifier).await?;
                w.cookies = cookies;
                w.access = tokens["access_token"].as_str().unwrap_or_default().to_owned();
                w.refresh = tokens["refresh_token"].as_str().unwrap_or_default().to_owned();
            }
            if scenario == Scenario::CodeExchange {
                for _ in 0..codes_each {
                    let code = sso_code(&http, &t, &mut w.cookies).await?;
                    w.codes.push(code);
                }
            }
            anyhow::Ok(w)
        }));
    }
    let mut workers = Vec::new();
    for task in tasks {
        workers.push(task.await?.with_context(|| format!("preparing {} for {}", t.name(), scenario.name()))?);
    }
    Ok(workers)
}

/// argon2id verifications per second on this thread, with the default parameters.
fn argon2_floor(seconds: f64) -> f64 {
    let passwords = Passwords::new(&Argon2Config::default()).expect("default parameters");
    let phc = passwords.hash_now(PASSWORD);
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed().as_secs_f64() < seconds {
        assert!(passwords.verify_now(PASSWORD, &phc));
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// id_token-sized JWT signatures per second on this thread.
fn signing_floor(alg: Algorithm, seconds: f64) -> f64 {
    let (key, _) = SigningKey::generate(alg).expect("key");
    let claims = serde_json::json!({"iss": "https://api.example", "sub": "user0", "aud": CLIENT_ID, "exp": 0, "iat": 0,
        "auth_time": 0, "at_hash": "x".repeat(22), "name": "User Zero", "email": "u@example.org"});
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed().as_secs_f64() < seconds {
        key.sign_jwt(&claims).expect("sign");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Time to an interactive login form in headless Chromium (`e2e/ui-timing.mjs`), and the WASM's size.
fn ui_timing(root: &Path, postern: &Target, runs: usize) -> anyhow::Result<UiTiming> {
    let wasm = fs::read_dir(root.join("dist"))
        .context("no built UI: run scripts/build-ui")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wasm"))
        .context("no .wasm in dist")?;
    let brotli = wasm.with_extension("wasm.br");
    let (_, challenge) = pkce();
    // The servers are idle meanwhile, so the browser may use every core, as a user's browser would.
    let out = Command::new("taskset")
        .args(["-c", &format!("0-{}", machine_cores().max(1) - 1)])
        .arg(which("node").context("node is not installed")?)
        .arg("ui-timing.mjs")
        .arg(postern.authorize_url(&challenge))
        .arg(runs.to_string())
        .current_dir(root.join("e2e"))
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "ui-timing.mjs failed");
    let timings: Vec<f64> = serde_json::from_slice(&out.stdout).context("ui-timing.mjs output")?;
    ensure!(timings.len() == runs, "ui-timing.mjs returned {} timings", timings.len());
    let mut sorted = timings.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(UiTiming {
        runs,
        form_interactive_median_ms: sorted[runs / 2],
        form_interactive_max_ms: sorted[runs - 1],
        wasm_bytes: fs::metadata(&wasm)?.len(),
        wasm_brotli_bytes: fs::metadata(&brotli).map(|m| m.len()).unwrap_or(0),
    })
}

/// Runs the benchmark and writes `results.json`; prints a table.
pub async fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    let alg = Algorithm::RS256;
    let floor_seconds = options.seconds.clamp(0.5, 5.0);
    let argon2_before = argon2_floor(floor_seconds);
    let signing_before = signing_floor(alg, floor_seconds);
    let mut targets = Vec::new();
    for &store in &options.stores {
        let postern = start_postern(root, &options.postern, options.server_core, store, options.postgres.as_deref());
        targets.push(Arc::new(postern.await?));
    }
    ensure!(!targets.is_empty(), "no store to run Postern on");
    if options.peer {
        targets.push(Arc::new(start_peer(root, options.server_core).await?));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut memory: Vec<Memory> = targets
        .iter()
        .map(|t| Memory { server: t.name(), rss_idle_mib: proc_status(t.pid(), "VmRSS:"), rss_peak_mib: 0.0 })
        .collect();
    let peer_version = options.peer.then(|| peer_version(root)).transpose()?;
    let ui =
        if options.ui { Some(ui_timing(root, &targets[0], if options.seconds < 5.0 { 3 } else { 20 })?) } else { None };
    let scenarios = if options.scenarios.is_empty() { Scenario::ALL.to_vec() } else { options.scenarios.clone() };
    let mut results = Vec::new();
    let mut database_work = Vec::new();
    for scenario in scenarios {
        for &c in &options.concurrency {
            // Side by side, so both see the same machine.
            for target in &targets {
                let workers = prepare(scenario, target, c, options.seconds).await?;
                // The database work is counted over the scenario's first run (after its preparation).
                let counted = target.kind == Kind::Postern
                    && c == options.concurrency[0]
                    && matches!(scenario, Scenario::CodeExchange | Scenario::FullLogin);
                let settle = options.rows_written;
                let before = if counted { Some(database_counters(target, settle).await?) } else { None };
                let r = run_scenario(scenario, c, options.seconds, target, workers).await?;
                if let Some(before) = before {
                    let after = database_counters(target, settle).await?;
                    let per = |i: usize| (after[i] - before[i]) / r.requests.max(1) as f64;
                    let pg = |i: usize| target.database.is_some().then(|| per(i)).filter(|v| !v.is_nan());
                    database_work.push(DatabaseWork {
                        server: r.server,
                        scenario: r.scenario,
                        concurrency: c,
                        operations: r.requests,
                        store_calls: per(0),
                        statements: pg(1),
                        write_statements: pg(2),
                        rows_written: pg(3),
                        transactions: pg(4),
                    });
                }
                eprintln!(
                    "{:<14} {:<24} c={:<3} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  cpu {}  \
                     rss {:.1} MiB",
                    r.server,
                    r.scenario,
                    c,
                    r.throughput,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    cpu_cell(&r),
                    r.server_rss_mib
                );
                results.push(r);
            }
        }
    }
    for (m, t) in memory.iter_mut().zip(&targets) {
        m.rss_peak_mib = proc_status(t.pid(), "VmHWM:");
    }
    drop(targets);
    // The host's share of the core drifts; measuring the floors again brackets the run.
    let argon2_after = argon2_floor(floor_seconds);
    let signing_after = signing_floor(alg, floor_seconds);
    let report = Report {
        machine: machine(),
        seconds_per_run: options.seconds,
        argon2_verify_per_s_one_core: (argon2_before + argon2_after) / 2.0,
        signatures_per_s_one_core: (signing_before + signing_after) / 2.0,
        argon2_before_after: [argon2_before, argon2_after],
        signatures_before_after: [signing_before, signing_after],
        signing_alg: alg.name(),
        peer: peer_version,
        memory,
        ui,
        results,
        database_work,
    };
    fs::create_dir_all(options.out.parent().unwrap_or(Path::new(".")))?;
    fs::write(&options.out, serde_json::to_string_pretty(&report)?)?;
    print_table(&report);
    println!("results written to {}", options.out.display());
    Ok(())
}

fn peer_version(root: &Path) -> anyhow::Result<String> {
    let manifest = fs::read_to_string(root.join("bench/peer/node_modules/oidc-provider/package.json"))?;
    let version: Value = serde_json::from_str(&manifest)?;
    let node = Command::new("node").arg("--version").output()?;
    Ok(format!(
        "oidc-provider {} on Node {}",
        version["version"].as_str().unwrap_or("?"),
        String::from_utf8_lossy(&node.stdout).trim().trim_start_matches('v')
    ))
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{} cores, {cpu}", machine_cores())
}

/// The machine's processors, not this (pinned) process's.
fn machine_cores() -> usize {
    fs::read_to_string("/proc/cpuinfo").map_or(0, |c| c.lines().filter(|l| l.starts_with("processor")).count())
}

fn print_table(r: &Report) {
    println!("\nPostern benchmark — {}", r.machine);
    if let Some(peer) = &r.peer {
        println!("peer: {peer}");
    }
    println!(
        "floors on one core (before / after the load): argon2id verify {:.1}/s ({:.1} / {:.1}), {} sign {:.0}/s \
         ({:.0} / {:.0})",
        r.argon2_verify_per_s_one_core,
        r.argon2_before_after[0],
        r.argon2_before_after[1],
        r.signing_alg,
        r.signatures_per_s_one_core,
        r.signatures_before_after[0],
        r.signatures_before_after[1]
    );
    for m in &r.memory {
        println!("{} RSS: {:.1} MiB idle, {:.1} MiB peak", m.server, m.rss_idle_mib, m.rss_peak_mib);
    }
    if let Some(ui) = &r.ui {
        println!(
            "login page: form interactive {:.0} ms median, {:.0} ms max over {} cold loads; WASM {} B, {} B brotli",
            ui.form_interactive_median_ms, ui.form_interactive_max_ms, ui.runs, ui.wasm_bytes, ui.wasm_brotli_bytes
        );
    }
    for server in ["postern", "postern-pg"] {
        if r.results.iter().any(|s| s.server == server) {
            print_server_table(r, server);
        }
    }
    if !r.database_work.is_empty() {
        println!("\nDatabase work per operation, counted over one run each:\n");
        println!("| server | scenario | c | operations | store calls | statements | of which writes | rows written | transactions |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        let show = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
        for w in &r.database_work {
            println!(
                "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                w.server,
                w.scenario,
                w.concurrency,
                w.operations,
                w.store_calls,
                show(w.statements),
                show(w.write_statements),
                show(w.rows_written),
                show(w.transactions)
            );
        }
    }
}

/// The server's CPU (cores), and PostgreSQL's beside it when it has one.
fn cpu_cell(s: &ScenarioResult) -> String {
    match s.database_cpu {
        Some(db) => format!("{:.2} + {db:.2} db", s.server_cpu),
        None => format!("{:.2}", s.server_cpu),
    }
}

/// One Postern server's results beside the peer's.
fn print_server_table(r: &Report, server: &str) {
    println!("\n{server}:\n");
    println!(
        "| scenario | c | req/s | p50 ms | p99 ms | max ms | CPU | vs floor | peer req/s | peer p99 ms | × peer |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in r.results.iter().filter(|s| s.server == server) {
        let floor = match s.scenario {
            "full login flow" | "full login flow, one address" => {
                format!("{:.0} % of argon2", 100.0 * s.throughput / r.argon2_verify_per_s_one_core)
            }
            "code exchange (/token)" | "refresh (/token)" => {
                format!("{:.0} % of signing", 100.0 * s.throughput / r.signatures_per_s_one_core)
            }
            _ => String::new(),
        };
        let peer = r
            .results
            .iter()
            .find(|p| p.server == "oidc-provider" && p.scenario == s.scenario && p.concurrency == s.concurrency);
        let (peer_rate, peer_p99, ratio) = match peer {
            Some(p) => (
                format!("{:.0}", p.throughput),
                format!("{:.2}", p.p99_ms),
                format!("{:.1}", s.throughput / p.throughput),
            ),
            None => Default::default(),
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            s.scenario,
            s.concurrency,
            s.throughput,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            cpu_cell(s),
            floor,
            peer_rate,
            peer_p99,
            ratio
        );
    }
}
