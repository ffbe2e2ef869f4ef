//! Audit events: each is one structured log line (target `audit`) and one Prometheus counter, written
//! in one place so that the log and the metrics never disagree. No event carries a secret.

use std::net::IpAddr;

use crate::metrics::client_label;

fn count(event: &'static str) {
    metrics::counter!("postern_audit_events_total", "event" => event).increment(1);
}

/// A password sign-in succeeded.
pub fn login_succeeded(client_id: &str, user: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "login_succeeded", client_id = %client_id, user = %user, %ip);
    count("login_succeeded");
    let labels =
        [("outcome", "succeeded".to_owned()), ("reason", "-".to_owned()), ("client_id", client_label(client_id))];
    metrics::counter!("postern_logins_total", &labels).increment(1);
}

/// A sign-in failed: `wrong_password`, `unknown_user`, `disabled_user`, or `other_browser` (a login
/// ticket opened in another browser; no address is known there).
pub fn login_failed(reason: &'static str, client_id: &str, ip: Option<IpAddr>) {
    match ip {
        Some(ip) => tracing::info!(target: "audit", event = "login_failed", reason, client_id = %client_id, %ip),
        None => tracing::info!(target: "audit", event = "login_failed", reason, client_id = %client_id),
    }
    count("login_failed");
    let labels =
        [("outcome", "failed".to_owned()), ("reason", reason.to_owned()), ("client_id", client_label(client_id))];
    metrics::counter!("postern_logins_total", &labels).increment(1);
}

/// A person signed in through an upstream (an LDAP directory).
pub fn upstream_login_succeeded(upstream: &str, client_id: &str, user: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "upstream_login_succeeded", upstream = %upstream, client_id = %client_id, user = %user, %ip);
    count("upstream_login_succeeded");
    let labels =
        [("outcome", "succeeded".to_owned()), ("reason", "-".to_owned()), ("client_id", client_label(client_id))];
    metrics::counter!("postern_logins_total", &labels).increment(1);
}

/// A sign-in through an upstream failed: `wrong_password`, `disabled_user`, `not_provisioned`,
/// `unusable_name`, `name_taken`, `unreachable` or `misconfigured`.
pub fn upstream_login_failed(upstream: &str, reason: &'static str, client_id: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "upstream_login_failed", upstream = %upstream, reason, client_id = %client_id, %ip);
    count("upstream_login_failed");
    let labels =
        [("outcome", "failed".to_owned()), ("reason", reason.to_owned()), ("client_id", client_label(client_id))];
    metrics::counter!("postern_logins_total", &labels).increment(1);
}

/// A refresh found that the directory no longer knows the person: their sessions and grants ended.
pub fn upstream_account_gone(upstream: &str, client_id: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "upstream_account_gone", upstream = %upstream, client_id = %client_id, %ip, "sessions ended, grants revoked");
    count("upstream_account_gone");
}

/// A sign-in was held back: `failures` (too many failed attempts) or `busy` (too many at once).
pub fn login_throttled(reason: &'static str, client_id: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "login_throttled", reason, client_id = %client_id, %ip);
    count("login_throttled");
    metrics::counter!("postern_throttled_total", "throttle" => "login", "reason" => reason).increment(1);
}

/// A client failed to authenticate: `wrong_secret`, or `throttled` (held back after failures).
pub fn client_auth_failed(reason: &'static str, client_id: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "client_auth_failed", reason, client_id = %client_id, %ip);
    count("client_auth_failed");
    metrics::counter!("postern_client_auth_failures_total", "reason" => reason).increment(1);
    if reason == "throttled" {
        metrics::counter!("postern_throttled_total", "throttle" => "client", "reason" => "failures").increment(1);
    }
}

/// Tokens were issued: `grant_type` is `authorization_code` or `refresh_token`.
pub fn tokens_issued(grant_type: &'static str, client_id: &str, user: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "tokens_issued", grant_type, client_id = %client_id, user = %user, %ip);
    count("tokens_issued");
    let labels = [("grant_type", grant_type.to_owned()), ("client_id", client_label(client_id))];
    metrics::counter!("postern_tokens_issued_total", &labels).increment(1);
}

/// A code came back after it was redeemed: its grant was revoked.
pub fn code_replayed(client_id: &str, grant: i64, ip: IpAddr) {
    tracing::warn!(target: "audit", event = "code_replayed", client_id = %client_id, grant, %ip, "grant revoked");
    count("code_replayed");
    metrics::counter!("postern_code_replays_total").increment(1);
}

/// A rotated refresh token came back: its family was revoked.
pub fn refresh_reuse_detected(client_id: &str, grant: i64, ip: IpAddr) {
    tracing::warn!(target: "audit", event = "refresh_reuse_detected", client_id = %client_id, grant, %ip, "grant revoked");
    count("refresh_reuse_detected");
    metrics::counter!("postern_refresh_reuse_total").increment(1);
}

/// A client revoked one of its tokens: `kind` is `access_token` or `refresh_token`.
pub fn token_revoked(kind: &'static str, client_id: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "token_revoked", kind, client_id = %client_id, %ip);
    count("token_revoked");
}

/// A browser's session ended at `/end-session`.
pub fn logout(client_id: &str, ip: IpAddr) {
    tracing::info!(target: "audit", event = "logout", client_id = %client_id, %ip);
    count("logout");
}
