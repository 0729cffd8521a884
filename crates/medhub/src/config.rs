//! The one typed configuration, loaded from defaults, then a TOML file, then `MEDHUB__…`
//! environment variables, then command-line flags. Every field documents its default; the
//! example file `medhub.example.toml` is generated from these doc comments.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret string (a database URL with a password): never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// medhub configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP and WebSocket listener.
    pub server: ServerConfig,
    /// HTTPS. Without a certificate and key medhub serves plain HTTP, for loopback or behind a TLS-terminating proxy.
    pub tls: TlsConfig,
    /// Where data lives: the embedded SQLite database, or PostgreSQL.
    pub storage: StorageConfig,
    /// Sizes and rates that bound what clients can send.
    pub limits: LimitsConfig,
    /// Real-time connections, queues and the commit pipeline.
    pub realtime: RealtimeConfig,
    /// Sign-in and sessions.
    pub auth: AuthConfig,
    /// Single sign-on with OpenID Connect. Off until `issuer` is set.
    pub oidc: OidcSection,
    /// Passkeys (WebAuthn) as a second factor. Off until `rp_id` is set.
    pub passkeys: PasskeysSection,
    /// Single sign-on with SAML 2.0 (needs a build with the `saml` feature, the default). Off until `idp_entity_id` is set.
    pub saml: SamlSection,
    /// The tamper-evident audit log.
    pub audit: AuditConfig,
    /// Content retention: the expiry job (policies and legal holds are set per organization over the API).
    pub retention: RetentionConfig,
    /// Notifications outside medhub (Web Push, e-mail, SMS, pager) for escalations (docs/clinical.md). Off until `public_base_url` is set; each channel is off until its table is present. The in-app alert needs none of this.
    pub notify: NotifySection,
    /// What the first start creates in an empty store.
    pub bootstrap: BootstrapConfig,
    /// Logging.
    pub log: LogConfig,
}

/// The HTTP and WebSocket listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default: "127.0.0.1:8080".
    pub listen: SocketAddr,
    /// Accept queue length requested from the kernel (capped by net.core.somaxconn). Default: 16384.
    pub listen_backlog: i32,
    /// Seconds to wait for connections to close at shutdown. Default: 10.
    pub shutdown_grace_secs: u64,
    /// Reverse proxies and load balancers in front of medhub, as addresses or CIDR ranges ("10.0.4.0/24"). For requests from them, the client's address (session lists, per-address throttling, the audit trail) is taken from X-Forwarded-For: the nearest entry that is not one of them. List only proxies that overwrite or append that header. Default: [] (the peer's address is the client's).
    pub trusted_proxies: Vec<String>,
    /// This server's name in the audit trail (every record says which node wrote it). Default: unset (the host name).
    pub node: Option<String>,
    /// This server's region or site in the audit trail, for deployments across sites or countries ("eu-west", "st-marys"). Default: unset.
    pub region: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listen_backlog: 16_384,
            shutdown_grace_secs: 10,
            trusted_proxies: Vec::new(),
            node: None,
            region: None,
        }
    }
}

/// Parses `server.trusted_proxies`: addresses (a single host) or CIDR ranges.
fn trusted_proxies(entries: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<ipnet::IpNet>().or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
                ConfigError::Invalid(format!("server.trusted_proxies: {e:?} is not an address or a CIDR range"))
            })
        })
        .collect()
}

/// HTTPS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first; with key_file set, medhub serves HTTPS only. Reloaded on SIGHUP. Default: unset.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate; keep it mode 0600. Reloaded on SIGHUP. Default: unset.
    pub key_file: Option<PathBuf>,
    /// Also accept TLS 1.2, with ECDHE and AES-GCM or ChaCha20-Poly1305 suites only (TLS 1.3 is always accepted). Default: false.
    pub allow_tls12: bool,
}

/// Where data lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the embedded SQLite database (created with mode 0700). Default: "./medhub-data".
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user:password@host/db). When set, PostgreSQL is used instead of SQLite. Default: unset.
    pub database_url: Option<Secret>,
    /// PostgreSQL connections per node. Default: 16.
    pub postgres_pool_size: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("./medhub-data"), database_url: None, postgres_pool_size: 16 }
    }
}

/// Sizes and rates that bound what clients can send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message body in bytes of UTF-8. Default: 16384.
    pub max_message_bytes: usize,
    /// Largest WebSocket frame or message in bytes; larger closes the connection with 1009. Default: 65536.
    pub max_frame_bytes: usize,
    /// Largest HTTP request body in bytes. Default: 65536.
    pub max_http_body_bytes: usize,
    /// Most members of a group conversation. Default: 1000.
    pub group_max_members: usize,
    /// Most members of a channel. Default: 100000.
    pub channel_max_members: usize,
    /// Sustained client frames per second per connection. Default: 20.
    pub frames_per_second: u32,
    /// Burst of client frames above the sustained rate. Default: 100.
    pub frame_burst: u32,
    /// Requests per connection awaiting their answer before the server stops reading it. Default: 32.
    pub max_in_flight: usize,
    /// Real-time connections per process; the process may open 20,000 files in all. Default: 19000.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024,
            max_frame_bytes: 64 * 1024,
            max_http_body_bytes: 64 * 1024,
            group_max_members: 1_000,
            channel_max_members: 100_000,
            frames_per_second: 20,
            frame_burst: 100,
            max_in_flight: 32,
            max_connections: 19_000,
        }
    }
}

/// Real-time connections, queues and the commit pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// Seconds between server pings. Default: 30.
    pub heartbeat_interval_secs: u64,
    /// Seconds of client silence before the connection is closed with 4009. Default: 75.
    pub heartbeat_timeout_secs: u64,
    /// Seconds allowed between the upgrade and the hello frame. Default: 10.
    pub hello_timeout_secs: u64,
    /// Seconds a write may take before the connection is dropped. Default: 10.
    pub write_timeout_secs: u64,
    /// Longest wait of one long poll, in seconds. Default: 30.
    pub long_poll_max_secs: u64,
    /// Frames queued for one connection before it is closed as a slow consumer (4008). Default: 1024.
    pub connection_queue_frames: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer (4008). Default: 1048576.
    pub connection_queue_bytes: usize,
    /// Initial WebSocket read buffer per connection, in bytes; grows on demand. Default: 512.
    pub ws_read_buffer_bytes: usize,
    /// Most commands committed in one transaction. Default: 4096.
    pub max_batch: usize,
    /// Commands waiting for the writer before senders wait. Default: 8192.
    pub pipeline_queue: usize,
    /// Milliseconds between checks for events committed by other nodes or the admin CLI. Default: 250.
    pub external_poll_ms: u64,
    /// Conversations whose member lists are cached. Default: 100000.
    pub member_cache_conversations: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_secs: 30,
            heartbeat_timeout_secs: 75,
            hello_timeout_secs: 10,
            write_timeout_secs: 10,
            long_poll_max_secs: 30,
            connection_queue_frames: 1024,
            connection_queue_bytes: 1024 * 1024,
            ws_read_buffer_bytes: 512,
            max_batch: 4096,
            pipeline_queue: 8192,
            external_poll_ms: 250,
            member_cache_conversations: 100_000,
        }
    }
}

/// Sign-in and sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Hours a session lives. Default: 12.
    pub session_ttl_hours: u64,
    /// Shortest password, in characters (NIST SP 800-63B). Default: 12.
    pub min_password_chars: usize,
    /// Longest password, in characters (OWASP ASVS 2.1.2: at least 64 allowed, above 128 refused). Default: 128.
    pub max_password_chars: usize,
    /// The server key (32 bytes, mode 0600) that encrypts TOTP secrets; created on first
    /// start. Back it up with the database; every node of a PostgreSQL deployment needs the
    /// same file. Default: `medhub.key` in `storage.data_dir`.
    pub secret_key_file: Option<PathBuf>,
    /// Accept the session token in the WebSocket `hello` instead of a single-use ticket. For
    /// old clients and load tests only. Default: false.
    pub allow_token_hello: bool,
    /// Web origins, besides medhub's own, allowed to open WebSockets (for example
    /// `https://portal.example.org`). Default: none.
    pub allowed_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl_hours: 12,
            min_password_chars: 12,
            max_password_chars: 128,
            secret_key_file: None,
            allow_token_hello: false,
            allowed_origins: Vec::new(),
        }
    }
}

/// Single sign-on with OpenID Connect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OidcSection {
    /// The provider's issuer URL, exactly as in its discovery document (https; http only on loopback). Setting it turns SSO on. Default: unset.
    pub issuer: Option<String>,
    /// medhub's client id at the provider. Default: "".
    pub client_id: String,
    /// The client secret. Prefer client_secret_file, which keeps it out of this file. Default: unset.
    pub client_secret: Option<Secret>,
    /// A file holding the client secret (trailing white space is ignored); keep it mode 0600. Default: unset.
    pub client_secret_file: Option<PathBuf>,
    /// Where the provider sends the browser back: the web client's callback page, registered at the provider. Default: "".
    pub redirect_uri: String,
    /// Scopes asked for besides openid. Default: ["profile", "email"].
    pub scopes: Vec<String>,
    /// The ID-token claim the username comes from (lower-cased; characters outside [a-z0-9._-] become _). Default: "preferred_username".
    pub username_claim: String,
    /// The ID-token claim listing the user's groups. Default: "groups".
    pub groups_claim: String,
    /// Members of any of these groups are administrators, re-checked at every sign-in; everyone else is a user. Default: [].
    pub admin_groups: Vec<String>,
    /// Roles from groups, as "group=role_key" entries (for example "icu-nurses=nurse"). When any are set, roles follow the groups at every sign-in, and a user in none of them gets the default role (clinician, or administrator for admin_groups). Default: [].
    pub role_groups: Vec<String>,
    /// The organization (by name, as in `medhub admin org list`) whose users sign in with this provider: they are created there, and an account of another organization is refused. Default: unset (the first organization).
    pub organization: Option<String>,
    /// The provider requires a second factor itself: a sign-in whose amr shows one counts as medhub's second factor. Default: false.
    pub idp_enforces_mfa: bool,
    /// amr values (RFC 8176) that show a second factor. Default: ["mfa", "otp", "hwk", "swk", "fpt", "face"].
    pub accepted_amr: Vec<String>,
}

impl Default for OidcSection {
    fn default() -> Self {
        let d = medhub_service::auth::OidcConfig::new("", "", "", "");
        Self {
            issuer: None,
            client_id: String::new(),
            client_secret: None,
            client_secret_file: None,
            redirect_uri: String::new(),
            scopes: d.scopes,
            username_claim: d.username_claim,
            groups_claim: d.groups_claim,
            admin_groups: Vec::new(),
            role_groups: Vec::new(),
            organization: None,
            idp_enforces_mfa: false,
            accepted_amr: d.accepted_amr,
        }
    }
}

/// Passkeys (WebAuthn) as a second factor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeysSection {
    /// The relying-party id: the domain passkeys are bound to, the host of every origin or a parent of it (for example "medhub.example.org"). Changing it later makes every registered passkey useless. Setting it turns passkeys on. Default: unset.
    pub rp_id: Option<String>,
    /// The name browsers and authenticators show. Default: "medhub".
    pub rp_name: String,
    /// The web origins the client is served from (https; http only on loopback); an answer made on any other origin is refused. Default: [] (meaning "https://" + rp_id).
    pub origins: Vec<String>,
}

impl Default for PasskeysSection {
    fn default() -> Self {
        Self { rp_id: None, rp_name: "medhub".into(), origins: Vec::new() }
    }
}

/// Single sign-on with SAML 2.0 (HTTP-Redirect to the IdP, HTTP-POST back to medhub).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SamlSection {
    /// The IdP's entity id: the Issuer its assertions carry. Setting it turns SAML sign-in on. Default: unset.
    pub idp_entity_id: Option<String>,
    /// The IdP's single sign-on URL for the HTTP-Redirect binding (https; http only on loopback). Default: "".
    pub idp_sso_url: String,
    /// A PEM file with the IdP's signing certificate (several certificates during a key rollover). Only signatures by these are accepted. Default: unset.
    pub idp_certificate_file: Option<PathBuf>,
    /// medhub's entity id at the IdP: the Audience assertions must name. Default: "".
    pub sp_entity_id: String,
    /// medhub's assertion consumer service URL, https://HOST/api/v1/auth/saml/acs: the Recipient assertions must name. Default: "".
    pub acs_url: String,
    /// The attribute (Name or FriendlyName) the username comes from (lower-cased; characters outside [a-z0-9._-] become _). Default: "uid".
    pub username_attribute: String,
    /// The attribute the display name comes from. Default: "displayName".
    pub display_name_attribute: String,
    /// The attribute listing the user's groups. Default: "groups".
    pub groups_attribute: String,
    /// Members of any of these groups are administrators, re-checked at every sign-in; everyone else is a user. Default: [].
    pub admin_groups: Vec<String>,
    /// Roles from groups, as "group=role_key" entries (for example "icu-nurses=nurse"). When any are set, roles follow the groups at every sign-in, and a user in none of them gets the default role (clinician, or administrator for admin_groups). Default: [].
    pub role_groups: Vec<String>,
    /// The organization (by name, as in `medhub admin org list`) whose users sign in with this IdP: they are created there, and an account of another organization is refused. Default: unset (the first organization).
    pub organization: Option<String>,
    /// The IdP requires a second factor itself: a sign-in whose AuthnContextClassRef is accepted counts as medhub's second factor. Default: false.
    pub idp_enforces_mfa: bool,
    /// AuthnContextClassRef values that show a second factor. Default: ["https://refeds.org/profile/mfa", "http://schemas.microsoft.com/claims/multipleauthn", "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract", "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered"].
    pub accepted_authn_contexts: Vec<String>,
}

impl Default for SamlSection {
    fn default() -> Self {
        let d = medhub_service::auth::SamlConfig::new("", "", "", "", "");
        Self {
            idp_entity_id: None,
            idp_sso_url: String::new(),
            idp_certificate_file: None,
            sp_entity_id: String::new(),
            acs_url: String::new(),
            username_attribute: d.username_attribute,
            display_name_attribute: d.display_name_attribute,
            groups_attribute: d.groups_attribute,
            admin_groups: Vec::new(),
            role_groups: Vec::new(),
            organization: None,
            idp_enforces_mfa: false,
            accepted_authn_contexts: d.accepted_authn_contexts,
        }
    }
}

/// Parses "group=role_key" entries.
fn role_groups(section: &str, entries: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    entries
        .iter()
        .map(|e| match e.split_once('=') {
            Some((g, r)) if !g.trim().is_empty() && medhub_core::authz::valid_role_key(r.trim()) => {
                Ok((g.trim().to_owned(), r.trim().to_owned()))
            }
            _ => Err(ConfigError::Invalid(format!(
                "{section}.role_groups: {e:?} must be \"group=role_key\" (role keys are [a-z0-9_])"
            ))),
        })
        .collect()
}

/// Whether `url` is https, or http to a loopback address (tests, a provider on the same host).
fn https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return url.len() > "https://".len();
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The tamper-evident audit log (docs/audit.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Seconds between signed tree heads of the audit log (one is made only when the log grew). Default: 60.
    pub tree_head_interval_secs: u64,
    /// The file each signed tree head is appended to, one JSON line each: put it, or ship it, where whoever can write the database cannot (`medhub audit verify --heads` checks the log against it). Default: `audit-tree-heads.jsonl` in `storage.data_dir`.
    pub tree_head_file: Option<PathBuf>,
    /// A syslog collector (host address and port) each signed tree head is also sent to, over UDP in RFC 5424 form (facility "log audit", tag `audit-tree-head`): a copy off this host. Default: unset.
    pub tree_head_syslog: Option<SocketAddr>,
    /// The directory the scheduled compliance reports are written to (docs/audit-reports.md): one subdirectory per organization, files named by report and period, each written once. Default: `reports` in `storage.data_dir`.
    pub report_dir: Option<PathBuf>,
    /// How often the organization-wide compliance reports (break-glass, failed sign-ins, permission changes, exports) are written, each for the period that just ended: "daily" (UTC days), "weekly" (ISO weeks from Monday, UTC), "Nh" (periods of N hours from 1970-01-01 UTC, N from 1 to 168), or "off". Default: "daily".
    pub report_interval: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            tree_head_interval_secs: 60,
            tree_head_file: None,
            tree_head_syslog: None,
            report_dir: None,
            report_interval: "daily".into(),
        }
    }
}

/// Content retention (docs/retention.md). The policies themselves are per organization and
/// class of conversation, set by administrators over the API or `medhub retention policy set`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds between runs of the expiry job, which removes the content of messages past their organization's retention policy unless a legal hold covers them (the first run is one interval after start; `medhub retention expire` runs it at once). Default: 3600.
    pub expiry_interval_secs: u64,
    /// Most messages the expiry job and an erasure decide and change in one database transaction: a backlog of years is worked through in batches of this size. Default: 500.
    pub batch_size: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { expiry_interval_secs: 3600, batch_size: 500 }
    }
}

/// Notifications outside medhub (docs/clinical.md, "Notification channels and PHI safety").
/// The same shape `medhub_notify::NotifyConfig` reads; [`Config::notify`] hands it over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// The web client's public base URL, https:// only, at most 64 bytes ("https://medhub.example.org"); every notification links to {public_base_url}/c/{conversation id}. Setting it turns notifications outside medhub on. Default: unset (in the app only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    /// Show the titles of conversations that are not linked to a patient ("Ward 7 on-call"); off, every conversation is named by its kind only. A patient's conversation is never named by its title. Default: true.
    pub show_conversation_titles: bool,
    /// Retries of failed sends: full-jitter exponential backoff.
    pub retry: NotifyRetrySection,
    /// Web Push (RFC 8030, 8291, 8292). Default: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<WebPushSection>,
    /// The SMTP relay of the e-mail and pager channels. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSection>,
    /// E-mail (needs `notify.smtp`). Default: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSection>,
    /// Pagers through an e-mail gateway (needs `notify.smtp`). Default: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pager: Option<PagerSection>,
    /// SMS through a provider's HTTP API. Default: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSection>,
}

impl Default for NotifySection {
    fn default() -> Self {
        Self {
            public_base_url: None,
            show_conversation_titles: true,
            retry: NotifyRetrySection::default(),
            webpush: None,
            smtp: None,
            email: None,
            pager: None,
            sms: None,
        }
    }
}

/// `[notify.retry]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyRetrySection {
    /// The ceiling of the first wait, in milliseconds; it doubles with every attempt. Default: 2000.
    pub base_ms: u64,
    /// The largest ceiling, in seconds. Default: 300.
    pub cap_secs: u64,
    /// Attempts in all; after the last the failure is final (in the delivery trace, counted). Default: 8.
    pub max_attempts: u32,
    /// The longest Retry-After a provider can impose, in seconds. Default: 900.
    pub max_retry_after_secs: u64,
}

impl Default for NotifyRetrySection {
    fn default() -> Self {
        Self { base_ms: 2_000, cap_secs: 300, max_attempts: 8, max_retry_after_secs: 900 }
    }
}

/// `[notify.webpush]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebPushSection {
    /// The VAPID private key: a P-256 scalar, 32 bytes, base64url; browsers subscribe with its public key, so changing it makes every subscription useless. Required.
    pub vapid_private_key: Secret,
    /// Who runs this server, for the push services: "mailto:…" or "https://…". Required.
    pub subject: String,
    /// How long a push service keeps a notification for a device that is offline, in seconds. Default: 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u32>,
    /// The push services medhub may post to (a host or any name under it); an empty list allows every https host. Default: the push services of Chrome, Firefox, Edge and Safari.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_endpoint_hosts: Option<Vec<String>>,
    /// Also allow http:// endpoints on loopback addresses (tests, a local push relay). Default: false.
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// The time limit of one request, in seconds. Default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// How the connection to the SMTP relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsMode {
    /// STARTTLS, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: only to a relay on this machine, without a password (port 25).
    None,
}

/// `[notify.smtp]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// The relay's host name (checked against its certificate) or address. Required.
    pub host: String,
    /// Default: 587 for starttls, 465 for implicit, 25 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// "starttls", "implicit" or "none" (loopback only). Default: "starttls".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmtpTlsMode>,
    /// User name for SMTP AUTH, over TLS only. Default: unset (no AUTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for SMTP AUTH; never logged. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A PEM file of CA certificates trusted besides the system's (the hospital's own CA). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_root_ca_file: Option<PathBuf>,
    /// The name medhub gives in EHLO. Default: this machine's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
    /// The time limit of each SMTP command, in seconds. Default: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// `[notify.email]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    /// The sender: an address, or a name and an address ("medhub <medhub@hospital.example>"). Required.
    pub from: String,
}

/// `[notify.pager]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagerSection {
    /// The gateway's address with {pager} where the pager number goes ("{pager}@pager.hospital.example"). Required.
    pub gateway: String,
    /// The sender. Default: notify.email.from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `[notify.sms]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsSection {
    /// The provider's endpoint for one message: https://, or http:// on loopback only; no credentials or query. Required.
    pub url: String,
    /// The bearer token; never logged. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// The sender name or number the provider shows. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_root_ca_file: Option<PathBuf>,
    /// The time limit of one request, in seconds. Default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// What the first start creates in an empty store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Name of the organization. Default: "medhub".
    pub organization_name: String,
    /// Username of the first administrator; its one-time password is printed once on standard output. Default: "admin".
    pub admin_username: String,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self { organization_name: "medhub".into(), admin_username: "admin".into() }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "text" or "json". Default: "text".
    pub format: LogFormat,
    /// Filter in tracing's EnvFilter syntax; RUST_LOG overrides it. Default: "info".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Command-line overrides, applied last.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then `file`, then the environment (`MEDHUB__SECTION__KEY`), then flags.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, overrides, Env::prefixed("MEDHUB__").split("__"))
    }

    pub fn load_from(file: Option<&Path>, overrides: &Overrides, env: Env) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::MissingFile(f.display().to_string()));
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig.merge(env);
        let mut config: Config = fig.extract().map_err(|e| ConfigError::Invalid(describe(e)))?;
        if let Some(l) = overrides.listen {
            config.server.listen = l;
        }
        if let Some(d) = &overrides.data_dir {
            config.storage.data_dir = d.clone();
        }
        if let Some(u) = &overrides.database_url {
            config.storage.database_url = Some(Secret(u.clone()));
        }
        if let Some(c) = &overrides.tls_cert {
            config.tls.cert_file = Some(c.clone());
        }
        if let Some(k) = &overrides.tls_key {
            config.tls.key_file = Some(k.clone());
        }
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Some(url) = &self.storage.database_url
            && !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://"))
        {
            problems.push("storage.database_url must start with postgres:// or postgresql://".to_owned());
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                problems.push("tls.cert_file and tls.key_file (--tls-cert, --tls-key) must be set together".to_owned())
            }
            (None, None) if self.tls.allow_tls12 => {
                problems.push("tls.allow_tls12 needs tls.cert_file and tls.key_file".to_owned())
            }
            _ => {}
        }
        let l = &self.limits;
        if l.max_message_bytes == 0 || l.max_message_bytes > 1024 * 1024 {
            problems.push("limits.max_message_bytes must be between 1 and 1048576".to_owned());
        }
        // A body of max_message_bytes, JSON-escaped, must fit in a frame.
        if l.max_frame_bytes < l.max_message_bytes * 2 + 1024 {
            problems.push("limits.max_frame_bytes must be at least 2 × max_message_bytes + 1024".to_owned());
        }
        if l.max_http_body_bytes < l.max_message_bytes * 2 + 1024 {
            problems.push("limits.max_http_body_bytes must be at least 2 × max_message_bytes + 1024".to_owned());
        }
        if l.frames_per_second == 0 || l.frame_burst == 0 || l.max_in_flight == 0 || l.max_connections == 0 {
            problems.push(
                "limits.frames_per_second, frame_burst, max_in_flight and max_connections must be positive".to_owned(),
            );
        }
        let r = &self.realtime;
        if r.heartbeat_timeout_secs <= r.heartbeat_interval_secs {
            problems.push("realtime.heartbeat_timeout_secs must exceed heartbeat_interval_secs".to_owned());
        }
        if r.connection_queue_frames == 0 || r.max_batch == 0 || r.pipeline_queue == 0 || r.external_poll_ms == 0 {
            problems.push("realtime queue sizes and external_poll_ms must be positive".to_owned());
        }
        if self.auth.min_password_chars < 8 || self.auth.max_password_chars < self.auth.min_password_chars {
            problems.push("auth.min_password_chars must be at least 8 and not above max_password_chars".to_owned());
        }
        if self.auth.max_password_chars < 64 {
            problems.push("auth.max_password_chars must allow at least 64 characters (passphrases)".to_owned());
        }
        if self.auth.session_ttl_hours == 0 || self.auth.session_ttl_hours > 12 {
            problems.push("auth.session_ttl_hours must be between 1 and 12".to_owned());
        }
        if self.audit.tree_head_interval_secs == 0 || self.audit.tree_head_interval_secs > 86_400 {
            problems.push("audit.tree_head_interval_secs must be between 1 and 86400".to_owned());
        }
        if self.retention.expiry_interval_secs < 60 || self.retention.expiry_interval_secs > 86_400 {
            problems.push("retention.expiry_interval_secs must be between 60 and 86400".to_owned());
        }
        if self.retention.batch_size == 0 || self.retention.batch_size > medhub_service::retention::MAX_BATCH {
            problems
                .push(format!("retention.batch_size must be between 1 and {}", medhub_service::retention::MAX_BATCH));
        }
        if self.audit.report_interval != "off"
            && medhub_service::reports::schedule::Every::parse(&self.audit.report_interval).is_none()
        {
            problems.push(format!(
                "audit.report_interval must be \"daily\", \"weekly\", \"Nh\" (N from 1 to 168) or \"off\", not {:?}",
                self.audit.report_interval
            ));
        }
        if let Err(ConfigError::Invalid(e)) = trusted_proxies(&self.server.trusted_proxies) {
            problems.push(e);
        }
        for o in &self.auth.allowed_origins {
            let rest =
                o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")).map(|r| r.trim_end_matches('/'));
            if !matches!(rest, Some(r) if !r.is_empty() && !r.contains(['/', '?', '#', ' '])) {
                problems.push(format!("auth.allowed_origins: {o:?} must be scheme://host[:port]"));
            }
        }
        let o = &self.oidc;
        match &o.issuer {
            Some(issuer) => {
                if !https_or_loopback(issuer) {
                    problems.push("oidc.issuer must be an https:// URL (http:// only on loopback)".to_owned());
                }
                if o.client_id.is_empty() {
                    problems.push("oidc.client_id must be set with oidc.issuer".to_owned());
                }
                if o.client_secret.is_some() == o.client_secret_file.is_some() {
                    problems.push("set exactly one of oidc.client_secret and oidc.client_secret_file".to_owned());
                }
                if !(o.redirect_uri.starts_with("https://") || https_or_loopback(&o.redirect_uri)) {
                    problems.push("oidc.redirect_uri must be an https:// URL (http:// only on loopback)".to_owned());
                }
                if o.username_claim.is_empty() || o.groups_claim.is_empty() {
                    problems.push("oidc.username_claim and oidc.groups_claim must not be empty".to_owned());
                }
            }
            None if !o.client_id.is_empty() || o.client_secret.is_some() || o.client_secret_file.is_some() => {
                problems.push("oidc.issuer must be set for single sign-on".to_owned())
            }
            None => {}
        }
        match self.passkeys() {
            Some(p) => {
                for o in &p.origins {
                    if !https_or_loopback(o) {
                        problems.push(format!("passkeys.origins: {o:?} must be https:// (http:// only on loopback)"));
                    }
                }
                if let Err(e) = p.relying_party() {
                    problems.push(format!("passkeys: {e}"));
                }
            }
            None if !self.passkeys.origins.is_empty() => {
                problems.push("passkeys.rp_id must be set with passkeys.origins".to_owned())
            }
            None => {}
        }
        for (section, entries) in [("oidc", &self.oidc.role_groups), ("saml", &self.saml.role_groups)] {
            if let Err(ConfigError::Invalid(e)) = role_groups(section, entries) {
                problems.push(e);
            }
        }
        for (section, org) in [("oidc", &self.oidc.organization), ("saml", &self.saml.organization)] {
            if org.as_deref().is_some_and(|o| o.trim().is_empty()) {
                problems.push(format!("{section}.organization must not be empty (unset means the first organization)"));
            }
        }
        let sm = &self.saml;
        match &sm.idp_entity_id {
            Some(id) => {
                if id.is_empty() || sm.sp_entity_id.is_empty() {
                    problems.push("saml.idp_entity_id and saml.sp_entity_id must not be empty".to_owned());
                }
                if !https_or_loopback(&sm.idp_sso_url) {
                    problems.push("saml.idp_sso_url must be an https:// URL (http:// only on loopback)".to_owned());
                }
                if !https_or_loopback(&sm.acs_url) || !sm.acs_url.ends_with("/api/v1/auth/saml/acs") {
                    problems.push(
                        "saml.acs_url must be https://HOST/api/v1/auth/saml/acs (http:// only on loopback)".to_owned(),
                    );
                }
                if sm.idp_certificate_file.is_none() {
                    problems.push("saml.idp_certificate_file must be set with saml.idp_entity_id".to_owned());
                }
                if sm.username_attribute.is_empty() || sm.groups_attribute.is_empty() {
                    problems.push("saml.username_attribute and saml.groups_attribute must not be empty".to_owned());
                }
            }
            None if sm.idp_certificate_file.is_some() || !sm.idp_sso_url.is_empty() => {
                problems.push("saml.idp_entity_id must be set for SAML sign-in".to_owned())
            }
            None => {}
        }
        if let Err(ConfigError::Invalid(e)) = self.notifier() {
            problems.push(e);
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems.join("\n"))) }
    }

    /// `[notify]` as the notification crate reads it; `None` when notifications outside medhub
    /// are off (no `public_base_url`).
    pub fn notify(&self) -> Result<Option<medhub_notify::NotifyConfig>, ConfigError> {
        let n = &self.notify;
        if n.public_base_url.is_none() {
            let any =
                n.webpush.is_some() || n.smtp.is_some() || n.email.is_some() || n.pager.is_some() || n.sms.is_some();
            return if any {
                Err(ConfigError::Invalid("notify.public_base_url must be set for notification channels".to_owned()))
            } else {
                Ok(None)
            };
        }
        // The same shape: the crate's own reading (and its unknown-key refusal) decides.
        let value = serde_json::to_value(n).map_err(|e| ConfigError::Invalid(format!("notify: {e}")))?;
        serde_json::from_value(value).map(Some).map_err(|e| ConfigError::Invalid(format!("notify: {e}")))
    }

    /// The notification channels, built and checked (URLs, keys, CA files); `None` when off.
    pub fn notifier(&self) -> Result<Option<std::sync::Arc<medhub_notify::Notifier>>, ConfigError> {
        let Some(config) = self.notify()? else { return Ok(None) };
        let clock: std::sync::Arc<dyn medhub_core::Clock> = std::sync::Arc::new(medhub_core::SystemClock);
        medhub_notify::Notifier::new(&config, clock)
            .map(|n| Some(std::sync::Arc::new(n)))
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The passkey relying party for the services; `None` when passkeys are off.
    pub fn passkeys(&self) -> Option<medhub_service::auth::PasskeyConfig> {
        let p = &self.passkeys;
        let rp_id = p.rp_id.clone()?;
        let origins = if p.origins.is_empty() { vec![format!("https://{rp_id}")] } else { p.origins.clone() };
        Some(medhub_service::auth::PasskeyConfig { rp_id, rp_name: p.rp_name.clone(), origins })
    }

    /// The OpenID Connect settings for the services, with the client secret read from its
    /// file when it lives in one. `None` when SSO is off.
    pub fn oidc(&self) -> Result<Option<medhub_service::auth::OidcConfig>, ConfigError> {
        let o = &self.oidc;
        let Some(issuer) = &o.issuer else { return Ok(None) };
        let secret = match (&o.client_secret, &o.client_secret_file) {
            (Some(s), _) => s.0.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| ConfigError::Invalid(format!("oidc.client_secret_file {}: {e}", f.display())))?
                .trim_end()
                .to_owned(),
            (None, None) => String::new(),
        };
        let mut c = medhub_service::auth::OidcConfig::new(issuer, &o.client_id, &secret, &o.redirect_uri);
        c.scopes = o.scopes.clone();
        c.username_claim = o.username_claim.clone();
        c.groups_claim = o.groups_claim.clone();
        c.admin_groups = o.admin_groups.clone();
        c.role_groups = role_groups("oidc", &o.role_groups)?;
        c.organization = o.organization.clone();
        c.idp_enforces_mfa = o.idp_enforces_mfa;
        c.accepted_amr = o.accepted_amr.clone();
        Ok(Some(c))
    }

    /// The SAML settings for the services, with the IdP certificate read from its file. `None`
    /// when SAML sign-in is off.
    pub fn saml(&self) -> Result<Option<medhub_service::auth::SamlConfig>, ConfigError> {
        let sm = &self.saml;
        let Some(idp) = &sm.idp_entity_id else { return Ok(None) };
        let pem = match &sm.idp_certificate_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| ConfigError::Invalid(format!("saml.idp_certificate_file {}: {e}", f.display())))?,
            None => String::new(),
        };
        medhub_service::auth::pem_certificates(&pem)
            .map_err(|e| ConfigError::Invalid(format!("saml.idp_certificate_file: {e}")))?;
        let mut c = medhub_service::auth::SamlConfig::new(idp, &sm.idp_sso_url, &pem, &sm.sp_entity_id, &sm.acs_url);
        c.username_attribute = sm.username_attribute.clone();
        c.display_name_attribute = sm.display_name_attribute.clone();
        c.groups_attribute = sm.groups_attribute.clone();
        c.admin_groups = sm.admin_groups.clone();
        c.role_groups = role_groups("saml", &sm.role_groups)?;
        c.organization = sm.organization.clone();
        c.idp_enforces_mfa = sm.idp_enforces_mfa;
        c.accepted_authn_contexts = sm.accepted_authn_contexts.clone();
        Ok(Some(c))
    }

    pub fn service(&self) -> medhub_service::ServiceConfig {
        medhub_service::ServiceConfig {
            limits: medhub_core::plan::Limits {
                max_body_bytes: self.limits.max_message_bytes,
                group_max_members: self.limits.group_max_members,
                channel_max_members: self.limits.channel_max_members,
            },
            session_ttl: Duration::from_secs(self.auth.session_ttl_hours * 3600),
            min_password_chars: self.auth.min_password_chars,
            max_password_chars: self.auth.max_password_chars,
            max_batch: self.realtime.max_batch,
            pipeline_queue: self.realtime.pipeline_queue,
            connection_queue_frames: self.realtime.connection_queue_frames,
            connection_queue_bytes: self.realtime.connection_queue_bytes,
            member_cache_conversations: self.realtime.member_cache_conversations,
            external_poll_interval: Duration::from_millis(self.realtime.external_poll_ms),
            passkeys: self.passkeys(),
            audit_tree_head_interval: Duration::from_secs(self.audit.tree_head_interval_secs),
            audit_tree_head_export: medhub_service::tree_heads::HeadExport {
                file: Some(self.tree_head_file()),
                syslog: self.audit.tree_head_syslog,
            },
            audit_origin: medhub_service::audit::Origin {
                node: self
                    .server
                    .node
                    .clone()
                    .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned())),
                region: self.server.region.clone(),
            },
            retention_interval: Duration::from_secs(self.retention.expiry_interval_secs),
            retention_batch: self.retention.batch_size,
            audit_reports: medhub_service::reports::schedule::Every::parse(&self.audit.report_interval)
                .map(|every| medhub_service::reports::schedule::Schedule { dir: self.report_dir(), every }),
            // Not operator settings: the service's own defaults.
            ..medhub_service::ServiceConfig::default()
        }
    }

    pub fn api(&self) -> medhub_api::ApiConfig {
        let r = &self.realtime;
        medhub_api::ApiConfig {
            heartbeat_interval: Duration::from_secs(r.heartbeat_interval_secs),
            heartbeat_timeout: Duration::from_secs(r.heartbeat_timeout_secs),
            hello_timeout: Duration::from_secs(r.hello_timeout_secs),
            write_timeout: Duration::from_secs(r.write_timeout_secs),
            max_frame_bytes: self.limits.max_frame_bytes,
            max_http_body_bytes: self.limits.max_http_body_bytes,
            frames_per_second: self.limits.frames_per_second,
            frame_burst: self.limits.frame_burst,
            max_in_flight: self.limits.max_in_flight,
            max_connections: self.limits.max_connections,
            long_poll_max: Duration::from_secs(r.long_poll_max_secs),
            ws_read_buffer_bytes: r.ws_read_buffer_bytes,
            allow_token_hello: self.auth.allow_token_hello,
            allowed_origins: self.auth.allowed_origins.clone(),
            hsts: self.tls_settings().is_some(),
            // Checked by `validate`; nothing is trusted if it was skipped.
            trusted_proxies: trusted_proxies(&self.server.trusted_proxies).unwrap_or_default(),
        }
    }

    /// The certificate, key and versions to serve HTTPS with, if TLS is configured.
    pub fn tls_settings(&self) -> Option<medhub_api::TlsSettings> {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(cert), Some(key)) => Some(medhub_api::TlsSettings {
                cert_file: cert.clone(),
                key_file: key.clone(),
                allow_tls12: self.tls.allow_tls12,
            }),
            _ => None,
        }
    }

    /// Where the server key lives.
    /// Where signed audit tree heads are appended.
    pub fn tree_head_file(&self) -> PathBuf {
        self.audit.tree_head_file.clone().unwrap_or_else(|| self.storage.data_dir.join("audit-tree-heads.jsonl"))
    }

    /// Where scheduled compliance reports are written.
    pub fn report_dir(&self) -> PathBuf {
        self.audit.report_dir.clone().unwrap_or_else(|| self.storage.data_dir.join("reports"))
    }

    pub fn secret_key_file(&self) -> PathBuf {
        self.auth.secret_key_file.clone().unwrap_or_else(|| self.storage.data_dir.join("medhub.key"))
    }

    pub fn location(&self) -> medhub_store::Location {
        match &self.storage.database_url {
            Some(url) => {
                medhub_store::Location::Postgres { url: url.0.clone(), pool_size: self.storage.postgres_pool_size }
            }
            None => medhub_store::Location::Sqlite { data_dir: self.storage.data_dir.clone() },
        }
    }

    /// The effective configuration as TOML, with secrets replaced.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        if let Some(url) = &c.storage.database_url {
            c.storage.database_url = Some(Secret(mask_url(&url.0)));
        }
        if c.oidc.client_secret.is_some() {
            c.oidc.client_secret = Some(Secret("<redacted>".to_owned()));
        }
        toml::to_string_pretty(&c).unwrap_or_default()
    }
}

/// A connection URL with its password hidden and everything else kept, so that an operator
/// can still see which server and database are meant. Anything that does not parse as
/// `scheme://[user[:password]@]host[/path][?query]` is hidden whole; a query that mentions a
/// password is hidden too.
fn mask_url(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let Some((scheme, rest)) = url.split_once("://") else { return HIDDEN.to_owned() };
    let (user, after_userinfo) = match rest.rsplit_once('@') {
        // A '/' or '?' before the last '@' is ambiguous (a password may contain either):
        // hide everything rather than guess.
        Some((userinfo, _)) if userinfo.contains(['/', '?']) => return HIDDEN.to_owned(),
        Some((userinfo, after)) => match userinfo.split_once(':') {
            Some((user, _)) => (format!("{user}:{HIDDEN}@"), after),
            None => (format!("{userinfo}@"), after),
        },
        None => (String::new(), rest),
    };
    let rest = match after_userinfo.split_once('?') {
        Some((path, query)) if query.to_ascii_lowercase().contains("password") => format!("{path}?{HIDDEN}"),
        _ => after_userinfo.to_owned(),
    };
    format!("{scheme}://{user}{rest}")
}

/// A figment error as lines an operator can act on, naming the key and where it came from.
fn describe(e: figment::Error) -> String {
    e.into_iter().map(|err| err.to_string()).collect::<Vec<_>>().join("\n")
}

/// Renders `medhub.example.toml` from the doc comments and defaults of [`Config`].
pub fn example_toml() -> String {
    let schema = schemars::schema_for!(Config);
    let root = serde_json::to_value(&schema).unwrap_or_default();
    let defs = root.get("$defs").cloned().unwrap_or_default();
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# medhub configuration: every setting with its default.\n\
         # Generated from the typed configuration (`medhub example-config`); do not edit by hand.\n\
         # Every key can also be set in the environment as MEDHUB__SECTION__KEY, for example\n\
         # MEDHUB__SERVER__LISTEN=0.0.0.0:8080. Command-line flags override both.\n",
    );
    let Some(sections) = root.get("properties").and_then(|p| p.as_object()) else { return out };
    for (section, prop) in sections {
        table(&mut out, section, prop, defaults.get(section), &defs, false);
    }
    out
}

/// One table: its description, its header and its keys, then its sub-tables (a struct field,
/// such as `[notify.retry]`). A table that is unset by default (an optional one, such as
/// `[notify.smtp]`) is shown commented out, with its keys.
fn table(
    out: &mut String,
    name: &str,
    prop: &serde_json::Value,
    defaults: Option<&serde_json::Value>,
    defs: &serde_json::Value,
    commented: bool,
) {
    let c = if commented { "# " } else { "" };
    out.push('\n');
    for line in text(prop, defs).lines() {
        out.push_str(&format!("# {line}\n"));
    }
    out.push_str(&format!("{c}[{name}]\n"));
    let Some(fields) = table_def(prop, defs).and_then(|d| d.get("properties")).and_then(|p| p.as_object()) else {
        return;
    };
    let mut subtables = Vec::new();
    for (key, field) in fields {
        let default = defaults.and_then(|d| d.get(key));
        if table_def(field, defs).is_some() {
            subtables.push((key, field, default));
            continue;
        }
        for line in text(field, defs).lines() {
            out.push_str(&format!("# {line}\n"));
        }
        match default {
            Some(v) if !v.is_null() && !commented => out.push_str(&format!("{key} = {}\n", toml_value(v))),
            _ => out.push_str(&format!("# {key} = \n")),
        }
    }
    for (key, field, default) in subtables {
        let unset = commented || default.is_none_or(serde_json::Value::is_null);
        table(out, &format!("{name}.{key}"), field, default, defs, unset);
    }
}

/// The definition of a struct-valued property (directly, by reference, or as the non-null
/// alternative of an `Option`), if it is one.
fn table_def<'a>(v: &'a serde_json::Value, defs: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
    let direct = resolve(v, defs);
    if direct.get("properties").is_some() {
        return Some(direct);
    }
    v.get("anyOf")
        .and_then(|a| a.as_array())
        .and_then(|alts| alts.iter().map(|alt| resolve(alt, defs)).find(|d| d.get("properties").is_some()))
}

fn resolve<'a>(v: &'a serde_json::Value, defs: &'a serde_json::Value) -> &'a serde_json::Value {
    match v.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.rsplit('/').next()) {
        Some(name) => defs.get(name).unwrap_or(v),
        None => v,
    }
}

fn text(v: &serde_json::Value, defs: &serde_json::Value) -> String {
    v.get("description")
        .or_else(|| resolve(v, defs).get("description"))
        .and_then(|d| d.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment provider that sees no variables.
    fn no_env() -> Env {
        Env::prefixed("MEDHUB_UNIT_TEST_UNSET__").split("__")
    }

    #[test]
    fn passkeys_are_off_by_default_and_need_origins_under_the_rp_id() {
        let mut c = Config::default();
        assert_eq!(c.passkeys(), None, "off by default");
        assert_eq!(c.service().passkeys, None);
        c.passkeys.rp_id = Some("medhub.example.org".into());
        c.validate().unwrap();
        let p = c.service().passkeys.unwrap();
        assert_eq!(p.origins, ["https://medhub.example.org"], "the default origin");
        c.passkeys.origins = vec!["https://medhub.example.org".into(), "http://medhub.example.org:8080".into()];
        assert!(c.validate().unwrap_err().to_string().contains("passkeys.origins"), "plain http elsewhere");
        c.passkeys.origins = vec!["https://phish.example.net".into()];
        assert!(c.validate().unwrap_err().to_string().contains("passkeys:"), "an origin outside the RP id");
        c.passkeys.rp_id = None;
        assert!(c.validate().unwrap_err().to_string().contains("passkeys.rp_id"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type.
    fn the_environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[server]\nlisten = \"127.0.0.1:9000\"\n")?;
            jail.set_env("MEDHUB__SERVER__LISTEN", "127.0.0.1:9200");
            jail.set_env("MEDHUB__LIMITS__MAX_MESSAGE_BYTES", "8192");
            let c = Config::load(Some(Path::new("c.toml")), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.server.listen.port(), 9200);
            assert_eq!(c.limits.max_message_bytes, 8192);
            jail.set_env("MEDHUB__LIMITS__NO_SUCH_KEY", "1");
            let e = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("no_such_key"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type.
    fn tls_comes_from_the_file_the_environment_or_flags_and_needs_both_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[tls]\ncert_file = \"/etc/medhub/cert.pem\"\nkey_file = \"/etc/medhub/key.pem\"\n",
            )?;
            jail.set_env("MEDHUB__TLS__ALLOW_TLS12", "true");
            let c = Config::load(Some(Path::new("c.toml")), &Overrides::default()).map_err(|e| e.to_string())?;
            let tls = c.tls_settings().expect("TLS is on");
            assert_eq!(tls.cert_file, Path::new("/etc/medhub/cert.pem"));
            assert!(tls.allow_tls12);
            assert!(c.api().hsts, "HTTPS sends HSTS");
            let flags = Overrides { tls_cert: Some("/run/c.pem".into()), ..Default::default() };
            let c = Config::load(Some(Path::new("c.toml")), &flags).map_err(|e| e.to_string())?;
            assert_eq!(c.tls.cert_file.as_deref(), Some(Path::new("/run/c.pem")));
            assert_eq!(c.tls.key_file.as_deref(), Some(Path::new("/etc/medhub/key.pem")));
            jail.set_env("MEDHUB__TLS__ALLOW_TLS12", "false");
            jail.set_env("MEDHUB__TLS__CERT_FILE", "/srv/cert.pem");
            let e = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("must be set together"), "{e}");
            Ok(())
        });
        let c = Config::default();
        assert!(c.tls_settings().is_none() && !c.api().hsts, "plain HTTP by default, without HSTS");
        let mut c = Config::default();
        c.tls.allow_tls12 = true;
        assert!(c.validate().unwrap_err().to_string().contains("allow_tls12"));
    }

    #[test]
    fn notify_is_off_by_default_and_read_as_the_notification_crate_reads_it() {
        let c = Config::default();
        assert!(c.notify().unwrap().is_none());
        assert!(c.service().notifier.is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[notify]\npublic_base_url = \"https://medhub.example.org\"\n\
             [notify.retry]\nmax_attempts = 3\n\
             [notify.smtp]\nhost = \"relay.hospital.example\"\ntls = \"implicit\"\nusername = \"medhub\"\npassword = \"pw-secret\"\n\
             [notify.email]\nfrom = \"medhub <medhub@hospital.example>\"\n\
             [notify.sms]\nurl = \"https://sms.example/v1/messages\"\nbearer_token = \"tok-secret\"\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&f), &Overrides::default(), no_env()).unwrap();
        let n = c.notify().unwrap().unwrap();
        assert_eq!(
            (n.public_base_url.as_str(), n.retry.max_attempts, n.retry.base_ms),
            ("https://medhub.example.org", 3, 2000)
        );
        let notifier = c.notifier().unwrap().unwrap();
        assert_eq!(notifier.channels(), [medhub_notify::ChannelKind::Email, medhub_notify::ChannelKind::Sms]);
        let shown = format!("{c:?} {n:?}");
        assert!(!shown.contains("pw-secret") && !shown.contains("tok-secret"), "{shown}");
        // A channel without the base URL, an unknown key, a bad URL: refused at start.
        std::fs::write(&f, "[notify.sms]\nurl = \"https://sms.example/v1/messages\"\n").unwrap();
        let e = Config::load_from(Some(&f), &Overrides::default(), no_env()).unwrap_err().to_string();
        assert!(e.contains("notify.public_base_url"), "{e}");
        std::fs::write(
            &f,
            "[notify]\npublic_base_url = \"https://m.example\"\n[notify.smtp]\nhost = \"h\"\nhots = 1\n",
        )
        .unwrap();
        let e = Config::load_from(Some(&f), &Overrides::default(), no_env()).unwrap_err().to_string();
        assert!(e.contains("hots"), "{e}");
        std::fs::write(&f, "[notify]\npublic_base_url = \"http://medhub.example.org\"\n").unwrap();
        let e = Config::load_from(Some(&f), &Overrides::default(), no_env()).unwrap_err().to_string();
        assert!(e.contains("public_base_url"), "{e}");
    }

    #[test]
    fn the_committed_example_is_current() {
        let committed = include_str!("../../../medhub.example.toml");
        assert_eq!(
            committed,
            example_toml(),
            "medhub.example.toml is stale: run `cargo run -p medhub -- example-config > medhub.example.toml`"
        );
    }

    #[test]
    fn the_example_parses_back_to_the_defaults() {
        let parsed: Config = toml::from_str(&example_toml()).expect("example parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_rejected_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:9000\"\nlistne = 1\n").unwrap();
        let e = Config::load_from(Some(&f), &Overrides::default(), no_env()).unwrap_err().to_string();
        assert!(e.contains("listne"), "{e}");
        std::fs::write(&f, "[limits]\nmax_message_bytes = \"big\"\n").unwrap();
        let e = Config::load_from(Some(&f), &Overrides::default(), no_env()).unwrap_err().to_string();
        assert!(e.contains("max_message_bytes"), "{e}");
        let e = Config::load_from(Some(&dir.path().join("missing.toml")), &Overrides::default(), no_env()).unwrap_err();
        assert!(matches!(e, ConfigError::MissingFile(_)));
    }

    #[test]
    fn file_then_flags_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:9000\"\n[limits]\nmax_message_bytes = 4096\n").unwrap();
        let c = Config::load_from(Some(&f), &Overrides::default(), no_env()).unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.limits.max_message_bytes, 4096);
        let flags = Overrides { listen: Some("127.0.0.1:9100".parse().unwrap()), ..Default::default() };
        let c = Config::load_from(Some(&f), &flags, no_env()).unwrap();
        assert_eq!(c.server.listen.port(), 9100);
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let mut c = Config::default();
        c.limits.max_frame_bytes = 1000;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.storage.database_url = Some(Secret("mysql://x".into()));
        assert!(c.validate().unwrap_err().to_string().contains("postgres://"));
    }

    #[test]
    fn secrets_never_print() {
        let mut c = Config::default();
        c.storage.database_url = Some(Secret("postgres://u:hunter2@db/medhub".into()));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.to_redacted_toml().contains("hunter2"));
    }

    #[test]
    fn saml_needs_the_idp_its_certificate_and_medhubs_acs_url() {
        let mut c = Config::default();
        assert!(c.saml().unwrap().is_none(), "off by default");
        c.saml.idp_entity_id = Some("https://idp.example.org/idp".into());
        c.saml.idp_sso_url = "https://idp.example.org/sso".into();
        c.saml.sp_entity_id = "https://medhub.example.org/saml".into();
        c.saml.acs_url = "https://medhub.example.org/api/v1/auth/saml/acs".into();
        let problems = c.validate().unwrap_err().to_string();
        assert!(problems.contains("saml.idp_certificate_file"), "{problems}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("idp.pem");
        std::fs::write(&f, "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n").unwrap();
        c.saml.idp_certificate_file = Some(f.clone());
        c.validate().unwrap();
        let s = c.saml().unwrap().unwrap();
        assert_eq!((s.username_attribute.as_str(), s.groups_attribute.as_str()), ("uid", "groups"));
        assert!(!s.idp_enforces_mfa);
        std::fs::write(&f, "not a certificate").unwrap();
        assert!(c.saml().unwrap_err().to_string().contains("saml.idp_certificate_file"));
        c.saml.acs_url = "https://medhub.example.org/elsewhere".into();
        c.saml.idp_sso_url = "http://idp.example.org/sso".into();
        let problems = c.validate().unwrap_err().to_string();
        assert!(problems.contains("saml.acs_url") && problems.contains("saml.idp_sso_url"), "{problems}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidr_ranges() {
        let mut c = Config::default();
        c.server.trusted_proxies = vec!["10.0.4.0/24".into(), " 192.0.2.1 ".into(), "2001:db8::/32".into()];
        c.validate().unwrap();
        let api = c.api();
        assert_eq!(api.trusted_proxies.len(), 3);
        assert!(api.trusted_proxies[1].contains(&"192.0.2.1".parse::<std::net::IpAddr>().unwrap()));
        for bad in ["10.0.4.0/33", "proxy.example.org", ""] {
            c.server.trusted_proxies = vec![bad.into()];
            let problems = c.validate().unwrap_err().to_string();
            assert!(problems.contains("server.trusted_proxies"), "{bad:?}: {problems}");
        }
    }

    #[test]
    fn a_provider_names_its_organization_or_means_the_first() {
        let mut c = Config::default();
        c.oidc.issuer = Some("https://idp.example.org".into());
        c.oidc.client_id = "medhub".into();
        assert_eq!(c.oidc().unwrap().unwrap().organization, None, "the first organization");
        c.oidc.organization = Some("Riverside Clinic".into());
        assert_eq!(c.oidc().unwrap().unwrap().organization.as_deref(), Some("Riverside Clinic"));
        assert!(!c.validate().unwrap_err().to_string().contains("organization"));
        c.saml.organization = Some("  ".into());
        let problems = c.validate().unwrap_err().to_string();
        assert!(problems.contains("saml.organization"), "{problems}");
    }

    #[test]
    fn role_groups_are_group_equals_role_key() {
        let mut c = Config::default();
        c.oidc.role_groups = vec![" icu-nurses = charge_nurse".into(), "Privacy Office=compliance_officer".into()];
        c.validate().unwrap();
        c.oidc.issuer = Some("https://idp.example.org".into());
        c.oidc.client_id = "medhub".into();
        let o = c.oidc().unwrap().unwrap();
        assert_eq!(
            o.role_groups,
            [
                ("icu-nurses".to_owned(), "charge_nurse".to_owned()),
                ("Privacy Office".to_owned(), "compliance_officer".to_owned())
            ]
        );
        for bad in ["nurses", "=nurse", "nurses=", "nurses=Charge Nurse"] {
            c.saml.role_groups = vec![bad.into()];
            let problems = c.validate().unwrap_err().to_string();
            assert!(problems.contains("saml.role_groups"), "{bad}: {problems}");
        }
    }

    #[test]
    fn oidc_needs_an_https_issuer_a_client_and_one_secret_which_never_prints() {
        let mut c = Config::default();
        assert_eq!(c.oidc().unwrap().map(|o| o.issuer), None, "off by default");
        c.oidc.issuer = Some("https://login.example.org/realms/h".into());
        c.oidc.client_id = "medhub".into();
        c.oidc.client_secret = Some(Secret("s3cret-oidc".into()));
        c.oidc.redirect_uri = "https://medhub.example.org/oidc/callback".into();
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("s3cret-oidc"));
        assert!(!c.to_redacted_toml().contains("s3cret-oidc"));
        let o = c.oidc().unwrap().unwrap();
        assert_eq!((o.client_secret.as_str(), o.username_claim.as_str()), ("s3cret-oidc", "preferred_username"));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-a-file\n").unwrap();
        c.oidc.client_secret = None;
        c.oidc.client_secret_file = Some(f);
        c.validate().unwrap();
        assert_eq!(c.oidc().unwrap().unwrap().client_secret, "from-a-file");

        for (issuer, ok) in [
            ("http://login.example.org", false),
            ("http://127.0.0.1:4000", true),
            ("http://localhost:8080/realms/h", true),
            ("http://[::1]:4000", true),
            ("http://127.0.0.1.evil.example", false),
            ("ftp://x", false),
        ] {
            c.oidc.issuer = Some(issuer.into());
            assert_eq!(c.validate().is_ok(), ok, "{issuer}");
        }
        c.oidc.issuer = Some("https://login.example.org".into());
        c.oidc.client_secret = Some(Secret("both".into()));
        assert!(c.validate().unwrap_err().to_string().contains("exactly one"));
        let mut c = Config::default();
        c.oidc.client_id = "medhub".into();
        assert!(c.validate().unwrap_err().to_string().contains("oidc.issuer"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type.
    fn oidc_settings_come_from_the_environment_too() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MEDHUB__OIDC__ISSUER", "https://login.example.org");
            jail.set_env("MEDHUB__OIDC__CLIENT_ID", "medhub");
            jail.set_env("MEDHUB__OIDC__CLIENT_SECRET", "env-secret");
            jail.set_env("MEDHUB__OIDC__REDIRECT_URI", "https://medhub.example.org/cb");
            jail.set_env("MEDHUB__OIDC__ADMIN_GROUPS", "[\"medhub-admins\"]");
            jail.set_env("MEDHUB__OIDC__IDP_ENFORCES_MFA", "true");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            let o = c.oidc().map_err(|e| e.to_string())?.expect("on");
            assert_eq!(o.admin_groups, ["medhub-admins"]);
            assert!(o.idp_enforces_mfa);
            Ok(())
        });
    }

    #[test]
    fn database_passwords_are_masked_and_the_rest_is_kept() {
        assert_eq!(
            mask_url("postgres://medhub:s3cret@db.example:5432/medhub"),
            "postgres://medhub:<redacted>@db.example:5432/medhub"
        );
        assert_eq!(
            mask_url("postgres://medhub@db/medhub?sslmode=require"),
            "postgres://medhub@db/medhub?sslmode=require"
        );
        assert_eq!(mask_url("postgres://u:p@ss:word@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(mask_url("postgres://h/db?user=u&password=x"), "postgres://h/db?<redacted>");
        assert_eq!(mask_url("host=db password=x"), "<redacted>");
        assert_eq!(mask_url("postgres://u:pa/ss@h/db"), "<redacted>");
        assert_eq!(mask_url("postgres://u:pa?ss@h/db"), "<redacted>");
    }
}
