//! Planner tests against a small in-memory world that answers `Needs` the way a store does.

use std::collections::HashMap;

use super::*;
use crate::ids::OrgId;
use crate::model::SystemRole;

/// Full state, loaded and written the way the SQL stores do.
#[derive(Default)]
struct World {
    last_event: EventId,
    conversations: HashMap<ConversationId, Conversation>,
    members: HashMap<(ConversationId, UserId), Member>,
    messages: HashMap<MessageId, Message>,
    users: HashMap<UserId, User>,
    direct: HashMap<(UserId, UserId), ConversationId>,
    acks: HashMap<(MessageId, UserId), Ack>,
    periods: Vec<(ConversationId, UserId, EventId, Option<EventId>)>,
    events: Vec<Event>,
    revisions: Vec<Revision>,
    /// The organization `user()` puts new users in.
    org: Option<OrgId>,
}

impl World {
    fn load_into(&self, n: &Needs, s: &mut Snapshot) {
        s.last_event = self.last_event;
        for id in &n.conversations {
            if let Some(c) = self.conversations.get(id) {
                s.conversations.insert(*id, c.clone());
            }
        }
        for k in &n.members {
            if let Some(m) = self.members.get(k) {
                s.members.insert(*k, m.clone());
            }
        }
        for id in &n.messages {
            if let Some(m) = self.messages.get(id) {
                s.insert_message(m.clone());
            }
        }
        for (u, t) in &n.txns {
            if let Some(m) = self.messages.values().find(|m| m.sender == *u && &m.client_txn_id == t) {
                s.insert_message(m.clone());
            }
        }
        for id in &n.users {
            if let Some(u) = self.users.get(id) {
                s.users.insert(*id, u.clone());
            }
        }
        for k in &n.direct {
            if let Some(c) = self.direct.get(k) {
                s.direct.insert(*k, *c);
            }
        }
        for k in &n.acks {
            if let Some(a) = self.acks.get(k) {
                s.acks.insert(*k, *a);
            }
        }
        for (c, u, dh, rh) in &n.receipt_targets {
            let (od, or) = self.members.get(&(*c, *u)).map(|m| (m.delivered_seq, m.read_seq)).unwrap_or_default();
            let mut senders: Vec<UserId> = self
                .messages
                .values()
                .filter(|m| m.conversation == *c && m.sender != *u)
                .filter(|m| (m.seq > od && m.seq <= *dh) || (m.seq > or && m.seq <= *rh))
                .filter(|m| self.members.contains_key(&(*c, m.sender)))
                .map(|m| m.sender)
                .collect();
            senders.sort_unstable();
            senders.dedup();
            s.receipt_targets.insert((*c, *u, *dh, *rh), senders);
        }
    }

    fn run(&mut self, cmds: &[Command]) -> Vec<Result<Outcome, DomainError>> {
        let mut snap = Snapshot::default();
        self.load_into(&first_needs(cmds), &mut snap);
        let second = second_needs(cmds, &snap);
        self.load_into(&second, &mut snap);
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let plan =
            plan(cmds, snap, now, &Limits { max_body_bytes: 64, group_max_members: 4, channel_max_members: 100 });
        let e = plan.effects;
        for c in e.conversations_new.into_iter().chain(e.conversations_changed) {
            self.conversations.insert(c.id, c);
        }
        for (a, b, c) in e.direct_new {
            self.direct.insert((a, b), c);
        }
        for k in e.members_deleted {
            self.members.remove(&k);
        }
        for m in e.members_upserted {
            self.members.insert((m.conversation, m.user), m);
        }
        for p in e.periods {
            match p {
                PeriodOp::Open { conversation, user, from } => self.periods.push((conversation, user, from, None)),
                PeriodOp::Close { conversation, user, to } => {
                    for row in self.periods.iter_mut().filter(|r| r.0 == conversation && r.1 == user && r.3.is_none()) {
                        row.3 = Some(to);
                    }
                }
            }
        }
        for m in e.messages_new.into_iter().chain(e.messages_changed) {
            self.messages.insert(m.id, m);
        }
        self.revisions.extend(e.revisions);
        for a in e.acks {
            self.acks.insert((a.message, a.user), a);
        }
        for ev in &e.events {
            assert_eq!(ev.id, self.last_event.next(), "event ids are gap-free");
            self.last_event = ev.id;
        }
        self.events.extend(e.events);
        plan.results
    }

    fn user(&mut self) -> UserId {
        let org = *self.org.get_or_insert_with(OrgId::new_v7);
        self.user_in(org)
    }

    fn user_in(&mut self, org: OrgId) -> UserId {
        let id = UserId::new_v7();
        self.users.insert(
            id,
            User {
                id,
                org,
                username: id.to_string(),
                display_name: "Test".into(),
                role: SystemRole::User,
                active: true,
                created_at: Timestamp::UNIX_EPOCH,
            },
        );
        id
    }

    fn group(&mut self, owner: UserId, others: &[(UserId, MemberRole)]) -> ConversationId {
        let id = ConversationId::new_v7();
        let r = self.run(&[Command::CreateConversation(CreateConversation {
            id,
            actor: Actor::User(owner),
            kind: ConversationKind::Group,
            title: Some("Ward 7".into()),
            members: others.to_vec(),
            patient: None,
        })]);
        assert!(matches!(r[0], Ok(Outcome::Conversation { created: true, .. })), "{r:?}");
        id
    }
}

fn send(actor: UserId, conversation: ConversationId, txn: &str, body: &str) -> Command {
    send_p(actor, conversation, txn, body, Priority::Routine)
}

fn send_p(actor: UserId, conversation: ConversationId, txn: &str, body: &str, priority: Priority) -> Command {
    Command::SendMessage(SendMessage {
        id: MessageId::new_v7(),
        actor,
        conversation,
        client_txn_id: ClientTxnId::parse(txn).unwrap(),
        body: body.into(),
        priority,
        reply_to: None,
    })
}

fn sent(r: &Result<Outcome, DomainError>) -> Message {
    match r {
        Ok(Outcome::MessageSent { message, .. }) => message.clone(),
        other => panic!("expected a sent message, got {other:?}"),
    }
}

#[test]
fn creation_makes_members_periods_and_one_event() {
    let mut w = World::default();
    let (a, b, c) = (w.user(), w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member), (c, MemberRole::ReadOnly), (b, MemberRole::ReadOnly)]);
    assert_eq!(w.members.len(), 3);
    assert_eq!(w.members[&(conv, a)].role, MemberRole::Owner);
    assert_eq!(w.members[&(conv, b)].role, MemberRole::Member, "the strongest listed role wins");
    assert_eq!(w.conversations[&conv].owner_count, 1);
    assert_eq!(w.periods.len(), 3);
    assert!(w.periods.iter().all(|p| p.2 == EventId::new(1) && p.3.is_none()));
    assert_eq!(w.events.len(), 1);
}

#[test]
fn sequence_numbers_are_gap_free_within_and_across_batches() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let r = w.run(&[send(a, conv, "t1", "one"), send(b, conv, "t2", "two"), send(a, conv, "t3", "")]);
    assert_eq!(sent(&r[0]).seq, Seq::new(1));
    assert_eq!(sent(&r[1]).seq, Seq::new(2));
    assert_eq!(r[2], Err(DomainError::EmptyBody), "a failed command takes no sequence number");
    let r = w.run(&[send(b, conv, "t4", "three")]);
    assert_eq!(sent(&r[0]).seq, Seq::new(3));
    assert_eq!(w.conversations[&conv].last_seq, Seq::new(3));
}

#[test]
fn resend_returns_the_original_and_reuse_is_refused() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let first = sent(&w.run(&[send(a, conv, "same", "hello")])[0]);
    let events_before = w.events.len();
    // Same key, same content, in a later batch and twice within one batch.
    let r = w.run(&[send(a, conv, "same", "hello"), send(a, conv, "same", "hello")]);
    for res in &r {
        assert_eq!(res, &Ok(Outcome::MessageSent { message: first.clone(), duplicate: true }));
    }
    assert_eq!(w.events.len(), events_before, "a resend creates nothing");
    assert_eq!(w.run(&[send(a, conv, "same", "different")])[0], Err(DomainError::IdempotencyKeyReused));
    // Another sender may use the same key.
    assert_eq!(sent(&w.run(&[send(b, conv, "same", "hello")])[0]).seq, Seq::new(2));
}

#[test]
fn new_key_sent_twice_in_one_batch_is_one_message() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let r = w.run(&[send(a, conv, "k", "x"), send(a, conv, "k", "x")]);
    assert_eq!(sent(&r[0]), sent(&r[1]));
    assert_eq!(w.messages.len(), 1);
}

#[test]
fn strangers_see_not_found_and_read_only_members_cannot_write() {
    let mut w = World::default();
    let (a, b, stranger) = (w.user(), w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::ReadOnly)]);
    assert_eq!(w.run(&[send(stranger, conv, "t", "hi")])[0], Err(DomainError::ConversationNotFound));
    assert_eq!(
        w.run(&[send(stranger, ConversationId::new_v7(), "t", "hi")])[0],
        Err(DomainError::ConversationNotFound)
    );
    assert_eq!(w.run(&[send(b, conv, "t", "hi")])[0], Err(DomainError::Forbidden));
    let m = sent(&w.run(&[send(a, conv, "t", "hi")])[0]);
    let r = w.run(&[Command::RecallMessage { actor: Actor::User(stranger), message: m.id }]);
    assert_eq!(r[0], Err(DomainError::MessageNotFound));
}

#[test]
fn create_and_send_in_one_batch() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let id = ConversationId::new_v7();
    let r = w.run(&[
        Command::CreateConversation(CreateConversation {
            id,
            actor: Actor::User(a),
            kind: ConversationKind::Direct,
            title: None,
            members: vec![(b, MemberRole::Owner)],
            patient: None,
        }),
        send(a, id, "t", "hello"),
    ]);
    assert_eq!(sent(&r[1]).seq, Seq::new(1));
    assert_eq!(w.members[&(id, b)].role, MemberRole::Member, "direct conversations have no owner");
    // The pair already has a direct conversation: it is returned, not duplicated.
    let r = w.run(&[Command::CreateConversation(CreateConversation {
        id: ConversationId::new_v7(),
        actor: Actor::User(b),
        kind: ConversationKind::Direct,
        title: None,
        members: vec![(a, MemberRole::Member)],
        patient: None,
    })]);
    match &r[0] {
        Ok(Outcome::Conversation { conversation, created: false, event: None }) => assert_eq!(conversation.id, id),
        other => panic!("{other:?}"),
    }
    let alone = w.run(&[Command::CreateConversation(CreateConversation {
        id: ConversationId::new_v7(),
        actor: Actor::User(a),
        kind: ConversationKind::Direct,
        title: None,
        members: vec![(a, MemberRole::Member)],
        patient: None,
    })]);
    assert_eq!(alone[0], Err(DomainError::DirectNeedsTwoMembers));
}

#[test]
fn edits_keep_history_and_stop_after_acknowledgement() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let m = sent(&w.run(&[send_p(a, conv, "t", "K+ 6.9", Priority::Critical)])[0]);
    assert_eq!(
        w.run(&[Command::EditMessage { actor: b, message: m.id, body: "x".into() }])[0],
        Err(DomainError::NotSender)
    );
    let r = w.run(&[Command::EditMessage { actor: a, message: m.id, body: "K+ 6.8".into() }]);
    assert!(
        matches!(&r[0], Ok(Outcome::MessageChanged { message, event: Some(_) }) if message.revision == 1 && message.body == "K+ 6.8")
    );
    assert_eq!(w.revisions.len(), 1);
    assert_eq!(w.revisions[0].body, "K+ 6.9");
    assert_eq!(w.revisions[0].revision, 0);
    let r = w.run(&[Command::Acknowledge { actor: b, message: m.id, response: AckResponse::Accept }]);
    assert!(matches!(r[0], Ok(Outcome::Acknowledged { event: Some(_), .. })));
    assert_eq!(
        w.run(&[Command::EditMessage { actor: a, message: m.id, body: "K+ 5.0".into() }])[0],
        Err(DomainError::MessageAcknowledged)
    );
}

#[test]
fn removed_content_cannot_be_edited_or_acknowledged() {
    use crate::model::{Removal, RemovalCause};
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let m = sent(&w.run(&[send_p(a, conv, "t", "K+ 6.9", Priority::Critical)])[0]);
    // What the expiry job leaves: a tombstone without its text.
    let stored = w.messages.get_mut(&m.id).unwrap();
    stored.body.clear();
    stored.removal = Some(Removal { at: stored.created_at, cause: RemovalCause::Retention });
    assert_eq!(
        w.run(&[Command::EditMessage { actor: a, message: m.id, body: "K+ 6.8".into() }])[0],
        Err(DomainError::MessageRemoved)
    );
    assert_eq!(
        w.run(&[Command::Acknowledge { actor: b, message: m.id, response: AckResponse::Accept }])[0],
        Err(DomainError::MessageRemoved)
    );
    assert!(w.revisions.is_empty(), "nothing was written back");
    assert_eq!(w.messages[&m.id].body, "");
}

#[test]
fn acknowledgement_rules() {
    let mut w = World::default();
    let (a, b, c) = (w.user(), w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member), (c, MemberRole::ReadOnly)]);
    let routine = sent(&w.run(&[send(a, conv, "r", "fyi")])[0]);
    let urgent = sent(&w.run(&[send_p(a, conv, "u", "call me", Priority::Urgent)])[0]);
    let ack = |actor, message, response| Command::Acknowledge { actor, message, response };
    assert_eq!(w.run(&[ack(b, routine.id, AckResponse::Accept)])[0], Err(DomainError::AckNotRequired));
    assert_eq!(w.run(&[ack(a, urgent.id, AckResponse::Accept)])[0], Err(DomainError::AckBySender));
    assert_eq!(
        w.run(&[ack(b, urgent.id, AckResponse::CallBack { minutes: 0 })])[0],
        Err(DomainError::InvalidCallBackMinutes)
    );
    assert!(matches!(
        w.run(&[ack(c, urgent.id, AckResponse::CallBack { minutes: 10 })])[0],
        Ok(Outcome::Acknowledged { event: Some(_), .. })
    ));
    // The same response again changes nothing; a new response is a new event.
    assert!(matches!(
        w.run(&[ack(c, urgent.id, AckResponse::CallBack { minutes: 10 })])[0],
        Ok(Outcome::Acknowledged { event: None, .. })
    ));
    assert!(matches!(
        w.run(&[ack(c, urgent.id, AckResponse::Done)])[0],
        Ok(Outcome::Acknowledged { event: Some(_), .. })
    ));
    assert_eq!(w.acks[&(urgent.id, c)].response, AckResponse::Done);
    w.run(&[Command::RecallMessage { actor: Actor::User(a), message: urgent.id }]);
    assert_eq!(w.run(&[ack(b, urgent.id, AckResponse::Accept)])[0], Err(DomainError::MessageRecalled));
}

#[test]
fn recall_by_sender_or_owner_only_and_is_idempotent() {
    let mut w = World::default();
    let (a, b, c) = (w.user(), w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member), (c, MemberRole::Member)]);
    let m = sent(&w.run(&[send(b, conv, "t", "wrong patient")])[0]);
    assert_eq!(
        w.run(&[Command::RecallMessage { actor: Actor::User(c), message: m.id }])[0],
        Err(DomainError::Forbidden)
    );
    let r = w.run(&[Command::RecallMessage { actor: Actor::User(a), message: m.id }]);
    assert!(matches!(&r[0], Ok(Outcome::MessageChanged { message, event: Some(_) }) if message.recall.is_some()));
    let r = w.run(&[Command::RecallMessage { actor: Actor::User(b), message: m.id }]);
    assert!(matches!(r[0], Ok(Outcome::MessageChanged { event: None, .. })));
    assert_eq!(w.messages[&m.id].body, "wrong patient", "a recall keeps the body for audit");
}

#[test]
fn receipts_only_move_forward_and_reach_the_senders_they_cover() {
    let mut w = World::default();
    let (a, b, c) = (w.user(), w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member), (c, MemberRole::Member)]);
    w.run(&[send(a, conv, "1", "one"), send(b, conv, "2", "two"), send(a, conv, "3", "three")]);
    let receipt = |actor, delivered, read| Command::UpdateReceipt { actor, conversation: conv, delivered, read };
    assert_eq!(w.run(&[receipt(c, None, None)])[0], Err(DomainError::EmptyReceipt));
    assert_eq!(w.run(&[receipt(c, Some(Seq::new(4)), None)])[0], Err(DomainError::ReceiptBeyondLastMessage));
    let r = w.run(&[receipt(c, None, Some(Seq::new(1)))]);
    assert!(
        matches!(r[0], Ok(Outcome::Receipt { delivered_seq, read_seq, event: Some(_), .. }) if delivered_seq == Seq::new(1) && read_seq == Seq::new(1))
    );
    match &w.events.last().unwrap().kind {
        EventKind::ReceiptUpdated { targets, .. } => {
            let mut want = vec![a, c];
            want.sort_unstable();
            assert_eq!(targets, &want, "only the sender of seq 1 and the reader's devices");
        }
        other => panic!("{other:?}"),
    }
    let r = w.run(&[receipt(c, Some(Seq::new(3)), Some(Seq::new(0)))]);
    assert!(
        matches!(r[0], Ok(Outcome::Receipt { delivered_seq, read_seq, .. }) if delivered_seq == Seq::new(3) && read_seq == Seq::new(1))
    );
    let before = w.events.len();
    let r = w.run(&[receipt(c, Some(Seq::new(2)), None)]);
    assert!(matches!(r[0], Ok(Outcome::Receipt { event: None, .. })), "moving back is a no-op");
    assert_eq!(w.events.len(), before);
}

#[test]
fn membership_changes_and_the_last_owner() {
    let mut w = World::default();
    let (a, b, c, d, e) = (w.user(), w.user(), w.user(), w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let add = |actor, user| Command::AddMember {
        actor: Actor::User(actor),
        conversation: conv,
        user,
        role: MemberRole::Member,
    };
    assert_eq!(w.run(&[add(b, c)])[0], Err(DomainError::Forbidden));
    assert!(w.run(&[add(a, c)])[0].is_ok());
    assert_eq!(w.run(&[add(a, c)])[0], Err(DomainError::AlreadyMember));
    assert!(w.run(&[add(a, d)])[0].is_ok());
    assert_eq!(w.run(&[add(a, e)])[0], Err(DomainError::TooManyMembers { max: 4 }));
    assert_eq!(
        w.run(&[Command::RemoveMember { actor: Actor::User(a), conversation: conv, user: a }])[0],
        Err(DomainError::LastOwner)
    );
    assert_eq!(
        w.run(&[Command::SetMemberRole {
            actor: Actor::User(a),
            conversation: conv,
            user: a,
            role: MemberRole::Member
        }])[0],
        Err(DomainError::LastOwner)
    );
    // Promote b, then a may leave; b removes c; c's period closes at the removal event.
    assert!(
        w.run(&[Command::SetMemberRole {
            actor: Actor::User(a),
            conversation: conv,
            user: b,
            role: MemberRole::Owner
        }])[0]
            .is_ok()
    );
    assert!(w.run(&[Command::RemoveMember { actor: Actor::User(a), conversation: conv, user: a }])[0].is_ok());
    assert!(w.run(&[Command::RemoveMember { actor: Actor::User(b), conversation: conv, user: c }])[0].is_ok());
    let removal = w.last_event;
    let period = w.periods.iter().find(|p| p.1 == c).unwrap();
    assert_eq!(period.3, Some(removal));
    assert_eq!(w.conversations[&conv].member_count, 2);
    assert_eq!(w.conversations[&conv].owner_count, 1);
    // A removed member sees the conversation as not found.
    assert_eq!(w.run(&[send(c, conv, "x", "still here?")])[0], Err(DomainError::ConversationNotFound));
}

#[test]
fn remove_and_re_add_in_one_batch_keeps_both_periods() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let r = w.run(&[
        Command::RemoveMember { actor: Actor::System, conversation: conv, user: b },
        Command::AddMember { actor: Actor::System, conversation: conv, user: b, role: MemberRole::ReadOnly },
    ]);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    assert_eq!(w.members[&(conv, b)].role, MemberRole::ReadOnly);
    let periods: Vec<_> = w.periods.iter().filter(|p| p.1 == b).collect();
    assert_eq!(periods.len(), 2);
    assert_eq!(periods[0].3, Some(EventId::new(2)));
    assert_eq!((periods[1].2, periods[1].3), (EventId::new(3), None));
}

#[test]
fn deactivated_users_cannot_be_added() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    w.users.get_mut(&b).unwrap().active = false;
    let conv = w.group(a, &[]);
    let r =
        w.run(&[Command::AddMember { actor: Actor::User(a), conversation: conv, user: b, role: MemberRole::Member }]);
    assert_eq!(r[0], Err(DomainError::UserNotFound));
}

#[test]
fn request_hash_covers_every_field_the_sender_chose() {
    let base = SendMessage {
        id: MessageId::new_v7(),
        actor: UserId::new_v7(),
        conversation: ConversationId::new_v7(),
        client_txn_id: ClientTxnId::parse("t").unwrap(),
        body: "hello".into(),
        priority: Priority::Routine,
        reply_to: None,
    };
    let h = base.request_hash();
    let mut other = base.clone();
    other.id = MessageId::new_v7();
    assert_eq!(other.request_hash(), h, "the server-chosen id is not part of the request");
    for change in 0..4 {
        let mut m = base.clone();
        match change {
            0 => m.body.push('!'),
            1 => m.priority = Priority::Urgent,
            2 => m.reply_to = Some(MessageId::new_v7()),
            _ => m.conversation = ConversationId::new_v7(),
        }
        assert_ne!(m.request_hash(), h, "change {change}");
    }
}

#[test]
fn timestamps_are_truncated_to_what_storage_keeps() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let mut snap = Snapshot::default();
    let cmds = [send(a, conv, "t", "x")];
    w.load_into(&first_needs(&cmds), &mut snap);
    let now = Timestamp::from_nanosecond(1_800_000_000_123_456_789).unwrap();
    let plan = plan(&cmds, snap, now, &Limits::default());
    let m = sent(&plan.results[0]);
    assert_eq!(m.created_at.as_nanosecond(), 1_800_000_000_123_456_000);
    assert_eq!(plan.effects.events[0].at, m.created_at);
}

#[test]
fn organizations_do_not_mix() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let elsewhere = w.user_in(OrgId::new_v7());
    // Creating with a user of another organization: as if that user did not exist.
    for kind in [ConversationKind::Direct, ConversationKind::Group] {
        let r = w.run(&[Command::CreateConversation(CreateConversation {
            id: ConversationId::new_v7(),
            actor: Actor::User(a),
            kind,
            title: None,
            members: vec![(elsewhere, MemberRole::Member)],
            patient: None,
        })]);
        assert_eq!(r[0], Err(DomainError::UserNotFound), "{kind:?}");
    }
    // Adding one later: the same answer, and nothing changes.
    let conv = w.group(a, &[(b, MemberRole::Member)]);
    let r = w.run(&[Command::AddMember {
        actor: Actor::System,
        conversation: conv,
        user: elsewhere,
        role: MemberRole::Member,
    }]);
    assert_eq!(r[0], Err(DomainError::UserNotFound));
    assert!(!w.members.contains_key(&(conv, elsewhere)));
    assert_eq!(w.conversations[&conv].org, w.users[&a].org);
    // The operator cannot mix them either.
    let r = w.run(&[Command::CreateConversation(CreateConversation {
        id: ConversationId::new_v7(),
        actor: Actor::System,
        kind: ConversationKind::Group,
        title: None,
        members: vec![(a, MemberRole::Owner), (elsewhere, MemberRole::Member)],
        patient: None,
    })]);
    assert_eq!(r[0], Err(DomainError::UserNotFound));
    let r = w.run(&[Command::CreateConversation(CreateConversation {
        id: ConversationId::new_v7(),
        actor: Actor::System,
        kind: ConversationKind::Group,
        title: None,
        members: vec![],
        patient: None,
    })]);
    assert_eq!(r[0], Err(DomainError::NoMembers));
}

#[test]
fn only_groups_are_linked_to_a_patient() {
    let mut w = World::default();
    let (a, b) = (w.user(), w.user());
    let patient = crate::patient::PatientRef::parse("pat-42").unwrap();
    for kind in [ConversationKind::Direct, ConversationKind::Channel] {
        let r = w.run(&[Command::CreateConversation(CreateConversation {
            id: ConversationId::new_v7(),
            actor: Actor::User(a),
            kind,
            title: None,
            members: vec![(b, MemberRole::Member)],
            patient: Some(patient.clone()),
        })]);
        assert_eq!(r[0], Err(DomainError::PatientLinkNotAllowed), "{kind:?}");
    }
    let id = ConversationId::new_v7();
    let r = w.run(&[Command::CreateConversation(CreateConversation {
        id,
        actor: Actor::User(a),
        kind: ConversationKind::Group,
        title: Some("Bed 12".into()),
        members: vec![(b, MemberRole::Member)],
        patient: Some(patient.clone()),
    })]);
    assert!(matches!(r[0], Ok(Outcome::Conversation { created: true, .. })), "{r:?}");
    assert_eq!(w.conversations[&id].patient, Some(patient));
}
