//! Scopes and the user claims they release, shared by the id_token and userinfo.

use serde_json::{json, Map, Value};

use crate::store::User;

/// Every scope Postern knows; others are ignored when requested.
pub const SUPPORTED_SCOPES: &[&str] = &["openid", "profile", "email", "groups"];

/// A space-separated scope string as a list, in order, without repeats.
pub fn parse_scope(scope: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Whether a space-separated scope string contains `wanted`.
pub fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split(' ').any(|s| s == wanted)
}

/// The claims about `user` that `scope` releases; `always_groups` is the client's `groups_claim`.
pub fn user_claims(user: &User, scope: &str, always_groups: bool) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.username));
    if has_scope(scope, "profile") {
        claims.insert("name".into(), json!(user.display_name));
        claims.insert("preferred_username".into(), json!(user.username));
    }
    if has_scope(scope, "email") {
        if let Some(email) = &user.email {
            claims.insert("email".into(), json!(email));
            claims.insert("email_verified".into(), json!(user.email_verified));
        }
    }
    if always_groups || has_scope(scope, "groups") {
        claims.insert("groups".into(), json!(user.groups));
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_drops_empties_and_repeats() {
        assert_eq!(parse_scope("openid  profile openid"), vec!["openid", "profile"]);
    }
}
