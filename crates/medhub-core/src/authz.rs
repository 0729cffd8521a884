//! System-wide permissions: what a signed-in user may do outside any single conversation's
//! roles (those are in [`crate::policy`]).
//!
//! Every HTTP route and every WebSocket frame type names one [`Need`] in a table in the API
//! crate; the tables are checked against `crates/medhub-api/tests/permissions.csv` by a
//! test that calls every route and frame as every kind of caller.
//!
//! Roles are data: a role is a named set of permissions, a user holds any number of roles,
//! and a user's permissions are the union. [`BUILTIN_ROLES`] is the catalogue every
//! organization starts with; administrators add their own roles. The two system roles
//! (`admin`, `user`) remain as a coarse flag: `admin` means "holds the administrator role".

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
    /// Define roles and grant them to users.
    RoleAdmin,
    /// Read the audit trail (compliance officers).
    AuditRead,
    /// Open a patient's conversation one is not in, in an emergency (break-glass).
    BreakGlass,
    /// Export data (conversations, audit) for legal or clinical requests.
    DataExport,
    /// Put people on a patient's care team and take them off (who may read the patient's
    /// conversations without being a member).
    CareTeamAdmin,
    /// Set and lift legal holds, run the retention expiry on demand, and erase a person's
    /// personal data (GDPR art. 17): compliance officers.
    RetentionManage,
    /// Manage on-call roles, schedules, overrides, swaps and coverage (docs/clinical.md):
    /// administrators, and the clinical staff who keep rotas (charge nurses, department
    /// heads).
    ScheduleManage,
}

impl Permission {
    pub const ALL: [Permission; 15] = [
        Permission::ConversationRead,
        Permission::ConversationWrite,
        Permission::MessageSend,
        Permission::DirectoryRead,
        Permission::OwnAccount,
        Permission::UserAdmin,
        Permission::SessionAdmin,
        Permission::OrgSettings,
        Permission::RoleAdmin,
        Permission::AuditRead,
        Permission::BreakGlass,
        Permission::DataExport,
        Permission::CareTeamAdmin,
        Permission::RetentionManage,
        Permission::ScheduleManage,
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
            Permission::RoleAdmin => "role.admin",
            Permission::AuditRead => "audit.read",
            Permission::BreakGlass => "break_glass.use",
            Permission::DataExport => "export.run",
            Permission::CareTeamAdmin => "care_team.manage",
            Permission::RetentionManage => "retention.manage",
            Permission::ScheduleManage => "schedule.manage",
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

    /// The permissions in catalogue order.
    pub fn list(self) -> Vec<Permission> {
        Permission::ALL.into_iter().filter(|p| self.contains(*p)).collect()
    }

    /// Space-separated names, as stored.
    pub fn to_names(self) -> String {
        self.list().iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" ")
    }

    /// Parses space-separated names; `Err` names the first unknown one.
    pub fn from_names(names: &str) -> Result<Self, String> {
        let mut out = Permissions::NONE;
        for n in names.split_whitespace() {
            out = out.union(Permissions::of(&[Permission::parse(n).ok_or_else(|| n.to_owned())?]));
        }
        Ok(out)
    }
}

/// A role: a named set of permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// Stable identifier, `[a-z0-9_]`, 1-64 characters.
    pub key: String,
    pub name: String,
    pub permissions: Permissions,
    /// Part of the shipped catalogue (kept up to date by medhub; not editable).
    pub builtin: bool,
}

/// The role every administrator holds; `SystemRole::Admin` means holding it.
pub const ADMINISTRATOR: &str = "administrator";
/// The role users created without a more specific one get.
pub const CLINICIAN: &str = "clinician";

/// The catalogue a hospital network starts with: key, name, permissions.
pub const BUILTIN_ROLES: &[(&str, &str, &[Permission])] = {
    use Permission::*;
    const CARE: &[Permission] = &[ConversationRead, ConversationWrite, MessageSend, DirectoryRead, OwnAccount];
    const SENIOR: &[Permission] =
        &[ConversationRead, ConversationWrite, MessageSend, DirectoryRead, OwnAccount, BreakGlass];
    // Those who assign staff to patients: attending physicians, charge nurses, unit clerks.
    const ASSIGNS: &[Permission] =
        &[ConversationRead, ConversationWrite, MessageSend, DirectoryRead, OwnAccount, BreakGlass, CareTeamAdmin];
    // Charge nurses also keep the unit's rotas (on-call schedules, swaps, cover).
    const CHARGE: &[Permission] = &[
        ConversationRead,
        ConversationWrite,
        MessageSend,
        DirectoryRead,
        OwnAccount,
        BreakGlass,
        CareTeamAdmin,
        ScheduleManage,
    ];
    &[
        (CLINICIAN, "Clinician (general staff)", CARE),
        ("attending_physician", "Attending physician", ASSIGNS),
        ("resident", "Resident physician", CARE),
        ("physician_assistant", "Physician assistant", CARE),
        ("nurse_practitioner", "Nurse practitioner", SENIOR),
        ("nurse", "Nurse", CARE),
        ("charge_nurse", "Charge nurse", CHARGE),
        ("pharmacist", "Pharmacist", CARE),
        ("lab_technologist", "Laboratory technologist", CARE),
        ("respiratory_therapist", "Respiratory therapist", CARE),
        ("social_worker", "Social worker", CARE),
        (
            "unit_clerk",
            "Unit clerk",
            &[ConversationRead, ConversationWrite, MessageSend, DirectoryRead, OwnAccount, CareTeamAdmin],
        ),
        (
            "department_head",
            "Department head",
            &[
                ConversationRead,
                ConversationWrite,
                MessageSend,
                DirectoryRead,
                OwnAccount,
                BreakGlass,
                DataExport,
                CareTeamAdmin,
                ScheduleManage,
            ],
        ),
        (
            "compliance_officer",
            "Compliance officer (auditor)",
            &[DirectoryRead, OwnAccount, AuditRead, DataExport, RetentionManage],
        ),
        ("it_support", "IT support", &[DirectoryRead, OwnAccount, SessionAdmin]),
        ("observer", "Observer (read-only)", &[ConversationRead, DirectoryRead, OwnAccount]),
        (
            ADMINISTRATOR,
            "Administrator",
            &[
                ConversationRead,
                ConversationWrite,
                MessageSend,
                DirectoryRead,
                OwnAccount,
                UserAdmin,
                SessionAdmin,
                OrgSettings,
                RoleAdmin,
                ScheduleManage,
            ],
        ),
    ]
};

/// The shipped catalogue as roles.
pub fn builtin_roles() -> Vec<Role> {
    BUILTIN_ROLES
        .iter()
        .map(|(key, name, perms)| Role {
            key: (*key).to_owned(),
            name: (*name).to_owned(),
            permissions: Permissions::of(perms),
            builtin: true,
        })
        .collect()
}

/// Checks a role key: `[a-z0-9_]`, 1-64 characters.
pub fn valid_role_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
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
    /// The built-in role a system role stands for when no other roles are known.
    pub fn default_role_key(self) -> &'static str {
        match self {
            SystemRole::User => CLINICIAN,
            SystemRole::Admin => ADMINISTRATOR,
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
    fn the_catalogue_is_complete_and_sensible() {
        let roles = builtin_roles();
        let keys: Vec<&str> = roles.iter().map(|r| r.key.as_str()).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "unique keys");
        assert!(keys.iter().all(|k| valid_role_key(k)));
        for needed in [
            "attending_physician",
            "resident",
            "nurse",
            "charge_nurse",
            "pharmacist",
            "lab_technologist",
            "unit_clerk",
            "department_head",
            ADMINISTRATOR,
            "compliance_officer",
            "it_support",
        ] {
            assert!(keys.contains(&needed), "{needed}");
        }
        let get = |k: &str| roles.iter().find(|r| r.key == k).map(|r| r.permissions).unwrap_or_default();
        // Everyone can manage their own account; only clinical roles write messages.
        assert!(roles.iter().all(|r| r.permissions.contains(Permission::OwnAccount)));
        assert!(!get("compliance_officer").contains(Permission::MessageSend));
        assert!(get("compliance_officer").contains(Permission::AuditRead));
        assert!(!get("observer").contains(Permission::MessageSend));
        assert!(get("observer").contains(Permission::ConversationRead));
        // Administration is separate from emergency access and from the audit trail.
        assert!(!get(ADMINISTRATOR).contains(Permission::BreakGlass));
        assert!(!get(ADMINISTRATOR).contains(Permission::AuditRead));
        assert!(get("attending_physician").contains(Permission::BreakGlass));
        assert!(!get("nurse").contains(Permission::BreakGlass));
        // Care teams are kept by clinical staff, not by IT.
        assert!(get("charge_nurse").contains(Permission::CareTeamAdmin));
        assert!(get("unit_clerk").contains(Permission::CareTeamAdmin));
        assert!(!get("nurse").contains(Permission::CareTeamAdmin));
        assert!(!get(ADMINISTRATOR).contains(Permission::CareTeamAdmin));
        assert!(!get("it_support").contains(Permission::CareTeamAdmin));
        assert!(get(ADMINISTRATOR).contains(Permission::UserAdmin));
        // Legal holds and erasure are the compliance officer's, not IT's nor clinicians'.
        assert!(get("compliance_officer").contains(Permission::RetentionManage));
        assert!(roles.iter().filter(|r| r.permissions.contains(Permission::RetentionManage)).count() == 1);
        // Rotas are kept by administrators and the clinical staff who run a unit or
        // department, not by every clinician.
        for keeper in ["charge_nurse", "department_head", ADMINISTRATOR] {
            assert!(get(keeper).contains(Permission::ScheduleManage), "{keeper}");
        }
        for other in ["nurse", "resident", "clinician", "compliance_officer", "it_support", "observer"] {
            assert!(!get(other).contains(Permission::ScheduleManage), "{other}");
        }
        assert_eq!(SystemRole::Admin.default_role_key(), ADMINISTRATOR);
    }

    #[test]
    fn permission_sets_round_trip_through_their_names() {
        let p = Permissions::of(&[Permission::AuditRead, Permission::DirectoryRead]);
        assert_eq!(p.to_names(), "directory.read audit.read");
        assert_eq!(Permissions::from_names(&p.to_names()), Ok(p));
        assert_eq!(Permissions::from_names(""), Ok(Permissions::NONE));
        assert_eq!(Permissions::from_names("directory.read root"), Err("root".to_owned()));
        assert!(allows(Permissions::NONE, Need::Public));
        assert!(allows(Permissions::NONE, Need::Session));
        assert!(!allows(Permissions::NONE, Need::Active(Permission::ConversationRead)));
        assert!(!valid_role_key("Nurse"));
        assert!(!valid_role_key(""));
        assert!(valid_role_key("night_float_2"));
    }
}
