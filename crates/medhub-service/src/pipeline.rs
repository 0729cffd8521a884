//! The commit pipeline: group commit for every event-logged write.
//!
//! Callers submit one command and await its outcome. A single writer task takes whatever has
//! queued up (at most `max_batch` commands), commits it as one durable transaction through
//! `Store::apply_batch`, hands the committed events to the hub in commit order, and only then
//! answers each caller. While one batch is being fsynced the next one fills, so throughput
//! grows with load while an idle server commits each command on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use medhub_core::Clock;
use medhub_core::plan::{Command, Outcome};
use medhub_store::DynStore;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::{ServiceConfig, ServiceError};

struct Job {
    cmd: Command,
    /// The template of the command's audit record, if it writes patient data.
    audit: Option<medhub_core::audit::AuditRecord>,
    reply: oneshot::Sender<Result<Outcome, ServiceError>>,
    queued: Instant,
}

/// Handle for submitting commands.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    /// The newest event id this node has committed (for telling our own commits from other
    /// writers' when polling the store).
    committed: Arc<AtomicU64>,
}

impl Pipeline {
    pub(crate) fn new(
        store: DynStore,
        config: Arc<ServiceConfig>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        hub: Arc<Hub>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.pipeline_queue.max(1));
        let committed = hub.committed_marker();
        let writer = tokio::spawn(run_writer(store, config, clock, metrics.clone(), hub, rx, committed.clone()));
        (Self { tx, metrics, committed }, writer)
    }

    /// Commits one command (batched with whatever else is waiting) and returns its outcome
    /// once it is durable.
    pub async fn submit(&self, cmd: Command) -> Result<Outcome, ServiceError> {
        self.submit_audited(cmd, None).await
    }

    /// [`submit`](Self::submit) with the template of the command's audit record: if the
    /// command changes a conversation linked to a patient, its record (`plan::audit::records`)
    /// commits in the same transaction.
    pub async fn submit_audited(
        &self,
        cmd: Command,
        audit: Option<medhub_core::audit::AuditRecord>,
    ) -> Result<Outcome, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.metrics.pipeline_depth.inc();
        if self.tx.send(Job { cmd, audit, reply, queued: Instant::now() }).await.is_err() {
            self.metrics.pipeline_depth.dec();
            return Err(ServiceError::PipelineStopped);
        }
        rx.await.map_err(|_| ServiceError::PipelineStopped)?
    }

    /// The newest event this node committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }
}

async fn run_writer(
    store: DynStore,
    config: Arc<ServiceConfig>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    hub: Arc<Hub>,
    mut rx: mpsc::Receiver<Job>,
    committed: Arc<AtomicU64>,
) {
    let max_batch = config.max_batch.max(1);
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics.pipeline_depth.dec_by(jobs.len() as i64);
        let mut audit = Vec::with_capacity(jobs.len());
        let (cmds, waiting): (Vec<Command>, Vec<(oneshot::Sender<_>, Instant)>) = jobs
            .drain(..)
            .map(|j| {
                audit.push(j.audit);
                (j.cmd, (j.reply, j.queued))
            })
            .unzip();
        let n = cmds.len();
        match store.apply_batch_audited(cmds, audit, clock.now(), config.limits.clone()).await {
            Ok(plan) => {
                let done = Instant::now();
                metrics.batch_size.observe(n as f64);
                metrics.commands.inc_by(n as u64);
                metrics.messages_committed.inc_by(plan.effects.messages_new.len() as u64);
                if let Some(last) = plan.effects.events.last() {
                    committed.store(last.id.get(), Ordering::SeqCst);
                }
                // Publish before answering: a sender's other devices learn of the message no
                // later than the sender learns it is durable.
                hub.publish(plan.effects.events).await;
                for ((reply, queued), result) in waiting.into_iter().zip(plan.results) {
                    metrics.commit_seconds.observe(done.duration_since(queued).as_secs_f64());
                    let _ = reply.send(result.map_err(ServiceError::from));
                }
            }
            Err(e) => {
                // Nothing in this batch committed: every caller gets the error and may retry
                // with the same client transaction id.
                let correlation = crate::correlation_id();
                tracing::error!(error = %e, commands = n, correlation = %correlation, "commit failed");
                let unavailable = matches!(ServiceError::from(e), ServiceError::Unavailable(_));
                for (reply, _) in waiting {
                    let _ =
                        reply.send(Err(ServiceError::CommitFailed { correlation: correlation.clone(), unavailable }));
                }
            }
        }
    }
}
