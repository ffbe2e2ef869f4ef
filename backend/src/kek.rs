//! The key-encryption key: seals what Postern must read back from the store (private signing keys,
//! later second-factor secrets) with AES-256-GCM, so that a copy of the database alone (a backup, a
//! world-readable file) yields no key that could forge an id_token.
//!
//! The keys come from `key_encryption_key` (base64, e.g. `POSTERN_KEY_ENCRYPTION_KEY`) or from
//! `key_encryption_key_file`, one base64 key per line, generated owner-only at the first start. The
//! first key seals; every key listed opens, so a rotation lists the new key first, re-seals, then
//! drops the old one.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::private_files;

/// Marks a sealed value; stored private keys without it are PKCS#8 in the clear (from before sealing).
const MAGIC: &[u8] = b"PKEK1";
const ID_LEN: usize = 8;
const KEY_LEN: usize = 32;

/// Why a key-encryption key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// The key file could not be read or written.
    #[error("key-encryption key file {0}: {1}")]
    File(PathBuf, String),
    /// A key is not 32 bytes of base64.
    #[error("{0}: a key-encryption key is 32 bytes in base64 (44 characters)")]
    Malformed(String),
    /// No key is configured or found.
    #[error("no key-encryption key is configured")]
    Missing,
    /// A sealed value names a key that is not loaded.
    #[error("sealed with key-encryption key {0}, which is not among the configured ones")]
    UnknownKey(String),
    /// A sealed value does not open: damaged, or moved from another record.
    #[error("a sealed value does not open with its key-encryption key")]
    Damaged,
}

struct Entry {
    id: [u8; ID_LEN],
    key: LessSafeKey,
}

/// Loaded key-encryption keys; the first seals.
pub struct Kek {
    keys: Vec<Entry>,
}

impl Kek {
    /// Keys from base64 text: one per line, or separated by commas or spaces.
    pub fn from_text(text: &str, source: &str) -> Result<Self, KekError> {
        let keys = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .map(|k| {
                let bytes = B64.decode(k).ok().filter(|b| b.len() == KEY_LEN);
                bytes.map(|b| entry(&b)).ok_or_else(|| KekError::Malformed(source.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KekError::Missing);
        }
        Ok(Self { keys })
    }

    /// Reads the key file; with `create_if_missing`, generates it first (owner-only) when there is
    /// none, keeping the file of a process that made one at the same moment.
    pub fn from_file(path: &Path, create_if_missing: bool) -> Result<Self, KekError> {
        let fail = |e: String| KekError::File(path.to_owned(), e);
        if create_if_missing
            && private_files::create_new(path, format!("{}\n", generate()).as_bytes())
                .map_err(|e| fail(e.to_string()))?
        {
            tracing::info!(path = %path.display(), "generated a key-encryption key; back it up apart from the database");
        }
        private_files::check(path).map_err(fail)?;
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::from_text(&text, &path.display().to_string())
    }

    /// The id of the key that seals, in hex (shown by the CLI).
    pub fn id(&self) -> String {
        hex(&self.keys[0].id)
    }

    /// Seals `plaintext`, bound to `context` (e.g. the record's id: a sealed value moved to another
    /// record does not open).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let first = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random source works");
        let mut sealed = plaintext.to_vec();
        first
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut sealed)
            .expect("AES-GCM seals any input of this size");
        [MAGIC, &first.id, &nonce, &sealed].concat()
    }

    /// Opens a sealed value; a value that was never sealed (stored before sealing) comes back as it is.
    pub fn open(&self, value: &[u8], context: &[u8]) -> Result<Vec<u8>, KekError> {
        let Some(rest) = value.strip_prefix(MAGIC) else {
            return Ok(value.to_vec());
        };
        if rest.len() < ID_LEN + NONCE_LEN {
            return Err(KekError::Damaged);
        }
        let (id, rest) = rest.split_at(ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let entry = self.keys.iter().find(|e| e.id == id).ok_or_else(|| KekError::UnknownKey(hex(id)))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KekError::Damaged)?;
        let mut buffer = sealed.to_vec();
        let plain = entry.key.open_in_place(nonce, Aad::from(context), &mut buffer).map_err(|_| KekError::Damaged)?;
        Ok(plain.to_vec())
    }

    /// Whether `value` is sealed with the key that seals now (a rotation re-seals the others).
    pub fn is_current(&self, value: &[u8]) -> bool {
        value.strip_prefix(MAGIC).is_some_and(|rest| rest.starts_with(&self.keys[0].id))
    }
}

/// A new random key, in base64.
pub fn generate() -> String {
    let mut key = [0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut key).expect("the system's random source works");
    B64.encode(key)
}

fn entry(bytes: &[u8]) -> Entry {
    let digest = Sha256::new().chain_update(b"postern key-encryption key id\0").chain_update(bytes).finalize();
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&digest[..ID_LEN]);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"));
    Entry { id, key }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_to_its_context() {
        let kek = Kek::from_text(&generate(), "test").unwrap();
        let sealed = kek.seal(b"private key", b"kid-1");
        assert!(!sealed.windows(11).any(|w| w == b"private key"), "no plaintext in the sealed value");
        assert_eq!(kek.open(&sealed, b"kid-1").unwrap(), b"private key");
        assert!(matches!(kek.open(&sealed, b"kid-2"), Err(KekError::Damaged)), "moved to another record");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(kek.open(&flipped, b"kid-1"), Err(KekError::Damaged)));
        assert_eq!(kek.open(b"0\x82legacy", b"kid-1").unwrap(), b"0\x82legacy", "unsealed values pass through");
        assert_ne!(kek.seal(b"x", b""), kek.seal(b"x", b""), "a fresh nonce each time");
    }

    #[test]
    fn a_rotation_lists_the_new_key_first_and_still_opens_the_old() {
        let (old, new) = (generate(), generate());
        let before = Kek::from_text(&old, "test").unwrap();
        let sealed = before.seal(b"k", b"c");
        let during = Kek::from_text(&format!("{new}\n{old}\n"), "test").unwrap();
        assert_eq!(during.open(&sealed, b"c").unwrap(), b"k");
        assert!(!during.is_current(&sealed));
        assert!(during.is_current(&during.seal(b"k", b"c")));
        let after = Kek::from_text(&new, "test").unwrap();
        assert!(matches!(after.open(&sealed, b"c"), Err(KekError::UnknownKey(_))));
        assert!(matches!(Kek::from_text("c2hvcnQ=", "test"), Err(KekError::Malformed(_))));
        assert!(matches!(Kek::from_text(" \n", "test"), Err(KekError::Missing)));
    }

    #[test]
    fn the_file_is_generated_owner_only_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postern.kek");
        assert!(matches!(Kek::from_file(&path, false), Err(KekError::File(..))), "not made unless asked");
        let first = Kek::from_file(&path, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Kek::from_file(&path, true).unwrap().id(), first.id(), "kept, not regenerated");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(Kek::from_file(&path, false), Err(KekError::File(..))));
    }
}
