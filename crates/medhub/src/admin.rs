//! `medhub admin`: organizations, users, conversations and memberships, and on-call
//! schedules (`oncall.rs`), for scripting a deployment.
//!
//! Commands act as the operator (`Actor::System`): they go through the same services and
//! commit pipeline as the API, so every change is validated and lands in the event log; a
//! running server picks the events up within `realtime.external_poll_ms`.

use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use medhub_core::model::{ConversationKind, MemberRole, Org, SystemRole};
use medhub_core::patient::PatientRef;
use medhub_core::plan::Command;
use medhub_core::policy::Actor;
use medhub_core::{ConversationId, UserId};
use medhub_service::Services;
use medhub_service::auth::{NewUser, generate_password};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Manage organizations (tenants). Only the operator creates them: there is no HTTP
    /// route, since that would need a role above every tenant.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage conversations.
    Conversation {
        #[command(subcommand)]
        command: ConversationCommand,
    },
    /// Manage conversation members.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// On-call roles and schedules: the directory, a role's schedules, iCalendar import and
    /// export.
    Oncall {
        #[command(subcommand)]
        command: crate::oncall::OncallCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum OrgCommand {
    /// Create an organization with its first administrator. Prints the organization's id,
    /// the administrator's id and a one-time password; the administrator changes it and
    /// enrols a second factor at first sign-in.
    Create {
        /// The organization's name, unique on the server (letter case aside).
        name: String,
        /// The first administrator's username (usernames are unique on the whole server).
        #[arg(long)]
        admin: String,
        #[arg(long)]
        json: bool,
    },
    /// List organizations, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Prints its id and a one-time password (unless --password-stdin or
    /// --no-password).
    Create {
        username: String,
        #[arg(long)]
        display_name: String,
        /// The user's organization, by name (default: the first organization).
        #[arg(long)]
        org: Option<String>,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input instead of generating a one-time password.
        #[arg(long, conflicts_with = "no_password")]
        password_stdin: bool,
        /// Create the account without a password (it cannot sign in until one is set).
        #[arg(long)]
        no_password: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List users, by organization and username.
    List {
        /// Only this organization's users, by name.
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deactivate a user: every session ends.
    Deactivate { username: String },
    /// Reactivate a user.
    Activate { username: String },
    /// Set a new one-time password and print it.
    ResetPassword { username: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Direct,
    Group,
    Channel,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Owner,
    Member,
    ReadOnly,
}

impl From<RoleArg> for MemberRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Owner => MemberRole::Owner,
            RoleArg::Member => MemberRole::Member,
            RoleArg::ReadOnly => MemberRole::ReadOnly,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ConversationCommand {
    /// Create a conversation. Prints its id.
    Create {
        #[arg(long, value_enum)]
        kind: KindArg,
        #[arg(long)]
        title: Option<String>,
        /// Owners (groups and channels); repeat for several.
        #[arg(long = "owner")]
        owners: Vec<String>,
        /// Members; repeat for several.
        #[arg(long = "member")]
        members: Vec<String>,
        /// Read-only members; repeat for several.
        #[arg(long = "read-only")]
        read_only: Vec<String>,
        /// The patient the conversation is about (groups only): the EHR's patient id. The
        /// patient's care team may then read it.
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a user's conversations.
    List {
        username: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Add a member.
    Add {
        conversation: uuid::Uuid,
        username: String,
        #[arg(long, value_enum, default_value = "member")]
        role: RoleArg,
    },
    /// Remove a member.
    Remove { conversation: uuid::Uuid, username: String },
    /// Change a member's role.
    Role {
        conversation: uuid::Uuid,
        username: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// List members.
    List {
        conversation: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
}

async fn user_id(services: &Services, username: &str) -> Result<UserId> {
    match services.auth.user_by_username(username).await? {
        Some(u) => Ok(u.id),
        None => bail!("no user named {username:?}"),
    }
}

/// An organization by name, letter case aside.
pub(crate) async fn org_named(services: &Services, name: &str) -> Result<Org> {
    let orgs = services.store.orgs().await?;
    match orgs.into_iter().find(|o| o.is_named(name)) {
        Some(o) => Ok(o),
        None => bail!("no organization named {name:?} (medhub admin org list shows them)"),
    }
}

pub async fn run(services: &Services, command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Org { command } => org(services, command).await,
        AdminCommand::User { command } => user(services, command).await,
        AdminCommand::Conversation { command } => conversation(services, command).await,
        AdminCommand::Member { command } => member(services, command).await,
        AdminCommand::Oncall { command } => crate::oncall::run(services, command).await,
    }
}

async fn org(services: &Services, command: OrgCommand) -> Result<()> {
    match command {
        OrgCommand::Create { name, admin, json } => {
            let (org, user, password) = services.auth.create_org(&name, &admin).await?;
            if json {
                println!(
                    "{}",
                    json!({"id": org.id.to_string(), "name": org.name, "admin_id": user.id.to_string(),
                           "admin_username": user.username, "one_time_password": password})
                );
            } else {
                println!("{}\t{}", org.id, org.name);
                println!("administrator {} ({}), one-time password: {password}", user.username, user.id);
            }
        }
        OrgCommand::List { json } => {
            for o in services.store.orgs().await? {
                let idle = o.idle_timeout.as_mins();
                if json {
                    println!(
                        "{}",
                        json!({"id": o.id.to_string(), "name": o.name, "created_at": o.created_at.to_string(),
                               "idle_timeout_minutes": idle})
                    );
                } else {
                    println!("{}\t{}\tidle timeout {idle} min", o.id, o.name);
                }
            }
        }
    }
    Ok(())
}

async fn user(services: &Services, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Create { username, display_name, org, admin, password_stdin, no_password, json } => {
            let (password, generated) = if no_password {
                (None, false)
            } else if password_stdin {
                let mut p = String::new();
                std::io::stdin().read_to_string(&mut p).context("reading the password from standard input")?;
                (Some(p.trim_end_matches(['\r', '\n']).to_owned()), false)
            } else {
                (Some(generate_password()?), true)
            };
            let new = NewUser {
                username,
                display_name,
                role: if admin { SystemRole::Admin } else { SystemRole::User },
                password: password.clone(),
                must_change_password: generated,
            };
            let user = match org {
                Some(name) => services.auth.create_user_in(org_named(services, &name).await?.id, new).await?,
                None => services.auth.create_user(new).await?,
            };
            let shown = if generated { password } else { None };
            if json {
                println!(
                    "{}",
                    json!({"id": user.id.to_string(), "username": user.username, "one_time_password": shown})
                );
            } else {
                println!("{}\t{}", user.id, user.username);
                if let Some(p) = shown {
                    println!("one-time password: {p}");
                }
            }
        }
        UserCommand::List { org, json } => {
            let orgs = match org {
                Some(name) => vec![org_named(services, &name).await?],
                None => services.store.orgs().await?,
            };
            for o in &orgs {
                list_users(services, o, json).await?;
            }
        }
        UserCommand::Deactivate { username } => {
            let id = user_id(services, &username).await?;
            services.auth.set_active(None, id, false).await?;
            println!("deactivated {username}; every session was revoked");
        }
        UserCommand::Activate { username } => {
            let id = user_id(services, &username).await?;
            services.auth.set_active(None, id, true).await?;
            println!("activated {username}");
        }
        UserCommand::ResetPassword { username } => {
            let id = user_id(services, &username).await?;
            let password = generate_password()?;
            services.auth.reset_password(id, password.clone()).await?;
            println!("one-time password: {password}");
        }
    }
    Ok(())
}

async fn list_users(services: &Services, org: &Org, json: bool) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = services.store.list_users(org.id, after.as_deref(), 500).await?;
        for u in &page {
            if json {
                println!(
                    "{}",
                    json!({"id": u.id.to_string(), "username": u.username, "display_name": u.display_name,
                           "role": u.role.as_str(), "active": u.active, "org": org.name})
                );
            } else {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    u.id,
                    u.username,
                    u.role.as_str(),
                    if u.active { "active" } else { "deactivated" },
                    u.display_name,
                    org.name
                );
            }
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.username.clone()),
            _ => break,
        }
    }
    Ok(())
}

async fn conversation(services: &Services, command: ConversationCommand) -> Result<()> {
    match command {
        ConversationCommand::Create { kind, title, owners, members, read_only, patient, json } => {
            let patient = patient.as_deref().map(PatientRef::parse).transpose()?;
            let mut list = Vec::new();
            for (names, role) in
                [(&owners, MemberRole::Owner), (&members, MemberRole::Member), (&read_only, MemberRole::ReadOnly)]
            {
                for n in names {
                    list.push((user_id(services, n).await?, role));
                }
            }
            let kind = match kind {
                KindArg::Direct => ConversationKind::Direct,
                KindArg::Group => ConversationKind::Group,
                KindArg::Channel => ConversationKind::Channel,
            };
            let (conv, created) =
                services.messaging.create_conversation(Actor::System, kind, title, list, patient).await?;
            if json {
                println!("{}", json!({"id": conv.id.to_string(), "created": created}));
            } else {
                println!("{}", conv.id);
            }
        }
        ConversationCommand::List { username, json } => {
            let id = user_id(services, &username).await?;
            for v in services.store.conversations_for_user(id).await? {
                let c = &v.conversation;
                if json {
                    println!(
                        "{}",
                        json!({"id": c.id.to_string(), "kind": c.kind.as_str(), "title": c.title, "members": c.member_count,
                               "role": v.me.role.as_str(), "last_seq": c.last_seq.get()})
                    );
                } else {
                    println!(
                        "{}\t{}\t{}\t{} members\t{}",
                        c.id,
                        c.kind.as_str(),
                        v.me.role.as_str(),
                        c.member_count,
                        c.title.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    Ok(())
}

async fn member(services: &Services, command: MemberCommand) -> Result<()> {
    let cmd = match command {
        MemberCommand::List { conversation, json } => {
            let conv = ConversationId::from_uuid(conversation);
            if services.store.conversation(conv).await?.is_none() {
                bail!("no conversation {conversation}");
            }
            let members = services.store.members(conv).await?;
            let users = services.store.users(&members.iter().map(|m| m.user).collect::<Vec<_>>()).await?;
            for m in &members {
                let name = users.iter().find(|u| u.id == m.user).map(|u| u.username.as_str()).unwrap_or("?");
                if json {
                    println!("{}", json!({"user_id": m.user.to_string(), "username": name, "role": m.role.as_str()}));
                } else {
                    println!("{}\t{}\t{}", m.user, name, m.role.as_str());
                }
            }
            return Ok(());
        }
        MemberCommand::Add { conversation, username, role } => Command::AddMember {
            actor: Actor::System,
            conversation: ConversationId::from_uuid(conversation),
            user: user_id(services, &username).await?,
            role: role.into(),
        },
        MemberCommand::Remove { conversation, username } => Command::RemoveMember {
            actor: Actor::System,
            conversation: ConversationId::from_uuid(conversation),
            user: user_id(services, &username).await?,
        },
        MemberCommand::Role { conversation, username, role } => Command::SetMemberRole {
            actor: Actor::System,
            conversation: ConversationId::from_uuid(conversation),
            user: user_id(services, &username).await?,
            role: role.into(),
        },
    };
    services.messaging.change_membership(cmd).await?;
    println!("ok");
    Ok(())
}
