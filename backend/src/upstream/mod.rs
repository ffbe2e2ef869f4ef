//! Upstream identity providers: where else people sign in (an institution's LDAP directory), and
//! how what they say becomes a Postern account.
//!
//! One module per kind of upstream; [`accounts`] turns a person an upstream vouched for into a
//! Postern user, the same way whichever kind it is.

pub mod accounts;
pub mod ldap;
pub mod oidc;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{Config, UpstreamConfig};
use crate::store::UpstreamProfile;
use crate::users::check_group;

/// Why an upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// It could not be reached: connection refused, DNS, TLS, no answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// It answered, but not as configured (service account refused, search base missing, several
    /// entries for one name, an entry without its id attribute).
    #[error("misconfigured: {0}")]
    Misconfigured(String),
    /// Its answer failed Postern's checks (an id_token with a wrong audience, nonce, issuer or
    /// signature; a mixed-up authorization response).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The person did not sign in there (cancelled, refused), as the provider says.
    #[error("denied: {0}")]
    Denied(String),
}

impl UpstreamError {
    /// The reason class audit events and metrics name.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Misconfigured(_) => "misconfigured",
            UpstreamError::Rejected(_) => "invalid_response",
            UpstreamError::Denied(_) => "denied",
        }
    }
}

/// A person as an upstream describes them, groups already mapped to Postern's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The upstream's stable id for them.
    pub subject: String,
    /// What their Postern user takes from the upstream.
    pub profile: UpstreamProfile,
}

/// Every configured upstream, ready to use.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// LDAP directories, in the order of their ids: the password form asks each in turn.
    pub directories: Vec<Arc<ldap::Directory>>,
    /// OpenID Connect providers, in the order of their ids: the login page's buttons.
    pub providers: Vec<Arc<oidc::Provider>>,
}

impl Upstreams {
    /// Prepares every upstream in the configuration (reads CA and secret files; connects to nothing).
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut upstreams = Upstreams::default();
        for (id, upstream) in &config.upstreams {
            match upstream {
                UpstreamConfig::Ldap(ldap) => upstreams
                    .directories
                    .push(Arc::new(ldap::Directory::new(id, ldap).map_err(|e| format!("upstreams.{id}: {e}"))?)),
                UpstreamConfig::Oidc(oidc) => upstreams
                    .providers
                    .push(Arc::new(oidc::Provider::new(id, oidc).map_err(|e| format!("upstreams.{id}: {e}"))?)),
            }
        }
        Ok(upstreams)
    }

    /// The OpenID Connect provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Arc<oidc::Provider>> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// The directory with this id.
    pub fn directory(&self, id: &str) -> Option<&Arc<ldap::Directory>> {
        self.directories.iter().find(|d| d.id == id)
    }
}

/// Maps an upstream's group names to Postern's: only `allowed` ones (all when empty), each prefixed,
/// names Postern cannot hold dropped; then the `fixed` groups every person of the upstream gets.
pub fn map_groups(upstream: &[String], allowed: &[String], prefix: &str, fixed: &[String]) -> Vec<String> {
    let mut groups = BTreeSet::new();
    for name in upstream {
        if !allowed.is_empty() && !allowed.iter().any(|a| a == name) {
            continue;
        }
        let group = format!("{prefix}{name}");
        match check_group(&group) {
            Ok(()) => {
                groups.insert(group);
            }
            Err(_) => tracing::debug!(group = %group, "an upstream group name Postern cannot hold; skipped"),
        }
    }
    groups.extend(fixed.iter().cloned());
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_filtered_prefixed_and_completed() {
        let upstream = ["staff".to_owned(), "students".to_owned(), "Lab, North".to_owned()];
        assert_eq!(map_groups(&upstream, &[], "", &[]), ["staff", "students"], "names Postern cannot hold are dropped");
        assert_eq!(map_groups(&upstream, &["staff".into()], "campus:", &["campus".into()]), ["campus", "campus:staff"]);
    }
}
