//! [`Store`] with every call timed and its failures counted, for the Prometheus metrics
//! (`postern_store_duration_seconds`, `postern_store_errors_total`, by operation).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::*;

/// Wraps a store; every call goes through unchanged, timed.
pub struct Metered(pub Arc<dyn Store>);

async fn timed<T>(operation: &'static str, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("postern_store_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("postern_store_errors_total", "operation" => operation).increment(1);
    }
    result
}

#[async_trait]
impl Store for Metered {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> StoreResult<User> {
        timed("create_user", self.0.create_user(user, now)).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        timed("user_by_name", self.0.user_by_name(username)).await
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<User>> {
        timed("user_by_id", self.0.user_by_id(id)).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        timed("list_users", self.0.list_users()).await
    }

    async fn set_password(&self, username: &str, password_hash: &str, now: Timestamp) -> StoreResult<()> {
        timed("set_password", self.0.set_password(username, password_hash, now)).await
    }

    async fn upgrade_password_hash(&self, user_id: i64, old_hash: &str, new_hash: &str) -> StoreResult<()> {
        timed("upgrade_password_hash", self.0.upgrade_password_hash(user_id, old_hash, new_hash)).await
    }

    async fn set_disabled(&self, username: &str, disabled: bool, now: Timestamp) -> StoreResult<()> {
        timed("set_disabled", self.0.set_disabled(username, disabled, now)).await
    }

    async fn set_groups(&self, username: &str, groups: &[String]) -> StoreResult<()> {
        timed("set_groups", self.0.set_groups(username, groups)).await
    }

    async fn start_upstream_login(&self, id: &str, login: &UpstreamLogin, now: Timestamp) -> StoreResult<bool> {
        timed("start_upstream_login", self.0.start_upstream_login(id, login, now)).await
    }

    async fn take_upstream_login(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, UpstreamLogin)>> {
        timed("take_upstream_login", self.0.take_upstream_login(state_hash, now)).await
    }

    async fn upstream_identity(&self, upstream: &str, subject: &str) -> StoreResult<Option<(UpstreamIdentity, User)>> {
        timed("upstream_identity", self.0.upstream_identity(upstream, subject)).await
    }

    async fn user_upstream_identities(&self, user_id: i64) -> StoreResult<Vec<UpstreamIdentity>> {
        timed("user_upstream_identities", self.0.user_upstream_identities(user_id)).await
    }

    async fn end_sessions_and_grants(&self, user_id: i64, now: Timestamp) -> StoreResult<()> {
        timed("end_sessions_and_grants", self.0.end_sessions_and_grants(user_id, now)).await
    }

    async fn list_upstream_identities(&self) -> StoreResult<Vec<UpstreamIdentity>> {
        timed("list_upstream_identities", self.0.list_upstream_identities()).await
    }

    async fn create_upstream_user(
        &self,
        user: NewUser,
        identity: &UpstreamIdentity,
        now: Timestamp,
    ) -> StoreResult<User> {
        timed("create_upstream_user", self.0.create_upstream_user(user, identity, now)).await
    }

    async fn link_upstream_identity(&self, identity: &UpstreamIdentity) -> StoreResult<()> {
        timed("link_upstream_identity", self.0.link_upstream_identity(identity)).await
    }

    async fn record_upstream_profile(
        &self,
        upstream: &str,
        subject: &str,
        profile: &UpstreamProfile,
        sign_in: bool,
        now: Timestamp,
    ) -> StoreResult<()> {
        timed("record_upstream_profile", self.0.record_upstream_profile(upstream, subject, profile, sign_in, now)).await
    }

    async fn upsert_client(&self, client: &Client, now: Timestamp) -> StoreResult<()> {
        timed("upsert_client", self.0.upsert_client(client, now)).await
    }

    async fn client(&self, id: &str) -> StoreResult<Option<Client>> {
        timed("client", self.0.client(id)).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        timed("list_clients", self.0.list_clients()).await
    }

    async fn remove_client(&self, id: &str) -> StoreResult<bool> {
        timed("remove_client", self.0.remove_client(id)).await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        timed("signing_keys", self.0.signing_keys()).await
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        timed("insert_signing_key", self.0.insert_signing_key(key)).await
    }

    async fn insert_signing_key_if_none(&self, key: &StoredKey) -> StoreResult<bool> {
        timed("insert_signing_key_if_none", self.0.insert_signing_key_if_none(key)).await
    }

    async fn set_signing_key_material(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        timed("set_signing_key_material", self.0.set_signing_key_material(kid, private_key)).await
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<()> {
        timed("delete_signing_key", self.0.delete_signing_key(kid)).await
    }

    async fn insert_authorization_request(
        &self,
        request: &AuthorizationRequest,
        limits: PendingLimits,
    ) -> StoreResult<()> {
        timed("insert_authorization_request", self.0.insert_authorization_request(request, limits)).await
    }

    async fn authorization_request(&self, id: &str, now: Timestamp) -> StoreResult<Option<AuthorizationRequest>> {
        timed("authorization_request", self.0.authorization_request(id, now)).await
    }

    async fn authenticate_request(&self, id: &str, login: &RequestLogin, now: Timestamp) -> StoreResult<bool> {
        timed("authenticate_request", self.0.authenticate_request(id, login, now)).await
    }

    async fn redeem_ticket(
        &self,
        ticket_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<(AuthorizationRequest, RequestLogin)>> {
        timed("redeem_ticket", self.0.redeem_ticket(ticket_hash, now)).await
    }

    async fn create_session(&self, id_hash: &[u8], session: &Session, now: Timestamp) -> StoreResult<()> {
        timed("create_session", self.0.create_session(id_hash, session, now)).await
    }

    async fn session(&self, id_hash: &[u8], now: Timestamp, idle: Timestamp) -> StoreResult<Option<Session>> {
        timed("session", self.0.session(id_hash, now, idle)).await
    }

    async fn delete_session(&self, id_hash: &[u8]) -> StoreResult<()> {
        timed("delete_session", self.0.delete_session(id_hash)).await
    }

    async fn create_grant(&self, grant: &NewGrant, now: Timestamp) -> StoreResult<i64> {
        timed("create_grant", self.0.create_grant(grant, now)).await
    }

    async fn grant_by_code(&self, code_hash: &[u8]) -> StoreResult<Option<(Grant, User)>> {
        timed("grant_by_code", self.0.grant_by_code(code_hash)).await
    }

    async fn redeem_code(
        &self,
        grant_id: i64,
        now: Timestamp,
        access: &NewToken,
        refresh: Option<&NewToken>,
    ) -> StoreResult<bool> {
        timed("redeem_code", self.0.redeem_code(grant_id, now, access, refresh)).await
    }

    async fn revoke_grant(&self, grant_id: i64, now: Timestamp) -> StoreResult<()> {
        timed("revoke_grant", self.0.revoke_grant(grant_id, now)).await
    }

    async fn access_token(&self, hash: &[u8], now: Timestamp) -> StoreResult<Option<AccessTokenInfo>> {
        timed("access_token", self.0.access_token(hash, now)).await
    }

    async fn revoke_access_token(&self, hash: &[u8]) -> StoreResult<bool> {
        timed("revoke_access_token", self.0.revoke_access_token(hash)).await
    }

    async fn refresh_token(&self, hash: &[u8]) -> StoreResult<Option<RefreshTokenInfo>> {
        timed("refresh_token", self.0.refresh_token(hash)).await
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        now: Timestamp,
        access: &NewToken,
        refresh: &NewToken,
    ) -> StoreResult<bool> {
        timed("rotate_refresh_token", self.0.rotate_refresh_token(old_hash, now, access, refresh)).await
    }

    async fn throttle_counts(&self, keys: &[String]) -> StoreResult<Vec<(String, ThrottleCount)>> {
        timed("throttle_counts", self.0.throttle_counts(keys)).await
    }

    async fn update_throttle_counts(
        &self,
        keys: &[String],
        update: &ThrottleUpdate<'_>,
        now: Timestamp,
    ) -> StoreResult<()> {
        timed("update_throttle_counts", self.0.update_throttle_counts(keys, update, now)).await
    }

    async fn forgive_throttle_counts(&self, keys: &[String], sign_in: Option<&str>, now: Timestamp) -> StoreResult<()> {
        timed("forgive_throttle_counts", self.0.forgive_throttle_counts(keys, sign_in, now)).await
    }

    async fn last_sign_in(&self, key: &str) -> StoreResult<Option<Timestamp>> {
        timed("last_sign_in", self.0.last_sign_in(key)).await
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()> {
        timed("purge_expired", self.0.purge_expired(now)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.0.ping()).await
    }
}
