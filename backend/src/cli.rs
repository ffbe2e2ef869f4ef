//! The `postern` command line: `serve`, and administration of users, clients, keys and the database.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::clients::{check_client_id, check_redirect_uri, check_scopes};
use crate::config::Config;
use crate::http::now;
use crate::keys::KeySet;
use crate::password::Passwords;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{copy, Client, ClientSource, Database, NewUser, Store, StoreError, UpstreamIdentity};
use crate::upstream::Upstreams;
use crate::users::{check_group, normalize_username};
use crate::{server, tokens};

/// Postern: a self-hosted OpenID Connect provider.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about)]
pub struct Cli {
    /// Configuration file (TOML); POSTERN_* environment variables override it.
    #[arg(long, short, global = true, env = "POSTERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage clients (relying parties).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Move the database.
    #[command(subcommand)]
    Database(DatabaseCommand),
    /// Check the upstream identity providers (LDAP directories).
    #[command(subcommand)]
    Upstream(UpstreamCommand),
    /// Read a secret from standard input and print its argon2id hash, for `secret_hash` in the config.
    HashSecret,
    /// Ask the server at `listen` whether it is ready (exit status 0) or not (1): for container health
    /// checks in images without an HTTP client.
    Health,
}

/// `postern keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key; a running server signs with it within seconds. Older keys stay
    /// published until every token they signed has expired.
    Rotate,
    /// List the published keys, newest (signing) first.
    List,
    /// Replace the key-encryption key that seals the private keys in the database, re-sealing them:
    /// a new key is put first in the key file, every private key is re-sealed, then the old key is
    /// dropped. A running server follows within seconds.
    RotateEncryptionKey,
}

/// `postern upstream …`
#[derive(Debug, Subcommand)]
pub enum UpstreamCommand {
    /// List the configured upstreams.
    List,
    /// Connect to an upstream and report what is wrong (TLS, DNS, credentials, search base); with
    /// --user, show what Postern would make of that person.
    Test {
        /// The upstream's id (`[upstreams.<id>]`).
        id: String,
        /// A name to look up, as the person would type it into the login form.
        #[arg(long)]
        user: Option<String>,
    },
}

/// `postern database …`
#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Copy an SQLite database (users, groups, clients, sealed keys, sessions, grants and their
    /// tokens, throttle counts) into an empty PostgreSQL database, all or nothing. Stop the servers
    /// first: what they write afterwards is not copied.
    Copy {
        /// The SQLite database: a path or sqlite://path.
        from: String,
        /// The PostgreSQL database: postgres://….
        to: String,
    },
}

/// `postern user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from a prompt, or from standard input when it is not a terminal.
    Add {
        /// Login name (case-insensitive; also the `sub` claim).
        username: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Mark the e-mail address as verified.
        #[arg(long)]
        email_verified: bool,
        /// Groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Set a user's password (prompt, or standard input).
    SetPassword {
        /// Login name.
        username: String,
    },
    /// List users.
    List,
    /// Disable a user: no more logins, sessions end, tokens stop working.
    Disable {
        /// Login name.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Login name.
        username: String,
    },
    /// Link an upstream identity to an existing user, who may then sign in through that upstream too.
    Link {
        /// Login name of the Postern user.
        username: String,
        /// The upstream's id (`[upstreams.<id>]`).
        upstream: String,
        /// Who the person is at the upstream: for LDAP what they type to sign in (looked up there), for
        /// OpenID Connect their `sub`.
        #[arg(long = "as")]
        name: String,
    },
    /// Show a user's groups, or replace them with the ones given (an upstream's groups replace them
    /// again at that upstream's next sign-in).
    Groups {
        /// Login name.
        username: String,
        /// New groups; none given prints the current ones.
        groups: Vec<String>,
        /// Remove every group.
        #[arg(long, conflicts_with = "groups")]
        clear: bool,
    },
}

/// `postern client …`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its generated secret once.
    Add(ClientAdd),
    /// List clients.
    List,
    /// Remove a client and every token issued to it.
    Remove {
        /// Client id.
        id: String,
    },
}

/// Arguments of `postern client add`.
#[derive(Debug, Args)]
pub struct ClientAdd {
    /// Client id.
    pub id: String,
    /// Exact redirect URI (repeat for several).
    #[arg(long = "redirect-uri", required = true)]
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URI (repeat for several).
    #[arg(long = "post-logout-redirect-uri")]
    pub post_logout_redirect_uris: Vec<String>,
    /// Name shown on the login page.
    #[arg(long)]
    pub name: Option<String>,
    /// A public client (no secret, PKCE mandatory).
    #[arg(long)]
    pub public: bool,
    /// Allowed scopes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "openid,profile,email,groups")]
    pub scopes: Vec<String>,
    /// Always include the user's groups in tokens and userinfo.
    #[arg(long)]
    pub groups_claim: bool,
    /// Allow authorization requests without PKCE (confidential legacy clients only).
    #[arg(long)]
    pub no_pkce: bool,
    /// Do not issue refresh tokens.
    #[arg(long)]
    pub no_refresh_tokens: bool,
    /// Accept plain-http redirect URIs on network addresses (codes then travel unencrypted).
    #[arg(long)]
    pub allow_insecure_redirect_uris: bool,
    /// Print a `jupyterhub_config.py` block for GenericOAuthenticator.
    #[arg(long)]
    pub jupyterhub: bool,
    /// With --jupyterhub: Postern groups allowed to use the Hub (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "jupyterhub")]
    pub allowed_groups: Vec<String>,
    /// With --jupyterhub: Postern groups whose members are Hub admins (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "jupyterhub")]
    pub admin_groups: Vec<String>,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    match cli.command {
        Command::Serve => server::serve(config).await,
        Command::HashSecret => {
            let secret = read_secret("Secret")?;
            println!("{}", passwords(&config)?.hash_now(&secret));
            Ok(())
        }
        Command::Health => health(&config).await,
        Command::User(command) => user(&config, command).await,
        Command::Keys(command) => keys(&config, command).await,
        Command::Client(command) => client(&config, command).await,
        Command::Database(command) => database(command).await,
        Command::Upstream(command) => upstream(&config, command).await,
    }
}

async fn upstream(config: &Config, command: UpstreamCommand) -> anyhow::Result<()> {
    let upstreams = Upstreams::new(config).map_err(anyhow::Error::msg)?;
    match command {
        UpstreamCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<16} {:<6} {:<28} WHERE", "ID", "KIND", "NAME")?;
            for directory in &upstreams.directories {
                writeln!(
                    out,
                    "{:<16} {:<6} {:<28} {}",
                    directory.id, "ldap", directory.config.name, directory.config.url
                )?;
            }
            for provider in &upstreams.providers {
                writeln!(
                    out,
                    "{:<16} {:<6} {:<28} {}",
                    provider.id, "oidc", provider.config.name, provider.config.issuer
                )?;
            }
        }
        UpstreamCommand::Test { id, user } if upstreams.provider(&id).is_some() => {
            let provider = upstreams.provider(&id).expect("checked");
            let found = provider.check().await.with_context(|| format!("{id} ({})", provider.config.issuer))?;
            println!("{id}: discovery and keys fetched\n{found}");
            println!("callback to register there: {}", config.endpoint(&format!("/upstreams/{id}/callback")));
            if user.is_some() {
                println!("(--user is for LDAP: a provider shows its claims only to a person signing in through it)");
            }
        }
        UpstreamCommand::Test { id, user } => {
            let directory =
                upstreams.directory(&id).with_context(|| format!("no upstream `{id}` in the configuration"))?;
            let url = &directory.config.url;
            directory.check().await.with_context(|| format!("{id} ({url})"))?;
            let account = directory.config.bind_dn.as_deref().unwrap_or("anonymous");
            println!("{id}: connected to {url}, bound as {account}, user_base found");
            if let Some(name) = user {
                let person = directory
                    .lookup(&name)
                    .await
                    .with_context(|| format!("{id}: looking up {name}"))?
                    .with_context(|| format!("{id}: user_filter finds nobody named {name} under user_base"))?;
                println!("entry:          {}", person.profile.locator.as_deref().unwrap_or("-"));
                println!("id ({}): {}", directory.config.id_attribute, person.subject);
                match normalize_username(&person.profile.name) {
                    Ok(username) => println!("username:       {username} (if free; see `postern user list`)"),
                    Err(e) => println!("username:       none: `{}` {e}", person.profile.name),
                }
                println!("name:           {}", person.profile.display_name);
                println!("email:          {}", person.profile.email.as_deref().unwrap_or("-"));
                println!("groups:         {}", person.profile.groups.join(","));
            }
        }
    }
    Ok(())
}

async fn database(command: DatabaseCommand) -> anyhow::Result<()> {
    let DatabaseCommand::Copy { from, to } = command;
    let (Ok(Database::Sqlite(path)), Ok(Database::Postgres(url))) = (Database::parse(&from), Database::parse(&to))
    else {
        bail!("`database copy` copies an SQLite database (a path or sqlite://path) into PostgreSQL (postgres://…)");
    };
    // Opening a missing file would make an empty database and copy nothing.
    anyhow::ensure!(path.is_file(), "there is no SQLite database at {}", path.display());
    let source = SqliteStore::open(&path).await.with_context(|| format!("opening {}", path.display()))?;
    let target = Database::Postgres(url.clone());
    let postgres = PostgresStore::open(&url).await.with_context(|| format!("opening {target}"))?;
    let copied = copy::sqlite_to_postgres(&source, &postgres).await.context("copying")?;
    for (table, rows) in copied {
        println!("{table:<24} {rows:>8} rows");
    }
    println!(
        "Copied into {target}. Point `database` there, and give every replica the key-encryption key \
         this database's keys are sealed with."
    );
    Ok(())
}

fn passwords(config: &Config) -> anyhow::Result<Passwords> {
    Passwords::new(&config.argon2).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))
}

/// Reads a secret: from a hidden prompt (asked twice) on a terminal, else one line of standard input.
fn read_secret(what: &str) -> anyhow::Result<String> {
    let secret = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("{what}: "))?;
        let second = rpassword::prompt_password(format!("{what} again: "))?;
        if first != second {
            bail!("the two entries differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if secret.chars().count() < 8 {
        bail!("{what} must be at least 8 characters");
    }
    Ok(secret)
}

/// `GET /healthz/ready` on the configured listen address, over plain HTTP/1.1.
async fn health(config: &Config) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), check)
        .await
        .with_context(|| format!("{address} did not answer within 5 s"))?
        .with_context(|| format!("asking {address}"))?;
    let status = answer.get(9..12).unwrap_or_default();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    if status != "200" {
        bail!("not ready ({status}): {body}");
    }
    println!("ready");
    Ok(())
}

fn check_groups(groups: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for group in groups.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
        check_group(group).map_err(anyhow::Error::msg)?;
        out.push(group.to_owned());
    }
    Ok(out)
}

fn not_found(e: StoreError, username: &str) -> anyhow::Error {
    match e {
        StoreError::NotFound(_) => anyhow::anyhow!("no user named {username}"),
        other => other.into(),
    }
}

async fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let store = server::open_store(config).await?;
    match command {
        UserCommand::Add { username, name, email, email_verified, groups } => {
            let username = normalize_username(&username).map_err(anyhow::Error::msg)?;
            let groups = check_groups(&groups)?;
            let password = read_secret("Password")?;
            let password_hash = passwords(config)?.hash(password).await;
            let user = NewUser {
                display_name: name.unwrap_or_else(|| username.clone()),
                username,
                email,
                email_verified,
                groups,
                password_hash,
            };
            match store.create_user(user, now()).await {
                Ok(user) => println!("created user {}", user.username),
                Err(StoreError::Conflict(_)) => bail!("a user with that name already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        UserCommand::SetPassword { username } => {
            let username = normalize_username(&username).map_err(anyhow::Error::msg)?;
            let password = read_secret("Password")?;
            let hash = passwords(config)?.hash(password).await;
            store.set_password(&username, &hash, now()).await.map_err(|e| not_found(e, &username))?;
            println!("password of {username} changed; their sessions ended and their tokens were revoked");
        }
        UserCommand::List => {
            let identities = store.list_upstream_identities().await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<24} {:<24} {:<32} {:<8} {:<16} GROUPS", "USERNAME", "NAME", "EMAIL", "STATUS", "SOURCE")?;
            for u in store.list_users().await? {
                let status = if u.disabled { "disabled" } else { "active" };
                let email = u.email.as_deref().unwrap_or("-");
                // Where the user signs in: a password of Postern's own ("local"), and each linked upstream.
                let mut sources: Vec<&str> = u.has_password().then_some("local").into_iter().collect();
                sources.extend(identities.iter().filter(|i| i.user_id == u.id).map(|i| i.upstream.as_str()));
                writeln!(
                    out,
                    "{:<24} {:<24} {:<32} {:<8} {:<16} {}",
                    u.username,
                    u.display_name,
                    email,
                    status,
                    sources.join(","),
                    u.groups.join(",")
                )?;
            }
        }
        UserCommand::Link { username, upstream, name } => {
            let username = normalize_username(&username).map_err(anyhow::Error::msg)?;
            let user =
                store.user_by_name(&username).await?.ok_or_else(|| anyhow::anyhow!("no user named {username}"))?;
            let upstreams = Upstreams::new(config).map_err(anyhow::Error::msg)?;
            // Who they are there, and where to read them again.
            let (subject, their_name, locator) = if upstreams.provider(&upstream).is_some() {
                // A provider cannot be asked about someone: `--as` is their `sub` there.
                (name.clone(), name.clone(), None)
            } else {
                let directory = upstreams
                    .directory(&upstream)
                    .with_context(|| format!("no upstream `{upstream}` in the configuration"))?;
                let person = directory
                    .lookup(&name)
                    .await
                    .with_context(|| format!("{upstream}: looking up {name}"))?
                    .with_context(|| format!("{upstream}: nobody named {name}"))?;
                (person.subject, person.profile.name, person.profile.locator)
            };
            let now = now();
            let identity = UpstreamIdentity {
                upstream: upstream.clone(),
                subject: subject.clone(),
                user_id: user.id,
                name: their_name,
                locator,
                created_at: now,
                last_login_at: None,
                checked_at: now,
            };
            match store.link_upstream_identity(&identity).await {
                Ok(()) => println!("{username} may now sign in as {name} at {upstream} ({subject})"),
                Err(StoreError::Conflict(_)) => {
                    bail!("{name} at {upstream} is linked to an account already (see `postern user list`)")
                }
                Err(e) => return Err(e.into()),
            }
        }
        UserCommand::Disable { username } => {
            let username = normalize_username(&username).map_err(anyhow::Error::msg)?;
            store.set_disabled(&username, true, now()).await.map_err(|e| not_found(e, &username))?;
            println!("disabled {username}");
        }
        UserCommand::Enable { username } => {
            let username = normalize_username(&username).map_err(anyhow::Error::msg)?;
            store.set_disabled(&username, false, now()).await.map_err(|e| not_found(e, &username))?;
            println!("enabled {username}");
        }
        UserCommand::Groups { username, groups, clear } => {
            let username = normalize_username(&username).map_err(anyhow::Error::msg)?;
            if !groups.is_empty() || clear {
                let groups = check_groups(&groups)?;
                store.set_groups(&username, &groups).await.map_err(|e| not_found(e, &username))?;
            }
            let user =
                store.user_by_name(&username).await?.ok_or_else(|| anyhow::anyhow!("no user named {username}"))?;
            println!("{}", user.groups.join(","));
        }
    }
    Ok(())
}

async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = server::open_store(config).await?;
    let alg = config.tokens.signing_alg;
    let lifetime = config.tokens.access_token_lifetime as i64;
    let mut kek = config.key_encryption_key(true)?;
    match command {
        KeysCommand::Rotate => {
            let key = KeySet::rotate(store.as_ref(), &kek, alg, now()).await?;
            println!(
                "new {alg} signing key {}: every running server publishes it within {} s, and it signs from {} s on",
                key.kid(),
                crate::server::KEY_RELOAD_INTERVAL.as_secs(),
                crate::keys::KEY_ACTIVATION_DELAY
            );
        }
        KeysCommand::RotateEncryptionKey => {
            if config.key_encryption_key.is_some() {
                bail!(
                    "the key-encryption key comes from key_encryption_key (POSTERN_KEY_ENCRYPTION_KEY): set it to \
                     `{} <the current key>`, run `postern keys list` to re-seal, then remove the old key",
                    crate::kek::generate()
                );
            }
            let path = config.key_encryption_key_path();
            let old = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let new = crate::kek::generate();
            // Both keys while re-sealing, so that a crash at any point leaves every private key readable.
            crate::private_files::write(&path, format!("{new}\n{old}").as_bytes())?;
            kek = config.key_encryption_key(true)?;
            KeySet::load(store.as_ref(), &kek, alg, now(), lifetime).await?;
            crate::private_files::write(&path, format!("{new}\n").as_bytes())?;
            kek = config.key_encryption_key(true)?;
            println!("new key-encryption key {} in {}; every private key re-sealed with it", kek.id(), path.display());
        }
        KeysCommand::List => {}
    }
    let set = KeySet::load(store.as_ref(), &kek, alg, now(), lifetime).await?;
    for key in set.jwks()["keys"].as_array().into_iter().flatten() {
        println!("{} {}", key["alg"].as_str().unwrap_or("?"), key["kid"].as_str().unwrap_or("?"));
    }
    Ok(())
}

async fn client(config: &Config, command: ClientCommand) -> anyhow::Result<()> {
    let store = server::open_store(config).await?;
    match command {
        ClientCommand::Add(args) => add_client(config, store.as_ref(), args).await?,
        ClientCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<24} {:<24} {:<12} {:<7} REDIRECT URIS", "ID", "NAME", "TYPE", "SOURCE")?;
            for c in store.list_clients().await? {
                let kind = if c.public { "public" } else { "confidential" };
                let source = if c.source == ClientSource::Config { "config" } else { "cli" };
                writeln!(out, "{:<24} {:<24} {:<12} {:<7} {}", c.id, c.name, kind, source, c.redirect_uris.join(" "))?;
            }
        }
        ClientCommand::Remove { id } => {
            if config.clients.contains_key(&id) {
                bail!("client {id} is declared in the configuration file; remove it there");
            }
            if !store.remove_client(&id).await? {
                bail!("no client with id {id}");
            }
            println!("removed client {id}");
        }
    }
    Ok(())
}

async fn add_client(config: &Config, store: &dyn Store, args: ClientAdd) -> anyhow::Result<()> {
    check_client_id(&args.id).map_err(anyhow::Error::msg)?;
    for uri in args.redirect_uris.iter().chain(&args.post_logout_redirect_uris) {
        check_redirect_uri(uri, args.allow_insecure_redirect_uris).map_err(anyhow::Error::msg)?;
    }
    check_scopes(&args.scopes).map_err(anyhow::Error::msg)?;
    if args.public && args.no_pkce {
        bail!("a public client must use PKCE");
    }
    let allowed_groups = check_groups(&args.allowed_groups)?;
    let admin_groups = check_groups(&args.admin_groups)?;
    if config.clients.contains_key(&args.id) || store.client(&args.id).await?.is_some() {
        bail!("a client with id {} already exists", args.id);
    }
    let secret = (!args.public).then(tokens::random_token);
    let secret_hash = match &secret {
        Some(secret) => Some(passwords(config)?.hash(secret.clone()).await),
        None => None,
    };
    let uses_groups = !allowed_groups.is_empty() || !admin_groups.is_empty();
    let client = Client {
        id: args.id.clone(),
        name: args.name.clone().unwrap_or_else(|| if args.jupyterhub { "JupyterHub".into() } else { args.id.clone() }),
        secret_hash,
        redirect_uris: args.redirect_uris.clone(),
        post_logout_redirect_uris: args.post_logout_redirect_uris.clone(),
        scopes: args.scopes.clone(),
        public: args.public,
        groups_claim: args.groups_claim || uses_groups,
        require_pkce: !args.no_pkce,
        refresh_tokens: !args.no_refresh_tokens,
        source: ClientSource::Cli,
    };
    store.upsert_client(&client, now()).await?;
    println!("registered client {}", client.id);
    if let Some(secret) = &secret {
        println!("client secret (shown only now): {secret}");
    }
    if args.jupyterhub {
        println!();
        print!("{}", jupyterhub_snippet(config, &client, secret.as_deref(), &allowed_groups, &admin_groups));
    }
    Ok(())
}

fn python_set(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("{{{}}}", quoted.join(", "))
}

/// A `jupyterhub_config.py` block for GenericOAuthenticator that works when pasted.
pub fn jupyterhub_snippet(
    config: &Config,
    client: &Client,
    secret: Option<&str>,
    allowed_groups: &[String],
    admin_groups: &[String],
) -> String {
    let scopes: Vec<String> = client.scopes.iter().map(|s| format!("{s:?}")).collect();
    let mut out = String::from("# jupyterhub_config.py: sign in through Postern\n");
    out += "c.JupyterHub.authenticator_class = \"generic-oauth\"\n";
    out += "c.GenericOAuthenticator.login_service = \"Postern\"\n";
    out += &format!("c.GenericOAuthenticator.client_id = {:?}\n", client.id);
    if let Some(secret) = secret {
        out += &format!("c.GenericOAuthenticator.client_secret = {secret:?}\n");
    }
    out += &format!("c.GenericOAuthenticator.oauth_callback_url = {:?}\n", client.redirect_uris[0]);
    out += &format!("c.GenericOAuthenticator.authorize_url = {:?}\n", config.endpoint("/authorize"));
    out += &format!("c.GenericOAuthenticator.token_url = {:?}\n", config.endpoint("/token"));
    out += &format!("c.GenericOAuthenticator.userdata_url = {:?}\n", config.endpoint("/userinfo"));
    out += &format!("c.GenericOAuthenticator.scope = [{}]\n", scopes.join(", "));
    // preferred_username is released with the profile scope only; sub (the same value) always is.
    let username_claim = if client.scopes.iter().any(|s| s == "profile") { "preferred_username" } else { "sub" };
    out += &format!("c.GenericOAuthenticator.username_claim = {username_claim:?}\n");
    if client.groups_claim || client.scopes.iter().any(|s| s == "groups") {
        out += "# The Hub's groups follow the user's Postern groups at every login.\n";
        out += "c.GenericOAuthenticator.manage_groups = True\n";
        out += "c.GenericOAuthenticator.auth_state_groups_key = \"oauth_user.groups\"\n";
    }
    if allowed_groups.is_empty() {
        out += "# Every active Postern user may use this Hub; restrict with allowed_users or allowed_groups.\n";
        out += "c.GenericOAuthenticator.allow_all = True\n";
    } else {
        out += &format!("c.GenericOAuthenticator.allowed_groups = {}\n", python_set(allowed_groups));
    }
    if !admin_groups.is_empty() {
        out += &format!("c.GenericOAuthenticator.admin_groups = {}\n", python_set(admin_groups));
    }
    out += "# Refresh the user's Postern data before each spawn (needs JUPYTERHUB_CRYPT_KEY):\n";
    out += "# c.GenericOAuthenticator.enable_auth_state = True\n";
    out
}
