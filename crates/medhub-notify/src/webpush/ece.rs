//! RFC 8291 message encryption for Web Push: the `aes128gcm` content coding of RFC 8188 with
//! one record, keyed by ECDH on P-256 between a fresh sender key and the subscription's
//! `p256dh` key, mixed with the subscription's `auth` secret (RFC 8291 §3.3-3.4).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{PublicKey, SecretKey};
use sha2_011::Sha256;

/// The record size written in the header. One record carries the whole message.
pub const RECORD_SIZE: u32 = 4096;
/// Salt (16), record size (4), key id length (1), the sender's public key (65).
pub const HEADER_LEN: usize = 86;
const TAG_LEN: usize = 16;
/// RFC 8291 §4: push services need accept no more than 4096 bytes of body.
pub const MAX_BODY: usize = 4096;
/// The most plaintext one message can carry: the body, less the header, tag and delimiter.
pub const MAX_PLAINTEXT: usize = MAX_BODY - HEADER_LEN - TAG_LEN - 1;

/// Why encryption failed. Both mean a caller's bug or a broken key, not a network fault.
#[derive(Debug, PartialEq, Eq)]
pub enum EceError {
    /// The plaintext, padded, does not fit one record of a 4096-byte body.
    TooLong,
    /// The cipher refused (it does not, for these sizes).
    Cipher,
}

/// The uncompressed SEC1 form (65 bytes, starting 0x04) of a P-256 public key.
pub fn uncompressed(key: &PublicKey) -> [u8; 65] {
    let point = key.to_sec1_point(false);
    let mut out = [0u8; 65];
    out.copy_from_slice(point.as_bytes());
    out
}

/// Encrypts `plaintext` for the user agent whose key is `ua_public` and whose auth secret is
/// `auth`, from the sender key `as_secret` with `salt`. `pad_to` rounds the padded plaintext
/// up to a multiple of itself (0 or 1: no padding), so the body's size says less about the
/// names inside. `as_secret` and `salt` must be fresh for every message.
pub fn encrypt(
    plaintext: &[u8],
    ua_public: &PublicKey,
    auth: &[u8; 16],
    as_secret: &SecretKey,
    salt: &[u8; 16],
    pad_to: usize,
) -> Result<Vec<u8>, EceError> {
    let as_public = uncompressed(&as_secret.public_key());
    let ua_bytes = uncompressed(ua_public);

    // §3.3: ecdh_secret = ECDH(as_private, ua_public); IKM = HKDF(auth, ecdh_secret, key_info).
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua_public.as_affine());
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(&ua_bytes);
    key_info.extend_from_slice(&as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|_| EceError::Cipher)?;

    // RFC 8188 §2.2-2.3: the content encryption key and nonce from the salt and IKM.
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).map_err(|_| EceError::Cipher)?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|_| EceError::Cipher)?;

    // One record: plaintext, the last-record delimiter 0x02, zero padding.
    let unpadded = plaintext.len() + 1;
    let padded = if pad_to > 1 { unpadded.div_ceil(pad_to) * pad_to } else { unpadded };
    let padded = padded.min(MAX_PLAINTEXT + 1);
    if unpadded > padded {
        return Err(EceError::TooLong);
    }
    let mut record = Vec::with_capacity(padded);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    record.resize(padded, 0);

    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| EceError::Cipher)?;
    // The first (and only) record's nonce is the derived nonce XOR 0.
    let sealed = cipher.encrypt(&Nonce::from(nonce), record.as_slice()).map_err(|_| EceError::Cipher)?;

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(&as_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::Aead;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A, every input and the expected message.
    #[test]
    fn rfc8291_appendix_a() {
        let plaintext = b64("V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24");
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
        let as_secret = SecretKey::from_slice(&b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        assert_eq!(
            uncompressed(&as_secret.public_key()).to_vec(),
            b64("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8")
        );
        let ua_secret = SecretKey::from_slice(&b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")).unwrap();
        let ua_public = PublicKey::from_sec1_bytes(&b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        ))
        .unwrap();
        assert_eq!(ua_secret.public_key(), ua_public);
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();

        let body = encrypt(&plaintext, &ua_public, &auth, &as_secret, &salt, 0).unwrap();
        assert_eq!(
            B64.encode(&body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    /// The receiving side of §3.4, written out independently, to check padding.
    fn decrypt(body: &[u8], ua_secret: &SecretKey, auth: &[u8; 16]) -> Vec<u8> {
        let salt = &body[..16];
        assert_eq!(u32::from_be_bytes(body[16..20].try_into().unwrap()), RECORD_SIZE);
        assert_eq!(body[20], 65);
        let as_public = PublicKey::from_sec1_bytes(&body[21..86]).unwrap();
        let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), as_public.as_affine());
        let info = [b"WebPush: info\0".as_slice(), &uncompressed(&ua_secret.public_key()), &body[21..86]].concat();
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes()).expand(&info, &mut ikm).unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let mut record =
            Aes128Gcm::new_from_slice(&cek).unwrap().decrypt(&Nonce::from(nonce), &body[HEADER_LEN..]).unwrap();
        while record.last() == Some(&0) {
            record.pop();
        }
        assert_eq!(record.pop(), Some(0x02));
        record
    }

    #[test]
    fn padding_rounds_the_body_and_round_trips() {
        let ua = SecretKey::from_slice(&[7u8; 32]).unwrap();
        let sender = SecretKey::from_slice(&[9u8; 32]).unwrap();
        let auth = [3u8; 16];
        let salt = [5u8; 16];
        for len in [0, 1, 127, 128, 300, 1000] {
            let plain = vec![b'x'; len];
            let body = encrypt(&plain, &ua.public_key(), &auth, &sender, &salt, 128).unwrap();
            assert_eq!((body.len() - HEADER_LEN - TAG_LEN) % 128, 0, "{len}");
            assert_eq!(decrypt(&body, &ua, &auth), plain);
        }
        let max = vec![b'x'; MAX_PLAINTEXT];
        let body = encrypt(&max, &ua.public_key(), &auth, &sender, &salt, 128).unwrap();
        assert_eq!(body.len(), MAX_BODY);
        assert_eq!(
            encrypt(&[b'x'; MAX_PLAINTEXT + 1], &ua.public_key(), &auth, &sender, &salt, 0),
            Err(EceError::TooLong)
        );
    }
}
