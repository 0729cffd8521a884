//! medhub's services: the commit pipeline, the event hub, authentication, and the
//! conversation and messaging operations the API calls.
//!
//! Handlers never touch storage: they call these services. Every state change goes through
//! the [`pipeline`] (group commit, one durable transaction per batch) and is then published,
//! in commit order, by the [`hub`].

pub mod audit;
pub mod audit_export;
pub mod auth;
pub mod directory;
mod error;
pub mod escalation;
pub mod handoff;
pub mod hub;
pub mod messaging;
pub mod metrics;
pub mod oncall;
pub mod patients;
pub mod pipeline;
pub mod presence;
pub mod reports;
pub mod retention;
pub mod server_key;
pub mod tree_heads;

use std::sync::Arc;
use std::time::Duration;

use medhub_core::Clock;
use medhub_core::plan::Limits;
use medhub_store::DynStore;
use tokio::task::JoinHandle;

pub use audit::AuditSink;
pub use auth::{AuthService, Principal};
use directory::OnCallLink;
pub use error::ServiceError;
pub use escalation::{Escalations, NoOnCallDirectory, OnCallDirectory, OnCallHandle};
pub use handoff::Handoffs;
pub use hub::{Conn, Hub, Outbound};
pub use messaging::Messaging;
pub use metrics::Metrics;
pub use oncall::OnCall;
pub use patients::Patients;
pub use pipeline::Pipeline;
pub use presence::Presence;
pub use reports::Reports;
pub use retention::Retention;
pub use server_key::ServerKey;

/// A fresh correlation id for an internal error: what the client quotes, what the log holds.
pub fn correlation_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            as u64)
            .to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Settings the services need, passed in explicitly at start-up.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Message and membership limits enforced by the planner.
    pub limits: Limits,
    /// How long a session lives.
    pub session_ttl: Duration,
    /// Shortest accepted password, in characters.
    pub min_password_chars: usize,
    /// Longest accepted password, in characters.
    pub max_password_chars: usize,
    /// Most commands committed in one transaction.
    pub max_batch: usize,
    /// Commands waiting for the writer before senders wait.
    pub pipeline_queue: usize,
    /// Frames queued for one connection before it is closed as a slow consumer.
    pub connection_queue_frames: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub connection_queue_bytes: usize,
    /// Conversations whose member lists the hub keeps in memory.
    pub member_cache_conversations: usize,
    /// How often the hub looks for events committed by other processes or nodes.
    pub external_poll_interval: Duration,
    /// Concurrent password hashes (each takes 19 MiB and a core for tens of milliseconds).
    pub max_concurrent_hashes: usize,
    /// How often pending activity is written, idle sessions are ended, and live connections
    /// of sessions ended anywhere are closed.
    pub session_sweep_interval: Duration,
    /// Encrypts TOTP secrets. The binary loads it from `auth.secret_key_file`; the default is
    /// a fresh random key, which suits tests and nothing else.
    pub server_key: ServerKey,
    /// OpenID Connect sign-in; `None` turns it off (its routes answer `sso_not_configured`).
    pub oidc: Option<auth::OidcConfig>,
    /// Passkeys (WebAuthn): the relying party. `None` turns them off (their routes answer
    /// `passkeys_not_configured`).
    pub passkeys: Option<auth::PasskeyConfig>,
    /// SAML 2.0 sign-in; `None` turns it off (its routes answer `sso_not_configured`).
    pub saml: Option<auth::SamlConfig>,
    /// How often the audit log's tree head is signed (when the log grew).
    pub audit_tree_head_interval: Duration,
    /// Where signed tree heads go besides the database (none: tests).
    pub audit_tree_head_export: tree_heads::HeadExport,
    /// This server's node name and region, written into every audit record.
    pub audit_origin: audit::Origin,
    /// How often the retention expiry job runs (the first run one interval after start).
    pub retention_interval: Duration,
    /// Most messages the expiry job and erasure decide and change in one transaction.
    pub retention_batch: u32,
    /// Where and how often the organization-wide compliance reports are written (none: not
    /// scheduled; they are still made on demand).
    pub audit_reports: Option<reports::schedule::Schedule>,
    /// The longest the on-call hand-over job sleeps between ticks (it wakes sooner for a
    /// role's next change of holder): new open items and schedule edits are picked up within
    /// this. `None`: the job does not run (the operator's CLI).
    pub oncall_handover_interval: Option<Duration>,
    /// The notification channels outside medhub (`[notify]`); `None`: in the app only.
    pub notifier: Option<Arc<medhub_notify::Notifier>>,
    /// Who holds an on-call role, for escalation steps to one; `None` (the default): the
    /// on-call service's directory.
    pub on_call: Option<OnCallHandle>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            session_ttl: Duration::from_secs(12 * 3600),
            min_password_chars: 12,
            max_password_chars: 128,
            max_batch: 4096,
            pipeline_queue: 8192,
            connection_queue_frames: 1024,
            connection_queue_bytes: 1024 * 1024,
            member_cache_conversations: 100_000,
            external_poll_interval: Duration::from_millis(250),
            max_concurrent_hashes: 2,
            session_sweep_interval: Duration::from_secs(5),
            server_key: ServerKey::generate().unwrap_or_else(|_| ServerKey::from_bytes([0; 32])),
            oidc: None,
            passkeys: None,
            saml: None,
            audit_tree_head_interval: Duration::from_secs(60),
            audit_tree_head_export: tree_heads::HeadExport::default(),
            audit_origin: audit::Origin::default(),
            retention_interval: Duration::from_secs(3600),
            retention_batch: 500,
            audit_reports: None,
            oncall_handover_interval: Some(Duration::from_secs(30)),
            notifier: None,
            on_call: None,
        }
    }
}

/// Every service, started and wired together.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<ServiceConfig>,
    pub store: DynStore,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub auth: AuthService,
    pub audit: AuditSink,
    pub hub: Arc<Hub>,
    pub pipeline: Pipeline,
    pub messaging: Messaging,
    pub patients: Patients,
    pub handoffs: Handoffs,
    pub presence: Presence,
    pub retention: Retention,
    pub reports: Reports,
    pub oncall: OnCall,
    pub escalation: Escalations,
}

/// Background tasks; abort them to stop the services.
pub struct Background {
    pub tasks: Vec<JoinHandle<()>>,
}

impl Background {
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Services {
    /// Wires the services over a migrated store and starts the writer and publisher tasks.
    pub async fn start(
        store: DynStore,
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Background), ServiceError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let head = store.last_event_id().await?;
        let (hub, publisher_rx) = Hub::new(store.clone(), config.clone(), metrics.clone(), head, clock.clone());
        let (pipeline, writer) =
            Pipeline::new(store.clone(), config.clone(), clock.clone(), metrics.clone(), hub.clone());
        let publisher = tokio::spawn(hub.clone().run_publisher(publisher_rx));
        let (audit, audit_writer) = AuditSink::new(store.clone(), clock.clone(), config.audit_origin.clone());
        let audit_writer = tokio::spawn(audit_writer);
        let auth = AuthService::new(
            store.clone(),
            config.clone(),
            clock.clone(),
            hub.clone(),
            config.server_key.clone(),
            audit.clone(),
        );
        auth.start().await?;
        let sweeper = tokio::spawn(auth.clone().run_sweeper(config.session_sweep_interval));
        let patients = Patients::new(store.clone(), clock.clone(), audit.clone(), hub.clone());
        let grants_sweeper = tokio::spawn(patients.clone().run_sweeper(config.session_sweep_interval));
        let on_call_link = Arc::new(OnCallLink::default());
        let escalation = Escalations::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            hub.clone(),
            metrics.clone(),
            config.notifier.clone(),
            match &config.on_call {
                Some(handle) => handle.0.clone(),
                None => on_call_link.clone(),
            },
        );
        let messaging = Messaging::new(store.clone(), pipeline.clone(), hub.clone(), patients.clone(), audit.clone())
            .with_escalation_waker(escalation.waker());
        let handoffs = Handoffs::new(store.clone(), clock.clone(), audit.clone(), messaging.clone());
        let signer = Arc::new(tree_heads::TreeHeadSigner::new(&config.server_key));
        let head_signer = tokio::spawn(tree_heads::run_signer(
            store.clone(),
            signer,
            config.audit_tree_head_export.clone(),
            clock.clone(),
            config.audit_tree_head_interval,
        ));
        let retention =
            Retention::new(store.clone(), clock.clone(), hub.clone(), config.retention_batch, audit.clone());
        let expiry = tokio::spawn(retention.clone().run_job(config.retention_interval));
        let reports = Reports::new(store.clone(), clock.clone(), audit.clone());
        let oncall = OnCall::new(store.clone(), clock.clone(), audit.clone(), messaging.clone());
        on_call_link.bind(oncall.clone());
        let timers = tokio::spawn(escalation.clone().run_timers());
        let deliveries = tokio::spawn(escalation.clone().run_deliveries());
        let presence = Presence::new(store.clone(), clock.clone(), hub.clone(), oncall.clone());
        let presence_poller = tokio::spawn(presence.clone().run_poller());
        let on_call_flags = tokio::spawn(presence.clone().run_on_call_flags());
        let mut tasks = vec![
            writer,
            publisher,
            sweeper,
            audit_writer,
            grants_sweeper,
            head_signer,
            expiry,
            presence_poller,
            on_call_flags,
            timers,
            deliveries,
        ];
        if let Some(every) = config.oncall_handover_interval {
            tasks.push(tokio::spawn(oncall.clone().run_handover(every)));
        }
        if let Some(schedule) = config.audit_reports.clone() {
            tasks.push(tokio::spawn(reports::schedule::run(store.clone(), audit.clone(), clock.clone(), schedule)));
        }
        let services = Services {
            config,
            store,
            clock,
            metrics,
            auth,
            audit,
            hub,
            pipeline,
            messaging,
            patients,
            handoffs,
            presence,
            retention,
            reports,
            oncall,
            escalation,
        };
        Ok((services, Background { tasks }))
    }
}
