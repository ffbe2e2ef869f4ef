//! From a person an upstream vouched for to a Postern user.
//!
//! An upstream identity is keyed by (upstream, the upstream's stable id for the person), never by a
//! name or an e-mail address. The first sign-in of an unknown identity creates a user (when the
//! upstream provisions) named after the upstream's name for the person (its part before an `@`, for
//! a principal name or an e-mail address); if another account already
//! has that name, the new one is `<name>-<upstream>` (then `-2`, `-3`, …): two people are never
//! merged. Linking an identity to an existing account is the operator's (`postern user link`).

use crate::store::{NewUser, Store, StoreError, StoreResult, Timestamp, UpstreamIdentity, UpstreamProfile, User};
use crate::users::normalize_username;

use super::{Person, UpstreamError, Upstreams};

/// Usernames tried for a new account after the upstream's own name and `<name>-<upstream>`.
const MAX_SUFFIX: u32 = 9;

/// Why a person the upstream vouched for still cannot sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Their Postern account is disabled.
    Disabled,
    /// No account is linked, and this upstream does not create them.
    NotProvisioned,
    /// The upstream's name for them cannot become a username.
    UnusableName,
    /// Every username the rule allows is taken.
    NameTaken,
}

impl Refusal {
    /// The reason class audit events name.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled_user",
            Refusal::NotProvisioned => "not_provisioned",
            Refusal::UnusableName => "unusable_name",
            Refusal::NameTaken => "name_taken",
        }
    }

    /// What the person is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Disabled => "This account is disabled. Ask the administrator.",
            Refusal::NotProvisioned => {
                "Your account was recognised, but it has no access here yet. Ask the administrator to add you."
            }
            Refusal::UnusableName | Refusal::NameTaken => {
                "Your account was recognised, but an account here could not be made for it. Ask the administrator."
            }
        }
    }
}

/// The user with what an upstream just said about them.
fn with_profile(user: User, profile: &UpstreamProfile) -> User {
    User {
        display_name: profile.display_name.clone(),
        email: profile.email.clone(),
        email_verified: profile.email_verified,
        groups: profile.groups.clone(),
        ..user
    }
}

/// The username an upstream's name for a person gives: the name lower-cased, or for a name with `@`
/// (an eduPersonPrincipalName, a user principal name, an e-mail address) its part before the `@`.
fn username_for(name: &str) -> Option<String> {
    normalize_username(name).ok().or_else(|| normalize_username(name.split('@').next()?).ok())
}

/// Usernames a new account from `upstream` may take, in order.
fn candidates(base: &str, upstream: &str) -> Vec<String> {
    let mut names = vec![base.to_owned()];
    for n in 1..=MAX_SUFFIX {
        let suffix = if n == 1 { format!("-{upstream}") } else { format!("-{upstream}-{n}") };
        // Within the 64 characters of a username, the base shortened if need be.
        let keep = 64usize.saturating_sub(suffix.len()).min(base.len());
        names.push(format!("{}{suffix}", base[..keep].trim_end_matches(['.', '_', '-'])));
    }
    names
}

/// Signs in a person `upstream` vouched for: their linked user with the upstream's profile applied,
/// or a new user when the upstream provisions.
pub async fn sign_in(
    store: &dyn Store,
    upstream: &str,
    provision: bool,
    person: &Person,
    now: Timestamp,
) -> StoreResult<Result<User, Refusal>> {
    // Twice at most: a first sign-in racing another one of the same person finds it linked after all.
    for _ in 0..2 {
        if let Some((_, user)) = store.upstream_identity(upstream, &person.subject).await? {
            if user.disabled {
                return Ok(Err(Refusal::Disabled));
            }
            store.record_upstream_profile(upstream, &person.subject, &person.profile, true, now).await?;
            return Ok(Ok(with_profile(user, &person.profile)));
        }
        if !provision {
            return Ok(Err(Refusal::NotProvisioned));
        }
        let profile = &person.profile;
        let Some(base) = username_for(&profile.name) else { return Ok(Err(Refusal::UnusableName)) };
        let identity = UpstreamIdentity {
            upstream: upstream.to_owned(),
            subject: person.subject.clone(),
            user_id: 0,
            name: profile.name.clone(),
            locator: profile.locator.clone(),
            created_at: now,
            last_login_at: Some(now),
            checked_at: now,
        };
        let mut linked_meanwhile = false;
        for username in candidates(&base, upstream) {
            let user = NewUser {
                username,
                display_name: profile.display_name.clone(),
                email: profile.email.clone(),
                email_verified: profile.email_verified,
                groups: profile.groups.clone(),
                password_hash: String::new(),
            };
            match store.create_upstream_user(user, &identity, now).await {
                Ok(user) => {
                    tracing::info!(upstream, user = %user.username, "account created at the first sign-in");
                    return Ok(Ok(user));
                }
                Err(StoreError::Conflict("user")) => continue,
                Err(StoreError::Conflict(_)) => {
                    linked_meanwhile = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !linked_meanwhile {
            return Ok(Err(Refusal::NameTaken));
        }
    }
    Ok(Err(Refusal::NameTaken))
}

/// What the upstreams say about a signed-in user now.
#[derive(Debug)]
pub enum Recheck {
    /// Nothing changed that ends their access; the user as now stored (groups re-read).
    Current(User),
    /// An upstream no longer knows them (or no longer lets them in): their sessions ended and their
    /// grants were revoked.
    Gone {
        /// The upstream's id.
        upstream: String,
    },
    /// An upstream could not be asked, and its last word is older than its grace period.
    Unavailable {
        /// The upstream's id.
        upstream: String,
        /// Why.
        error: UpstreamError,
    },
}

/// Re-reads a user at the directories they come from, each at most once per its `recheck_interval`
/// (a relying party's refresh): their groups follow the directory, and someone removed from it loses
/// access. While a directory cannot be reached, the last groups read hold for its `offline_grace`.
pub async fn recheck(store: &dyn Store, upstreams: &Upstreams, mut user: User, now: Timestamp) -> StoreResult<Recheck> {
    if upstreams.directories.is_empty() {
        return Ok(Recheck::Current(user));
    }
    for identity in store.user_upstream_identities(user.id).await? {
        // An upstream taken out of the configuration no longer speaks for anyone.
        let Some(directory) = upstreams.directory(&identity.upstream) else { continue };
        let config = &directory.config;
        let age = now.saturating_sub(identity.checked_at);
        if age < config.recheck_interval as i64 {
            continue;
        }
        let Some(dn) = &identity.locator else { continue };
        match directory.reread(dn, &identity.name).await {
            Ok(Some(person)) if person.subject == identity.subject => {
                store
                    .record_upstream_profile(&identity.upstream, &identity.subject, &person.profile, false, now)
                    .await?;
                user = with_profile(user, &person.profile);
            }
            // Gone, replaced by someone else under the same DN, or no longer matched by user_filter.
            Ok(_) => {
                store.end_sessions_and_grants(user.id, now).await?;
                return Ok(Recheck::Gone { upstream: identity.upstream });
            }
            Err(error) if age > config.offline_grace as i64 => {
                return Ok(Recheck::Unavailable { upstream: identity.upstream, error });
            }
            Err(error) => {
                tracing::warn!(upstream = %identity.upstream, user = %user.username, %error,
                    "the directory cannot be read; the last groups read hold for now");
            }
        }
    }
    Ok(Recheck::Current(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_name_gives_its_local_part() {
        assert_eq!(username_for("JDoe").as_deref(), Some("jdoe"));
        assert_eq!(username_for("jdoe@uni.edu").as_deref(), Some("jdoe"));
        assert_eq!(username_for("J Doe"), None);
    }

    #[test]
    fn a_taken_name_gets_the_upstream_then_a_number() {
        let names = candidates("alice", "campus");
        assert_eq!(names[..3], ["alice", "alice-campus", "alice-campus-2"]);
        assert_eq!(names.len(), 1 + MAX_SUFFIX as usize);
        let long = "a".repeat(64);
        assert!(candidates(&long, "campus").iter().all(|n| n.len() <= 64 && normalize_username(n).is_ok()));
    }
}
