//! VAPID (RFC 8292): the application server's P-256 key, and the short-lived ES256 JWT that
//! proves to a push service that a message comes from the holder of the key the browser
//! subscribed with.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::SecretKey;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

use crate::error::NotifyError;
use crate::webpush::ece::uncompressed;

/// The VAPID key pair. Its `Debug` shows only the public key.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
    /// base64url of the uncompressed public point: the browser's `applicationServerKey` and
    /// the `k` parameter.
    public: String,
}

impl VapidKey {
    /// The key from its private scalar: 32 bytes, base64url (the form `web-push
    /// generate-vapid-keys` and most servers print).
    pub fn from_base64url(private: &str) -> Result<Self, NotifyError> {
        let bad = |problem| NotifyError::Config { field: "notify.webpush.vapid_private_key", problem };
        let bytes = B64.decode(private.trim()).map_err(|_| bad("is not base64url without padding"))?;
        if bytes.len() != 32 {
            return Err(bad("must be a P-256 private key of 32 bytes"));
        }
        let secret = SecretKey::from_slice(&bytes).map_err(|_| bad("is not a valid P-256 private key"))?;
        Ok(Self::from_secret(&secret))
    }

    /// A new random key (for `medhub` to create one on first start, and for tests).
    pub fn generate() -> Result<Self, NotifyError> {
        Ok(Self::from_secret(&random_secret()?))
    }

    fn from_secret(secret: &SecretKey) -> Self {
        let public = B64.encode(uncompressed(&secret.public_key()));
        Self { signing: SigningKey::from(secret), public }
    }

    /// The private scalar, base64url: to store a generated key. Treat it as a secret.
    pub fn private_base64url(&self) -> String {
        B64.encode(self.signing.to_bytes())
    }

    /// The public key, base64url: the `applicationServerKey` browsers subscribe with.
    pub fn public_base64url(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header value for a push service at `audience` (its origin), valid
    /// until `expires` (seconds since the epoch, at most 24 hours ahead), naming `subject`
    /// (a `mailto:` or `https:` contact).
    pub fn authorization(&self, audience: &str, expires: i64, subject: &str) -> Result<String, p256::ecdsa::Error> {
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": expires, "sub": subject });
        let claims = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        // ES256: the raw 64-byte r || s (RFC 7518 §3.4), deterministic nonces (RFC 6979).
        let signature: Signature = self.signing.try_sign(signing_input.as_bytes())?;
        Ok(format!("vapid t={signing_input}.{}, k={}", B64.encode(signature.to_bytes()), self.public))
    }
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey").field("public", &self.public).finish_non_exhaustive()
    }
}

/// A P-256 private key from the operating system's random source.
pub(crate) fn random_secret() -> Result<SecretKey, NotifyError> {
    // A random 32-byte string is a valid scalar except with probability about 2^-32; draw
    // again in that case.
    for _ in 0..16 {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|_| NotifyError::Config { field: "notify", problem: "no random source" })?;
        if let Ok(secret) = SecretKey::from_slice(&bytes) {
            return Ok(secret);
        }
    }
    Err(NotifyError::Config { field: "notify", problem: "no random source" })
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;

    use super::*;

    #[test]
    fn the_token_verifies_with_the_public_key_and_says_what_rfc_8292_asks() {
        let key = VapidKey::generate().unwrap();
        let again = VapidKey::from_base64url(&key.private_base64url()).unwrap();
        assert_eq!(again.public_base64url(), key.public_base64url());
        assert_eq!(B64.decode(key.public_base64url()).unwrap().len(), 65);

        let header =
            key.authorization("https://push.example.net", 1_700_000_000, "mailto:it@hospital.example").unwrap();
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, key.public_base64url());
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let head: serde_json::Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(head, serde_json::json!({"typ": "JWT", "alg": "ES256"}));
        let claims: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"aud": "https://push.example.net", "exp": 1_700_000_000, "sub": "mailto:it@hospital.example"})
        );
        let verifying = VerifyingKey::from_sec1_bytes(&B64.decode(k).unwrap()).unwrap();
        let signature = Signature::from_slice(&B64.decode(parts[2]).unwrap()).unwrap();
        verifying.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).unwrap();
    }

    #[test]
    fn keys_are_checked_and_never_shown() {
        assert!(VapidKey::from_base64url("not base64!").is_err());
        assert!(VapidKey::from_base64url(&B64.encode([1u8; 31])).is_err());
        // Zero is not a valid scalar.
        assert!(VapidKey::from_base64url(&B64.encode([0u8; 32])).is_err());
        let key = VapidKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.private_base64url()));
        assert!(shown.contains(key.public_base64url()));
    }
}
