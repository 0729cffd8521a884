//! Records and settings for the unit tests.

use medhub_core::model::{Conversation, ConversationKind, SystemRole, User};
use medhub_core::patient::PatientRef;
use medhub_core::{ConversationId, OrgId, Seq, Timestamp, UserId};

use crate::notice::NoticeSettings;

pub(crate) fn settings() -> NoticeSettings {
    NoticeSettings::new("https://medhub.example.org/", true).unwrap()
}

pub(crate) fn user(name: &str) -> User {
    User {
        id: UserId::new_v7(),
        org: OrgId::new_v7(),
        username: "asmith".into(),
        display_name: name.into(),
        role: SystemRole::User,
        active: true,
        created_at: Timestamp::UNIX_EPOCH,
    }
}

pub(crate) fn conversation(kind: ConversationKind, title: Option<&str>, patient: Option<&str>) -> Conversation {
    Conversation {
        id: ConversationId::new_v7(),
        kind,
        title: title.map(str::to_owned),
        created_by: None,
        created_at: Timestamp::UNIX_EPOCH,
        last_seq: Seq::new(0),
        member_count: 2,
        owner_count: 1,
        org: OrgId::new_v7(),
        patient: patient.map(|p| PatientRef::parse(p).unwrap()),
    }
}
