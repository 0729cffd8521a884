//! Times `medhub audit verify`'s check (`medhub_store::audit::verify_log`) over an audit log
//! of 1,000,000 records, on the embedded SQLite and on PostgreSQL: the figure issue 4 asks
//! for, written in docs/benchmarks.md. A benchmark, not a test: it prints times and asserts
//! nothing about them.
//!
//! `cargo run --release -p medhub-store --example audit_verify -- [RECORDS] [RUNS]`
//! PostgreSQL is the server named by `MEDHUB_TEST_DATABASE_URL` (a throw-away database).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use jiff::Timestamp;
use medhub_core::audit::{AuditRecord, Outcome};
use medhub_store::Backend;
use medhub_store::audit::{Verdict, verify_log};
use medhub_store::testdb::TestDb;

/// Records per append: what the audit writer's batches hold at most.
const BATCH: u64 = 1_000;

/// A record shaped like the common one: an allowed request with its route, session and address.
fn record(i: u64) -> AuditRecord {
    AuditRecord {
        org: Some(medhub_core::OrgId::from_uuid(uuid::Uuid::from_u128(1))),
        actor: Some(medhub_core::UserId::from_uuid(uuid::Uuid::from_u128(u128::from(i % 5_000) + 1))),
        session: Some(medhub_core::SessionId::from_uuid(uuid::Uuid::from_u128(u128::from(i % 20_000) + 1))),
        device: Some(medhub_core::audit::device_hash(&format!("device {}", i % 20_000))),
        ip: Some("10.20.30.40".into()),
        node: Some("node-1".into()),
        region: Some("eu-west".into()),
        ..AuditRecord::new(Timestamp::from_second(1_800_000_000 + (i / 100) as i64).unwrap(), "http", Outcome::Allow)
            .object("conversation", uuid::Uuid::from_u128(u128::from(i % 9_973)))
            .patient(format!("P{}", i % 7_919))
            .target("GET /api/v1/conversations/{id}/messages")
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(1_000_000, |a| a.parse().expect("RECORDS"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("RUNS"));
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let started = Instant::now();
        let mut i = 0;
        while i < records {
            let batch: Vec<AuditRecord> = (i..(i + BATCH).min(records)).map(record).collect();
            store.append_audit(&batch).await.unwrap();
            i += batch.len() as u64;
        }
        println!("{backend:?}: {records} records appended in {:.1} s", started.elapsed().as_secs_f64());
        let mut times = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let verdict = verify_log(store.as_ref(), &[], |_, _| {}).await.unwrap();
            times.push(started.elapsed().as_secs_f64());
            assert!(matches!(verdict, Verdict::Good(v) if v.size == records), "{verdict:?}");
        }
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{backend:?}: verify {records} records: median {:.2} s of {runs} runs ({} s)",
            times[runs / 2],
            shown.join(", ")
        );
    }
}
