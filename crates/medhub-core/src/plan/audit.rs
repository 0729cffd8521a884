//! The audit records of a batch's writes of patient data (docs/audit.md, fail closed): a
//! command that came with a record template and changed a conversation linked to a patient
//! gets one record, written in the batch's own transaction. Pure: the store gives it the
//! batch's commands, their results and what it loaded.

use std::collections::HashMap;

use super::{Command, Outcome};
use crate::audit::AuditRecord;
use crate::error::DomainError;
use crate::ids::{ConversationId, MessageId};
use crate::patient::PatientRef;

/// What the planner's snapshot knew before the batch: each loaded conversation's patient (if
/// linked to one) and each loaded message's conversation.
#[derive(Clone, Debug, Default)]
pub struct PatientLinks {
    pub patients: HashMap<ConversationId, PatientRef>,
    pub message_conversations: HashMap<MessageId, ConversationId>,
}

impl PatientLinks {
    /// The links of what `snapshot` loaded (taken before planning consumes it).
    pub fn of(snapshot: &super::Snapshot) -> Self {
        PatientLinks {
            patients: snapshot.conversations.iter().filter_map(|(id, c)| c.patient.clone().map(|p| (*id, p))).collect(),
            message_conversations: snapshot.messages.iter().map(|(id, m)| (*id, m.conversation)).collect(),
        }
    }
}

/// One record per command that carried a template, succeeded, changed something and
/// concerns a patient's conversation: `message.send` (not a resend), `message.edit`,
/// `message.recall`, `message.ack`, `conversation.member_add`, `conversation.member_remove`,
/// `conversation.member_role` (who may read the patient's conversation), and
/// `conversation.create` for a new patient-linked conversation. The template gives who, when and where; this gives what.
pub fn records(
    cmds: &[Command],
    results: &[Result<Outcome, DomainError>],
    templates: &[Option<AuditRecord>],
    links: &PatientLinks,
) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for ((cmd, result), template) in cmds.iter().zip(results).zip(templates) {
        let (Some(template), Ok(outcome)) = (template, result) else { continue };
        let found = match (cmd, outcome) {
            (Command::SendMessage(_), Outcome::MessageSent { message, duplicate: false }) => {
                Some(("message.send", "message", message.id.to_string(), message.conversation))
            }
            (Command::EditMessage { .. }, Outcome::MessageChanged { message, event: Some(_) }) => {
                Some(("message.edit", "message", message.id.to_string(), message.conversation))
            }
            (Command::RecallMessage { .. }, Outcome::MessageChanged { message, event: Some(_) }) => {
                Some(("message.recall", "message", message.id.to_string(), message.conversation))
            }
            (Command::Acknowledge { .. }, Outcome::Acknowledged { ack, event: Some(_) }) => links
                .message_conversations
                .get(&ack.message)
                .map(|c| ("message.ack", "message", ack.message.to_string(), *c)),
            (Command::AddMember { conversation, user, .. }, Outcome::Membership { event: Some(_) }) => {
                Some(("conversation.member_add", "user", user.to_string(), *conversation))
            }
            (Command::RemoveMember { conversation, user, .. }, Outcome::Membership { event: Some(_) }) => {
                Some(("conversation.member_remove", "user", user.to_string(), *conversation))
            }
            (Command::SetMemberRole { conversation, user, .. }, Outcome::Membership { event: Some(_) }) => {
                Some(("conversation.member_role", "user", user.to_string(), *conversation))
            }
            (Command::CreateConversation(_), Outcome::Conversation { conversation, created: true, .. }) => {
                if let Some(p) = &conversation.patient {
                    let r = template.clone().object("conversation", conversation.id).patient(p.as_str());
                    out.push(AuditRecord { action: "conversation.create".into(), ..r });
                }
                None
            }
            _ => None,
        };
        let Some((action, kind, id, conversation)) = found else { continue };
        let Some(patient) = links.patients.get(&conversation) else { continue };
        let r =
            template.clone().object(kind, id).patient(patient.as_str()).target(format!("conversation:{conversation}"));
        out.push(AuditRecord { action: action.into(), ..r });
    }
    out
}
