//! Prometheus metrics, rendered at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label for errors by wire code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// Label of notification attempts: the channel and how the attempt ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabel {
    /// `in_app`, `push`, `email`, `sms`, `pager`.
    pub channel: String,
    /// `sent`, `retrying`, `failed` (final), `gone` (push subscription deleted; final).
    pub outcome: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Open real-time connections (WebSocket and active long polls).
    pub connections: Gauge,
    /// Connections accepted since start.
    pub connections_opened: Counter,
    /// Messages durably committed.
    pub messages_committed: Counter,
    /// Commands committed (any kind, accepted or refused by the domain).
    pub commands: Counter,
    /// Commands per committed batch.
    pub batch_size: Histogram,
    /// Seconds from a command entering the pipeline to its durable commit.
    pub commit_seconds: Histogram,
    /// Commands waiting for the writer.
    pub pipeline_depth: Gauge,
    /// Events published to connections.
    pub events_published: Counter,
    /// Frames queued to connections (one per recipient connection).
    pub deliveries: Counter,
    /// Frames waiting in connection queues, summed over connections (sampled at scrape).
    pub queued_frames: Gauge,
    /// Connections closed because they fell too far behind.
    pub slow_consumer_closes: Counter,
    /// Errors answered to clients, by wire code.
    pub errors: Family<CodeLabel, Counter>,
    /// Escalation timers fired (each one point of one message's escalation).
    pub escalation_firings: Counter,
    /// Notification attempts, by channel and outcome.
    pub notifications: Family<NotificationLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("medhub");
        let m = Metrics {
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            messages_committed: Counter::default(),
            commands: Counter::default(),
            batch_size: Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]),
            commit_seconds: Histogram::new([
                0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            pipeline_depth: Gauge::default(),
            events_published: Counter::default(),
            deliveries: Counter::default(),
            queued_frames: Gauge::default(),
            slow_consumer_closes: Counter::default(),
            errors: Family::default(),
            escalation_firings: Counter::default(),
            notifications: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open real-time connections", m.connections.clone());
        registry.register("connections_opened", "Real-time connections accepted", m.connections_opened.clone());
        registry.register("messages_committed", "Messages durably committed", m.messages_committed.clone());
        registry.register("commands", "Commands committed", m.commands.clone());
        registry.register("commit_batch_size", "Commands per committed batch", m.batch_size.clone());
        registry.register(
            "commit_latency_seconds",
            "Time from a command entering the pipeline to its durable commit",
            m.commit_seconds.clone(),
        );
        registry.register("pipeline_queue_depth", "Commands waiting for the writer", m.pipeline_depth.clone());
        registry.register("events_published", "Events published to connections", m.events_published.clone());
        registry.register("deliveries", "Frames queued to connections", m.deliveries.clone());
        registry.register("connection_queue_depth", "Frames waiting in connection queues", m.queued_frames.clone());
        registry.register("slow_consumer_closes", "Connections closed as too slow", m.slow_consumer_closes.clone());
        registry.register("errors", "Errors answered to clients, by code", m.errors.clone());
        registry.register("escalation_firings", "Escalation timers fired", m.escalation_firings.clone());
        registry.register(
            "notifications",
            "Notification attempts, by channel and outcome (retrying, or final: sent, failed, gone)",
            m.notifications.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts an error answered to a client.
    pub fn error(&self, code: &str) {
        self.errors.get_or_create(&CodeLabel { code: code.to_owned() }).inc();
    }

    /// Counts a notification attempt.
    pub fn notification(&self, channel: &str, outcome: &str) {
        self.notifications
            .get_or_create(&NotificationLabel { channel: channel.to_owned(), outcome: outcome.to_owned() })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
