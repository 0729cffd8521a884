//! The event hub: who is connected, and the publisher that delivers committed events to them
//! in commit order.
//!
//! **Invariant:** events are delivered in event-id order, and every event reaches exactly the
//! users `medhub_core::recipients::recipients` names. The publisher is the only task that
//! delivers stored events; it processes the log strictly in order, filling any gap (events
//! another process or node committed) from the store before moving on.
//!
//! **Invariant:** `published` is raised to an event's id *before* the event is queued to any
//! connection. A [`Subscription`] relies on this to switch from replaying the store to live
//! delivery without gaps: see [`Subscription::next_batch`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use medhub_core::event::Event;
use medhub_core::presence::{self, PresenceFacts, PresenceOverride, PresenceState};
use medhub_core::recipients::{apply_membership, recipients};
use medhub_core::{Clock, ConversationId, EventId, EventKind, SessionId, UserId};
use medhub_store::DynStore;
use medhub_wire::ServerFrame;
use medhub_wire::frames::{PresenceStateView, PresenceStatus, PresenceView};
use medhub_wire::views::EventView;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc};

use crate::metrics::Metrics;
use crate::{ServiceConfig, ServiceError};

/// Committed batches waiting for the publisher. Bounded: a stalled publisher slows commits
/// rather than growing memory.
const PUBLISH_QUEUE: usize = 1024;
/// Events read from the store per page when filling gaps or replaying.
const PAGE: u32 = 500;
/// Queue capacity above which a drained queue's memory is released.
pub const SHRINK_ABOVE: usize = 32;
/// Users one connection may follow for presence.
pub const MAX_PRESENCE_SUBSCRIPTIONS: usize = 500;

/// A frame waiting to be written to a connection.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// A stored event, serialized once and shared by every recipient.
    Event { id: EventId, frame: Bytes },
    /// An ephemeral signal (typing, presence); dropped when a connection falls behind.
    Ephemeral(Bytes),
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Event { frame, .. } | Outbound::Ephemeral(frame) => frame.len(),
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outbound>,
    bytes: usize,
    /// The bound was hit: items were dropped and must be recovered from the store.
    overflowed: bool,
    /// The server wants this connection closed (session revoked, shutdown).
    kicked: bool,
}

/// One real-time connection's mailbox.
pub struct Conn {
    pub id: u64,
    pub user: UserId,
    pub session: SessionId,
    queue: Mutex<Queue>,
    notify: Notify,
    max_frames: usize,
    max_bytes: usize,
    presence: Mutex<Vec<UserId>>,
}

impl Conn {
    /// Queues a frame. On overflow the queue is emptied and flagged instead, so a slow
    /// consumer costs no memory while it waits to be closed.
    fn push(&self, item: Outbound) {
        let mut q = self.queue.lock();
        if q.overflowed || q.kicked {
            return;
        }
        if q.items.len() >= self.max_frames || q.bytes + item.len() > self.max_bytes {
            q.items = VecDeque::new();
            q.bytes = 0;
            q.overflowed = true;
        } else {
            q.bytes += item.len();
            q.items.push_back(item);
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Waits until something was queued (or the connection was kicked).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Asks the connection to close.
    pub fn kick(&self) {
        self.queue.lock().kicked = true;
        self.notify.notify_one();
    }

    pub fn is_kicked(&self) -> bool {
        self.queue.lock().kicked
    }

    /// Whether the queue overflowed or the connection was kicked: either way, stop writing.
    pub fn must_stop(&self) -> bool {
        let q = self.queue.lock();
        q.kicked || q.overflowed
    }

    /// Frames currently queued.
    pub fn depth(&self) -> usize {
        self.queue.lock().items.len()
    }

    fn take(&self, out: &mut VecDeque<Outbound>) -> bool {
        let mut q = self.queue.lock();
        let overflowed = q.overflowed;
        std::mem::swap(out, &mut q.items);
        q.bytes = 0;
        overflowed
    }

    fn reset(&self) {
        let mut q = self.queue.lock();
        q.items = VecDeque::new();
        q.bytes = 0;
        q.overflowed = false;
    }
}

/// Connected users, the member cache and the publisher.
pub struct Hub {
    store: DynStore,
    config: Arc<ServiceConfig>,
    metrics: Arc<Metrics>,
    conns: RwLock<HashMap<UserId, Vec<Arc<Conn>>>>,
    next_conn: AtomicU64,
    /// Every event up to here has been queued to its recipients (or is being queued).
    published: AtomicU64,
    /// The newest event this node committed itself.
    committed: Arc<AtomicU64>,
    /// Members of recently active conversations, as of `published`.
    members: Mutex<HashMap<ConversationId, Arc<HashSet<UserId>>>>,
    publish_tx: mpsc::Sender<Vec<Event>>,
    watchers: Mutex<HashMap<UserId, Vec<Weak<Conn>>>>,
    clock: Arc<dyn Clock>,
    /// Presence overrides in force, of every user: refreshed from the store by the presence
    /// poller (so an override set on another node, or one that expired, is announced here
    /// too) and at once when set on this node.
    overrides: RwLock<HashMap<UserId, PresenceOverride>>,
    /// Who is on call now, as the on-call service last said (absent: on no schedule).
    on_call: RwLock<HashMap<UserId, bool>>,
}

impl Hub {
    pub(crate) fn new(
        store: DynStore,
        config: Arc<ServiceConfig>,
        metrics: Arc<Metrics>,
        head: EventId,
        clock: Arc<dyn Clock>,
    ) -> (Arc<Self>, mpsc::Receiver<Vec<Event>>) {
        let (publish_tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let hub = Arc::new(Hub {
            store,
            config,
            metrics,
            conns: RwLock::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            published: AtomicU64::new(head.get()),
            committed: Arc::new(AtomicU64::new(head.get())),
            members: Mutex::new(HashMap::new()),
            publish_tx,
            watchers: Mutex::new(HashMap::new()),
            clock,
            overrides: RwLock::new(HashMap::new()),
            on_call: RwLock::new(HashMap::new()),
        });
        (hub, rx)
    }

    pub(crate) fn committed_marker(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// The newest event queued to connections.
    pub fn published(&self) -> EventId {
        EventId::new(self.published.load(Ordering::SeqCst))
    }

    /// Users with at least one live connection.
    pub fn online_users(&self) -> usize {
        self.conns.read().len()
    }

    /// Hands committed events to the publisher, in commit order.
    pub(crate) async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if self.publish_tx.send(events).await.is_err() {
            tracing::error!("publisher stopped; events will reach clients when they resume");
        }
    }

    /// Registers a connection; from now on it receives the events of its user.
    pub fn register(&self, user: UserId, session: SessionId) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            user,
            session,
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            max_frames: self.config.connection_queue_frames,
            max_bytes: self.config.connection_queue_bytes,
            presence: Mutex::new(Vec::new()),
        });
        let came_online = {
            let mut conns = self.conns.write();
            let list = conns.entry(user).or_default();
            list.push(conn.clone());
            list.len() == 1
        };
        self.metrics.connections.inc();
        self.metrics.connections_opened.inc();
        if came_online {
            self.announce_presence(user);
        }
        conn
    }

    /// Removes a connection.
    pub fn unregister(&self, conn: &Arc<Conn>) {
        let went_offline = {
            let mut conns = self.conns.write();
            match conns.get_mut(&conn.user) {
                Some(list) => {
                    let before = list.len();
                    list.retain(|c| c.id != conn.id);
                    let removed = list.len() < before;
                    if list.is_empty() {
                        conns.remove(&conn.user);
                        removed
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        self.metrics.connections.dec();
        conn.reset();
        self.set_presence_subscriptions(conn, Vec::new());
        if went_offline {
            self.announce_presence(conn.user);
        }
    }

    /// Closes every connection of a session (after sign-out or revocation).
    pub fn kick_session(&self, session: SessionId) {
        for list in self.conns.read().values() {
            for c in list.iter().filter(|c| c.session == session) {
                c.kick();
            }
        }
    }

    /// Closes every connection of any of these sessions, in one pass over the connections.
    pub fn kick_sessions(&self, sessions: &std::collections::HashSet<SessionId>) -> usize {
        let mut kicked = 0;
        for list in self.conns.read().values() {
            for c in list.iter().filter(|c| sessions.contains(&c.session)) {
                c.kick();
                kicked += 1;
            }
        }
        kicked
    }

    /// Frames waiting in every connection's queue (for the metrics scrape).
    pub fn queued_frames(&self) -> usize {
        self.conns.read().values().flat_map(|l| l.iter()).map(|c| c.depth()).sum()
    }

    /// Closes every connection of a user (after deactivation).
    pub fn kick_user(&self, user: UserId) {
        if let Some(list) = self.conns.read().get(&user) {
            for c in list {
                c.kick();
            }
        }
    }

    /// Asks every connection to close (shutdown).
    pub fn kick_all(&self) {
        for list in self.conns.read().values() {
            for c in list {
                c.kick();
            }
        }
    }

    /// Queues an ephemeral frame to every connection of these users except `skip`; returns how
    /// many connections it was queued to.
    pub fn send_ephemeral(&self, users: impl IntoIterator<Item = UserId>, skip: Option<u64>, frame: Bytes) -> u64 {
        let conns = self.conns.read();
        let mut delivered = 0u64;
        for u in users {
            if let Some(list) = conns.get(&u) {
                for c in list.iter().filter(|c| Some(c.id) != skip) {
                    c.push(Outbound::Ephemeral(frame.clone()));
                    delivered += 1;
                }
            }
        }
        self.metrics.deliveries.inc_by(delivered);
        delivered
    }

    /// The cached members of a conversation, if the hub has them.
    pub fn cached_members(&self, conversation: ConversationId) -> Option<Arc<HashSet<UserId>>> {
        self.members.lock().get(&conversation).cloned()
    }

    /// Replaces a connection's presence subscriptions and returns the current states.
    pub fn set_presence_subscriptions(&self, conn: &Arc<Conn>, users: Vec<UserId>) -> Vec<PresenceView> {
        let mut watchers = self.watchers.lock();
        let old = std::mem::replace(&mut *conn.presence.lock(), users.clone());
        for u in old {
            if let Some(list) = watchers.get_mut(&u) {
                list.retain(|w| w.upgrade().is_some_and(|c| c.id != conn.id));
                if list.is_empty() {
                    watchers.remove(&u);
                }
            }
        }
        for u in &users {
            watchers.entry(*u).or_default().push(Arc::downgrade(conn));
        }
        drop(watchers);
        users.iter().map(|u| self.presence(*u)).collect()
    }

    /// A user's presence now: their override, their connections to this node and whether
    /// they are on call (the rule is `medhub_core::presence::derive`).
    pub fn presence(&self, user: UserId) -> PresenceView {
        let connected = self.conns.read().contains_key(&user);
        let facts = PresenceFacts {
            connected,
            manual: self.overrides.read().get(&user).copied(),
            on_call: self.on_call.read().get(&user).copied(),
        };
        let p = presence::derive(facts, self.clock.now());
        PresenceView {
            user_id: user.as_uuid(),
            status: if connected { PresenceStatus::Online } else { PresenceStatus::Offline },
            state: state_view(p.state),
            until: p.until,
            on_call: p.on_call,
        }
    }

    fn announce_presence(&self, user: UserId) {
        let targets: Vec<Arc<Conn>> = match self.watchers.lock().get(&user) {
            Some(list) => list.iter().filter_map(Weak::upgrade).collect(),
            None => return,
        };
        let frame = frame_bytes(&ServerFrame::Presence(self.presence(user)));
        for c in targets {
            c.push(Outbound::Ephemeral(frame.clone()));
        }
    }

    /// Replaces the overrides in force and announces every user whose presence changed: an
    /// override set, replaced, cleared or expired since the last call. `set` is all of them
    /// (the poller's read), or `None` to only drop the expired ones.
    pub fn refresh_overrides(&self, set: Option<HashMap<UserId, PresenceOverride>>) {
        let now = self.clock.now();
        let changed: Vec<UserId> = {
            let mut current = self.overrides.write();
            let next = set.unwrap_or_else(|| current.clone()).into_iter().filter(|(_, o)| now < o.until).collect();
            let old = std::mem::replace(&mut *current, next);
            changed_keys(&old, &current)
        };
        for u in changed {
            self.announce_presence(u);
        }
    }

    /// One user's override changed on this node: take it at once (the poller confirms it).
    pub fn set_override(&self, user: UserId, o: Option<PresenceOverride>) {
        let changed = {
            let mut current = self.overrides.write();
            let old = match o {
                Some(o) => current.insert(user, o),
                None => current.remove(&user),
            };
            old != o
        };
        if changed {
            self.announce_presence(user);
        }
    }

    /// Who is on call now (from the on-call service); announces those whose flag changed.
    pub fn set_on_call(&self, on_call: HashMap<UserId, bool>) {
        let changed: Vec<UserId> = {
            let mut current = self.on_call.write();
            let old = std::mem::replace(&mut *current, on_call);
            changed_keys(&old, &current)
        };
        for u in changed {
            self.announce_presence(u);
        }
    }

    /// The publisher task: delivers committed batches, and polls the store for events other
    /// writers committed.
    pub async fn run_publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Vec<Event>>) {
        let mut tick = tokio::time::interval(self.config.external_poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(events) => self.publish_local(events).await,
                    None => return,
                },
                _ = tick.tick() => self.catch_up_external().await,
            }
        }
    }

    async fn publish_local(&self, events: Vec<Event>) {
        let Some(first) = events.first() else { return };
        let published = self.published();
        if first.id.get() > published.get() + 1 {
            // Someone else committed in between: deliver their events first.
            self.fill(published, EventId::new(first.id.get() - 1)).await;
        }
        for e in &events {
            if e.id > self.published() {
                self.deliver(e).await;
            }
        }
    }

    async fn catch_up_external(&self) {
        let head = match self.store.last_event_id().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "could not poll the event log");
                return;
            }
        };
        // Events up to `committed` are ours and on their way through `publish_local`.
        if head.get() > self.committed.load(Ordering::SeqCst) && head > self.published() {
            self.fill(self.published(), head).await;
        }
    }

    /// Delivers every stored event in `(after, up_to]`, retrying until the store answers:
    /// skipping an event would break every resume guarantee.
    async fn fill(&self, after: EventId, up_to: EventId) {
        let mut cursor = after;
        while cursor < up_to {
            match self.store.events_range(cursor, up_to, PAGE).await {
                Ok(page) if page.is_empty() => return,
                Ok(page) => {
                    for e in &page {
                        if e.id > self.published() {
                            self.deliver(e).await;
                        }
                        cursor = e.id;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, after = %cursor, "reading events to publish failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn members_before(&self, event: &Event) -> Arc<HashSet<UserId>> {
        if let Some(m) = self.members.lock().get(&event.conversation) {
            return m.clone();
        }
        if matches!(event.kind, EventKind::ConversationCreated { .. }) {
            return Arc::new(HashSet::new());
        }
        loop {
            match self.store.members_before(event.conversation, event.id).await {
                Ok(list) => return Arc::new(list.into_iter().collect()),
                Err(e) => {
                    tracing::error!(error = %e, "loading members failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn deliver(&self, e: &Event) {
        let before = self.members_before(e).await;
        let targets = recipients(&e.kind, &before);
        let after = match &e.kind {
            EventKind::ConversationCreated { .. } | EventKind::MemberAdded { .. } | EventKind::MemberRemoved { .. } => {
                let mut next = (*before).clone();
                apply_membership(&e.kind, &mut next);
                Arc::new(next)
            }
            _ => before,
        };
        {
            let mut cache = self.members.lock();
            if cache.len() >= self.config.member_cache_conversations && !cache.contains_key(&e.conversation) {
                // Bounded: drop an arbitrary entry; it is reloaded from the store on demand.
                if let Some(k) = cache.keys().next().copied() {
                    cache.remove(&k);
                }
            }
            cache.insert(e.conversation, after);
        }
        // Raise `published` before queuing: see the module invariant.
        self.published.store(e.id.get(), Ordering::SeqCst);
        self.metrics.events_published.inc();
        let frame = event_frame(e);
        let conns = self.conns.read();
        let mut delivered = 0u64;
        for u in targets {
            if let Some(list) = conns.get(&u) {
                for c in list {
                    c.push(Outbound::Event { id: e.id, frame: frame.clone() });
                    delivered += 1;
                }
            }
        }
        self.metrics.deliveries.inc_by(delivered);
    }
}

/// Serializes a server frame.
pub fn frame_bytes(frame: &ServerFrame) -> Bytes {
    match serde_json::to_vec(frame) {
        Ok(v) => Bytes::from(v),
        // Serializing our own types cannot fail; an empty frame would be rejected loudly by
        // clients rather than silently corrupting state.
        Err(_) => Bytes::new(),
    }
}

/// The `event` frame for a stored event.
pub fn event_frame(e: &Event) -> Bytes {
    frame_bytes(&ServerFrame::Event(EventView::from(e)))
}

/// Where a subscription is: replaying stored events, or following live ones.
#[derive(Debug, Clone, Copy)]
enum Mode {
    CatchUp { up_to: EventId },
    Live,
}

/// A connection's position in its event stream: replay from the store, then live delivery,
/// each event exactly once and in order.
pub struct Subscription {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    cursor: EventId,
    mode: Mode,
    scratch: VecDeque<Outbound>,
}

impl Subscription {
    /// Starts after `resume` (or at the head when `None`). The connection must already be
    /// registered, so nothing published from now on is missed.
    pub fn start(hub: Arc<Hub>, conn: Arc<Conn>, resume: Option<EventId>) -> Result<Self, ServiceError> {
        let head = hub.published();
        let (cursor, mode) = match resume {
            None => (head, Mode::Live),
            Some(c) if c > head => return Err(ServiceError::CursorOutOfRange { cursor: c.get(), head: head.get() }),
            Some(c) if c == head => (c, Mode::Live),
            Some(c) => (c, Mode::CatchUp { up_to: head }),
        };
        Ok(Self { hub, conn, cursor, mode, scratch: VecDeque::new() })
    }

    /// The last event handed out.
    pub fn cursor(&self) -> EventId {
        self.cursor
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Appends the next frames to `out` without waiting for new events. Replays from the
    /// store while catching up. Fails with `SlowConsumer` when the live queue overflowed.
    pub async fn next_batch(&mut self, out: &mut Vec<Bytes>) -> Result<(), ServiceError> {
        if let Mode::CatchUp { up_to } = self.mode {
            if self.cursor < up_to {
                let page = self.hub.store.events_for_user(self.conn.user, self.cursor, up_to, PAGE).await?;
                for e in &page {
                    out.push(event_frame(e));
                    self.cursor = e.id;
                }
                if page.len() as u32 == PAGE {
                    return Ok(());
                }
                self.cursor = self.cursor.max(up_to);
            }
            if self.conn.queue.lock().overflowed {
                // Live events were dropped while replaying: replay up to the new head.
                // Reset first, then read the head (see the hub invariant).
                self.conn.reset();
                self.mode = Mode::CatchUp { up_to: self.hub.published() };
                return Ok(());
            }
            self.mode = Mode::Live;
        }
        let overflowed = self.conn.take(&mut self.scratch);
        if overflowed {
            return Err(ServiceError::SlowConsumer);
        }
        for item in self.scratch.drain(..) {
            match item {
                Outbound::Event { id, frame } => {
                    if id > self.cursor {
                        self.cursor = id;
                        out.push(frame);
                    }
                }
                Outbound::Ephemeral(frame) => out.push(frame),
            }
        }
        // A burst grew the queue: give the memory back rather than keep it for the
        // connection's whole life.
        if self.scratch.capacity() > SHRINK_ABOVE {
            self.scratch = VecDeque::new();
        }
        Ok(())
    }

    /// Whether the subscription is still replaying stored events.
    pub fn catching_up(&self) -> bool {
        matches!(self.mode, Mode::CatchUp { .. })
    }

    /// Waits for new frames. Cancel-safe; call [`Self::next_batch`] after it returns.
    pub async fn wait(&self) {
        if self.catching_up() {
            return;
        }
        self.conn.wait().await;
    }
}

/// The users whose entry differs between two maps (added, removed or changed), once each.
fn changed_keys<V: PartialEq>(old: &HashMap<UserId, V>, new: &HashMap<UserId, V>) -> Vec<UserId> {
    let mut changed: Vec<UserId> = old.iter().filter(|&(u, v)| new.get(u) != Some(v)).map(|(u, _)| *u).collect();
    changed.extend(new.iter().filter(|&(u, _)| !old.contains_key(u)).map(|(u, _)| *u));
    changed.sort();
    changed.dedup();
    changed
}

/// The wire name of a presence state.
pub fn state_view(s: PresenceState) -> PresenceStateView {
    match s {
        PresenceState::Available => PresenceStateView::Available,
        PresenceState::Busy => PresenceStateView::Busy,
        PresenceState::InProcedure => PresenceStateView::InProcedure,
        PresenceState::OffShift => PresenceStateView::OffShift,
        PresenceState::Offline => PresenceStateView::Offline,
    }
}
