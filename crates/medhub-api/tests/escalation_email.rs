//! An escalation's notification reaches a real SMTP server: PyPI aiosmtpd on loopback (a venv
//! made when missing, as `medhub-notify`'s tests do), storing what it accepts in a Maildir. The
//! recipient's mail says who, how urgent and where, and never the message; when the relay is
//! gone, the attempts are retried and the final failure is in the trace and the metrics. On
//! both databases. Without python3 this test fails saying so; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medhub_service::ServiceConfig;
use medhub_testkit::{Settings, TestServer, TestUser, each_backend};
use reqwest::Method;
use serde_json::{Value, json};

const BODY: &str = "MARKER-BODY-7f3a: K+ 7.1, patient Jane Roe";

/// The venv's python with the aiosmtpd pinned by `medhub-notify`'s SMTP peer.
fn python() -> PathBuf {
    let venv = std::env::var("MEDHUB_AIOSMTPD_VENV").unwrap_or_else(|_| "/var/tmp/medhub-aiosmtpd-venv".into());
    let python = Path::new(&venv).join("bin/python");
    let requirements =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../medhub-notify/tests/peers/smtp/requirements.txt");
    let pin = std::fs::read_to_string(&requirements).unwrap();
    let version = pin.lines().find_map(|l| l.strip_prefix("aiosmtpd==")).unwrap().trim().to_owned();
    let installed = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('aiosmtpd'))"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == version);
    if !installed {
        let status = Command::new("python3")
            .args(["-m", "venv", "--clear", &venv])
            .status()
            .unwrap_or_else(|e| panic!("this test needs python3 (with venv; Debian python3-venv): {e}"));
        assert!(status.success(), "python3 -m venv {venv} failed");
        let status = Command::new(Path::new(&venv).join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements)
            .status()
            .expect("pip install");
        assert!(status.success(), "pip install aiosmtpd failed");
    }
    python
}

/// aiosmtpd without TLS on a loopback port, delivering into a Maildir.
struct Relay {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Relay {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        let mut child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(child.try_wait().unwrap().is_none(), "aiosmtpd exited before listening");
            assert!(Instant::now() < deadline, "aiosmtpd did not listen within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Relay { port, child, dir }
    }

    /// Every mail accepted so far.
    fn mails(&self) -> Vec<String> {
        let new = self.dir.path().join("Maildir/new");
        let Ok(entries) = std::fs::read_dir(new) else { return Vec::new() };
        entries.map(|e| String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()).into_owned()).collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send_critical(s: &TestServer, from: &TestUser, conv: &str, txn: &str) -> String {
    let (status, sent) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            from,
            json!({"client_txn_id": txn, "body": BODY, "priority": "critical"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    sent["message"]["id"].as_str().unwrap().to_owned()
}

fn email_steps(t: &Value) -> Vec<(String, Option<String>)> {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["channel"] == "email")
        .map(|s| (s["kind"].as_str().unwrap().to_owned(), s["detail"].as_str().map(str::to_owned)))
        .collect()
}

each_backend! {
    async fn an_escalation_mails_the_recipient_through_a_real_relay_and_traces_failures(db) {
        let mut relay = Relay::start().await;
        let notify: medhub_notify::NotifyConfig = serde_json::from_value(json!({
            "public_base_url": "https://medhub.example.org",
            "retry": {"base_ms": 50, "cap_secs": 1, "max_attempts": 2},
            "smtp": {"host": "127.0.0.1", "port": relay.port, "tls": "none", "timeout_secs": 5},
            "email": {"from": "medhub <medhub@hospital.example>"},
        }))
        .unwrap();
        let notifier = medhub_notify::Notifier::new(&notify, Arc::new(medhub_core::SystemClock)).unwrap();
        let service = ServiceConfig { notifier: Some(Arc::new(notifier)), ..ServiceConfig::default() };
        let s = TestServer::start_on(db, Settings { service, ..Default::default() }).await;
        let alice = s.user("lab.alice").await;
        let bob = s.user("dr.bob").await;
        let (status, _) = s.call(Method::PUT, "/api/v1/me/contact", Some(&bob),
            Some(json!({"email": "bob@hospital.example"}))).await;
        assert_eq!(status, 200);
        let conv = s.conversation(&alice, "group", &[&bob]).await;

        let m = send_critical(&s, &alice, &conv, "c1").await;
        let mail = wait_until("the mail to bob", async || relay.mails().into_iter().next()).await;
        assert!(mail.contains("bob@hospital.example"), "{mail}");
        assert!(mail.contains("Subject: [medhub] CRITICAL: new message from lab.alice"), "{mail}");
        assert!(mail.contains(&format!("https://medhub.example.org/c/{conv}")), "{mail}");
        assert!(mail.contains("Auto-Submitted: auto-generated"), "{mail}");
        assert!(!mail.contains("MARKER-BODY") && !mail.contains("Jane Roe"), "no message text in a mail: {mail}");
        let trace = wait_until("the sent e-mail in the trace", async || {
            let (_, t) = s.get(&format!("/api/v1/messages/{m}/trace"), &alice).await;
            email_steps(&t).iter().any(|(k, _)| k == "sent").then_some(t)
        })
        .await;
        assert_eq!(email_steps(&trace), [("notified".to_owned(), Some("new_message".to_owned())), ("sent".to_owned(), None)]);

        // The relay goes away: the next notification is retried, then given up, in the trace.
        relay.stop();
        let (status, _) = s.post(&format!("/api/v1/messages/{m}/ack"), &bob, json!({"response": {"kind": "accept"}})).await;
        assert_eq!(status, 200);
        let m2 = send_critical(&s, &alice, &conv, "c2").await;
        let trace = wait_until("the failed e-mail in the trace", async || {
            let (_, t) = s.get(&format!("/api/v1/messages/{m2}/trace"), &alice).await;
            email_steps(&t).iter().any(|(k, _)| k == "failed").then_some(t)
        })
        .await;
        let steps = email_steps(&trace);
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert_eq!(steps[0].0, "notified");
        assert_eq!(steps[1].0, "retrying");
        assert!(steps[1].1.as_deref().unwrap().starts_with("attempt 1: "), "{steps:?}");
        assert_eq!(steps[2].0, "failed");
        let reason = steps[2].1.as_deref().unwrap();
        assert!(reason.starts_with("attempt 2: ") && reason.ends_with("(attempts exhausted)"), "{reason}");
        assert!(!reason.contains("hospital.example"), "a reason never holds an address: {reason}");
        let (_, metrics) = s.call(Method::GET, "/metrics", None, None).await;
        let metrics = metrics.as_str().unwrap().to_owned();
        for series in [
            r#"medhub_notifications_total{channel="email",outcome="sent"} 1"#,
            r#"medhub_notifications_total{channel="email",outcome="retrying"} 1"#,
            r#"medhub_notifications_total{channel="email",outcome="failed"} 1"#,
        ] {
            assert!(metrics.contains(series), "{series} in {metrics}");
        }
    }
}
