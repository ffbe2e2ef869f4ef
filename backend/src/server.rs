//! `postern serve`: open the store, prepare keys and clients, and serve until told to stop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::clients::sync_config_clients;
use crate::config::Config;
use crate::http::{now, router, AppState};
use crate::keys::{KeySet, Keys};
use crate::password::Passwords;
use crate::store::Store;
use crate::throttle::Throttle;

/// Opens the configured store.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    crate::store::open(&config.database).await.with_context(|| format!("opening the database {}", config.database))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    warn_about_wide_proxy_ranges(&config);
    let mut store = open_store(&config).await?;
    if config.metrics.listen.is_some() {
        store = Arc::new(crate::store::metered::Metered(store));
    }
    let passwords = Passwords::new(&config.argon2).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    sync_config_clients(store.as_ref(), &config, &passwords, now()).await?;
    // Hashing the configured client secrets should not keep argon2's memory for the life of the process.
    passwords.release_memory();
    let lifetime = config.tokens.access_token_lifetime as i64;
    if let Some(listen) = config.metrics.listen {
        let handle = crate::metrics::install(config.metrics.client_ids)?;
        // Bound before the public listener, so that a port already taken stops the start.
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, handle).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let upstreams = crate::upstream::Upstreams::new(&config).map_err(|e| anyhow::anyhow!(e))?;
    let kek = config.key_encryption_key(true)?;
    let keys = Keys::new(KeySet::load(store.as_ref(), &kek, config.tokens.signing_alg, now(), lifetime).await?);
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    if config.ui.url.is_none() && !config.serves_ui_files() {
        tracing::warn!(dir = %config.ui.dir.display(), "no built UI found (run `trunk build --release`); serving the API only");
    }
    let ui_available = config.ui.url.is_some() || config.serves_ui_files();
    let state = AppState {
        discovery: crate::http::discovery::metadata(&config),
        config: Arc::new(config),
        store: store.clone(),
        keys: keys.clone(),
        passwords,
        ui_available,
        login_throttle: Arc::new(
            Throttle::logins(Duration::from_secs(15 * 60), Duration::from_secs(60)).shared(store.clone()),
        ),
        client_throttle: Arc::new(Throttle::client_secrets().shared(store.clone())),
        verified_secrets: Arc::default(),
        upstreams: Arc::new(upstreams),
    };
    tokio::spawn(purge_periodically(store.clone()));
    tokio::spawn(reload_keys_periodically(store, keys, state.config.clone(), lifetime));
    tracing::info!(address = %listener.local_addr()?, issuer = state.config.issuer_id(), "Postern is listening");
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("Postern stopped");
    Ok(())
}

/// Any client inside a trusted range can claim any address in `X-Forwarded-For`, escaping the
/// per-address throttle: a range should hold the proxies, not a network of clients.
fn warn_about_wide_proxy_ranges(config: &Config) {
    for range in &config.trusted_proxies {
        // More than 256 addresses: wider than a /24 (IPv4) or a /120 (IPv6).
        let wide = match range {
            ipnet::IpNet::V4(v4) => v4.prefix_len() < 24,
            ipnet::IpNet::V6(v6) => v6.prefix_len() < 120,
        };
        if wide {
            tracing::warn!(
                %range,
                "trusted_proxies holds a wide range: anything in it can claim any client address; list the proxies' own addresses"
            );
        }
    }
}

async fn purge_periodically(store: Arc<dyn Store>) {
    // Often enough that a flood of expired pending requests never piles up for long.
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = store.purge_expired(now()).await {
            tracing::warn!(error = %e, "purging expired records failed");
        }
    }
}

/// Picks up keys rotated with `postern keys rotate`, and a rotated key-encryption key, while the
/// server runs, and retires old keys.
async fn reload_keys_periodically(store: Arc<dyn Store>, keys: Keys, config: Arc<Config>, lifetime: i64) {
    let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let kek = match config.key_encryption_key(false) {
            Ok(kek) => kek,
            Err(e) => {
                tracing::warn!(error = %e, "reading the key-encryption key failed");
                continue;
            }
        };
        match KeySet::load(store.as_ref(), &kek, config.tokens.signing_alg, now(), lifetime).await {
            Ok(set) => keys.replace(set),
            Err(e) => tracing::warn!(error = %e, "reloading signing keys failed"),
        }
    }
}

/// How often the server looks for rotated keys.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
