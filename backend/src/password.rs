//! argon2id hashing for passwords and client secrets, off the async runtime and bounded in concurrency.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::Argon2Config;

/// Hashes and verifies secrets with the configured argon2id parameters.
#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    /// Verifying a secret the store does not have costs the same as a real check.
    dummy_hash: Arc<str>,
    /// Each hash holds `memory_kib` of memory: a flood of logins queues here instead.
    permits: Arc<Semaphore>,
}

impl Passwords {
    /// Builds the hasher; fails on parameters argon2 refuses.
    pub fn new(config: &Argon2Config) -> Result<Self, argon2::Error> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon2, "postern-dummy-password").into();
        let permits = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Self { argon2, dummy_hash, permits: Arc::new(Semaphore::new(permits)) })
    }

    /// Hashes a secret into a PHC string.
    pub async fn hash(&self, secret: String) -> String {
        let argon2 = self.argon2.clone();
        self.blocking(move || hash_with(&argon2, &secret)).await
    }

    /// Checks a secret against a PHC string; `None` runs a dummy check that takes as long and fails.
    pub async fn verify(&self, secret: String, phc: Option<String>) -> bool {
        let argon2 = self.argon2.clone();
        let dummy = self.dummy_hash.clone();
        self.blocking(move || {
            let known = phc.is_some();
            let phc = phc.as_deref().unwrap_or(&dummy);
            let ok = PasswordHash::new(phc).is_ok_and(|h| argon2.verify_password(secret.as_bytes(), &h).is_ok());
            ok && known
        })
        .await
    }

    /// Verifies synchronously (benchmarks and the CLI).
    pub fn verify_now(&self, secret: &str, phc: &str) -> bool {
        PasswordHash::new(phc).is_ok_and(|h| self.argon2.verify_password(secret.as_bytes(), &h).is_ok())
    }

    /// Hashes synchronously, for the CLI.
    pub fn hash_now(&self, secret: &str) -> String {
        hash_with(&self.argon2, secret)
    }

    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
        tokio::task::spawn_blocking(work).await.expect("argon2 does not panic")
    }
}

fn hash_with(argon2: &Argon2<'_>, secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2.hash_password(secret.as_bytes(), &salt).expect("argon2 accepts any input with valid params").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_secret() {
        let p = Passwords::new(&Argon2Config { memory_kib: 1024, iterations: 1, parallelism: 1 }).unwrap();
        let phc = p.hash("correct horse".into()).await;
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(p.verify("correct horse".into(), Some(phc.clone())).await);
        assert!(!p.verify("wrong".into(), Some(phc)).await);
        assert!(!p.verify("postern-dummy-password".into(), None).await);
    }
}
