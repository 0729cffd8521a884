//! TLS to PostgreSQL with libpq's `sslmode` names, over rustls (*ring*).
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and verifies nothing itself.
//! medhub reads `sslmode` and `sslrootcert` from the URL, removes them, and hands
//! tokio-postgres `sslmode=require` with a rustls connector that checks what the mode asks:
//!
//! | `sslmode` | encrypted | chain checked | host name checked |
//! |---|---|---|---|
//! | absent, `disable` | no | – | – |
//! | `require` | yes | only with `sslrootcert` (as libpq) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! `prefer` and `allow` are refused: they fall back to plaintext when TLS fails, which an
//! attacker on the path can force. Roots come from `sslrootcert=FILE` (PEM), or from the
//! system store (`sslrootcert=system`, or no `sslrootcert`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// The `sslmode` values medhub accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A PostgreSQL URL with medhub's TLS parameters taken out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// What tokio-postgres gets: the URL without `sslmode`/`sslrootcert`, plus `sslmode=require`
    /// when medhub adds TLS (or `sslmode=disable` when asked).
    pub url: String,
    /// `None` when the URL has no `sslmode` (plain connection, as before).
    pub mode: Option<SslMode>,
    /// `sslrootcert`, percent-decoded.
    pub root_cert: Option<String>,
}

fn settings_error(message: impl Into<String>) -> StoreError {
    StoreError::PostgresTls(message.into())
}

/// Splits medhub's TLS parameters from `url`.
pub(crate) fn parse(url: &str) -> Result<Parsed, StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(Parsed { url: url.to_owned(), mode: None, root_cert: None });
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = Some(match percent_decode(value)?.as_str() {
                    "disable" => SslMode::Disable,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "prefer" | "allow" => {
                        return Err(settings_error(format!(
                            "sslmode={value} falls back to an unencrypted connection and is not accepted; \
                             use verify-full (or require, verify-ca, disable)"
                        )));
                    }
                    other => {
                        return Err(settings_error(format!(
                            "unknown sslmode {other:?}; use verify-full, verify-ca, require or disable"
                        )));
                    }
                })
            }
            "sslrootcert" => root_cert = Some(percent_decode(value)?),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(settings_error(format!("{key} is not supported (no client certificates or CRLs yet)")));
            }
            _ => kept.push(pair),
        }
    }
    if root_cert.is_some() && matches!(mode, None | Some(SslMode::Disable)) {
        return Err(settings_error("sslrootcert needs sslmode=verify-full, verify-ca or require"));
    }
    match mode {
        Some(SslMode::Disable) => kept.push("sslmode=disable"),
        Some(_) => kept.push("sslmode=require"),
        None => {}
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok(Parsed { url, mode, root_cert })
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else { return Err(settings_error("malformed percent-encoding in the URL")) };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| settings_error("URL parameter is not UTF-8"))
}

/// The rustls connector for `mode`, or `None` for a plain connection.
pub(crate) fn connector(parsed: &Parsed) -> Result<Option<MakeRustlsConnect>, StoreError> {
    let Some(mode) = parsed.mode.filter(|m| *m != SslMode::Disable) else { return Ok(None) };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| settings_error(e.to_string()))?;
    let config = match (mode, &parsed.root_cert) {
        (SslMode::Require, None) => {
            tracing::warn!(
                "PostgreSQL sslmode=require encrypts but does not check the server's certificate; \
                 use sslmode=verify-full"
            );
            builder.dangerous().with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))).with_no_client_auth()
        }
        (SslMode::VerifyFull, root_cert) => {
            builder.with_root_certificates(roots(root_cert.as_deref())?).with_no_client_auth()
        }
        (_, root_cert) => {
            // verify-ca, or require with a root certificate (libpq does the same).
            let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert.as_deref())?), provider)
                .build()
                .map_err(|e| settings_error(e.to_string()))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(chain))).with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// The trusted roots: a PEM file, or the system's store.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let pem =
                std::fs::read(path).map_err(|e| settings_error(format!("cannot read sslrootcert {path}: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| settings_error(format!("sslrootcert {path}: {e}")))?;
                roots.add(cert).map_err(|e| settings_error(format!("sslrootcert {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(settings_error(format!("sslrootcert {path} holds no PEM certificate")));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(settings_error(
                    "no system root certificates found (install ca-certificates, or set sslrootcert=FILE)",
                ));
            }
        }
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and validity, usage, revocation) before the name, so a name
        // error means everything else passed.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a root certificate (libpq's meaning): encryption against passive
/// eavesdropping only. The handshake signature is still checked against the presented key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Parsed {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn refused(url: &str) -> String {
        match parse(url) {
            Ok(p) => panic!("{url} was accepted: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn without_sslmode_the_url_is_untouched() {
        for url in ["postgres://u@h/db", "postgres://u@h/db?application_name=x", "postgres://u:p@h:5433/db?"] {
            let p = ok(url);
            assert_eq!(p.mode, None);
            assert_eq!(p.root_cert, None);
            assert_eq!(p.url, url.trim_end_matches('?'));
        }
    }

    #[test]
    fn tls_parameters_are_taken_out_and_require_is_handed_on() {
        let p =
            ok("postgres://u@db.example/medhub?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem");
        assert_eq!(p.mode, Some(SslMode::VerifyFull));
        assert_eq!(p.root_cert.as_deref(), Some("/etc/ca x.pem"));
        assert_eq!(p.url, "postgres://u@db.example/medhub?application_name=x&sslmode=require");
        assert_eq!(ok("postgres://h/d?sslmode=verify-ca").mode, Some(SslMode::VerifyCa));
        assert_eq!(ok("postgres://h/d?sslmode=require").url, "postgres://h/d?sslmode=require");
        let p = ok("postgres://h/d?sslmode=disable");
        assert_eq!((p.mode, p.url.as_str()), (Some(SslMode::Disable), "postgres://h/d?sslmode=disable"));
    }

    #[test]
    fn modes_that_fall_back_to_plaintext_and_unsupported_parameters_are_refused() {
        assert!(refused("postgres://h/d?sslmode=prefer").contains("falls back"));
        assert!(refused("postgres://h/d?sslmode=allow").contains("falls back"));
        assert!(refused("postgres://h/d?sslmode=verify_full").contains("unknown sslmode"));
        assert!(refused("postgres://h/d?sslmode=require&sslcert=c.pem").contains("sslcert is not supported"));
        assert!(refused("postgres://h/d?sslrootcert=ca.pem").contains("needs sslmode"));
        assert!(refused("postgres://h/d?sslmode=verify-full&sslrootcert=%zz").contains("percent"));
    }

    #[test]
    fn a_missing_or_empty_root_file_is_named() {
        let p = ok("postgres://h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let e = connector(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap_or_else(|e| panic!("{e}"));
        let p = ok(&format!("postgres://h/d?sslmode=verify-ca&sslrootcert={}", empty.display()));
        let e = connector(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn the_system_roots_load() {
        let p = ok("postgres://h/d?sslmode=verify-full");
        assert!(connector(&p).is_ok_and(|c| c.is_some()));
        assert!(connector(&ok("postgres://h/d?sslmode=disable")).is_ok_and(|c| c.is_none()));
    }
}
