//! Sealing records at rest: AES-256-GCM (ring) with a random 96-bit nonce per record.
//!
//! A sealed record is `nonce (12 bytes) || ciphertext || tag (16 bytes)`. The caller names what
//! the record is (the associated data: an entry's index, the snapshot's key), so a record copied
//! to another place in the file fails to open instead of being read as something else.
//!
//! [`DataKey`] is the Raft log's data key (DEK); `keys.rs` keeps it on disk wrapped by a
//! key-encryption key, which is also a [`DataKey`] here: both are 32-byte AES-256-GCM keys.

use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a key, in bytes.
pub const KEY_LEN: usize = 32;

/// What sealing adds to a record: the nonce in front, the tag behind.
pub const OVERHEAD: usize = NONCE_LEN + 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    /// The key is wrong, or the record was changed, truncated or moved.
    #[error("the record cannot be decrypted: wrong key, or the record was changed or moved")]
    Open,
    #[error("the system's random number generator failed")]
    Random,
}

/// A 32-byte AES-256-GCM key. Cloning shares it; `Debug` never prints it.
#[derive(Clone)]
pub struct DataKey {
    raw: Arc<[u8; KEY_LEN]>,
    key: Arc<LessSafeKey>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<Self, CipherError> {
        let mut raw = [0u8; KEY_LEN];
        random(&mut raw)?;
        Ok(Self::from_bytes(raw))
    }

    pub fn from_bytes(raw: [u8; KEY_LEN]) -> Self {
        // Only a wrong length fails, and the array has the one AES-256 takes.
        let unbound = UnboundKey::new(&AES_256_GCM, &raw).expect("a 32-byte AES-256 key");
        DataKey {
            raw: Arc::new(raw),
            key: Arc::new(LessSafeKey::new(unbound)),
        }
    }

    /// The key itself, for wrapping it with a key-encryption key.
    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.raw
    }

    /// Encrypts `plain`, bound to `aad`: `nonce || ciphertext || tag`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        // A nonce from the thread's CSPRNG (ChaCha, seeded and reseeded from the system's
        // generator), not a system call per record: every Raft entry of every manager is
        // sealed, and the call with the kernel's own ChaCha setup was ~3% of a busy Raft
        // loop. Random 96-bit nonces stay as unlikely to repeat.
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            // Only a record too long for GCM (64 GiB) fails.
            .map_err(|_| CipherError::Open)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts a record [`DataKey::seal`] made with the same key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        if sealed.len() < OVERHEAD {
            return Err(CipherError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Open)?;
        let mut body = body.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| CipherError::Open)?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

/// Fills `buf` from the system's random number generator.
pub(super) fn random(buf: &mut [u8]) -> Result<(), CipherError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| CipherError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_their_key_and_name() {
        let key = DataKey::generate().expect("key");
        let sealed = key.seal(b"root CA key", b"entry 7").expect("seal");
        assert_eq!(sealed.len(), b"root CA key".len() + OVERHEAD);
        assert!(!sealed.windows(11).any(|w| w == b"root CA key"));
        assert_eq!(key.open(&sealed, b"entry 7").expect("open"), b"root CA key");
        // Another place in the file, another key, a changed byte, a truncated record: refused.
        assert_eq!(key.open(&sealed, b"entry 8"), Err(CipherError::Open));
        let other = DataKey::generate().expect("key");
        assert_eq!(other.open(&sealed, b"entry 7"), Err(CipherError::Open));
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(key.open(&flipped, b"entry 7"), Err(CipherError::Open));
        assert_eq!(key.open(&sealed[..10], b"entry 7"), Err(CipherError::Open));
        // The same record sealed twice differs (a fresh nonce each time).
        assert_ne!(
            key.seal(b"x", b"a").expect("seal"),
            key.seal(b"x", b"a").expect("seal")
        );
        assert_eq!(format!("{key:?}"), "DataKey([REDACTED])");
    }
}
