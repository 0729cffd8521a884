//! `medhub admin oncall`: on-call roles and schedules for the operator, without the web
//! client: the directory, one role's schedules, creating a role and a schedule, and iCalendar
//! import and export (docs/clinical.md). Changes go through the same service as the API, as
//! the operator (audit records without an actor).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use jiff::Timestamp;
use medhub_core::ScheduleId;
use medhub_core::model::Org;
use medhub_service::Services;
use medhub_service::oncall::{DEFAULT_EXPORT, DEFAULT_IMPORT, Holder};
use medhub_store::OnCallKind;
use medhub_wire::oncall::{RotationSpec, SourceView};
use serde_json::json;

use crate::admin::org_named;

#[derive(Subcommand, Debug)]
pub enum OncallCommand {
    /// The directory: every on-call role, who holds it now and why, and who is next.
    List {
        /// The organization, by name (default: the first organization).
        #[arg(long)]
        org: Option<String>,
        /// Another instant (RFC 3339, e.g. 2026-03-29T06:00:00Z) instead of now.
        #[arg(long)]
        at: Option<Timestamp>,
        #[arg(long)]
        json: bool,
    },
    /// One role: its schedules (zone, rotations, overrides) and who holds it now and next.
    Show {
        /// The role's key, e.g. cardiology-oncall.
        role: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create an on-call role or team.
    Create {
        /// The stable key: 2-64 characters of [a-z0-9-].
        role: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "team")]
        kind: KindArg,
        #[arg(long)]
        department: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Add a schedule to a role: its IANA zone and its rotations as a JSON list (the API's
    /// `rotations`, see docs/api.md), read from a file or `-` for standard input. Without
    /// rotations the schedule is filled by imports.
    AddSchedule {
        role: String,
        #[arg(long)]
        name: String,
        /// An IANA zone name, e.g. Europe/Berlin.
        #[arg(long)]
        time_zone: String,
        /// A file holding the rotations' JSON list, or `-`.
        #[arg(long)]
        rotations: Option<PathBuf>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Import another rostering system's calendar (RFC 5545) into one of the role's
    /// schedules: events starting in the window become overrides, replacing an earlier
    /// import's. All or nothing.
    Import {
        role: String,
        /// The .ics file.
        file: PathBuf,
        /// Which schedule, when the role has several.
        #[arg(long)]
        schedule: Option<uuid::Uuid>,
        /// The window's start (default now).
        #[arg(long)]
        from: Option<Timestamp>,
        /// The window's end (default 400 days after the start).
        #[arg(long)]
        to: Option<Timestamp>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Export one of the role's schedules as an iCalendar file (UTC times).
    Export {
        role: String,
        #[arg(long)]
        schedule: Option<uuid::Uuid>,
        /// Start (default now).
        #[arg(long)]
        from: Option<Timestamp>,
        /// End (default 31 days after the start).
        #[arg(long)]
        to: Option<Timestamp>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Role,
    Team,
}

async fn org_of(services: &Services, name: Option<&str>) -> Result<Org> {
    match name {
        Some(n) => org_named(services, n).await,
        None => match services.store.org().await? {
            Some(o) => Ok(o),
            None => bail!("no organization yet: bootstrap first"),
        },
    }
}

fn why(h: &Holder) -> String {
    let mut s = match SourceView::from(h.rule.source) {
        SourceView::Rotation { rotation } => format!("rotation {rotation}"),
        SourceView::Override { replaced: Some(_), .. } => "override (in someone's place)".to_owned(),
        SourceView::Override { .. } => "override (added)".to_owned(),
    };
    if !h.rule.covering_for.is_empty() {
        s.push_str(&format!(", covering for {}", h.rule.covering_for.len()));
    }
    s
}

fn people(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "nobody".to_owned();
    }
    holders.iter().map(|h| format!("{} ({})", h.display_name, why(h))).collect::<Vec<_>>().join(", ")
}

fn views(holders: &[Holder]) -> serde_json::Value {
    serde_json::to_value(holders.iter().map(Holder::view).collect::<Vec<_>>()).unwrap_or_default()
}

pub async fn run(services: &Services, command: OncallCommand) -> Result<()> {
    let oncall = &services.oncall;
    let now = services.clock.now();
    match command {
        OncallCommand::List { org, at, json } => {
            let org = org_of(services, org.as_deref()).await?;
            let (at, roles) = oncall.directory_of(org.id, at).await?;
            for (role, n) in &roles {
                if json {
                    let next = n.next.as_ref().map(|(t, h)| json!({"at": t.to_string(), "holders": views(h)}));
                    println!(
                        "{}",
                        json!({"key": role.key, "name": role.name, "kind": role.kind.as_str(), "department": role.department,
                               "at": at.to_string(), "now": views(&n.now), "next": next})
                    );
                } else {
                    let next = match &n.next {
                        Some((t, h)) => format!("next {t}: {}", people(h)),
                        None => "no change within 400 days".to_owned(),
                    };
                    println!("{}\t{}\tnow: {}\t{next}", role.key, role.name, people(&n.now));
                }
            }
        }
        OncallCommand::Show { role, org, json } => {
            let org = org_of(services, org.as_deref()).await?;
            let (rs, n) = oncall.role_of(org.id, &role).await.map_err(not_found(&role))?;
            if json {
                let schedules: Vec<serde_json::Value> = rs
                    .schedules
                    .iter()
                    .map(|(s, o)| {
                        let rotations: serde_json::Value = serde_json::from_str(&s.rotations).unwrap_or_default();
                        json!({"id": s.id.to_string(), "name": s.name, "time_zone": s.zone, "rotations": rotations,
                               "version": s.version, "overrides": o.iter().map(|o| json!({
                                   "id": o.id.to_string(), "user_id": o.user.to_string(),
                                   "replaces": o.replaces.map(|u| u.to_string()), "start": o.start.to_string(),
                                   "end": o.end.to_string(), "source": o.source.as_str()})).collect::<Vec<_>>()})
                    })
                    .collect();
                let next = n.next.as_ref().map(|(t, h)| json!({"at": t.to_string(), "holders": views(h)}));
                println!(
                    "{}",
                    json!({"key": rs.role.key, "name": rs.role.name, "kind": rs.role.kind.as_str(),
                           "department": rs.role.department, "schedules": schedules, "now": views(&n.now), "next": next})
                );
            } else {
                println!("{}\t{}\t{}", rs.role.key, rs.role.name, rs.role.kind.as_str());
                for (s, o) in &rs.schedules {
                    println!("schedule {}\t{}\t{}\t{} overrides\t{}", s.id, s.name, s.zone, o.len(), s.rotations);
                }
                println!("now: {}", people(&n.now));
                match &n.next {
                    Some((t, h)) => println!("next {t}: {}", people(h)),
                    None => println!("no change within 400 days"),
                }
            }
        }
        OncallCommand::Create { role, name, kind, department, org } => {
            let org = org_of(services, org.as_deref()).await?;
            let kind = match kind {
                KindArg::Role => OnCallKind::Role,
                KindArg::Team => OnCallKind::Team,
            };
            let r = oncall.create_role_as_operator(org.id, &role, &name, kind, department).await?;
            println!("{}\t{}", r.key, r.name);
        }
        OncallCommand::AddSchedule { role, name, time_zone, rotations, org } => {
            let org = org_of(services, org.as_deref()).await?;
            let specs: Vec<RotationSpec> = match rotations {
                None => Vec::new(),
                Some(path) => {
                    let text = if path.as_os_str() == "-" {
                        let mut t = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                            .context("reading standard input")?;
                        t
                    } else {
                        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
                    };
                    serde_json::from_str(&text).context("the rotations are not a JSON list of rotations")?
                }
            };
            let s = oncall
                .create_schedule_as_operator(org.id, &role, &name, &time_zone, &specs)
                .await
                .map_err(not_found(&role))?;
            println!("{}\t{}\t{}", s.id, s.name, s.zone);
        }
        OncallCommand::Import { role, file, schedule, from, to, org, json } => {
            let org = org_of(services, org.as_deref()).await?;
            let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let from = from.unwrap_or(now);
            let to = to.unwrap_or_else(|| from.checked_add(DEFAULT_IMPORT).unwrap_or(Timestamp::MAX));
            let r = oncall
                .import_as_operator(org.id, &role, schedule.map(ScheduleId::from_uuid), &body, from, to)
                .await
                .map_err(not_found(&role))?;
            if json {
                println!(
                    "{}",
                    json!({"schedule_id": r.schedule.to_string(), "from": from.to_string(), "to": to.to_string(),
                           "removed": r.removed, "added": r.added})
                );
            } else {
                println!("imported into {}: {} overrides added, {} replaced", r.schedule, r.added, r.removed);
            }
        }
        OncallCommand::Export { role, schedule, from, to, out, org } => {
            let org = org_of(services, org.as_deref()).await?;
            let from = from.unwrap_or(now);
            let to = to.unwrap_or_else(|| from.checked_add(DEFAULT_EXPORT).unwrap_or(Timestamp::MAX));
            let ics = oncall
                .export_of(org.id, &role, schedule.map(ScheduleId::from_uuid), from, to)
                .await
                .map_err(not_found(&role))?;
            match out {
                Some(path) => std::fs::write(&path, ics).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{ics}"),
            }
        }
    }
    Ok(())
}

/// "not found" names the role the operator asked for.
fn not_found(role: &str) -> impl Fn(medhub_service::ServiceError) -> anyhow::Error + '_ {
    move |e| match e {
        medhub_service::ServiceError::Domain(medhub_core::DomainError::ConversationNotFound) => {
            anyhow::anyhow!("no on-call role {role:?} (or schedule) in the organization")
        }
        other => other.into(),
    }
}
