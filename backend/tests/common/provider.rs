//! A real third-party OpenID Connect provider for the upstream tests: panva's oidc-provider
//! (`e2e/upstream-op.mjs`, installed by scripts/setup) on loopback, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use url::Url;

use super::{free_port, query};

/// Postern's client secret at the provider.
pub const UPSTREAM_SECRET: &str = "postern-upstream-secret";

/// A running provider.
pub struct Provider {
    child: Child,
    /// Its issuer, `http://127.0.0.1:PORT`.
    pub issuer: String,
}

impl Provider {
    /// Starts the provider, with Postern's callback for upstream `id` of `postern_issuer` registered.
    pub fn start(postern_issuer: &str, id: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/upstream-op.mjs");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(script)
            .env("PORT", port.to_string())
            .env("REDIRECT_URI", format!("{postern_issuer}/upstreams/{id}/callback"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs e2e/upstream-op.mjs (scripts/setup installs oidc-provider)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(ready.starts_with("ready"), "the provider did not start: {ready:?}");
        // The rest of its output is read and dropped: a closed pipe would end it at its next notice.
        std::thread::spawn(move || lines.for_each(drop));
        Provider { child, issuer: format!("http://127.0.0.1:{port}") }
    }

    /// The `[upstreams.<id>]` table for Postern, plus `extra` lines.
    pub fn upstream(&self, id: &str, extra: &str) -> String {
        format!(
            "[upstreams.{id}]\nkind = \"oidc\"\nname = \"Uni\"\nissuer = \"{}\"\nclient_id = \"postern\"\n\
             client_secret = \"{UPSTREAM_SECRET}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n\
             groups_claim = \"groups\"\n{extra}\n",
            self.issuer
        )
    }

    /// Stops the provider (connections to it then fail).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Makes the provider misbehave (see e2e/upstream-op.mjs), or behave again (`normal`).
    pub async fn set_mode(&self, mode: &str) {
        let answer = reqwest::get(format!("{}/__ctl?mode={mode}", self.issuer)).await.unwrap().text().await.unwrap();
        assert_eq!(answer, mode);
    }

    /// Signs `login` in at the provider, the browser having been sent to `authorize` there; returns
    /// where the provider sends the browser back (Postern's callback).
    pub async fn sign_in(&self, browser: &reqwest::Client, authorize: Url, login: &str) -> Url {
        let mut url = location_any(&browser.get(authorize).send().await.unwrap());
        // devInteractions: the login prompt, then the consent prompt, each a form posted back.
        for form in [vec![("prompt", "login"), ("login", login), ("password", "any")], vec![("prompt", "consent")]] {
            let interaction = url.clone();
            assert!(interaction.path().starts_with("/interaction/"), "expected an interaction: {interaction}");
            let resumed = browser.post(interaction).form(&form).send().await.unwrap();
            url = location_any(&resumed);
            url = location_any(&browser.get(url).send().await.unwrap());
            if query(&url, "state").is_some() {
                return url;
            }
        }
        url
    }
}

/// A redirect's target, whatever the 30x.
fn location_any(response: &reqwest::Response) -> Url {
    assert!(response.status().is_redirection(), "expected a redirect, got {}", response.status());
    let target = response.headers()["location"].to_str().unwrap();
    response.url().join(target).unwrap()
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
