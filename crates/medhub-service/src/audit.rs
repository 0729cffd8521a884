//! The audit interface: every access decision (allow and deny) and every security event goes
//! through [`AuditSink::record`]. It never blocks a request: records go to a bounded queue
//! that a writer task appends to the store in batches. Issue 4 puts a tamper-evident log
//! behind this interface; callers do not change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::{Clock, SessionId, UserId};
use medhub_store::DynStore;
use tokio::sync::mpsc;

/// Records waiting for the writer before new ones are dropped (and counted).
const QUEUE: usize = 65_536;
/// Most records per store transaction.
const BATCH: usize = 1_000;

/// A handle for recording; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
    store: DynStore,
    clock: Arc<dyn Clock>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink {
    /// The sink and its writer task (run it on the runtime).
    pub fn new(store: DynStore, clock: Arc<dyn Clock>) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = AuditSink { tx, store: store.clone(), clock, dropped: Arc::new(AtomicU64::new(0)) };
        (sink, write(store, rx))
    }

    /// Records one decision or event. Never waits: if the queue is full (the database has
    /// been unreachable for a long while), the record is dropped, counted and logged.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        action: &str,
        actor: Option<UserId>,
        session: Option<SessionId>,
        target: Option<String>,
        outcome: Outcome,
        reason: Option<&str>,
        ip: Option<String>,
    ) {
        let rec = self.stamp(action, actor, session, target, outcome, reason, ip);
        if self.tx.try_send(rec).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(dropped = n, "audit queue full: records are being dropped");
            }
        }
    }

    /// Records one event in the audit log before returning: `Ok` means it is stored, an
    /// error means it is not, and the caller then refuses the action (fail closed). For reads
    /// of patient data, where a record lost to a crash or a full queue is not acceptable.
    pub async fn record_durably(
        &self,
        action: &str,
        actor: Option<UserId>,
        session: Option<SessionId>,
        target: Option<String>,
        reason: Option<&str>,
    ) -> Result<(), crate::ServiceError> {
        let rec = self.stamp(action, actor, session, target, Outcome::Allow, reason, None);
        self.store.append_audit(&[rec]).await.map_err(|e| {
            tracing::error!(target: "medhub::audit", error = %e, action, "audit record not stored: the action is refused");
            crate::ServiceError::from(e)
        })
    }

    /// A record of now.
    #[allow(clippy::too_many_arguments)]
    fn stamp(
        &self,
        action: &str,
        actor: Option<UserId>,
        session: Option<SessionId>,
        target: Option<String>,
        outcome: Outcome,
        reason: Option<&str>,
        ip: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            at: self.clock.now(),
            actor,
            session,
            action: action.to_owned(),
            target,
            outcome,
            reason: reason.map(str::to_owned),
            ip,
        }
    }

    /// Records dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write(store: DynStore, mut rx: mpsc::Receiver<AuditRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Retry until the store takes the batch: records are only lost if the queue fills.
        let mut wait = Duration::from_millis(100);
        while let Err(e) = store.append_audit(&batch).await {
            tracing::warn!(error = %e, records = batch.len(), "could not write audit records; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}
