//! System-wide permissions: what a signed-in user may do outside any single conversation's
//! roles (those are in [`crate::policy`]).
//!
//! Every HTTP route and every WebSocket frame type names one [`Need`] in a table in the API
//! crate; the tables are checked against `crates/medhub-api/tests/permissions.csv` by a
//! test that calls every route and frame as every kind of caller.
//!
//! Roles are still the two system roles (`admin`, `user`); [`SystemRole::permissions`] is
//! the catalogue. Roles as data (a hospital's catalogue, per-organization roles) replace that
//! one function and nothing else.

use crate::model::{SessionState, SystemRole};

/// One thing a user may be allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Permission {
    /// Read the conversations one is a member of, their history and events.
    ConversationRead,
    /// Create conversations, rename them, manage their members (subject to conversation roles).
    ConversationWrite,
    /// Send, edit, recall, acknowledge, mark read, signal typing.
    MessageSend,
    /// Look people up in the directory and follow their presence.
    DirectoryRead,
    /// Manage one's own account: sessions, recovery codes, WebSocket tickets.
    OwnAccount,
    /// Invite, deactivate and re-role users; reset their second factors.
    UserAdmin,
    /// List and end anyone's sessions.
    SessionAdmin,
    /// Change the organization's settings (idle timeout, ...).
    OrgSettings,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::ConversationRead,
        Permission::ConversationWrite,
        Permission::MessageSend,
        Permission::DirectoryRead,
        Permission::OwnAccount,
        Permission::UserAdmin,
        Permission::SessionAdmin,
        Permission::OrgSettings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ConversationRead => "conversation.read",
            Permission::ConversationWrite => "conversation.write",
            Permission::MessageSend => "message.send",
            Permission::DirectoryRead => "directory.read",
            Permission::OwnAccount => "account.self",
            Permission::UserAdmin => "user.admin",
            Permission::SessionAdmin => "session.admin",
            Permission::OrgSettings => "org.settings",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u32);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn of(list: &[Permission]) -> Self {
        Permissions(list.iter().fold(0, |acc, p| acc | (1 << *p as u8)))
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    pub fn union(self, other: Permissions) -> Self {
        Permissions(self.0 | other.0)
    }
}

/// What a route or frame needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// Nobody needs to be signed in (sign-in itself, health checks, documentation).
    Public,
    /// Any session, whatever its sign-in state (sign-out, heartbeats).
    Session,
    /// A session in one of these sign-in states: the steps of sign-in (password change,
    /// second-factor enrolment and proof) are reachable before the session is active.
    Step(&'static [SessionState]),
    /// A fully signed-in session whose user holds this permission.
    Active(Permission),
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Public => "public",
            Need::Session => "session",
            Need::Step(_) => "sign-in step",
            Need::Active(p) => p.as_str(),
        }
    }
}

/// Whether `granted` satisfies `need` for a fully signed-in caller.
pub fn allows(granted: Permissions, need: Need) -> bool {
    match need {
        Need::Public | Need::Session | Need::Step(_) => true,
        Need::Active(p) => granted.contains(p),
    }
}

impl SystemRole {
    /// The permissions of each system role: the role catalogue until roles become data.
    pub fn permissions(self) -> Permissions {
        use Permission::*;
        let clinical = [ConversationRead, ConversationWrite, MessageSend, DirectoryRead, OwnAccount];
        match self {
            SystemRole::User => Permissions::of(&clinical),
            SystemRole::Admin => Permissions::of(&Permission::ALL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        let mut names: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Permission::ALL.len());
        assert_eq!(Permission::parse("root"), None);
    }

    #[test]
    fn users_hold_the_clinical_permissions_and_administrators_all() {
        let user = SystemRole::User.permissions();
        for p in Permission::ALL {
            let admin_only = matches!(p, Permission::UserAdmin | Permission::SessionAdmin | Permission::OrgSettings);
            assert_eq!(user.contains(p), !admin_only, "{p:?}");
            assert!(SystemRole::Admin.permissions().contains(p), "{p:?}");
        }
        assert!(allows(Permissions::NONE, Need::Public));
        assert!(allows(Permissions::NONE, Need::Session));
        assert!(!allows(Permissions::NONE, Need::Active(Permission::ConversationRead)));
        assert!(allows(Permissions::of(&[Permission::OrgSettings]), Need::Active(Permission::OrgSettings)));
    }
}
