//! The real binary's first start on an empty embedded store: it creates the organization and
//! the bootstrap administrator, prints the one-time password on standard output once, never
//! writes it to the log (even at `trace`), and the password signs in with a forced change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// What one run of `medhub serve` printed before it was stopped.
struct Run {
    stdout: Vec<String>,
    stderr: String,
}

/// Starts `medhub serve` on `data_dir`, runs `during` once it listens, then kills it.
async fn serve<F, Fut>(data_dir: &std::path::Path, during: F) -> Run
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_medhub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn medhub");
    let mut stderr = child.stderr.take().unwrap();
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push(line.clone());
            if let Some(rest) = line.strip_prefix("medhub: listening on http://") {
                return rest.trim().to_owned();
            }
        }
        panic!("medhub exited before listening: {stdout:?}");
    })
    .await
    .expect("medhub listens within 30 s");
    during(addr).await;
    child.kill().await.unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        stdout.push(line);
    }
    Run { stdout, stderr: err_task.await.unwrap() }
}

#[tokio::test]
async fn first_start_prints_the_bootstrap_password_once_and_never_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("medhub-data");
    let first = serve(&data, |_| async {}).await;
    let line = first
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("medhub: one-time password: "))
        .unwrap_or_else(|| panic!("no password line in {:?}", first.stdout))
        .trim()
        .to_owned();
    assert!(line.len() >= 15, "a strong one-time password");
    assert!(first.stdout.iter().any(|l| l.contains(r#"administrator "admin""#)), "{:?}", first.stdout);
    assert!(!first.stderr.is_empty(), "the log ran at trace");
    assert!(!first.stderr.contains(&line), "the one-time password reached the log");
    assert!(!first.stderr.contains('\u{1b}'), "a log that is not a terminal holds no colour codes");

    // The second start on the same store creates nothing and prints no password; the
    // password still signs in, and only to change it.
    let pw = line.clone();
    let second = serve(&data, |addr| async move {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("http://{addr}/api/v1/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": pw}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["password_change_required"], true, "{body}");
        let wrong = http
            .post(format!("http://{addr}/api/v1/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": "not-the-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
    })
    .await;
    assert!(!second.stdout.iter().any(|l| l.contains("password")), "printed again: {:?}", second.stdout);
    assert!(!second.stderr.contains(&line), "the password reached the log on sign-in");
}
