//! `medhub retention`: content retention for the operator. Policies can be listed and set
//! (administrators do the same over the API), legal holds listed, and the expiry job run at
//! once. Setting and lifting holds and erasing a person's data are done by compliance officers
//! over the API, so that the audit trail names them (docs/retention.md).

use anyhow::Result;
use clap::Subcommand;
use medhub_core::model::Org;
use medhub_core::retention::HoldScope;
use medhub_service::Services;
use serde_json::json;

use crate::admin::org_named;

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Retention policies: how long each class of conversation (clinical, direct, group,
    /// channel) is kept.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List legal holds, newest first (without their reasons, which compliance officers read
    /// over the API).
    Holds {
        /// The organization, by name (default: every organization).
        #[arg(long)]
        org: Option<String>,
        /// Also list lifted holds.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run the expiry job now: remove the content of messages past their retention, unless a
    /// legal hold covers them. Prints what it did.
    Expire {
        /// The organization, by name (default: every organization).
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// List the policies; a class not listed is kept for ever.
    List {
        /// The organization, by name (default: every organization).
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set how many days a class is kept (1-36500; clinical at least 2190), or `forever` to
    /// remove its policy.
    Set {
        /// clinical, direct, group or channel.
        class: String,
        /// Days, or `forever`.
        days: String,
        /// The organization, by name (default: the first organization).
        #[arg(long)]
        org: Option<String>,
    },
}

async fn orgs(services: &Services, name: Option<&str>) -> Result<Vec<Org>> {
    Ok(match name {
        Some(n) => vec![org_named(services, n).await?],
        None => services.store.orgs().await?,
    })
}

pub async fn run(services: &Services, command: RetentionCommand) -> Result<()> {
    let r = &services.retention;
    match command {
        RetentionCommand::Policy { command: PolicyCommand::List { org, json } } => {
            for o in orgs(services, org.as_deref()).await? {
                for p in r.policies_of(o.id).await? {
                    let (class, days) = (p.policy.class.as_str(), p.policy.days);
                    if json {
                        println!(
                            "{}",
                            json!({"org": o.name, "class": class, "days": days, "set_at": p.set_at.to_string(),
                                   "set_by": p.set_by.map(|u| u.to_string())})
                        );
                    } else {
                        println!("{}\t{class}\t{days} days", o.name);
                    }
                }
            }
        }
        RetentionCommand::Policy { command: PolicyCommand::Set { class, days, org } } => {
            let org = match org {
                Some(n) => org_named(services, &n).await?,
                None => match services.store.org().await? {
                    Some(o) => o,
                    None => anyhow::bail!("no organization yet: bootstrap first"),
                },
            };
            let days = match days.as_str() {
                "forever" => None,
                d => Some(d.parse::<i64>().map_err(|_| anyhow::anyhow!("days must be a number or `forever`"))?),
            };
            match r.set_policy_as_operator(org.id, &class, days).await? {
                Some(p) => println!("{}: {} kept {} days", org.name, p.class.as_str(), p.days),
                None => println!("{}: {class} kept for ever", org.name),
            }
        }
        RetentionCommand::Holds { org, all, json } => {
            for o in orgs(services, org.as_deref()).await? {
                for h in r.holds_of(o.id, all).await? {
                    let state = if h.lifted.is_some() { "lifted" } else { "active" };
                    let (kind, subject) = (h.scope.kind_str(), h.scope.subject());
                    if json {
                        println!(
                            "{}",
                            json!({"org": o.name, "id": h.id.to_string(), "scope": kind, "subject": subject,
                                   "state": state, "created_by": h.created_by.to_string(),
                                   "created_at": h.created_at.to_string(),
                                   "lifted_at": h.lifted.as_ref().map(|l| l.at.to_string())})
                        );
                    } else {
                        let user_hold = matches!(h.scope, HoldScope::User(_));
                        let note = if user_hold { " (no erasure)" } else { "" };
                        println!("{}\t{}\t{state}\t{kind}:{subject}{note}\t{}", o.name, h.id, h.created_at);
                    }
                }
            }
        }
        RetentionCommand::Expire { org, json } => {
            for o in orgs(services, org.as_deref()).await? {
                let done = r.expire_org(o.id, None).await?;
                if json {
                    println!(
                        "{}",
                        json!({"org": o.name, "removed": done.removed, "revisions": done.revisions,
                               "held": done.held, "erasure_finished": done.erasure_finished})
                    );
                } else {
                    println!(
                        "{}: {} messages removed ({} earlier revisions), {} kept by legal holds, {} erasure leftovers done",
                        o.name, done.removed, done.revisions, done.held, done.erasure_finished
                    );
                }
            }
        }
    }
    Ok(())
}
