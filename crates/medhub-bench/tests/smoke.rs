//! CI smoke of every medhub benchmark scenario at tiny sizes against a real server in process:
//! the harness must keep working. These tests assert correctness only (everything connected,
//! acknowledged and delivered; no gaps or duplicates on resume), never a timing: timing
//! thresholds belong in the benchmark report (STYLE.md, rule 22).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medhub_bench::{Options, Report, Scenario, Target, repo_root};

/// The PostgreSQL server the store tests use (`.ci/run` sets the variable).
fn postgres_url() -> String {
    std::env::var("MEDHUB_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn tiny(scenario: Scenario, work: &tempfile::TempDir) -> Options {
    let mut o = Options::new(scenario, Target::Medhub, &repo_root());
    o.in_process = true;
    o.clients = 50;
    o.rate = 100.0;
    o.duration = Duration::from_secs(2);
    o.members = vec![10, 50];
    o.fanout_rate = Some(20.0);
    o.fanout_duration = Duration::from_secs(1);
    o.fanout_messages = Some(40);
    o.fanout_window = 8;
    o.fanout_delivery_window = 16;
    o.senders = 8;
    o.window = 4;
    o.warmup = Duration::from_millis(500);
    o.missed = 50;
    o.settle = Duration::from_millis(200);
    o.handshake_concurrency = 16;
    o.drain_timeout = Duration::from_secs(30);
    o.work_dir = work.path().to_path_buf();
    o.command_line = vec!["smoke".into(), scenario.name().into()];
    o
}

async fn run(o: Options) -> Report {
    let report = medhub_bench::run(o).await.unwrap_or_else(|e| panic!("run failed: {e:#}"));
    assert!(report.problems.is_empty(), "{}", report.summary());
    let storm = report.storm.as_ref().expect("every scenario connects clients first");
    assert_eq!((storm.ready, storm.failed), (storm.clients as u64, 0), "{}", report.summary());
    report
}

fn work() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("medhub-bench-smoke-").tempdir().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_connects_every_client() {
    let w = work();
    let r = run(tiny(Scenario::Storm, &w)).await;
    assert_eq!(r.storm.unwrap().ready, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_memory_per_connection() {
    let w = work();
    let r = run(tiny(Scenario::Idle, &w)).await;
    let idle = r.idle.unwrap();
    assert_eq!(idle.connections, 50);
    assert!(idle.server_rss_after_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_are_all_acked_and_delivered() {
    let w = work();
    let r = run(tiny(Scenario::Direct, &w)).await;
    let d = r.direct.unwrap();
    assert_eq!(d.scheduled, 200);
    assert_eq!(d.counts.sent, 200);
    assert_eq!(d.counts.acked, 200);
    assert_eq!(d.counts.ack_errors, 0);
    assert_eq!(d.counts.delivered, 200, "every message reaches the partner");
    assert_eq!(d.counts.echoes, 200, "and the sender's own connection");
    assert_eq!(d.ack.count, 200);
    assert_eq!(d.delivery.count, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_every_member() {
    let w = work();
    let r = run(tiny(Scenario::Fanout, &w)).await;
    assert_eq!(r.fanout.len(), 4, "paced and max rate for each of two sizes");
    for f in &r.fanout {
        assert!(f.messages > 0);
        assert_eq!(f.incomplete_messages, 0, "{f:?}");
        assert_eq!(f.deliveries, f.expected_deliveries, "{f:?}");
        assert_eq!(f.counts.acked, f.messages, "{f:?}");
        assert_eq!(f.last_recipient.count, f.messages);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_relay_reaches_every_member() {
    let w = work();
    let mut o = tiny(Scenario::Fanout, &w);
    o.target = Target::Floor;
    o.in_process = false;
    o.floor_bin = Some(env!("CARGO_BIN_EXE_medhub-bench").into());
    let r = run(o).await;
    assert_eq!(r.server.kind, "floor");
    assert_eq!(r.fanout.len(), 4);
    for f in &r.fanout {
        assert_eq!(f.incomplete_messages, 0, "{f:?}");
        assert_eq!(f.deliveries, f.expected_deliveries, "{f:?}");
        assert_eq!(f.counts.acked, f.messages, "{f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_acks_everything_on_sqlite() {
    let w = work();
    let r = run(tiny(Scenario::Throughput, &w)).await;
    let t = r.throughput.unwrap();
    assert!(t.acked > 0);
    assert_eq!(t.ack_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_acks_everything_on_postgres() {
    let w = work();
    let mut o = tiny(Scenario::Throughput, &w);
    o.postgres = Some(postgres_url());
    let r = run(o).await;
    assert_eq!(r.backend, "postgres");
    let t = r.throughput.unwrap();
    assert!(t.acked > 0);
    assert_eq!(t.ack_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_delivers_every_missed_message_once() {
    let w = work();
    let r = run(tiny(Scenario::Resume, &w)).await;
    let res = r.resume.unwrap();
    assert_eq!(res.current_clients, 50);
    assert_eq!(res.events, 50 * 50);
    assert_eq!(res.expected_events, 50 * 50);
    assert_eq!((res.gaps, res.duplicates, res.foreign, res.out_of_order), (0, 0, 0, 0));
    assert!(res.all_current_s.is_some());
}
