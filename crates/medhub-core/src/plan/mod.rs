//! The write planner: turns one batch of commands into the rows to write and the events to
//! publish, as a pure function.
//!
//! The commit pipeline runs every batch as one transaction in three steps:
//! 1. the store loads the rows the batch needs ([`first_needs`], then [`second_needs`]);
//! 2. [`plan`] decides every command in order against that snapshot, applying each command's
//!    effects before the next so that commands in one batch see each other;
//! 3. the store writes the resulting [`Effects`] and commits once.
//!
//! Because deciding is pure, the same rules run on SQLite and PostgreSQL, and PostgreSQL can
//! load and write a whole batch in a handful of round trips. A command that fails only fails
//! itself; the rest of the batch commits.

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::error::DomainError;
use crate::event::{Event, EventKind};
use crate::ids::{ClientTxnId, ConversationId, EventId, MessageId, OrgId, Seq, UserId};
use crate::model::{
    Ack, AckResponse, Conversation, ConversationKind, Member, MemberRole, Message, Priority, Recall, User,
};
use crate::patient::PatientRef;
use crate::policy::{self, Actor};
use crate::validate;

/// Size limits the planner enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest message body in bytes.
    pub max_body_bytes: usize,
    /// Most members in a group conversation.
    pub group_max_members: usize,
    /// Most members in a channel.
    pub channel_max_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 16 * 1024, group_max_members: 1_000, channel_max_members: 100_000 }
    }
}

/// A request to change state. Ids of new objects are chosen by the caller (UUIDv7), so a
/// retried command is recognisable.
#[derive(Clone, Debug)]
pub enum Command {
    CreateConversation(CreateConversation),
    UpdateConversation {
        actor: Actor,
        conversation: ConversationId,
        title: Option<String>,
    },
    AddMember {
        actor: Actor,
        conversation: ConversationId,
        user: UserId,
        role: MemberRole,
    },
    /// Removes a member; a user removing itself leaves.
    RemoveMember {
        actor: Actor,
        conversation: ConversationId,
        user: UserId,
    },
    SetMemberRole {
        actor: Actor,
        conversation: ConversationId,
        user: UserId,
        role: MemberRole,
    },
    SendMessage(SendMessage),
    EditMessage {
        actor: UserId,
        message: MessageId,
        body: String,
    },
    RecallMessage {
        actor: Actor,
        message: MessageId,
    },
    UpdateReceipt {
        actor: UserId,
        conversation: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    },
    Acknowledge {
        actor: UserId,
        message: MessageId,
        response: AckResponse,
    },
}

/// Creates a conversation. For a direct conversation that already exists between the two
/// users, the existing one is returned instead.
#[derive(Clone, Debug)]
pub struct CreateConversation {
    pub id: ConversationId,
    pub actor: Actor,
    pub kind: ConversationKind,
    pub title: Option<String>,
    /// Initial members besides the actor (a user actor joins as owner of groups and channels).
    pub members: Vec<(UserId, MemberRole)>,
    /// The patient the conversation is about (groups only).
    pub patient: Option<PatientRef>,
}

/// Sends a message.
#[derive(Clone, Debug)]
pub struct SendMessage {
    pub id: MessageId,
    pub actor: UserId,
    pub conversation: ConversationId,
    pub client_txn_id: ClientTxnId,
    pub body: String,
    pub priority: Priority,
    pub reply_to: Option<MessageId>,
}

impl SendMessage {
    /// Fingerprint of everything the sender chose, to tell an honest resend (same
    /// fingerprint) from a client transaction id reused for a different message.
    pub fn request_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.conversation.to_bytes());
        h.update([match self.priority {
            Priority::Routine => 0u8,
            Priority::Urgent => 1,
            Priority::Critical => 2,
        }]);
        match self.reply_to {
            Some(r) => {
                h.update([1u8]);
                h.update(r.to_bytes());
            }
            None => h.update([0u8]),
        }
        h.update((self.body.len() as u64).to_le_bytes());
        h.update(self.body.as_bytes());
        h.finalize().into()
    }
}

/// What a successful command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Conversation { conversation: Conversation, created: bool, event: Option<EventId> },
    Membership { event: Option<EventId> },
    MessageSent { message: Message, duplicate: bool },
    MessageChanged { message: Message, event: Option<EventId> },
    Receipt { conversation: ConversationId, delivered_seq: Seq, read_seq: Seq, event: Option<EventId> },
    Acknowledged { ack: Ack, event: Option<EventId> },
}

/// Keys the store must load before planning. Absent rows are simply not returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub conversations: BTreeSet<ConversationId>,
    pub members: BTreeSet<(ConversationId, UserId)>,
    pub messages: BTreeSet<MessageId>,
    pub txns: BTreeSet<(UserId, ClientTxnId)>,
    pub users: BTreeSet<UserId>,
    /// Direct conversations by their ordered pair of members.
    pub direct: BTreeSet<(UserId, UserId)>,
    pub acks: BTreeSet<(MessageId, UserId)>,
    /// For a receipt of `user` moving its watermarks to `(delivered, read)`: the current members
    /// (other than the user) who sent a message with a sequence number in
    /// `(stored delivered, delivered]` or `(stored read, read]`.
    pub receipt_targets: BTreeSet<ReceiptKey>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self == &Needs::default()
    }
}

/// Rows loaded for a batch, plus the last event id. The planner treats a key it asked for and
/// did not get as "does not exist".
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub last_event: EventId,
    pub conversations: HashMap<ConversationId, Conversation>,
    pub members: HashMap<(ConversationId, UserId), Member>,
    pub messages: HashMap<MessageId, Message>,
    pub txns: HashMap<(UserId, ClientTxnId), MessageId>,
    pub users: HashMap<UserId, User>,
    pub direct: HashMap<(UserId, UserId), ConversationId>,
    pub acks: HashMap<(MessageId, UserId), Ack>,
    pub receipt_targets: HashMap<ReceiptKey, Vec<UserId>>,
}

/// A receipt's conversation, reader, and requested `(delivered, read)` watermarks, where
/// `delivered` already includes `read` (reading implies delivery).
pub type ReceiptKey = (ConversationId, UserId, Seq, Seq);

fn receipt_key(conversation: ConversationId, user: UserId, delivered: Option<Seq>, read: Option<Seq>) -> ReceiptKey {
    let read = read.unwrap_or(Seq::ZERO);
    (conversation, user, delivered.unwrap_or(Seq::ZERO).max(read), read)
}

impl Snapshot {
    /// Adds a loaded message and indexes its client transaction id.
    pub fn insert_message(&mut self, message: Message) {
        self.txns.insert((message.sender, message.client_txn_id.clone()), message.id);
        self.messages.insert(message.id, message);
    }
}

/// One change to a membership period (who was a member during which events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeriodOp {
    /// The user became a member at this event.
    Open { conversation: ConversationId, user: UserId, from: EventId },
    /// The user's open period ends at this event (inclusive).
    Close { conversation: ConversationId, user: UserId, to: EventId },
}

/// A previous revision of a message body, kept when the body is edited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    pub message: MessageId,
    pub revision: u32,
    pub body: String,
    /// When this revision was written.
    pub at: Timestamp,
}

/// Rows to write, in final state. The store writes them in field order.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    pub conversations_new: Vec<Conversation>,
    pub conversations_changed: Vec<Conversation>,
    /// New direct conversations by their ordered member pair.
    pub direct_new: Vec<(UserId, UserId, ConversationId)>,
    pub members_deleted: Vec<(ConversationId, UserId)>,
    pub members_upserted: Vec<Member>,
    pub periods: Vec<PeriodOp>,
    pub messages_new: Vec<Message>,
    pub messages_changed: Vec<Message>,
    pub revisions: Vec<Revision>,
    pub acks: Vec<Ack>,
    pub events: Vec<Event>,
}

/// The planner's answer: one result per command, and the effects of the successful ones.
#[derive(Clone, Debug)]
pub struct Plan {
    pub results: Vec<Result<Outcome, DomainError>>,
    pub effects: Effects,
}

fn direct_key(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b { (a, b) } else { (b, a) }
}

/// The keys that can be read straight off the commands.
pub fn first_needs(cmds: &[Command]) -> Needs {
    let mut n = Needs::default();
    for cmd in cmds {
        match cmd {
            Command::CreateConversation(c) => {
                let mut people: Vec<UserId> = c.members.iter().map(|(u, _)| *u).collect();
                people.extend(c.actor.user());
                n.users.extend(people.iter().copied());
                if c.kind == ConversationKind::Direct {
                    people.sort_unstable();
                    people.dedup();
                    if let [a, b] = people[..] {
                        n.direct.insert(direct_key(a, b));
                    }
                }
            }
            Command::UpdateConversation { actor, conversation, .. } => {
                n.conversations.insert(*conversation);
                n.members.extend(actor.user().map(|u| (*conversation, u)));
            }
            Command::AddMember { actor, conversation, user, .. }
            | Command::RemoveMember { actor, conversation, user }
            | Command::SetMemberRole { actor, conversation, user, .. } => {
                n.conversations.insert(*conversation);
                n.members.insert((*conversation, *user));
                n.members.extend(actor.user().map(|u| (*conversation, u)));
                n.users.insert(*user);
            }
            Command::SendMessage(s) => {
                n.conversations.insert(s.conversation);
                n.members.insert((s.conversation, s.actor));
                n.txns.insert((s.actor, s.client_txn_id.clone()));
                n.messages.extend(s.reply_to);
            }
            Command::EditMessage { message, .. } | Command::RecallMessage { message, .. } => {
                n.messages.insert(*message);
            }
            Command::Acknowledge { actor, message, .. } => {
                n.messages.insert(*message);
                n.acks.insert((*message, *actor));
            }
            Command::UpdateReceipt { actor, conversation, delivered, read } => {
                n.conversations.insert(*conversation);
                n.members.insert((*conversation, *actor));
                n.receipt_targets.insert(receipt_key(*conversation, *actor, *delivered, *read));
            }
        }
    }
    n
}

/// The keys that depend on rows loaded by [`first_needs`]: the conversation and membership of
/// messages named by id, and existing direct conversations. Only keys not yet loaded.
pub fn second_needs(cmds: &[Command], snap: &Snapshot) -> Needs {
    let mut n = Needs::default();
    for cmd in cmds {
        let (message, actor) = match cmd {
            Command::EditMessage { actor, message, .. } | Command::Acknowledge { actor, message, .. } => {
                (*message, Some(*actor))
            }
            Command::RecallMessage { actor, message } => (*message, actor.user()),
            _ => continue,
        };
        if let Some(m) = snap.messages.get(&message) {
            if !snap.conversations.contains_key(&m.conversation) {
                n.conversations.insert(m.conversation);
            }
            if let Some(a) = actor
                && !snap.members.contains_key(&(m.conversation, a))
            {
                n.members.insert((m.conversation, a));
            }
        }
    }
    for conv in snap.direct.values() {
        if !snap.conversations.contains_key(conv) {
            n.conversations.insert(*conv);
        }
    }
    n
}

/// Decides every command in order. Pure: the same inputs give the same plan.
pub fn plan(cmds: &[Command], snapshot: Snapshot, now: Timestamp, limits: &Limits) -> Plan {
    // Both databases keep microseconds: what is answered must equal what is read back later.
    let now = crate::clock::from_micros(now.as_microsecond());
    let mut p = Planner {
        next_event: snapshot.last_event.next(),
        s: snapshot,
        now,
        limits,
        conv_new: Vec::new(),
        conv_dirty: BTreeSet::new(),
        member_dirty: BTreeSet::new(),
        msg_new: Vec::new(),
        msg_dirty: BTreeSet::new(),
        ack_dirty: BTreeSet::new(),
        effects: Effects::default(),
    };
    let results = cmds.iter().map(|cmd| p.apply(cmd)).collect();
    Plan { results, effects: p.finish() }
}

struct Planner<'a> {
    s: Snapshot,
    now: Timestamp,
    limits: &'a Limits,
    next_event: EventId,
    conv_new: Vec<ConversationId>,
    conv_dirty: BTreeSet<ConversationId>,
    member_dirty: BTreeSet<(ConversationId, UserId)>,
    msg_new: Vec<MessageId>,
    msg_dirty: BTreeSet<MessageId>,
    ack_dirty: BTreeSet<(MessageId, UserId)>,
    effects: Effects,
}

impl Planner<'_> {
    fn apply(&mut self, cmd: &Command) -> Result<Outcome, DomainError> {
        match cmd {
            Command::CreateConversation(c) => self.create_conversation(c),
            Command::UpdateConversation { actor, conversation, title } => {
                self.update_conversation(*actor, *conversation, title.as_deref())
            }
            Command::AddMember { actor, conversation, user, role } => {
                self.add_member(*actor, *conversation, *user, *role)
            }
            Command::RemoveMember { actor, conversation, user } => self.remove_member(*actor, *conversation, *user),
            Command::SetMemberRole { actor, conversation, user, role } => {
                self.set_role(*actor, *conversation, *user, *role)
            }
            Command::SendMessage(s) => self.send(s),
            Command::EditMessage { actor, message, body } => self.edit(*actor, *message, body),
            Command::RecallMessage { actor, message } => self.recall(*actor, *message),
            Command::UpdateReceipt { actor, conversation, delivered, read } => {
                self.receipt(*actor, *conversation, *delivered, *read)
            }
            Command::Acknowledge { actor, message, response } => self.ack(*actor, *message, *response),
        }
    }

    fn emit(&mut self, conversation: ConversationId, actor: Option<UserId>, kind: EventKind) -> EventId {
        let id = self.next_event;
        self.next_event = id.next();
        self.effects.events.push(Event { id, conversation, at: self.now, actor, kind });
        id
    }

    /// The conversation and the actor's role in it. Non-members get `ConversationNotFound`,
    /// exactly as for a conversation that does not exist. The operator has no role.
    fn visible(
        &self,
        actor: Actor,
        conversation: ConversationId,
    ) -> Result<(Conversation, Option<MemberRole>), DomainError> {
        let conv = self.s.conversations.get(&conversation).ok_or(DomainError::ConversationNotFound)?;
        match actor {
            Actor::System => Ok((conv.clone(), None)),
            Actor::User(u) => {
                let m = self.s.members.get(&(conversation, u)).ok_or(DomainError::ConversationNotFound)?;
                Ok((conv.clone(), Some(m.role)))
            }
        }
    }

    /// The user's organization, if the user exists and is active.
    fn active_user(&self, user: UserId) -> Result<OrgId, DomainError> {
        match self.s.users.get(&user) {
            Some(u) if u.active => Ok(u.org),
            _ => Err(DomainError::UserNotFound),
        }
    }

    fn max_members(&self, kind: ConversationKind) -> usize {
        match kind {
            ConversationKind::Direct => 2,
            ConversationKind::Group => self.limits.group_max_members,
            ConversationKind::Channel => self.limits.channel_max_members,
        }
    }

    fn touch_conv(&mut self, conv: Conversation) {
        if !self.conv_new.contains(&conv.id) {
            self.conv_dirty.insert(conv.id);
        }
        self.s.conversations.insert(conv.id, conv);
    }

    fn put_member(&mut self, m: Member) {
        self.member_dirty.insert((m.conversation, m.user));
        self.s.members.insert((m.conversation, m.user), m);
    }

    fn touch_message(&mut self, m: Message) {
        if !self.msg_new.contains(&m.id) {
            self.msg_dirty.insert(m.id);
        }
        self.s.messages.insert(m.id, m);
    }

    fn create_conversation(&mut self, c: &CreateConversation) -> Result<Outcome, DomainError> {
        let title = validate::title(c.title.as_deref())?;
        // Collect members, keeping the strongest role when a user is listed twice.
        let mut members: Vec<(UserId, MemberRole)> = Vec::new();
        let mut add = |u: UserId, r: MemberRole| match members.iter_mut().find(|(x, _)| *x == u) {
            Some(existing) => {
                if rank(r) > rank(existing.1) {
                    existing.1 = r;
                }
            }
            None => members.push((u, r)),
        };
        if let Some(actor) = c.actor.user() {
            add(actor, if c.kind == ConversationKind::Direct { MemberRole::Member } else { MemberRole::Owner });
        }
        for (u, r) in &c.members {
            add(*u, if c.kind == ConversationKind::Direct { MemberRole::Member } else { *r });
        }
        if c.kind == ConversationKind::Direct {
            if members.len() != 2 || title.is_some() {
                return Err(DomainError::DirectNeedsTwoMembers);
            }
            let key = direct_key(members[0].0, members[1].0);
            if let Some(existing) = self.s.direct.get(&key).and_then(|id| self.s.conversations.get(id)) {
                return Ok(Outcome::Conversation { conversation: existing.clone(), created: false, event: None });
            }
        }
        if members.len() > self.max_members(c.kind) {
            return Err(DomainError::TooManyMembers { max: self.max_members(c.kind) });
        }
        if c.patient.is_some() && c.kind != ConversationKind::Group {
            return Err(DomainError::PatientLinkNotAllowed);
        }
        // Every member is an active user of one organization: the conversation's. A user of
        // another organization is answered as one that does not exist.
        let mut org = None;
        for (u, _) in &members {
            let user_org = self.active_user(*u)?;
            if *org.get_or_insert(user_org) != user_org {
                return Err(DomainError::UserNotFound);
            }
        }
        let org = org.ok_or(DomainError::NoMembers)?;
        let owners = members.iter().filter(|(_, r)| *r == MemberRole::Owner).count() as u32;
        let conv = Conversation {
            id: c.id,
            kind: c.kind,
            title: title.clone(),
            created_by: c.actor.user(),
            created_at: self.now,
            last_seq: Seq::ZERO,
            member_count: members.len() as u32,
            owner_count: owners,
            org,
            patient: c.patient.clone(),
        };
        if self.s.conversations.contains_key(&c.id) {
            // A retried create with the same id: answer with what exists.
            let existing = self.s.conversations[&c.id].clone();
            return Ok(Outcome::Conversation { conversation: existing, created: false, event: None });
        }
        self.conv_new.push(c.id);
        self.s.conversations.insert(c.id, conv.clone());
        if c.kind == ConversationKind::Direct {
            let key = direct_key(members[0].0, members[1].0);
            self.s.direct.insert(key, c.id);
            self.effects.direct_new.push((key.0, key.1, c.id));
        }
        let event = self.emit(
            c.id,
            c.actor.user(),
            EventKind::ConversationCreated { kind: c.kind, title, members: members.clone() },
        );
        for (u, r) in members {
            self.put_member(new_member(c.id, u, r, self.now));
            self.effects.periods.push(PeriodOp::Open { conversation: c.id, user: u, from: event });
        }
        Ok(Outcome::Conversation { conversation: conv, created: true, event: Some(event) })
    }

    fn update_conversation(
        &mut self,
        actor: Actor,
        id: ConversationId,
        title: Option<&str>,
    ) -> Result<Outcome, DomainError> {
        let (mut conv, role) = self.visible(actor, id)?;
        if conv.kind == ConversationKind::Direct {
            return Err(DomainError::Forbidden);
        }
        policy::can_manage(conv.kind, role)?;
        let title = validate::title(title)?;
        if conv.title == title {
            return Ok(Outcome::Conversation { conversation: conv, created: false, event: None });
        }
        conv.title = title.clone();
        self.touch_conv(conv.clone());
        let event = self.emit(id, actor.user(), EventKind::ConversationUpdated { title });
        Ok(Outcome::Conversation { conversation: conv, created: false, event: Some(event) })
    }

    fn add_member(
        &mut self,
        actor: Actor,
        id: ConversationId,
        user: UserId,
        role: MemberRole,
    ) -> Result<Outcome, DomainError> {
        let (mut conv, actor_role) = self.visible(actor, id)?;
        policy::can_manage(conv.kind, actor_role)?;
        if self.active_user(user)? != conv.org {
            return Err(DomainError::UserNotFound);
        }
        if self.s.members.contains_key(&(id, user)) {
            return Err(DomainError::AlreadyMember);
        }
        let max = self.max_members(conv.kind);
        if conv.member_count as usize >= max {
            return Err(DomainError::TooManyMembers { max });
        }
        conv.member_count += 1;
        if role == MemberRole::Owner {
            conv.owner_count += 1;
        }
        self.touch_conv(conv);
        self.put_member(new_member(id, user, role, self.now));
        let event = self.emit(id, actor.user(), EventKind::MemberAdded { user, role });
        self.effects.periods.push(PeriodOp::Open { conversation: id, user, from: event });
        Ok(Outcome::Membership { event: Some(event) })
    }

    fn remove_member(&mut self, actor: Actor, id: ConversationId, user: UserId) -> Result<Outcome, DomainError> {
        let (mut conv, actor_role) = self.visible(actor, id)?;
        let leaving = actor.user() == Some(user);
        if leaving {
            if conv.kind == ConversationKind::Direct {
                return Err(DomainError::DirectMembersFixed);
            }
        } else {
            policy::can_manage(conv.kind, actor_role)?;
        }
        let target = self.s.members.get(&(id, user)).cloned().ok_or(DomainError::NotMember)?;
        if target.role == MemberRole::Owner && conv.owner_count <= 1 && conv.member_count > 1 {
            return Err(DomainError::LastOwner);
        }
        conv.member_count = conv.member_count.saturating_sub(1);
        if target.role == MemberRole::Owner {
            conv.owner_count = conv.owner_count.saturating_sub(1);
        }
        self.touch_conv(conv);
        self.member_dirty.insert((id, user));
        self.s.members.remove(&(id, user));
        let event = self.emit(id, actor.user(), EventKind::MemberRemoved { user });
        self.effects.periods.push(PeriodOp::Close { conversation: id, user, to: event });
        Ok(Outcome::Membership { event: Some(event) })
    }

    fn set_role(
        &mut self,
        actor: Actor,
        id: ConversationId,
        user: UserId,
        role: MemberRole,
    ) -> Result<Outcome, DomainError> {
        let (mut conv, actor_role) = self.visible(actor, id)?;
        policy::can_manage(conv.kind, actor_role)?;
        let mut target = self.s.members.get(&(id, user)).cloned().ok_or(DomainError::NotMember)?;
        if target.role == role {
            return Ok(Outcome::Membership { event: None });
        }
        if target.role == MemberRole::Owner && conv.owner_count <= 1 {
            return Err(DomainError::LastOwner);
        }
        if target.role == MemberRole::Owner {
            conv.owner_count -= 1;
        }
        if role == MemberRole::Owner {
            conv.owner_count += 1;
        }
        target.role = role;
        self.touch_conv(conv);
        self.put_member(target);
        let event = self.emit(id, actor.user(), EventKind::MemberRoleChanged { user, role });
        Ok(Outcome::Membership { event: Some(event) })
    }

    fn send(&mut self, s: &SendMessage) -> Result<Outcome, DomainError> {
        let hash = s.request_hash();
        if let Some(existing) =
            self.s.txns.get(&(s.actor, s.client_txn_id.clone())).and_then(|id| self.s.messages.get(id))
        {
            return if existing.request_hash == hash {
                Ok(Outcome::MessageSent { message: existing.clone(), duplicate: true })
            } else {
                Err(DomainError::IdempotencyKeyReused)
            };
        }
        validate::message_body(&s.body, self.limits.max_body_bytes)?;
        let (mut conv, role) = self.visible(Actor::User(s.actor), s.conversation)?;
        policy::can_send(role.unwrap_or(MemberRole::ReadOnly))?;
        if let Some(parent) = s.reply_to {
            match self.s.messages.get(&parent) {
                Some(m) if m.conversation == s.conversation => {}
                _ => return Err(DomainError::InvalidReplyTo),
            }
        }
        conv.last_seq = conv.last_seq.next();
        let seq = conv.last_seq;
        self.touch_conv(conv);
        let event = self.next_event;
        let message = Message {
            id: s.id,
            conversation: s.conversation,
            seq,
            sender: s.actor,
            client_txn_id: s.client_txn_id.clone(),
            body: s.body.clone(),
            priority: s.priority,
            reply_to: s.reply_to,
            created_at: self.now,
            revision: 0,
            edited_at: None,
            recall: None,
            event,
            request_hash: hash,
            acknowledged: false,
            removal: None,
            erasure_requested_at: None,
        };
        self.msg_new.push(message.id);
        self.s.insert_message(message.clone());
        let emitted =
            self.emit(s.conversation, Some(s.actor), EventKind::MessageCreated { message: Box::new(message.clone()) });
        debug_assert_eq!(emitted, event);
        Ok(Outcome::MessageSent { message, duplicate: false })
    }

    /// The message and the actor's role, or `MessageNotFound` when the actor cannot see it.
    fn visible_message(&self, actor: Actor, id: MessageId) -> Result<(Message, Option<MemberRole>), DomainError> {
        let m = self.s.messages.get(&id).ok_or(DomainError::MessageNotFound)?;
        let (_, role) = self.visible(actor, m.conversation).map_err(|_| DomainError::MessageNotFound)?;
        Ok((m.clone(), role))
    }

    fn edit(&mut self, actor: UserId, id: MessageId, body: &str) -> Result<Outcome, DomainError> {
        let (mut m, role) = self.visible_message(Actor::User(actor), id)?;
        policy::can_edit(m.sender, actor, role.unwrap_or(MemberRole::ReadOnly))?;
        if m.recall.is_some() {
            return Err(DomainError::MessageRecalled);
        }
        if m.removal.is_some() {
            return Err(DomainError::MessageRemoved);
        }
        if m.acknowledged {
            return Err(DomainError::MessageAcknowledged);
        }
        validate::message_body(body, self.limits.max_body_bytes)?;
        if m.body == body {
            return Ok(Outcome::MessageChanged { message: m, event: None });
        }
        self.effects.revisions.push(Revision {
            message: m.id,
            revision: m.revision,
            body: std::mem::replace(&mut m.body, body.to_owned()),
            at: m.edited_at.unwrap_or(m.created_at),
        });
        m.revision += 1;
        m.edited_at = Some(self.now);
        self.touch_message(m.clone());
        let event = self.emit(
            m.conversation,
            Some(actor),
            EventKind::MessageEdited {
                message: m.id,
                seq: m.seq,
                revision: m.revision,
                body: Some(m.body.clone()),
                edited_at: self.now,
            },
        );
        Ok(Outcome::MessageChanged { message: m, event: Some(event) })
    }

    fn recall(&mut self, actor: Actor, id: MessageId) -> Result<Outcome, DomainError> {
        let (mut m, role) = self.visible_message(actor, id)?;
        policy::can_recall(m.sender, actor.user(), role)?;
        if m.recall.is_some() {
            return Ok(Outcome::MessageChanged { message: m, event: None });
        }
        m.recall = Some(Recall { by: actor.user(), at: self.now });
        self.touch_message(m.clone());
        let event = self.emit(m.conversation, actor.user(), EventKind::MessageRecalled { message: m.id, seq: m.seq });
        Ok(Outcome::MessageChanged { message: m, event: Some(event) })
    }

    fn ack(&mut self, actor: UserId, id: MessageId, response: AckResponse) -> Result<Outcome, DomainError> {
        let (mut m, _) = self.visible_message(Actor::User(actor), id)?;
        policy::can_ack(m.priority, m.sender, actor)?;
        if m.recall.is_some() {
            return Err(DomainError::MessageRecalled);
        }
        if m.removal.is_some() {
            return Err(DomainError::MessageRemoved);
        }
        if let Some(minutes) = response.minutes() {
            validate::call_back_minutes(minutes)?;
        }
        if let Some(existing) = self.s.acks.get(&(id, actor))
            && existing.response == response
        {
            return Ok(Outcome::Acknowledged { ack: *existing, event: None });
        }
        let ack = Ack { message: id, user: actor, response, at: self.now };
        self.s.acks.insert((id, actor), ack);
        self.ack_dirty.insert((id, actor));
        if !m.acknowledged {
            m.acknowledged = true;
            self.touch_message(m.clone());
        }
        let event = self.emit(
            m.conversation,
            Some(actor),
            EventKind::MessageAcknowledged { message: id, seq: m.seq, user: actor, response },
        );
        Ok(Outcome::Acknowledged { ack, event: Some(event) })
    }

    fn receipt(
        &mut self,
        actor: UserId,
        id: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
    ) -> Result<Outcome, DomainError> {
        let (conv, _) = self.visible(Actor::User(actor), id)?;
        if delivered.is_none() && read.is_none() {
            return Err(DomainError::EmptyReceipt);
        }
        let hi = delivered.max(read).unwrap_or(Seq::ZERO);
        if hi > conv.last_seq {
            return Err(DomainError::ReceiptBeyondLastMessage);
        }
        let mut member = self.s.members.get(&(id, actor)).cloned().ok_or(DomainError::ConversationNotFound)?;
        // Watermarks only move forward, and reading implies delivery.
        let new_read = member.read_seq.max(read.unwrap_or(Seq::ZERO));
        let new_delivered = member.delivered_seq.max(delivered.unwrap_or(Seq::ZERO)).max(new_read);
        if new_read == member.read_seq && new_delivered == member.delivered_seq {
            return Ok(Outcome::Receipt {
                conversation: id,
                delivered_seq: new_delivered,
                read_seq: new_read,
                event: None,
            });
        }
        member.read_seq = new_read;
        member.delivered_seq = new_delivered;
        self.put_member(member);
        let mut targets = vec![actor];
        if let Some(senders) = self.s.receipt_targets.get(&receipt_key(id, actor, delivered, read)) {
            targets.extend(senders.iter().copied().filter(|u| *u != actor));
        }
        targets.sort_unstable();
        targets.dedup();
        let event = self.emit(
            id,
            Some(actor),
            EventKind::ReceiptUpdated { user: actor, delivered_seq: new_delivered, read_seq: new_read, targets },
        );
        Ok(Outcome::Receipt { conversation: id, delivered_seq: new_delivered, read_seq: new_read, event: Some(event) })
    }

    fn finish(mut self) -> Effects {
        let mut e = std::mem::take(&mut self.effects);
        e.conversations_new = self.conv_new.iter().filter_map(|id| self.s.conversations.get(id).cloned()).collect();
        e.conversations_changed =
            self.conv_dirty.iter().filter_map(|id| self.s.conversations.get(id).cloned()).collect();
        for key in &self.member_dirty {
            match self.s.members.get(key) {
                Some(m) => e.members_upserted.push(m.clone()),
                None => e.members_deleted.push(*key),
            }
        }
        e.messages_new = self.msg_new.iter().filter_map(|id| self.s.messages.get(id).cloned()).collect();
        e.messages_changed = self.msg_dirty.iter().filter_map(|id| self.s.messages.get(id).cloned()).collect();
        e.acks = self.ack_dirty.iter().filter_map(|k| self.s.acks.get(k).copied()).collect();
        e
    }
}

fn rank(r: MemberRole) -> u8 {
    match r {
        MemberRole::ReadOnly => 0,
        MemberRole::Member => 1,
        MemberRole::Owner => 2,
    }
}

fn new_member(conversation: ConversationId, user: UserId, role: MemberRole, now: Timestamp) -> Member {
    Member { conversation, user, role, delivered_seq: Seq::ZERO, read_seq: Seq::ZERO, joined_at: now }
}

#[cfg(test)]
mod tests;

pub mod audit;
