//! Development tasks: `cargo xtask test-ca` makes the throw-away certificate authority and server
//! certificate the TLS end-to-end stack (nginx in front of Postern and JupyterHub) uses;
//! `cargo xtask bench` measures Postern (see BENCHMARKS.md).

mod bench;

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Postern's development tasks.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write ca.pem, server.pem and server-key.pem into DIR for the given DNS names.
    TestCa {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// DNS names the server certificate covers.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Load-benchmark a release build on loopback (run the client on another core than the server).
    Bench {
        /// Seconds per scenario and concurrency level.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrency levels, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Only these scenarios, comma-separated (default: all).
        #[arg(long, value_delimiter = ',', value_enum)]
        scenario: Vec<bench::Scenario>,
        /// Pin the servers to this core with taskset.
        #[arg(long)]
        server_core: Option<usize>,
        /// Skip oidc-provider (quicker runs while working on Postern).
        #[arg(long)]
        without_peer: bool,
        /// Skip the login page's timing in headless Chromium.
        #[arg(long)]
        without_ui: bool,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/bench/results.json")]
        out: PathBuf,
        /// A quick run (1 s per scenario, c=1 and 4, the debug build) that checks the benchmark still works.
        #[arg(long)]
        smoke: bool,
        /// The stores to run Postern on, comma-separated; each is a server of its own.
        #[arg(long, value_delimiter = ',', value_enum, default_value = "sqlite")]
        stores: Vec<bench::Store>,
        /// The PostgreSQL server for the postgres store (postgres://user@host:port), with
        /// pg_stat_statements loaded; `scripts/bench` starts one.
        #[arg(long)]
        postgres: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::TestCa { out, names } => test_ca(&out, names),
        Task::Bench {
            seconds,
            concurrency,
            scenario,
            server_core,
            without_peer,
            without_ui,
            out,
            smoke,
            stores,
            postgres,
        } => {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let (seconds, concurrency) = if smoke { (1.0, vec![1, 4]) } else { (seconds, concurrency) };
            let options = bench::Options {
                seconds,
                concurrency,
                scenarios: scenario,
                server_core,
                peer: !without_peer,
                ui: !without_ui,
                out,
                // The smoke run checks the benchmark works, not how fast: the tests' debug build will do.
                postern: root.join(if smoke { "target/debug/postern" } else { "target/release/postern" }),
                stores,
                postgres,
                rows_written: !smoke,
            };
            // One thread: the load generator has one core, and a single-threaded runtime wastes none of it on
            // handing tasks between threads.
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(bench::run(&root, options))
        }
    }
}

fn validity(params: &mut CertificateParams) {
    // Short-lived: it only has to outlive a test run or a demo session.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(30);
}

fn test_ca(out: &PathBuf, names: Vec<String>) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "Postern throw-away test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(names.clone())?;
    params.distinguished_name.push(DnType::CommonName, names[0].as_str());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    fs::write(out.join("ca.pem"), ca.pem())?;
    fs::write(out.join("server.pem"), cert.pem())?;
    fs::write(out.join("server-key.pem"), key.serialize_pem())?;
    println!("test CA and a certificate for {} written to {}", names.join(", "), out.display());
    Ok(())
}
