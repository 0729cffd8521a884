//! HTTPS: the rustls server configuration medhub allows (TLS 1.3; TLS 1.2 with forward-secret
//! AEAD suites only when asked), loading and reloading the certificate and key, and the TLS
//! listener.
//!
//! The configuration is always built here, with the *ring* provider passed explicitly:
//! axum-server's `*_pem*` helpers build their own configuration with TLS 1.2 on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ServerConfig};
use tokio::net::TcpListener;

use crate::AppState;

/// The TLS 1.2 suites medhub accepts when TLS 1.2 is allowed: ECDHE key exchange (forward
/// secrecy) and an AEAD cipher. rustls implements no other kind, but the list is explicit so
/// that a future provider cannot widen it.
pub const TLS12_SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The TLS 1.3 suites (all of them are AEAD with ephemeral key exchange).
const TLS13_SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// Where the certificate and key live, and which protocol versions to accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key_file: PathBuf,
    /// Accept TLS 1.2 (with [`TLS12_SUITES`] only) besides TLS 1.3.
    pub allow_tls12: bool,
}

/// Why the certificate or key could not be used. Messages name the file and never quote
/// the key's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    /// The certificate file holds no PEM certificate, or a malformed one.
    #[error("TLS certificate file {} holds no valid PEM certificate{}", path.display(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    BadCertificate { path: PathBuf, detail: Option<String> },
    /// The key file holds no PEM private key (details are withheld: they could quote the key).
    #[error("TLS key file {} holds no valid PEM private key (PKCS#8, PKCS#1 or SEC1 expected)", path.display())]
    BadKey { path: PathBuf },
    /// The key is not the certificate's, or rustls cannot use it.
    #[error("TLS key file {} cannot be used with the certificate in {}: {reason}", key.display(), cert.display())]
    Unusable { cert: PathBuf, key: PathBuf, reason: String },
}

/// A live TLS configuration that can be swapped for new connections (SIGHUP).
#[derive(Clone)]
pub struct Tls {
    settings: TlsSettings,
    config: RustlsConfig,
}

impl Tls {
    /// Loads the certificate and key named in `settings`.
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = RustlsConfig::from_config(server_config(&settings)?);
        Ok(Self { settings, config })
    }

    /// Reads the certificate and key again; new connections use them, existing ones keep
    /// theirs. On error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.config.reload_from_config(server_config(&self.settings)?);
        Ok(())
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// The rustls server configuration for `settings`: versions, suites, ALPN, certificate.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = read_pair(&settings.cert_file, &settings.key_file)?;
    let mut provider = rustls::crypto::ring::default_provider();
    let versions: &[&'static rustls::SupportedProtocolVersion] = if settings.allow_tls12 {
        provider.cipher_suites.retain(|s| TLS13_SUITES.contains(&s.suite()) || TLS12_SUITES.contains(&s.suite()));
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        provider.cipher_suites.retain(|s| TLS13_SUITES.contains(&s.suite()));
        &[&rustls::version::TLS13]
    };
    let unusable = |reason: String| TlsError::Unusable {
        cert: settings.cert_file.clone(),
        key: settings.key_file.clone(),
        reason,
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| unusable(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| unusable(e.to_string()))?;
    // HTTP/2 for browsers and API clients; HTTP/1.1 for the WebSocket upgrade.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No 0-RTT data: it can be replayed. (rustls's default, stated here on purpose.)
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_pem =
        std::fs::read(cert).map_err(|source| TlsError::Read { what: "certificate", path: cert.to_owned(), source })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate { path: cert.to_owned(), detail: Some(e.to_string()) })?;
    if chain.is_empty() {
        return Err(TlsError::BadCertificate { path: cert.to_owned(), detail: None });
    }
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read { what: "key", path: key.to_owned(), source })?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::BadKey { path: key.to_owned() })?;
    Ok((chain, key_der))
}

/// Serves HTTPS until `state.shutdown` is cancelled, then closes real-time connections with
/// 1001, like [`crate::serve`] does for plain HTTP.
pub async fn serve_tls(listener: TcpListener, state: AppState, tls: &Tls) -> std::io::Result<()> {
    let handle: axum_server::Handle<std::net::SocketAddr> = axum_server::Handle::new();
    let shutdown = state.shutdown.clone();
    let hub = state.services.hub.clone();
    let on_shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        hub.kick_all();
        // Stop accepting and let open requests finish; the caller bounds the wait.
        on_shutdown.graceful_shutdown(None);
    });
    // Without TCP_NODELAY small frames wait for delayed ACKs (up to 40 ms).
    let acceptor = RustlsAcceptor::new(tls.config.clone()).acceptor(NoDelayAcceptor::new());
    let app = crate::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum_server::Server::from_listener(listener)
        .acceptor(acceptor)
        .handle(handle)
        .accept_error_handler(|peer, e| tracing::debug!(?peer, error = %e, "TLS handshake failed"))
        .serve(app)
        .await
}
