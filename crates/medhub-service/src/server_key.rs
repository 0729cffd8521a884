//! The server key: encrypts the secrets medhub must read back (TOTP seeds), so a copy of the
//! database alone does not hand an attacker everyone's second factor.
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value, and the owner's id as associated
//! data, so a ciphertext moved to another user's row does not decrypt.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::ServiceError;

const NONCE: usize = 24;
const CHECK_PLAINTEXT: &[u8] = b"medhub server key check v1";
const CHECK_AAD: &[u8] = b"server-key-check";

/// A 256-bit key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct ServerKey {
    key: [u8; 32],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

impl ServerKey {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, ServiceError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| ServiceError::InvalidRequest(format!("no randomness: {e}")))?;
        Ok(Self { key })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key
    }

    /// `nonce || ciphertext`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| ServiceError::InvalidRequest(format!("no randomness: {e}")))?;
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| ServiceError::InvalidRequest("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`seal`](Self::seal) produced with the same `aad`; `None` if the key,
    /// the associated data or the ciphertext is wrong.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE);
        XChaCha20Poly1305::new((&self.key).into()).decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
    }

    /// A value proving which key is in use, stored in the database at first start.
    pub fn check_value(&self) -> Result<Vec<u8>, ServiceError> {
        self.seal(CHECK_PLAINTEXT, CHECK_AAD)
    }

    /// Whether `stored` was made by this key.
    pub fn matches(&self, stored: &[u8]) -> bool {
        self.open(stored, CHECK_AAD).as_deref() == Some(CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_owner() {
        let k = ServerKey::generate().unwrap();
        let sealed = k.seal(b"JBSWY3DPEHPK3PXP", b"user-1").unwrap();
        assert_eq!(k.open(&sealed, b"user-1").as_deref(), Some(&b"JBSWY3DPEHPK3PXP"[..]));
        assert_eq!(k.open(&sealed, b"user-2"), None);
        assert_eq!(ServerKey::generate().unwrap().open(&sealed, b"user-1"), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(k.open(&tampered, b"user-1"), None);
        assert_eq!(k.open(&sealed[..10], b"user-1"), None);
        // A fresh nonce each time.
        assert_ne!(k.seal(b"x", b"a").unwrap(), k.seal(b"x", b"a").unwrap());
    }

    #[test]
    fn the_check_value_tells_keys_apart() {
        let k = ServerKey::generate().unwrap();
        let check = k.check_value().unwrap();
        assert!(k.matches(&check));
        assert!(!ServerKey::generate().unwrap().matches(&check));
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.to_bytes())));
    }
}
