//! argon2id hashing for passwords and client secrets, off the async runtime, bounded in concurrency,
//! and on reused working memory.

use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::Argon2Config;

/// Hashes and verifies secrets with the configured argon2id parameters.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// Verifying a secret the store does not have costs the same as a real check.
    dummy_hash: Arc<str>,
    /// Each hash holds `memory_kib` of memory: a flood of logins queues here instead.
    permits: Arc<Semaphore>,
    memory: Arc<MemoryPool>,
}

impl Passwords {
    /// Builds the hasher; fails on parameters argon2 refuses.
    pub fn new(config: &Argon2Config) -> Result<Self, argon2::Error> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)?;
        let permits = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        // A well-formed hash of nothing anyone knows: checking against it runs the full argon2id.
        let mut random = [0u8; Params::DEFAULT_OUTPUT_LEN];
        OsRng.fill_bytes(&mut random);
        let dummy_hash = phc(&params, &SaltString::generate(&mut OsRng), &random).into();
        Ok(Self {
            params,
            dummy_hash,
            permits: Arc::new(Semaphore::new(permits)),
            memory: Arc::new(MemoryPool { free: Mutex::default(), capacity: permits }),
        })
    }

    /// Hashes a secret into a PHC string.
    pub async fn hash(&self, secret: String) -> String {
        let this = self.clone();
        self.blocking(move || this.hash_now(&secret)).await
    }

    /// Checks a secret against a PHC string; `None` runs a dummy check that takes as long and fails.
    pub async fn verify(&self, secret: String, phc: Option<String>) -> bool {
        let this = self.clone();
        self.blocking(move || {
            let ok = this.verify_now(&secret, phc.as_deref().unwrap_or(&this.dummy_hash));
            ok && phc.is_some()
        })
        .await
    }

    /// Verifies synchronously (benchmarks and the CLI). Hashes made with other argon2 parameters verify too.
    pub fn verify_now(&self, secret: &str, phc: &str) -> bool {
        self.check(secret.as_bytes(), phc).unwrap_or(false)
    }

    /// Whether a stored hash was made otherwise than this hasher would make it now (older argon2
    /// parameters or variant): it is replaced at the user's next successful sign-in.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else { return true };
        let Ok(params) = Params::try_from(&hash) else { return true };
        let costs = |p: &Params| (p.m_cost(), p.t_cost(), p.p_cost());
        hash.algorithm != Algorithm::Argon2id.ident()
            || hash.version != Some(Version::V0x13.into())
            || costs(&params) != costs(&self.params)
    }

    /// Hashes synchronously, for the CLI.
    pub fn hash_now(&self, secret: &str) -> String {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes).expect("a generated salt decodes");
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        self.memory
            .with(self.params.block_count(), |blocks| {
                argon2.hash_password_into_with_memory(secret.as_bytes(), salt_bytes, &mut out, blocks)
            })
            .expect("argon2 accepts any secret with valid parameters");
        phc(&self.params, &salt, &out)
    }

    /// Frees the working memory kept for reuse (after hashing at start-up, before any login needs it).
    pub fn release_memory(&self) {
        self.memory.free.lock().expect("not poisoned").clear();
    }

    fn check(&self, secret: &[u8], phc: &str) -> Option<bool> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let version = hash.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
        let params = Params::try_from(&hash).ok()?;
        let expected = hash.hash?;
        let mut salt = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt).ok()?;
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..expected.len()];
        let argon2 = Argon2::new(algorithm, version, params.clone());
        self.memory
            .with(params.block_count(), |blocks| argon2.hash_password_into_with_memory(secret, salt, out, blocks))
            .ok()?;
        Some(out.ct_eq(expected.as_bytes()).into())
    }

    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let queued = std::time::Instant::now();
        let waiting = InQueue::enter();
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        drop(waiting);
        metrics::histogram!("postern_argon2_wait_seconds").record(queued.elapsed().as_secs_f64());
        // The permit goes with the work: a request dropped meanwhile frees its slot only when the hash
        // that is running anyway has finished, so abandoned requests cannot pile up hashes.
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = work();
            metrics::histogram!("postern_argon2_duration_seconds").record(started.elapsed().as_secs_f64());
            drop(permit);
            result
        })
        .await
        .expect("argon2 does not panic")
    }
}

/// Counts a check in the argon2 queue for as long as it waits, however its wait ends.
struct InQueue(metrics::Gauge);

impl InQueue {
    fn enter() -> Self {
        let gauge = metrics::gauge!("postern_argon2_queue_depth");
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InQueue {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Working memory for argon2 (19 MiB at the default parameters), kept and reused from hash to hash:
/// a fresh allocation costs page faults on every login, and glibc keeps freed blocks in the arena of
/// whichever blocking thread hashed, so allocating per hash grows memory by a block now and then.
/// With one block per concurrent hash kept, the peak is bounded and reached once.
struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
    /// At most one block per concurrent hash is kept.
    capacity: usize,
}

impl MemoryPool {
    fn with<T>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
        let reused = {
            let mut free = self.free.lock().expect("not poisoned");
            free.iter().position(|m| m.len() == blocks).map(|i| free.swap_remove(i))
        };
        let mut memory = reused.unwrap_or_else(|| vec![Block::default(); blocks]);
        let result = work(&mut memory);
        let mut free = self.free.lock().expect("not poisoned");
        if free.len() < self.capacity {
            free.push(memory);
        }
        result
    }
}

/// The PHC string `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
fn phc(params: &Params, salt: &SaltString, hash: &[u8]) -> String {
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).expect("valid parameters fit a PHC string"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(hash).expect("32 bytes is a valid output length")),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn small() -> Passwords {
        Passwords::new(&Argon2Config { memory_kib: 1024, iterations: 1, parallelism: 1 }).unwrap()
    }

    #[tokio::test]
    async fn verifies_only_the_right_secret() {
        let p = small();
        let phc = p.hash("correct horse".into()).await;
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(p.verify("correct horse".into(), Some(phc.clone())).await);
        assert!(!p.verify("wrong".into(), Some(phc)).await);
        assert!(!p.verify("postern-dummy-password".into(), None).await);
        assert!(!p.verify_now("x", "not a phc string"));
    }

    #[test]
    fn interoperates_with_the_argon2_crate_across_parameters() {
        let p = small();
        // Hashes made elsewhere, with other parameters and variants, still verify (and use their own memory size).
        for (alg, m, t, lanes) in [(Algorithm::Argon2id, 2048, 2, 2), (Algorithm::Argon2i, 1024, 3, 1)] {
            let argon2 = Argon2::new(alg, Version::V0x13, Params::new(m, t, lanes, None).unwrap());
            let theirs = argon2.hash_password(b"s3cret", &SaltString::generate(&mut OsRng)).unwrap().to_string();
            assert!(p.verify_now("s3cret", &theirs), "{theirs}");
            assert!(p.needs_rehash(&theirs), "other parameters are replaced at the next sign-in");
            assert!(!p.verify_now("s3creT", &theirs));
        }
        let ours = p.hash_now("s3cret");
        assert!(!p.needs_rehash(&ours));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"s3cret", &parsed).is_ok(), "{ours}");
    }

    #[test]
    fn working_memory_is_reused_and_can_be_released() {
        let p = small();
        let phc = p.hash_now("a");
        for _ in 0..3 {
            assert!(p.verify_now("a", &phc));
        }
        assert_eq!(p.memory.free.lock().unwrap().len(), 1, "one block, reused");
        p.release_memory();
        assert!(p.memory.free.lock().unwrap().is_empty());
    }
}
