//! Signing keys: generated on first start, persisted in the store, parsed once, published as a JWKS.

use std::fmt;
use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};

use crate::kek::{Kek, KekError};
use crate::store::{Store, StoredKey, Timestamp};

/// JWS algorithms Postern signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA].into_iter().find(|a| a.name() == name)
    }

    /// Left half of the hash OIDC uses for `at_hash` with this algorithm, base64url-encoded.
    pub fn half_hash(self, value: &str) -> String {
        let digest: Vec<u8> = match self {
            Algorithm::RS256 | Algorithm::ES256 => Sha256::digest(value.as_bytes()).to_vec(),
            Algorithm::EdDSA => Sha512::digest(value.as_bytes()).to_vec(),
        };
        B64.encode(&digest[..digest.len() / 2])
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors while generating or loading keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The crypto library refused.
    #[error("key operation failed: {0}")]
    Crypto(String),
    /// A stored key names an algorithm this build does not know.
    #[error("stored key {0} has unknown algorithm {1}")]
    UnknownAlgorithm(String, String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A stored private key does not open with the key-encryption key.
    #[error("signing key {0}: {1}")]
    Sealed(String, KekError),
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A parsed private key, ready to sign.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    pair: Pair,
    /// Public JWK, computed once.
    jwk: serde_json::Value,
    /// base64url of the JWS header, computed once.
    header: String,
}

fn crypto(e: impl fmt::Display) -> KeyError {
    KeyError::Crypto(e.to_string())
}

impl SigningKey {
    /// Generates a new key; returns it with its PKCS#8 encoding for storage.
    pub fn generate(alg: Algorithm) -> Result<(Self, Vec<u8>), KeyError> {
        let pkcs8 = match alg {
            Algorithm::RS256 => {
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(crypto)?.as_der().map_err(crypto)?.as_ref().to_vec()
            }
            Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(crypto)?
                .to_pkcs8v1()
                .map_err(crypto)?
                .as_ref()
                .to_vec(),
            Algorithm::EdDSA => {
                Ed25519KeyPair::generate().map_err(crypto)?.to_pkcs8v1().map_err(crypto)?.as_ref().to_vec()
            }
        };
        Ok((Self::from_pkcs8(alg, &pkcs8)?, pkcs8))
    }

    /// Parses a stored PKCS#8 key.
    pub fn from_pkcs8(alg: Algorithm, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let (pair, mut jwk) = match alg {
            Algorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(crypto)?;
                let public = pair.public_key();
                let jwk = json!({
                    "e": B64.encode(public.exponent().big_endian_without_leading_zero()),
                    "kty": "RSA",
                    "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                });
                (Pair::Rsa(pair), jwk)
            }
            Algorithm::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(crypto)?;
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let jwk = json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": B64.encode(&point[1..33]),
                    "y": B64.encode(&point[33..65]),
                });
                (Pair::Ec(pair), jwk)
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(crypto)?;
                let jwk = json!({ "crv": "Ed25519", "kty": "OKP", "x": B64.encode(pair.public_key().as_ref()) });
                (Pair::Ed(pair), jwk)
            }
        };
        // RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, which is
        // how serde_json (without preserve_order) serialises them.
        let kid = B64.encode(Sha256::digest(jwk.to_string().as_bytes()));
        let object = jwk.as_object_mut().expect("a JWK is an object");
        object.insert("kid".into(), kid.clone().into());
        object.insert("alg".into(), alg.name().into());
        object.insert("use".into(), "sig".into());
        let header = B64.encode(json!({ "alg": alg.name(), "kid": kid, "typ": "JWT" }).to_string());
        Ok(Self { kid, alg, pair, jwk, header })
    }

    /// Key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Signs claims into a compact JWS.
    pub fn sign_jwt<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(crypto)?;
        let mut jws = format!("{}.{}", self.header, B64.encode(payload));
        let signature = self.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&B64.encode(signature));
        Ok(jws)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256};
        match &self.pair {
            Pair::Rsa(pair) => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref())
                .verify(message, signature)
                .is_ok(),
            Pair::Ec(pair) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
                .verify(message, signature)
                .is_ok(),
            Pair::Ed(pair) => {
                UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref()).verify(message, signature).is_ok()
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature).map_err(crypto)?;
                Ok(signature)
            }
            Pair::Ec(pair) => Ok(pair.sign(&rng, message).map_err(crypto)?.as_ref().to_vec()),
            Pair::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// Every key Postern publishes, and the one that signs.
pub struct KeySet {
    active: SigningKey,
    /// Older keys still published (and accepted, e.g. for `id_token_hint`).
    previous: Vec<SigningKey>,
    jwks: serde_json::Value,
    /// `jwks` serialised once, as `/jwks.json` serves it.
    jwks_json: String,
}

impl KeySet {
    /// Loads the stored keys; generates and stores a key for `alg` if none exists yet (of processes
    /// starting together on an empty database, one key is kept). Every stored key is published; the one
    /// that signs is the newest of `alg` made at least [`KEY_ACTIVATION_DELAY`] ago, so that every
    /// process sharing the store publishes a new key before any signs with it. A key stops being
    /// published once every token it may have signed has expired: `token_lifetime` after the next key
    /// took over; its private key is then deleted. Private keys are opened with `kek`, and any not sealed
    /// with its current key (stored before sealing, or before a rotation) are re-sealed.
    pub async fn load(
        store: &dyn Store,
        kek: &Kek,
        alg: Algorithm,
        now: Timestamp,
        token_lifetime: i64,
    ) -> Result<Self, KeyError> {
        let mut stored = store.signing_keys().await?;
        if !stored.iter().any(|k| k.alg == alg.name()) {
            let (key, pkcs8) = SigningKey::generate(alg)?;
            let sealed = kek.seal(&pkcs8, key.kid.as_bytes());
            if store.insert_signing_key_if_none(&stored_key(&key, sealed, now)).await? {
                tracing::info!(kid = key.kid(), alg = %alg, "generated the first signing key");
            }
            stored = store.signing_keys().await?;
        }
        let signer = signer(&stored, alg, now);
        let mut keys = Vec::new();
        let mut active = None;
        for (i, key) in stored.iter().enumerate() {
            // Replaced when the next key took over; tokens it signed live `token_lifetime` at most.
            let retired = stored
                .get(i + 1)
                .is_some_and(|next| next.created_at + KEY_ACTIVATION_DELAY + token_lifetime + CLOCK_SKEW < now);
            if retired && Some(i) != signer {
                store.delete_signing_key(&key.kid).await?;
                tracing::info!(kid = %key.kid, "deleted a retired signing key: every token it signed has expired");
                continue;
            }
            let key_alg = Algorithm::from_name(&key.alg)
                .ok_or_else(|| KeyError::UnknownAlgorithm(key.kid.clone(), key.alg.clone()))?;
            let pkcs8 =
                kek.open(&key.private_key, key.kid.as_bytes()).map_err(|e| KeyError::Sealed(key.kid.clone(), e))?;
            if !kek.is_current(&key.private_key) {
                store.set_signing_key_material(&key.kid, &kek.seal(&pkcs8, key.kid.as_bytes())).await?;
                tracing::info!(kid = %key.kid, kek = %kek.id(), "sealed a signing key with the current key-encryption key");
            }
            let parsed = SigningKey::from_pkcs8(key_alg, &pkcs8)?;
            if Some(i) == signer {
                active = Some(parsed);
            } else {
                keys.push(parsed);
            }
        }
        let active = active.ok_or_else(|| KeyError::Crypto(format!("no {alg} signing key is stored")))?;
        // Newest first, after the one that signs.
        keys.reverse();
        Ok(Self::from_keys(active, keys))
    }

    /// Generates and stores a new key for `alg`, sealed with `kek`: published from the next load on,
    /// signing from `now + KEY_ACTIVATION_DELAY`.
    pub async fn rotate(store: &dyn Store, kek: &Kek, alg: Algorithm, now: Timestamp) -> Result<SigningKey, KeyError> {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        let sealed = kek.seal(&pkcs8, key.kid.as_bytes());
        store.insert_signing_key(&stored_key(&key, sealed, now)).await?;
        tracing::info!(kid = key.kid(), alg = %alg, "generated a new signing key");
        Ok(key)
    }

    /// A set of already parsed keys; `active` signs.
    pub fn from_keys(active: SigningKey, previous: Vec<SigningKey>) -> Self {
        let jwks = json!({
            "keys": std::iter::once(&active).chain(previous.iter()).map(|k| k.jwk.clone()).collect::<Vec<_>>()
        });
        let jwks_json = jwks.to_string();
        Self { active, previous, jwks, jwks_json }
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The public JWK Set.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// The public JWK Set as JSON text.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// The claims of a JWT one of these keys signed (expiry is not checked), or `None`.
    pub fn verify(&self, jwt: &str) -> Option<serde_json::Value> {
        self.check(jwt).ok()
    }

    /// Like [`KeySet::verify`], telling a token signed by a key not (or no longer) held, such as a
    /// retired one, from one that is malformed or forged.
    pub fn check(&self, jwt: &str) -> Result<serde_json::Value, Unverified> {
        let forged = Unverified::Invalid;
        let (signed, signature) = jwt.rsplit_once('.').ok_or(forged)?;
        let (header, payload) = signed.split_once('.').ok_or(forged)?;
        let header: serde_json::Value =
            B64.decode(header).ok().and_then(|h| serde_json::from_slice(&h).ok()).ok_or(forged)?;
        let kid = header["kid"].as_str().ok_or(forged)?;
        let key = std::iter::once(&self.active).chain(&self.previous).find(|k| k.kid == kid);
        let key = key.ok_or(Unverified::UnknownKey)?;
        if header["alg"].as_str() != Some(key.alg.name()) {
            return Err(forged);
        }
        let signature = B64.decode(signature).map_err(|_| forged)?;
        if !key.verify(signed.as_bytes(), &signature) {
            return Err(forged);
        }
        B64.decode(payload).ok().and_then(|p| serde_json::from_slice(&p).ok()).ok_or(forged)
    }
}

/// Why a JWT did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// Its `kid` names no key held: retired and deleted, or another issuer's.
    UnknownKey,
    /// Malformed, or a signature that does not match a key held.
    Invalid,
}

/// The current key set, shared by the handlers and replaced when the stored keys change.
#[derive(Clone)]
pub struct Keys(Arc<RwLock<Arc<KeySet>>>);

impl Keys {
    /// Wraps a loaded set.
    pub fn new(set: KeySet) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(set))))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.0.read().expect("not poisoned").clone()
    }

    /// Puts a freshly loaded set in force.
    pub fn replace(&self, set: KeySet) {
        *self.0.write().expect("not poisoned") = Arc::new(set);
    }
}

/// Seconds of clock difference tolerated between Postern and relying parties.
const CLOCK_SKEW: i64 = 300;

/// Seconds between a key being stored and it signing: three times the interval at which running
/// servers reload keys, so that every replica publishes it in its JWKS before any signs with it.
pub const KEY_ACTIVATION_DELAY: i64 = 3 * crate::server::KEY_RELOAD_INTERVAL.as_secs() as i64;

/// Which stored key signs: the newest of `alg` that is active; while none of `alg` is (the algorithm
/// just changed), the newest active key of any; on a fresh database, where no key is active yet, the
/// oldest of `alg` (the same one in every process).
fn signer(stored: &[StoredKey], alg: Algorithm, now: Timestamp) -> Option<usize> {
    let active = |k: &StoredKey| k.created_at + KEY_ACTIVATION_DELAY <= now;
    stored
        .iter()
        .rposition(|k| k.alg == alg.name() && active(k))
        .or_else(|| stored.iter().rposition(active))
        .or_else(|| stored.iter().position(|k| k.alg == alg.name()))
}

fn stored_key(key: &SigningKey, sealed: Vec<u8>, now: Timestamp) -> StoredKey {
    StoredKey { kid: key.kid.clone(), alg: key.alg.name().into(), private_key: sealed, created_at: now }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips_through_pkcs8_with_a_stable_kid() {
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let (key, pkcs8) = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_pkcs8(alg, &pkcs8).unwrap();
            assert_eq!(key.kid(), again.kid());
            assert_eq!(key.jwk, again.jwk);
            let jwt = key.sign_jwt(&json!({"sub": "x"})).unwrap();
            assert_eq!(jwt.split('.').count(), 3);
            let set = KeySet::from_keys(again, vec![]);
            assert_eq!(set.verify(&jwt).unwrap()["sub"], "x");
            let mut tampered = jwt.clone();
            tampered.insert(jwt.find('.').unwrap() + 2, 'A');
            assert!(set.verify(&tampered).is_none());
        }
    }

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OIDC Core appendix A.3: access token and its at_hash for RS256.
        assert_eq!(Algorithm::RS256.half_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }

    #[tokio::test]
    async fn a_rotated_key_is_published_at_once_and_signs_once_active_even_within_the_same_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap();
        let kek = Kek::from_text(&crate::kek::generate(), "test").unwrap();
        let now = 1_700_000_000;
        let mut active =
            KeySet::load(&store, &kek, Algorithm::EdDSA, now, 900).await.unwrap().active().kid().to_owned();
        for round in 1..=4 {
            // Two rotations in the same second: kids are random, so a tie broken by kid would pick the
            // wrong key about half the time; the one stored last wins.
            let at = now + round * KEY_ACTIVATION_DELAY;
            let skipped = KeySet::rotate(&store, &kek, Algorithm::EdDSA, at).await.unwrap();
            let rotated = KeySet::rotate(&store, &kek, Algorithm::EdDSA, at).await.unwrap();
            // Published at once, but the previous key signs until every replica has had time to publish it.
            let set = KeySet::load(&store, &kek, Algorithm::EdDSA, at + KEY_ACTIVATION_DELAY - 1, 900).await.unwrap();
            assert_eq!(set.active().kid(), active);
            assert!(set.jwks()["keys"].as_array().unwrap().iter().any(|k| k["kid"] == rotated.kid()));
            let set = KeySet::load(&store, &kek, Algorithm::EdDSA, at + KEY_ACTIVATION_DELAY, 900).await.unwrap();
            assert_eq!(set.active().kid(), rotated.kid());
            assert!(set.verify(&set.active().sign_jwt(&json!({})).unwrap()).is_some());
            assert_eq!(set.jwks()["keys"][1]["kid"], skipped.kid(), "the newer keys come first");
            active = rotated.kid().to_owned();
        }
    }

    #[tokio::test]
    async fn processes_starting_together_on_an_empty_database_make_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap();
        let kek = Kek::from_text(&crate::kek::generate(), "test").unwrap();
        let now = 1_700_000_000;
        let load = || KeySet::load(&store, &kek, Algorithm::ES256, now, 900);
        let (a, b, c) = tokio::join!(load(), load(), load());
        let kids = [a.unwrap(), b.unwrap(), c.unwrap()].map(|set| set.active().kid().to_owned());
        assert_eq!(store.signing_keys().await.unwrap().len(), 1);
        assert!(kids.iter().all(|kid| *kid == kids[0]), "{kids:?}");
    }

    #[tokio::test]
    async fn a_new_algorithm_signs_once_its_key_is_active() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap();
        let kek = Kek::from_text(&crate::kek::generate(), "test").unwrap();
        let now = 1_700_000_000;
        KeySet::load(&store, &kek, Algorithm::RS256, now, 900).await.unwrap();
        // The configuration now says ES256: its key is made and published, and RS256 signs meanwhile.
        let set = KeySet::load(&store, &kek, Algorithm::ES256, now + 100, 900).await.unwrap();
        assert_eq!(set.active().alg(), Algorithm::RS256);
        assert_eq!(set.jwks()["keys"].as_array().unwrap().len(), 2);
        let set = KeySet::load(&store, &kek, Algorithm::ES256, now + 100 + KEY_ACTIVATION_DELAY, 900).await.unwrap();
        assert_eq!(set.active().alg(), Algorithm::ES256);
    }

    #[tokio::test]
    async fn keys_stored_in_the_clear_are_sealed_at_the_next_load_and_retired_ones_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap();
        let kek = Kek::from_text(&crate::kek::generate(), "test").unwrap();
        let (key, pkcs8) = SigningKey::generate(Algorithm::ES256).unwrap();
        store.insert_signing_key(&stored_key(&key, pkcs8.clone(), 1_700_000_000)).await.unwrap();
        let set = KeySet::load(&store, &kek, Algorithm::ES256, 1_700_000_000, 900).await.unwrap();
        assert_eq!(set.active().kid(), key.kid());
        let stored = store.signing_keys().await.unwrap();
        assert!(kek.is_current(&stored[0].private_key), "sealed in place");
        assert_eq!(kek.open(&stored[0].private_key, key.kid().as_bytes()).unwrap(), pkcs8);
        // Replaced, and past its last token: deleted from the store, not only from the JWKS.
        KeySet::rotate(&store, &kek, Algorithm::ES256, 1_700_000_010).await.unwrap();
        let gone = 1_700_000_010 + KEY_ACTIVATION_DELAY + 900 + CLOCK_SKEW + 1;
        KeySet::load(&store, &kek, Algorithm::ES256, gone, 900).await.unwrap();
        let kids: Vec<String> = store.signing_keys().await.unwrap().into_iter().map(|k| k.kid).collect();
        assert!(!kids.contains(&key.kid().to_owned()) && kids.len() == 1, "{kids:?}");
    }

    #[tokio::test]
    async fn a_replaced_key_is_published_until_its_last_token_expires_then_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap();
        let kek = Kek::from_text(&crate::kek::generate(), "test").unwrap();
        let (t0, lifetime) = (1_700_000_000, 900);
        let first = KeySet::load(&store, &kek, Algorithm::RS256, t0, lifetime).await.unwrap();
        let old = first.active().kid().to_owned();
        let old_token = first.active().sign_jwt(&json!({"sub": "x"})).unwrap();
        let new = KeySet::rotate(&store, &kek, Algorithm::RS256, t0 + 10).await.unwrap().kid().to_owned();
        let kids = |set: KeySet| -> Vec<String> {
            set.jwks()["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
        };
        // A token signed by the old key just before the new one took over lives `lifetime`, plus the clock
        // skew allowed.
        let last_moment = t0 + 10 + KEY_ACTIVATION_DELAY + lifetime + CLOCK_SKEW;
        let set = KeySet::load(&store, &kek, Algorithm::RS256, last_moment, lifetime).await.unwrap();
        assert_eq!(kids(set), [new.clone(), old]);
        let set = KeySet::load(&store, &kek, Algorithm::RS256, last_moment + 1, lifetime).await.unwrap();
        // Its tokens are then signed by a key no longer held, which is not the same as forged.
        assert_eq!(set.check(&old_token), Err(Unverified::UnknownKey));
        let mut forged = set.active().sign_jwt(&json!({"sub": "x"})).unwrap();
        forged.push('A');
        assert_eq!(set.check(&forged), Err(Unverified::Invalid));
        assert_eq!(set.check("not.a.jwt"), Err(Unverified::Invalid));
        assert_eq!(kids(set), [new]);
    }
}
