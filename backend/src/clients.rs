//! Client registration rules, and the synchronisation of clients declared in the config file.

use url::Url;

use crate::claims::SUPPORTED_SCOPES;
use crate::config::{Config, SELF_TEST_CLIENT_ID};
use crate::password::Passwords;
use crate::store::{Client, ClientSource, Store, StoreResult, Timestamp};

/// Checks a client id: 1-64 characters of letters, digits, `.`, `_` and `-`.
pub fn check_client_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("a client id is 1-64 letters, digits, '.', '_' or '-'".into())
    }
}

/// Checks a redirect URI: an absolute https URL without fragment or credentials (RFC 6749 §3.1.2);
/// plain http only on the loopback interface (RFC 8252 §7.3), unless `allow_insecure` says otherwise.
pub fn check_redirect_uri(uri: &str, allow_insecure: bool) -> Result<(), String> {
    let url = Url::parse(uri).map_err(|e| format!("`{uri}` is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("`{uri}` must be an http or https URL"));
    }
    if url.scheme() == "http" && !allow_insecure && !is_loopback(&url) {
        return Err(format!(
            "`{uri}` is plain http on a network address, where anyone on the path can read the code; use https \
             (or allow_insecure_redirect_uris = true to accept it anyway)"
        ));
    }
    if url.fragment().is_some() || uri.contains('#') {
        return Err(format!("`{uri}` must not have a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{uri}` must not contain credentials"));
    }
    Ok(())
}

/// Whether a URL's host is this machine: a loopback address, `localhost` or a name under it (RFC 6761).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            let name = name.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}

/// Checks a client's allowed scopes: known ones, `openid` among them.
pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    if let Some(unknown) = scopes.iter().find(|s| !SUPPORTED_SCOPES.contains(&s.as_str())) {
        return Err(format!("unknown scope `{unknown}` (known: {})", SUPPORTED_SCOPES.join(", ")));
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err("must include `openid`".into());
    }
    Ok(())
}

/// Makes the store's config-declared clients match the file: creates and updates them. A client an
/// earlier configuration declared and this one does not is kept, with a warning: replicas in a rolling
/// deploy run older and newer files at once, and a replica starting with the older one must not delete
/// a newer client (with every token issued to it). `postern client remove` removes it for good.
pub async fn sync_config_clients(
    store: &dyn Store,
    config: &Config,
    passwords: &Passwords,
    now: Timestamp,
) -> StoreResult<()> {
    for (id, declared) in &config.clients {
        let existing = store.client(id).await?;
        if existing.as_ref().is_some_and(|c| c.source == ClientSource::Cli) {
            tracing::warn!(client_id = %id, "the configuration file replaces a client registered with the CLI");
        }
        let secret_hash = match (&declared.secret, &declared.secret_hash) {
            (_, Some(hash)) => Some(hash.clone()),
            (Some(secret), None) => {
                // Keep the stored hash when it still matches, so a restart does not re-hash every secret.
                let stored = existing.as_ref().and_then(|c| c.secret_hash.clone());
                match stored {
                    Some(hash) if passwords.verify(secret.clone(), Some(hash.clone())).await => Some(hash),
                    _ => Some(passwords.hash(secret.clone()).await),
                }
            }
            (None, None) => None,
        };
        let client = Client {
            id: id.clone(),
            name: declared.name.clone().unwrap_or_else(|| id.clone()),
            secret_hash,
            redirect_uris: declared.redirect_uris.clone(),
            post_logout_redirect_uris: declared.post_logout_redirect_uris.clone(),
            scopes: declared.scopes.clone(),
            public: declared.public,
            groups_claim: declared.groups_claim,
            require_pkce: declared.require_pkce,
            refresh_tokens: declared.refresh_tokens,
            source: ClientSource::Config,
        };
        store.upsert_client(&client, now).await?;
    }
    if config.ui.self_test_client {
        let client = Client {
            id: SELF_TEST_CLIENT_ID.into(),
            name: format!("{} self-test", config.ui.product_name),
            secret_hash: None,
            redirect_uris: vec![config.ui_page("/callback")],
            post_logout_redirect_uris: vec![config.ui_page("/signed-out")],
            scopes: SUPPORTED_SCOPES.iter().map(|s| s.to_string()).collect(),
            public: true,
            groups_claim: true,
            require_pkce: true,
            refresh_tokens: true,
            source: ClientSource::Config,
        };
        store.upsert_client(&client, now).await?;
    }
    let declared =
        |id: &str| config.clients.contains_key(id) || (config.ui.self_test_client && id == SELF_TEST_CLIENT_ID);
    for client in store.list_clients().await? {
        if client.source == ClientSource::Config && !declared(&client.id) {
            tracing::warn!(
                client_id = %client.id,
                "a client declared by a configuration file is not in this one: kept, since another replica may run \
                 a newer configuration; once no configuration declares it, remove it with `postern client remove`"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(check_redirect_uri("https://hub.example:8443/hub/oauth_callback", false).is_ok());
        assert!(check_redirect_uri("https://hub.example/cb#frag", false).is_err());
        assert!(check_redirect_uri("https://user@hub.example/cb", false).is_err());
        assert!(check_redirect_uri("javascript:alert(1)", true).is_err());
        assert!(check_redirect_uri("/relative", true).is_err());
        // Plain http: loopback only, unless the operator insists.
        for ok in ["http://127.0.0.1:8000/cb", "http://[::1]/cb", "http://localhost/cb", "http://hub.localhost/cb"] {
            assert!(check_redirect_uri(ok, false).is_ok(), "{ok}");
        }
        for insecure in ["http://hub.example/cb", "http://10.0.0.5/cb", "http://localhost.example/cb"] {
            assert!(check_redirect_uri(insecure, false).is_err(), "{insecure}");
            assert!(check_redirect_uri(insecure, true).is_ok(), "{insecure}");
        }
    }
}
