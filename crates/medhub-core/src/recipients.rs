//! Recipient selection: the one reviewed function that decides who receives an event.
//!
//! Sending an event to the wrong user is a patient-data leak, so this rule lives in one place.
//! The live path (the event hub) calls [`recipients`]; the resume path (SQL over
//! `member_periods` and `event_targets`) implements the same rule and is tested against it.
//!
//! The rule: an event goes to the members of its conversation *at that event*, which means
//! the members before it plus anyone it adds. A removed member still receives its own removal.
//! Receipt updates are narrower: they go only to their targets who are members.

use std::collections::HashSet;

use crate::event::EventKind;
use crate::ids::UserId;

/// The users who must receive an event with `kind`, given the members right before it.
pub fn recipients(kind: &EventKind, members_before: &HashSet<UserId>) -> Vec<UserId> {
    match kind {
        EventKind::ReceiptUpdated { targets, .. } => {
            let mut out: Vec<UserId> = targets.iter().copied().filter(|u| members_before.contains(u)).collect();
            out.sort_unstable();
            out.dedup();
            out
        }
        EventKind::ConversationCreated { members, .. } => {
            let mut out: Vec<UserId> = members_before.iter().copied().chain(members.iter().map(|(u, _)| *u)).collect();
            out.sort_unstable();
            out.dedup();
            out
        }
        EventKind::MemberAdded { user, .. } => {
            let mut out: Vec<UserId> = members_before.iter().copied().collect();
            if !members_before.contains(user) {
                out.push(*user);
            }
            out
        }
        EventKind::ConversationUpdated { .. }
        | EventKind::MemberRemoved { .. }
        | EventKind::MemberRoleChanged { .. }
        | EventKind::MessageCreated { .. }
        | EventKind::MessageEdited { .. }
        | EventKind::MessageRecalled { .. }
        | EventKind::MessageAcknowledged { .. } => members_before.iter().copied().collect(),
    }
}

/// Applies an event's effect on membership, producing the members right after it.
pub fn apply_membership(kind: &EventKind, members: &mut HashSet<UserId>) {
    match kind {
        EventKind::ConversationCreated { members: initial, .. } => {
            members.extend(initial.iter().map(|(u, _)| *u));
        }
        EventKind::MemberAdded { user, .. } => {
            members.insert(*user);
        }
        EventKind::MemberRemoved { user } => {
            members.remove(user);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MessageId, Seq};
    use crate::model::{ConversationKind, MemberRole};

    fn users(n: usize) -> Vec<UserId> {
        (0..n).map(|_| UserId::new_v7()).collect()
    }

    fn sorted(mut v: Vec<UserId>) -> Vec<UserId> {
        v.sort_unstable();
        v
    }

    #[test]
    fn message_events_go_to_members_only() {
        let u = users(4);
        let members: HashSet<UserId> = u[..3].iter().copied().collect();
        let kind = EventKind::MessageRecalled { message: MessageId::new_v7(), seq: Seq::new(1) };
        let got = sorted(recipients(&kind, &members));
        assert_eq!(got, sorted(u[..3].to_vec()));
        assert!(!got.contains(&u[3]));
    }

    #[test]
    fn added_member_receives_its_addition_and_removed_member_its_removal() {
        let u = users(3);
        let mut members: HashSet<UserId> = [u[0], u[1]].into();
        let add = EventKind::MemberAdded { user: u[2], role: MemberRole::Member };
        assert_eq!(sorted(recipients(&add, &members)), sorted(u.clone()));
        apply_membership(&add, &mut members);
        let remove = EventKind::MemberRemoved { user: u[0] };
        assert_eq!(sorted(recipients(&remove, &members)), sorted(u.clone()));
        apply_membership(&remove, &mut members);
        let after = EventKind::ConversationUpdated { title: None };
        assert_eq!(sorted(recipients(&after, &members)), sorted(vec![u[1], u[2]]));
    }

    #[test]
    fn receipts_reach_targets_who_are_members() {
        let u = users(4);
        let members: HashSet<UserId> = [u[0], u[1], u[2]].into();
        let kind = EventKind::ReceiptUpdated {
            user: u[0],
            delivered_seq: Seq::new(3),
            read_seq: Seq::new(2),
            targets: vec![u[0], u[1], u[1], u[3]],
        };
        assert_eq!(recipients(&kind, &members), sorted(vec![u[0], u[1]]));
    }

    #[test]
    fn creation_reaches_initial_members() {
        let u = users(2);
        let kind = EventKind::ConversationCreated {
            kind: ConversationKind::Direct,
            title: None,
            members: vec![(u[0], MemberRole::Member), (u[1], MemberRole::Member)],
        };
        assert_eq!(recipients(&kind, &HashSet::new()), sorted(u));
    }
}
