//! An LDAP directory as an upstream: the password form's name and password are checked by finding the
//! person with the service account and then binding as them (OpenLDAP, Active Directory).
//!
//! Each sign-in or re-read uses a connection of its own, always over TLS (ldaps:// or StartTLS) unless
//! the operator allowed plain LDAP, with every operation bounded by the configured timeout.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, ResultEntry, Scope, SearchEntry};

use super::{Person, UpstreamError};
use crate::config::LdapConfig;
use crate::store::UpstreamProfile;

/// LDAP's result code for a wrong password or an unknown DN.
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP's result code for a search base (or re-read DN) that does not exist.
const NO_SUCH_OBJECT: u32 = 32;

/// What a password check found.
#[derive(Debug)]
pub enum Check {
    /// The directory knows the person and the password is theirs.
    Authenticated(Person),
    /// No entry matches the name.
    UnknownUser,
    /// An entry matches, and the password is not its.
    WrongPassword,
}

/// One configured directory.
pub struct Directory {
    /// The upstream's id.
    pub id: String,
    /// Its settings.
    pub config: LdapConfig,
    tls: Arc<rustls::ClientConfig>,
    bind_password: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("id", &self.id).field("url", &self.config.url.as_str()).finish()
    }
}

impl Directory {
    /// Prepares a directory: reads its CA file and its service password file.
    pub fn new(id: &str, config: &LdapConfig) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                    roots.add(cert).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("ca_file {}: no certificate in it", path.display()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        // Always this process's own TLS settings: with two crypto providers compiled in, ldap3's default
        // would panic, and its "no verification" switch must never be reachable.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let bind_password = match (&config.bind_password, &config.bind_password_file) {
            (Some(secret), _) => Some(secret.0.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("bind_password_file {}: {e}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        Ok(Self {
            id: id.to_owned(),
            config: config.clone(),
            tls: Arc::new(tls),
            bind_password,
            timeout: Duration::from_secs(config.timeout),
        })
    }

    /// Checks a name and password typed into the login form.
    pub async fn check_password(&self, name: &str, password: &str) -> Result<Check, UpstreamError> {
        // An empty password is an "unauthenticated bind", which Active Directory answers with success.
        if password.is_empty() || name.is_empty() {
            return Ok(Check::WrongPassword);
        }
        let mut ldap = self.connect().await?;
        let result = async {
            let Some(entry) = self.find_person(&mut ldap, name).await? else { return Ok(Check::UnknownUser) };
            let bind = ldap.with_timeout(self.timeout).simple_bind(&entry.dn, password).await.map_err(unreachable)?;
            match bind.rc {
                0 => {}
                INVALID_CREDENTIALS => return Ok(Check::WrongPassword),
                // Locked, expired or otherwise refused by the directory: the person cannot sign in.
                rc => {
                    tracing::info!(upstream = %self.id, rc, text = %bind.text, "the directory refused the person's bind");
                    return Ok(Check::WrongPassword);
                }
            }
            // Read as the service account again: what a person may read of themselves varies.
            self.service_bind(&mut ldap).await?;
            Ok(Check::Authenticated(self.person(&mut ldap, entry, name).await?))
        }
        .await;
        let _ = ldap.unbind().await;
        result
    }

    /// Reads a person again by their entry's DN (a refresh's check): `None` when the entry is gone,
    /// or no longer matches `user_filter` (disabled, moved out of the searched groups).
    pub async fn reread(&self, dn: &str, name: &str) -> Result<Option<Person>, UpstreamError> {
        let mut ldap = self.connect().await?;
        let result = async {
            let filter = self.config.user_filter.replace("{username}", &ldap_escape(name));
            let Some(entry) = self.search_one(&mut ldap, dn, Scope::Base, &filter).await? else { return Ok(None) };
            Ok(Some(self.person(&mut ldap, entry, name).await?))
        }
        .await;
        let _ = ldap.unbind().await;
        result
    }

    /// Finds a person by the name they sign in with, without their password (`postern upstream test`
    /// and `postern user link`).
    pub async fn lookup(&self, name: &str) -> Result<Option<Person>, UpstreamError> {
        let mut ldap = self.connect().await?;
        let result = async {
            let Some(entry) = self.find_person(&mut ldap, name).await? else { return Ok(None) };
            Ok(Some(self.person(&mut ldap, entry, name).await?))
        }
        .await;
        let _ = ldap.unbind().await;
        result
    }

    /// Checks that the service account can bind and that `user_base` exists (`postern upstream test`).
    pub async fn check(&self) -> Result<(), UpstreamError> {
        let mut ldap = self.connect().await?;
        let search = ldap
            .with_timeout(self.timeout)
            .search(&self.config.user_base, Scope::Base, "(objectClass=*)", vec!["1.1"])
            .await
            .map_err(unreachable);
        let _ = ldap.unbind().await;
        match search?.1.rc {
            0 => Ok(()),
            NO_SUCH_OBJECT => Err(UpstreamError::Misconfigured(format!(
                "user_base `{}` does not exist, or the service account may not see it",
                self.config.user_base
            ))),
            rc => Err(UpstreamError::Misconfigured(format!("reading user_base failed: rc={rc}"))),
        }
    }

    /// Connects and binds as the service account: what `postern upstream test` checks first.
    pub async fn connect(&self) -> Result<Ldap, UpstreamError> {
        let settings = LdapConnSettings::new()
            .set_config(self.tls.clone())
            .set_starttls(self.config.starttls)
            .set_conn_timeout(self.timeout);
        let (conn, mut ldap) =
            LdapConnAsync::with_settings(settings, self.config.url.as_str()).await.map_err(unreachable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        self.service_bind(&mut ldap).await?;
        Ok(ldap)
    }

    async fn service_bind(&self, ldap: &mut Ldap) -> Result<(), UpstreamError> {
        let Some(dn) = &self.config.bind_dn else { return Ok(()) };
        let password = self.bind_password.as_deref().unwrap_or_default();
        let result = ldap.with_timeout(self.timeout).simple_bind(dn, password).await.map_err(unreachable)?;
        match result.rc {
            0 => Ok(()),
            INVALID_CREDENTIALS => Err(UpstreamError::Misconfigured(
                "the directory refused the service account's bind_dn or password".into(),
            )),
            rc => {
                Err(UpstreamError::Misconfigured(format!("the service account's bind failed: rc={rc} {}", result.text)))
            }
        }
    }

    /// The one entry under `user_base` whose `user_filter` matches `name`; several is a configuration
    /// error (the filter must single a person out).
    pub async fn find_person(&self, ldap: &mut Ldap, name: &str) -> Result<Option<SearchEntry>, UpstreamError> {
        let filter = self.config.user_filter.replace("{username}", &ldap_escape(name));
        self.search_one(ldap, &self.config.user_base, Scope::Subtree, &filter).await
    }

    async fn search_one(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
    ) -> Result<Option<SearchEntry>, UpstreamError> {
        let c = &self.config;
        let mut attributes = vec![&c.id_attribute, &c.username_attribute, &c.name_attribute, &c.email_attribute];
        if c.group_base.is_none() {
            attributes.push(&c.groups_attribute);
        }
        let search =
            ldap.with_timeout(self.timeout).search(base, scope, filter, attributes).await.map_err(unreachable)?;
        let (entries, result) = (search.0, search.1);
        match result.rc {
            0 => {}
            // A re-read's entry that is gone; a user_base that does not exist is the operator's to fix.
            NO_SUCH_OBJECT if scope == Scope::Base => return Ok(None),
            NO_SUCH_OBJECT => {
                return Err(UpstreamError::Misconfigured(format!("user_base `{base}` does not exist in the directory")))
            }
            rc => return Err(UpstreamError::Misconfigured(format!("the search failed: rc={rc} {}", result.text))),
        }
        let mut entries = entries.into_iter();
        let Some(first) = entries.next() else { return Ok(None) };
        if entries.next().is_some() {
            return Err(UpstreamError::Misconfigured(format!(
                "user_filter matches several entries for one name: {filter}"
            )));
        }
        Ok(Some(construct(first)?))
    }

    /// What the directory says about a person, groups already mapped.
    async fn person(&self, ldap: &mut Ldap, entry: SearchEntry, typed: &str) -> Result<Person, UpstreamError> {
        let c = &self.config;
        let subject = match first(&entry, &c.id_attribute) {
            Some(id) => id,
            None => match entry.bin_attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(&c.id_attribute)) {
                // Active Directory's objectGUID: 16 raw bytes.
                Some((_, values)) if !values.is_empty() => values[0].iter().map(|b| format!("{b:02x}")).collect(),
                _ => {
                    return Err(UpstreamError::Misconfigured(format!(
                        "the entry has no `{}` (id_attribute)",
                        c.id_attribute
                    )))
                }
            },
        };
        let name = first(&entry, &c.username_attribute).unwrap_or_else(|| typed.to_owned());
        let display_name = first(&entry, &c.name_attribute).unwrap_or_else(|| name.clone());
        let email = first(&entry, &c.email_attribute);
        let directory_groups = match &c.group_base {
            None => values(&entry, &c.groups_attribute).iter().filter_map(|dn| first_rdn_value(dn)).collect(),
            Some(base) => {
                let filter = c.group_filter.replace("{dn}", &ldap_escape(&entry.dn));
                let search = ldap
                    .with_timeout(self.timeout)
                    .search(base, Scope::Subtree, &filter, vec![&c.group_name_attribute])
                    .await
                    .map_err(unreachable)?
                    .success()
                    .map_err(|e| UpstreamError::Misconfigured(format!("the group search failed: {e}")))?;
                let mut names = Vec::new();
                for group in search.0 {
                    names.extend(values(&construct(group)?, &c.group_name_attribute));
                }
                names
            }
        };
        let groups = super::map_groups(&directory_groups, &c.allowed_groups, &c.group_prefix, &c.static_groups);
        Ok(Person {
            subject,
            profile: UpstreamProfile {
                name,
                locator: Some(entry.dn),
                display_name,
                email,
                // What the institution's directory holds is the institution's word.
                email_verified: true,
                groups,
            },
        })
    }
}

/// Parses a search entry; a malformed one (ldap3 panics on those) is the directory's failure.
fn construct(entry: ResultEntry) -> Result<SearchEntry, UpstreamError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(entry)))
        .map_err(|_| UpstreamError::Misconfigured("the directory sent a malformed entry".into()))
}

/// An attribute's values, its name matched without regard to case (servers answer with their own).
fn values(entry: &SearchEntry, attribute: &str) -> Vec<String> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attribute)).map(|(_, v)| v.clone()).unwrap_or_default()
}

fn first(entry: &SearchEntry, attribute: &str) -> Option<String> {
    values(entry, attribute).into_iter().find(|v| !v.trim().is_empty())
}

/// The value of a DN's first attribute: `cn=staff,ou=groups,dc=example,dc=org` → `staff` (RFC 4514
/// escapes undone).
pub fn first_rdn_value(dn: &str) -> Option<String> {
    let (_, rest) = dn.split_once('=')?;
    let mut bytes = Vec::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            ',' | '+' => break,
            '\\' => {
                let next = chars.next()?;
                match next.to_digit(16).zip(chars.clone().next().and_then(|c| c.to_digit(16))) {
                    Some((high, low)) => {
                        chars.next();
                        bytes.push((high * 16 + low) as u8);
                    }
                    None => bytes.extend(next.to_string().as_bytes()),
                }
            }
            c => bytes.extend(c.to_string().as_bytes()),
        }
    }
    let value = String::from_utf8(bytes).ok()?;
    (!value.trim().is_empty()).then(|| value.trim().to_owned())
}

/// Connection, TLS and time-outs: the directory could not be asked.
fn unreachable(e: LdapError) -> UpstreamError {
    let detail = match &e {
        LdapError::Io { source } => match source.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => format!("TLS: {tls}"),
            None => format!("connection: {source}"),
        },
        LdapError::Timeout { .. } => "no answer within the timeout".to_owned(),
        other => other.to_string(),
    };
    UpstreamError::Unreachable(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_come_from_the_first_value_of_a_dn() {
        assert_eq!(first_rdn_value("cn=staff,ou=groups,dc=example,dc=org").as_deref(), Some("staff"));
        assert_eq!(first_rdn_value("CN=Lab\\, North,OU=Groups").as_deref(), Some("Lab, North"));
        assert_eq!(first_rdn_value("cn=a\\2Cb,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("cn=x+uid=y,dc=x").as_deref(), Some("x"));
        assert_eq!(first_rdn_value("no-equals"), None);
        assert_eq!(first_rdn_value("cn=,dc=x"), None);
    }
}
