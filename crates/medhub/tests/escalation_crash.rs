//! Durable timers survive `kill -9` (issue "Clinical workflows" §5 and §8): the real `medhub`
//! binary sends a critical message and fires its first step, is killed with SIGKILL before the
//! next step is due, stays down past that time, and after the restart fires the overdue step
//! exactly once (and not before the restart). On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use medhub_core::escalation::{Channel, ChannelSet, Policy, Step, Target};
use medhub_core::model::{ConversationKind, MemberRole, Priority, SessionState, SystemRole};
use medhub_core::policy::Actor;
use medhub_core::{MessageId, SystemClock, UserId};
use medhub_service::auth::NewUser;
use medhub_service::{ServiceConfig, Services};
use medhub_store::each_backend;
use medhub_store::testdb::TestDb;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// When the second step is due after the send: long enough that the test kills the server
/// before it, however slow the machine.
const SECOND_STEP_SECS: i64 = 15;

/// The real binary as a child process.
struct Server {
    child: tokio::process::Child,
    addr: String,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medhub"));
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0");
        match db.location() {
            medhub_store::Location::Sqlite { data_dir } => cmd.arg("--data-dir").arg(data_dir),
            medhub_store::Location::Postgres { url, .. } => {
                cmd.arg("--database-url").arg(url).arg("--data-dir").arg(db.files_dir())
            }
        };
        cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn medhub");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("medhub: listening on http://") {
                    return rest.trim().to_owned();
                }
            }
            panic!("server exited before listening");
        })
        .await
        .expect("server started");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, addr }
    }

    /// SIGKILL: no shutdown, no drain.
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

struct Seed {
    alice_token: String,
    bob: UserId,
    carol: UserId,
    conversation: String,
}

/// The organization, its people and conversation, and a critical policy whose second step is
/// due [`SECOND_STEP_SECS`] after the send, written in process before the binary starts.
async fn seed(db: &TestDb) -> Seed {
    let store = db.open().await;
    let (services, bg) = Services::start(store.clone(), ServiceConfig::default(), Arc::new(SystemClock)).await.unwrap();
    services.auth.bootstrap("Crash Hospital", "admin").await.unwrap();
    let mut users = Vec::new();
    for name in ["lab.alice", "dr.bob", "dr.carol"] {
        let u = services
            .auth
            .create_user(NewUser {
                username: name.into(),
                display_name: name.into(),
                role: SystemRole::User,
                password: None,
                must_change_password: false,
            })
            .await
            .unwrap();
        users.push(u);
    }
    let token = services.auth.issue_session(&users[0], SessionState::Active).await.unwrap().token;
    let (conv, _) = services
        .messaging
        .create_conversation(
            Actor::User(users[0].id),
            ConversationKind::Group,
            Some("Ward 3".into()),
            vec![(users[1].id, MemberRole::Member)],
            None,
        )
        .await
        .unwrap();
    let in_app = ChannelSet::of(&[Channel::InApp]);
    let policy = Policy {
        org: users[0].org,
        priority: Priority::Critical,
        steps: vec![
            Step { after: SignedDuration::ZERO, targets: Target::Recipients, channels: in_app, repeat_every: None },
            Step {
                after: SignedDuration::from_secs(SECOND_STEP_SECS),
                targets: Target::Users(vec![users[2].id]),
                channels: in_app,
                repeat_every: None,
            },
        ],
        stop_after: SignedDuration::from_mins(30),
    };
    medhub_core::escalation::validate(&policy).unwrap();
    store.set_escalation_policy(&policy, None, Timestamp::now(), &[]).await.unwrap();
    bg.abort();
    drop(services);
    // Let the SQLite worker threads of this store wind down before the binary opens the file.
    tokio::time::sleep(Duration::from_millis(600)).await;
    Seed { alice_token: token, bob: users[1].id, carol: users[2].id, conversation: conv.id.to_string() }
}

async fn trace(http: &reqwest::Client, server: &Server, token: &str, message: &str) -> Value {
    let url = format!("http://{}/api/v1/messages/{message}/trace", server.addr);
    let resp = http.get(url).bearer_auth(token).send().await.expect("trace");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("trace json")
}

/// The trace rows of `kind` for `user`.
fn rows<'a>(t: &'a Value, kind: &str, user: UserId) -> Vec<&'a Value> {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == kind && s["user_id"] == json!(user.to_string()))
        .collect()
}

/// Polls the trace (up to 30 s) until `done`.
async fn trace_until(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    message: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = trace(http, server, token, message).await;
        if done(&t) {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "the trace never got there: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(db: TestDb) {
    let s = seed(&db).await;
    let http = reqwest::Client::new();
    let server = Server::start(&db).await;
    let url = format!("http://{}/api/v1/conversations/{}/messages", server.addr, s.conversation);
    let body = json!({"client_txn_id": "crit-1", "body": "Bed 3: lactate 6.8", "priority": "critical"});
    let resp = http.post(url).bearer_auth(&s.alice_token).json(&body).send().await.expect("send");
    assert_eq!(resp.status(), 201);
    let sent: Value = resp.json().await.unwrap();
    let message = sent["message"]["id"].as_str().unwrap().to_owned();
    let sent_at: Timestamp = sent["message"]["created_at"].as_str().unwrap().parse().unwrap();
    let second_due = sent_at.checked_add(SignedDuration::from_secs(SECOND_STEP_SECS)).unwrap();

    // The first step fires; then the server dies without warning.
    trace_until(&http, &server, &s.alice_token, &message, |t| rows(t, "notified", s.bob).len() == 1).await;
    server.kill().await;

    // Down: the second step's timer is pending, and nothing of it happened.
    let id = MessageId::from_uuid(message.parse().unwrap());
    let store = db.open().await;
    let timers = store.escalation_timers(id).await.unwrap();
    assert_eq!(timers.len(), 2, "{timers:?}");
    assert_eq!(
        (timers[1].0, timers[1].1, timers[1].2),
        (second_due, None, None),
        "the second step was pending at the crash"
    );
    assert!(store.escalation_trace(id).await.unwrap().iter().all(|r| r.user != Some(s.carol)));
    drop(store);

    // Stay down past the due time, then restart.
    let wait = second_due.duration_since(Timestamp::now()) + SignedDuration::from_secs(2);
    if wait.is_positive() {
        tokio::time::sleep(Duration::try_from(wait).unwrap()).await;
    }
    let restarted_at = Timestamp::now();
    let server = Server::start(&db).await;
    let t = trace_until(&http, &server, &s.alice_token, &message, |t| rows(t, "notified", s.carol).len() == 1).await;
    let escalated = rows(&t, "escalated", s.carol);
    assert_eq!(escalated.len(), 1, "{t:#}");
    let fired_at: Timestamp = escalated[0]["at"].as_str().unwrap().parse().unwrap();
    assert!(fired_at >= restarted_at, "fired after the restart: {fired_at} vs {restarted_at}");
    assert!(fired_at >= second_due, "never early");

    // And only once: a few more polls of the timer worker change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = trace(&http, &server, &s.alice_token, &message).await;
    assert_eq!(rows(&t, "escalated", s.carol).len(), 1, "{t:#}");
    assert_eq!(rows(&t, "notified", s.carol).len(), 1, "{t:#}");
    assert_eq!(rows(&t, "notified", s.bob).len(), 1, "{t:#}");
    server.kill().await;
    let store = db.open().await;
    let timers = store.escalation_timers(id).await.unwrap();
    assert_eq!(timers.len(), 3, "the first, the second, and the end: {timers:?}");
    assert!(timers[1].1.is_some_and(|fired| fired >= restarted_at), "{timers:?}");
    assert_eq!(timers[2].1, None, "the end is still to come");
}

each_backend! {
    async fn an_overdue_step_fires_once_after_a_kill_and_restart(db) {
        run(db).await;
    }
}
