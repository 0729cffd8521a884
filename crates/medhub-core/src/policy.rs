//! Permissions inside a conversation, as plain functions over roles.
//!
//! `Actor::System` is the operator (the `medhub admin` CLI and server-internal jobs): it is not
//! a member of anything and bypasses role checks, but never validation.

use crate::error::DomainError;
use crate::ids::UserId;
use crate::model::{ConversationKind, MemberRole, Priority};

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A signed-in user, subject to membership and role checks.
    User(UserId),
    /// The operator, acting outside any conversation role.
    System,
}

impl Actor {
    pub fn user(self) -> Option<UserId> {
        match self {
            Actor::User(u) => Some(u),
            Actor::System => None,
        }
    }
}

/// Writing messages needs the owner or member role.
pub fn can_send(role: MemberRole) -> Result<(), DomainError> {
    match role {
        MemberRole::Owner | MemberRole::Member => Ok(()),
        MemberRole::ReadOnly => Err(DomainError::Forbidden),
    }
}

/// Adding, removing and re-roling members, and renaming, needs the owner role; a direct
/// conversation's two members never change.
pub fn can_manage(kind: ConversationKind, role: Option<MemberRole>) -> Result<(), DomainError> {
    if kind == ConversationKind::Direct {
        return Err(DomainError::DirectMembersFixed);
    }
    match role {
        None | Some(MemberRole::Owner) => Ok(()),
        Some(_) => Err(DomainError::Forbidden),
    }
}

/// Only the sender may edit, and only while it may still write in the conversation.
pub fn can_edit(sender: UserId, actor: UserId, actor_role: MemberRole) -> Result<(), DomainError> {
    if sender != actor {
        return Err(DomainError::NotSender);
    }
    can_send(actor_role)
}

/// The sender or a conversation owner may recall (the operator too: `role == None`).
pub fn can_recall(sender: UserId, actor: Option<UserId>, actor_role: Option<MemberRole>) -> Result<(), DomainError> {
    match (actor, actor_role) {
        (None, _) => Ok(()),
        (Some(a), _) if a == sender => Ok(()),
        (Some(_), Some(MemberRole::Owner)) => Ok(()),
        _ => Err(DomainError::Forbidden),
    }
}

/// Any recipient (read-only members included) acknowledges urgent and critical messages;
/// the sender does not acknowledge itself.
pub fn can_ack(priority: Priority, sender: UserId, actor: UserId) -> Result<(), DomainError> {
    if !priority.requires_ack() {
        return Err(DomainError::AckNotRequired);
    }
    if sender == actor {
        return Err(DomainError::AckBySender);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [MemberRole; 3] = [MemberRole::Owner, MemberRole::Member, MemberRole::ReadOnly];

    #[test]
    fn send_needs_write_role() {
        assert_eq!(can_send(MemberRole::Owner), Ok(()));
        assert_eq!(can_send(MemberRole::Member), Ok(()));
        assert_eq!(can_send(MemberRole::ReadOnly), Err(DomainError::Forbidden));
    }

    #[test]
    fn manage_matrix() {
        for kind in [ConversationKind::Group, ConversationKind::Channel] {
            assert_eq!(can_manage(kind, None), Ok(()));
            assert_eq!(can_manage(kind, Some(MemberRole::Owner)), Ok(()));
            assert_eq!(can_manage(kind, Some(MemberRole::Member)), Err(DomainError::Forbidden));
            assert_eq!(can_manage(kind, Some(MemberRole::ReadOnly)), Err(DomainError::Forbidden));
        }
        for role in ROLES.map(Some).into_iter().chain([None]) {
            assert_eq!(can_manage(ConversationKind::Direct, role), Err(DomainError::DirectMembersFixed));
        }
    }

    #[test]
    fn edit_and_recall_matrix() {
        let (a, b) = (UserId::new_v7(), UserId::new_v7());
        assert_eq!(can_edit(a, a, MemberRole::Member), Ok(()));
        assert_eq!(can_edit(a, a, MemberRole::ReadOnly), Err(DomainError::Forbidden));
        for role in ROLES {
            assert_eq!(can_edit(a, b, role), Err(DomainError::NotSender));
        }
        assert_eq!(can_recall(a, Some(a), Some(MemberRole::ReadOnly)), Ok(()));
        assert_eq!(can_recall(a, Some(b), Some(MemberRole::Owner)), Ok(()));
        assert_eq!(can_recall(a, Some(b), Some(MemberRole::Member)), Err(DomainError::Forbidden));
        assert_eq!(can_recall(a, None, None), Ok(()));
    }

    #[test]
    fn ack_matrix() {
        let (a, b) = (UserId::new_v7(), UserId::new_v7());
        assert_eq!(can_ack(Priority::Routine, a, b), Err(DomainError::AckNotRequired));
        assert_eq!(can_ack(Priority::Urgent, a, a), Err(DomainError::AckBySender));
        assert_eq!(can_ack(Priority::Critical, a, b), Ok(()));
    }
}
