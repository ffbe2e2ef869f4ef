//! `cargo xtask bench`: a closed-loop load benchmark of a release `postern` on loopback, with the
//! physical floors (argon2id verifications and JWT signatures per second on one core) measured in
//! the same run. Every answer is validated; one wrong answer fails the run.

use std::fs;
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

const CLIENT_ID: &str = "bench";
const CLIENT_SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const REDIRECT: &str = "https://app.example/cb";
const PASSWORD: &str = "correct horse battery staple";

/// How the run is shaped.
pub struct Options {
    /// Seconds per scenario and concurrency.
    pub seconds: f64,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Core for the server (`taskset`); the load generator should run on another.
    pub server_core: Option<usize>,
    /// Where results.json goes.
    pub out: PathBuf,
}

#[derive(Serialize)]
struct ScenarioResult {
    scenario: &'static str,
    concurrency: usize,
    requests: usize,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    seconds_per_run: f64,
    argon2_verify_per_s_one_core: f64,
    signatures_per_s_one_core: f64,
    signing_alg: &'static str,
    server_rss_idle_mib: f64,
    server_rss_peak_mib: f64,
    results: Vec<ScenarioResult>,
}

/// A release Postern on a temporary database, pinned to a core.
struct Server {
    child: Child,
    base: String,
    _dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn start_server(root: &Path, core: Option<usize>, users: usize) -> anyhow::Result<Server> {
    let dir = std::env::temp_dir().join(format!("postern-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.join("postern.toml");
    fs::write(
        &config,
        format!(
            "issuer = \"{base}\"\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\n\n[ui]\nself_test_client = false\n\n\
             [clients.{CLIENT_ID}]\nsecret = \"{CLIENT_SECRET}\"\nredirect_uris = [\"{REDIRECT}\"]\n",
            dir.join("postern.db").display()
        ),
    )?;
    let bin = root.join("target/release/postern");
    ensure!(bin.is_file(), "build it first: cargo build --release -p backend");
    for i in 0..users {
        let mut add = Command::new(&bin)
            .args(["--config", config.to_str().unwrap(), "user", "add", &format!("user{i}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        use std::io::Write;
        add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes())?;
        ensure!(add.wait()?.success(), "user add failed");
    }
    let mut command = match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &core.to_string()]).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = command
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting postern")?;
    let server = Server { child, base, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "postern did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// The server's own pid (taskset execs it, so the child is the server).
fn pid(server: &Server) -> u32 {
    server.child.id()
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
    ensure!(response.status() == 303, "expected a 303, got {}", response.status());
    Ok(url::Url::parse(response.headers()["location"].to_str()?)?)
}

fn param(url: &url::Url, key: &str) -> anyhow::Result<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned()).context("missing query parameter")
}

fn authorize_url(base: &str, challenge: &str) -> String {
    format!(
        "{base}/authorize?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope=openid+profile+email\
         &state=s&code_challenge={challenge}&code_challenge_method=S256",
        urlencode(REDIRECT)
    )
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The full browser login: authorize, login API, resume; returns (code, verifier, session cookie).
async fn full_login(http: &reqwest::Client, base: &str, user: &str) -> anyhow::Result<(String, String, String)> {
    let (verifier, challenge) = pkce();
    let login_page = location(&http.get(authorize_url(base, &challenge)).send().await?)?;
    let handle = param(&login_page, "request")?;
    let done = http
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({"request": handle, "username": user, "password": PASSWORD}))
        .send()
        .await?;
    ensure!(done.status() == 200, "login answered {}", done.status());
    let next: Value = done.json().await?;
    let resume = http.get(next["redirect_to"].as_str().context("redirect_to")?).send().await?;
    let cookie = resume.headers()["set-cookie"].to_str()?.split(';').next().unwrap_or("").to_owned();
    let back = location(&resume)?;
    Ok((param(&back, "code")?, verifier, cookie))
}

/// A code from the SSO session (no password): what the code-exchange scenario redeems.
async fn sso_code(http: &reqwest::Client, base: &str, cookie: &str) -> anyhow::Result<(String, String)> {
    let (verifier, challenge) = pkce();
    let back = location(&http.get(authorize_url(base, &challenge)).header("cookie", cookie).send().await?)?;
    Ok((param(&back, "code")?, verifier))
}

async fn exchange(http: &reqwest::Client, base: &str, code: &str, verifier: &str) -> anyhow::Result<Value> {
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}&client_id={CLIENT_ID}\
         &client_secret={CLIENT_SECRET}",
        urlencode(REDIRECT)
    );
    let response = http
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    ensure!(response.status() == 200, "token answered {}", response.status());
    let tokens: Value = response.json().await?;
    ensure!(tokens["id_token"].as_str().is_some_and(|t| t.split('.').count() == 3), "no id_token");
    ensure!(tokens["access_token"].as_str().is_some_and(|t| t.len() == 43), "bad access token");
    Ok(tokens)
}

async fn userinfo(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    let response = http.get(format!("{base}/userinfo")).bearer_auth(token).send().await?;
    ensure!(response.status() == 200, "userinfo answered {}", response.status());
    let body: Value = response.json().await?;
    ensure!(body["sub"].as_str().is_some(), "userinfo without sub");
    Ok(())
}

/// Per-worker state a scenario carries between iterations.
#[derive(Clone, Default)]
struct Worker {
    user: String,
    cookie: String,
    access: String,
    refresh: String,
    codes: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Discovery,
    Jwks,
    Userinfo,
    CodeExchange,
    Refresh,
    FullLogin,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Discovery => "discovery",
            Scenario::Jwks => "jwks",
            Scenario::Userinfo => "userinfo",
            Scenario::CodeExchange => "code exchange (/token)",
            Scenario::Refresh => "refresh (/token)",
            Scenario::FullLogin => "full login flow",
        }
    }
}

async fn one(scenario: Scenario, http: &reqwest::Client, base: &str, w: &mut Worker) -> anyhow::Result<()> {
    match scenario {
        Scenario::Discovery => {
            let r = http.get(format!("{base}/.well-known/openid-configuration")).send().await?;
            ensure!(r.status() == 200, "discovery answered {}", r.status());
            let d: Value = r.json().await?;
            ensure!(d["issuer"] == base, "wrong issuer");
        }
        Scenario::Jwks => {
            let r = http.get(format!("{base}/jwks.json")).send().await?;
            ensure!(r.status() == 200, "jwks answered {}", r.status());
            let d: Value = r.json().await?;
            ensure!(d["keys"].as_array().is_some_and(|k| !k.is_empty()), "empty JWKS");
        }
        Scenario::Userinfo => userinfo(http, base, &w.access).await?,
        Scenario::CodeExchange => {
            let (code, verifier) = w.codes.pop().context("ran out of pre-issued codes")?;
            exchange(http, base, &code, &verifier).await?;
        }
        Scenario::Refresh => {
            let body = format!(
                "grant_type=refresh_token&refresh_token={}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}",
                w.refresh
            );
            let r = http
                .post(format!("{base}/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?;
            ensure!(r.status() == 200, "refresh answered {}", r.status());
            let t: Value = r.json().await?;
            w.refresh = t["refresh_token"].as_str().context("no rotated refresh token")?.to_owned();
        }
        Scenario::FullLogin => {
            let (code, verifier, _) = full_login(http, base, &w.user).await?;
            let tokens = exchange(http, base, &code, &verifier).await?;
            userinfo(http, base, tokens["access_token"].as_str().unwrap_or_default()).await?;
        }
    }
    Ok(())
}

async fn run_scenario(
    scenario: Scenario,
    concurrency: usize,
    seconds: f64,
    server: &Server,
    workers: Vec<Worker>,
) -> anyhow::Result<ScenarioResult> {
    let base = Arc::new(server.base.clone());
    let cpu_before = cpu_seconds(pid(server));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for mut w in workers.into_iter().take(concurrency) {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                if scenario == Scenario::CodeExchange && w.codes.is_empty() {
                    break;
                }
                let t = Instant::now();
                one(scenario, &http, &base, &mut w).await?;
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
    let cpu = cpu_seconds(pid(server)) - cpu_before;
    ensure!(!latencies.is_empty(), "{}: no request completed", scenario.name());
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Ok(ScenarioResult {
        scenario: scenario.name(),
        concurrency,
        requests: latencies.len(),
        throughput: latencies.len() as f64 / wall,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: *latencies.last().unwrap() as f64 / 1000.0,
        server_cpu: cpu / wall,
    })
}

/// Prepares per-worker state (sessions, tokens, codes) outside the timed part.
async fn prepare(scenario: Scenario, server: &Server, n: usize, codes_each: usize) -> anyhow::Result<Vec<Worker>> {
    let http = http_client();
    let mut workers = Vec::new();
    for i in 0..n {
        let mut w = Worker { user: format!("user{}", i % 8), ..Default::default() };
        if matches!(scenario, Scenario::Userinfo | Scenario::CodeExchange | Scenario::Refresh) {
            let (code, verifier, cookie) = full_login(&http, &server.base, &w.user).await?;
            let tokens = exchange(&http, &server.base, &code, &verifier).await?;
            w.cookie = cookie;
            w.access = tokens["access_token"].as_str().unwrap_or_default().to_owned();
            w.refresh = tokens["refresh_token"].as_str().unwrap_or_default().to_owned();
        }
        if scenario == Scenario::CodeExchange {
            for _ in 0..codes_each {
                w.codes.push(sso_code(&http, &server.base, &w.cookie).await?);
            }
        }
        workers.push(w);
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

/// Runs the benchmark and writes `results.json`; prints a table.
pub async fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    let alg = Algorithm::RS256;
    let floor_seconds = options.seconds.clamp(0.5, 5.0);
    let argon2 = argon2_floor(floor_seconds);
    let signing = signing_floor(alg, floor_seconds);
    let server = start_server(root, options.server_core, 8)?;
    std::thread::sleep(Duration::from_millis(300));
    let rss_idle = proc_status(pid(&server), "VmRSS:");
    let mut results = Vec::new();
    for scenario in [
        Scenario::Discovery,
        Scenario::Jwks,
        Scenario::Userinfo,
        Scenario::CodeExchange,
        Scenario::Refresh,
        Scenario::FullLogin,
    ] {
        for &c in &options.concurrency {
            // Enough codes for the run at a generous rate, within their 60-second life.
            let codes_each = if scenario == Scenario::CodeExchange {
                ((3000.0 * options.seconds) as usize / c).clamp(4, 2000)
            } else {
                0
            };
            let workers = prepare(scenario, &server, c, codes_each).await?;
            let result = run_scenario(scenario, c, options.seconds, &server, workers).await?;
            eprintln!(
                "{:<24} c={:<3} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  server cpu {:.2}",
                result.scenario, c, result.throughput, result.p50_ms, result.p99_ms, result.max_ms, result.server_cpu
            );
            results.push(result);
        }
    }
    let rss_peak = proc_status(pid(&server), "VmHWM:");
    let report = Report {
        machine: machine(),
        seconds_per_run: options.seconds,
        argon2_verify_per_s_one_core: argon2,
        signatures_per_s_one_core: signing,
        signing_alg: alg.name(),
        server_rss_idle_mib: rss_idle,
        server_rss_peak_mib: rss_peak,
        results,
    };
    fs::create_dir_all(options.out.parent().unwrap_or(Path::new(".")))?;
    fs::write(&options.out, serde_json::to_string_pretty(&report)?)?;
    print_table(&report);
    println!("results written to {}", options.out.display());
    if report.results.iter().any(|r| r.requests == 0) {
        bail!("a scenario completed no request");
    }
    Ok(())
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    // Count the machine's processors, not this (possibly pinned) process's.
    let cores =
        fs::read_to_string("/proc/cpuinfo").map_or(0, |c| c.lines().filter(|l| l.starts_with("processor")).count());
    format!("{cores} cores, {cpu}")
}

fn print_table(r: &Report) {
    println!("\nPostern benchmark — {}", r.machine);
    println!(
        "floors on one core: argon2id verify {:.1}/s, {} sign {:.0}/s",
        r.argon2_verify_per_s_one_core, r.signing_alg, r.signatures_per_s_one_core
    );
    println!("server RSS: {:.1} MiB idle, {:.1} MiB peak\n", r.server_rss_idle_mib, r.server_rss_peak_mib);
    println!("| scenario | c | req/s | p50 ms | p99 ms | max ms | server CPU | vs floor |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &r.results {
        let floor = match s.scenario {
            "full login flow" => format!("{:.0} % of argon2", 100.0 * s.throughput / r.argon2_verify_per_s_one_core),
            "code exchange (/token)" | "refresh (/token)" => {
                format!("{:.0} % of signing", 100.0 * s.throughput / r.signatures_per_s_one_core)
            }
            _ => String::new(),
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            s.scenario, s.concurrency, s.throughput, s.p50_ms, s.p99_ms, s.max_ms, s.server_cpu, floor
        );
    }
}
