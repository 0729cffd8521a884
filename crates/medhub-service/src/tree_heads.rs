//! Signed tree heads of the audit log (docs/audit.md): the log's size and root at an instant,
//! signed with an Ed25519 key derived from the server key, kept in the database and appended
//! as one JSON line to an export file that should live outside the database's reach. An
//! auditor's `medhub audit verify --heads FILE` checks the log against those lines: once a
//! head is exported, no rewrite of the records it covers, however consistent, goes unseen.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use medhub_core::Clock;
use medhub_core::audit::TreeHead;
use medhub_store::{DynStore, StoredTreeHead};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ServiceError;
use crate::server_key::ServerKey;

/// Signs tree heads with the key derived from the server key.
pub struct TreeHeadSigner {
    key: SigningKey,
    key_id: String,
}

impl TreeHeadSigner {
    /// The signing key is SHA-256 of a domain tag and the server key: the server key is 32
    /// random bytes, so the hash is as good a seed as any, and the key needs no storage of
    /// its own (back up the server key and the heads stay verifiable).
    pub fn new(server_key: &ServerKey) -> Self {
        let mut h = Sha256::new();
        h.update(b"medhub audit tree-head signing key v1");
        h.update(server_key.to_bytes());
        let key = SigningKey::from_bytes(&h.finalize().into());
        let key_id = key_id(&key.verifying_key().to_bytes());
        TreeHeadSigner { key, key_id }
    }

    /// The public key, which verifies every head this signer made.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, head: TreeHead) -> StoredTreeHead {
        let signature = self.key.sign(&head.signed_message()).to_bytes().to_vec();
        StoredTreeHead { head, key_id: self.key_id.clone(), signature }
    }
}

/// A key's id: hex of the first 8 bytes of SHA-256 of the public key.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex(&Sha256::digest(public_key)[..8])
}

/// Lower-case hex, as hashes and keys are shown to auditors.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Parses a public key given in hex (as `medhub audit public-key` prints it).
pub fn parse_public_key(s: &str) -> Result<[u8; 32], ServiceError> {
    let bytes = unhex(s.trim()).ok_or_else(|| ServiceError::InvalidRequest("the public key is not hex".into()))?;
    bytes.try_into().map_err(|_| ServiceError::InvalidRequest("the public key is not 32 bytes".into()))
}

/// One exported head: a line of the export file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportLine {
    size: u64,
    root: String,
    at: jiff::Timestamp,
    key_id: String,
    signature: String,
}

/// The export file's line for a head.
pub fn export_line(h: &StoredTreeHead) -> String {
    let line = ExportLine {
        size: h.head.size,
        root: hex(&h.head.root),
        at: h.head.at,
        key_id: h.key_id.clone(),
        signature: base64::engine::general_purpose::STANDARD.encode(&h.signature),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// Reads an export file's lines, checking each signature with `public_key`. The first line
/// that does not parse or does not verify is an error naming it: a forged or damaged head
/// must stop the check, not be skipped.
pub fn read_exported(text: &str, public_key: &[u8; 32]) -> Result<Vec<TreeHead>, ServiceError> {
    let key = VerifyingKey::from_bytes(public_key)
        .map_err(|_| ServiceError::InvalidRequest("the public key is not a valid Ed25519 key".into()))?;
    let bad = |n: usize, why: &str| ServiceError::InvalidRequest(format!("tree head on line {n}: {why}"));
    let mut heads = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let l: ExportLine = serde_json::from_str(line).map_err(|e| bad(n, &format!("not a tree head ({e})")))?;
        let root: [u8; 32] =
            unhex(&l.root).and_then(|r| r.try_into().ok()).ok_or_else(|| bad(n, "the root is not 32 bytes of hex"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&l.signature)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok())
            .ok_or_else(|| bad(n, "the signature is not an Ed25519 signature"))?;
        if l.key_id != key_id(public_key) {
            return Err(bad(n, &format!("signed by key {}, not by the key given ({})", l.key_id, key_id(public_key))));
        }
        let head = TreeHead { size: l.size, root, at: l.at };
        key.verify_strict(&head.signed_message(), &signature).map_err(|_| bad(n, "the signature does not verify"))?;
        heads.push(head);
    }
    Ok(heads)
}

/// Where signed tree heads go besides the database.
#[derive(Clone, Debug, Default)]
pub struct HeadExport {
    /// A file each head is appended to, one JSON line each (created if missing).
    pub file: Option<PathBuf>,
    /// A syslog collector (RFC 5424 over UDP) each head is sent to, as facility "log audit"
    /// (13), severity informational: `<110>1 TIME HOST medhub - audit-tree-head - JSON`.
    pub syslog: Option<std::net::SocketAddr>,
}

/// Signs the log's current head if it grew since the last signed head, exports it and keeps
/// it. Returns the new head, if one was made.
pub async fn sign_if_grown(
    store: &DynStore,
    signer: &TreeHeadSigner,
    export: &HeadExport,
    clock: &dyn Clock,
) -> Result<Option<StoredTreeHead>, ServiceError> {
    let head = store.audit_head().await?;
    let last = store.latest_tree_head().await?.map(|h| h.head.size);
    if last.is_some_and(|size| size >= head.size) || (last.is_none() && head.size == 0) {
        return Ok(None);
    }
    let signed = signer.sign(TreeHead { size: head.size, root: head.tree()?.root(), at: clock.now() });
    // Exported first: a head the database keeps was always exported too, even if the process
    // dies in between. (A head exported twice, here and by another node, is harmless.)
    let line = export_line(&signed);
    if let Some(path) = &export.file {
        append_line(path, &line)?;
    }
    if let Some(addr) = export.syslog {
        send_syslog(addr, &line, signed.head.at).await?;
    }
    if !store.put_tree_head(&signed).await? {
        return Ok(None); // Another node signed this size first.
    }
    tracing::info!(target: "medhub::audit", size = signed.head.size, key = %signed.key_id, "audit tree head signed");
    Ok(Some(signed))
}

fn append_line(path: &Path, line: &str) -> Result<(), ServiceError> {
    let io = |e: std::io::Error| ServiceError::AuditExport(format!("audit tree head export {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// Sends one line to a syslog collector over UDP (RFC 5424 header, no structured data).
async fn send_syslog(addr: std::net::SocketAddr, line: &str, at: jiff::Timestamp) -> Result<(), ServiceError> {
    let io = |e: std::io::Error| ServiceError::AuditExport(format!("audit tree head to syslog {addr}: {e}"));
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty() && h.is_ascii()).unwrap_or_else(|| "-".into());
    let message = format!("<110>1 {at} {host} medhub - audit-tree-head - {line}");
    let local: std::net::SocketAddr =
        if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
    socket.send_to(message.as_bytes(), addr).await.map_err(io)?;
    Ok(())
}

/// Signs a head every `interval` while the log grows, until the task is aborted. A failure
/// (the export file unwritable, the database away) is logged and retried at the next tick.
pub async fn run_signer(
    store: DynStore,
    signer: Arc<TreeHeadSigner>,
    export: HeadExport,
    clock: Arc<dyn Clock>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sign_if_grown(&store, &signer, &export, clock.as_ref()).await {
            tracing::error!(target: "medhub::audit", error = %e, "could not sign or export the audit tree head");
        }
    }
}

/// An RFC 9162 proof with the roots it connects, for an auditor holding signed tree heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The leaf hash (inclusion), or `None` (consistency).
    pub leaf: Option<medhub_core::merkle::Hash>,
    /// The root of the older tree (consistency), or `None` (inclusion).
    pub old_root: Option<medhub_core::merkle::Hash>,
    /// The root of the tree the proof is for.
    pub root: medhub_core::merkle::Hash,
    pub path: Vec<medhub_core::merkle::Hash>,
}

/// The stored leaf hashes of the log's first `size` records, read once: a proof and its
/// root are made from them in memory. (Stored subtree hashes, docs/audit.md, would let a
/// proof read O(log n) rows instead.)
async fn leaves(store: &DynStore, size: u64) -> Result<Vec<medhub_core::merkle::Hash>, ServiceError> {
    let head = store.audit_head().await?;
    if size > head.size {
        return Err(ServiceError::InvalidRequest(format!("the log holds {} records", head.size)));
    }
    let leaves: Vec<medhub_core::merkle::Hash> = store
        .audit_leaf_hashes(0, size)
        .await?
        .into_iter()
        .map(|l| {
            l.try_into().map_err(|_| medhub_store::StoreError::Corrupt("an audit leaf hash is not 32 bytes".into()))
        })
        .collect::<Result<_, _>>()?;
    if leaves.len() as u64 != size {
        return Err(medhub_store::StoreError::Corrupt("audit leaves are missing".into()).into());
    }
    Ok(leaves)
}

fn bad(e: medhub_core::merkle::ProofError) -> ServiceError {
    ServiceError::InvalidRequest(e.to_string())
}

/// Proves that record `seq` is in the log of `size` records (which must not exceed the
/// log). Compare `root` with a signed tree head of that size.
pub async fn inclusion_proof(store: &DynStore, seq: u64, size: u64) -> Result<Proof, ServiceError> {
    let leaves = leaves(store, size).await?;
    let path = medhub_core::merkle::inclusion_proof(&leaves, seq).map_err(bad)?;
    let leaf = leaves.get(usize::try_from(seq).unwrap_or(usize::MAX)).copied();
    Ok(Proof { leaf, old_root: None, root: medhub_core::merkle::root(&leaves), path })
}

/// Proves that the log of `from` records is a prefix of the log of `to` records.
pub async fn consistency_proof(store: &DynStore, from: u64, to: u64) -> Result<Proof, ServiceError> {
    let leaves = leaves(store, to).await?;
    let path = medhub_core::merkle::consistency_proof(&leaves, from).map_err(bad)?;
    let old = leaves.get(..usize::try_from(from).unwrap_or(usize::MAX)).map(medhub_core::merkle::root);
    Ok(Proof { leaf: None, old_root: old, root: medhub_core::merkle::root(&leaves), path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(size: u64) -> TreeHead {
        TreeHead { size, root: [7; 32], at: jiff::Timestamp::from_second(1_800_000_000).unwrap() }
    }

    #[test]
    fn exported_heads_verify_only_with_their_key_and_untouched() {
        let signer = TreeHeadSigner::new(&ServerKey::from_bytes([1; 32]));
        let again = TreeHeadSigner::new(&ServerKey::from_bytes([1; 32]));
        assert_eq!(signer.public_key(), again.public_key(), "derived from the server key alone");
        let lines = format!("{}\n{}\n", export_line(&signer.sign(head(3))), export_line(&signer.sign(head(9))));
        let heads = read_exported(&lines, &signer.public_key()).unwrap();
        assert_eq!(heads, vec![head(3), head(9)]);

        let other = TreeHeadSigner::new(&ServerKey::from_bytes([2; 32]));
        let e = read_exported(&lines, &other.public_key()).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("not by the key given"), "{e}");

        // A head whose size or root was changed after signing.
        for (from, to) in [("\"size\":9", "\"size\":10"), ("0707", "0708")] {
            let forged = lines.replacen(from, to, 1);
            assert_ne!(forged, lines);
            let e = read_exported(&forged, &signer.public_key()).unwrap_err().to_string();
            assert!(e.contains("does not verify"), "{e}");
        }
        let e = read_exported("{\"size\": 1}\n", &signer.public_key()).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("not a tree head"), "{e}");
    }

    #[test]
    fn public_keys_are_read_from_hex() {
        let signer = TreeHeadSigner::new(&ServerKey::from_bytes([1; 32]));
        assert_eq!(parse_public_key(&format!(" {}\n", hex(&signer.public_key()))).unwrap(), signer.public_key());
        assert!(parse_public_key("abc").is_err());
        assert!(parse_public_key("00ff").is_err());
    }

    medhub_store::each_backend! {
        async fn a_head_is_signed_exported_and_kept_only_when_the_log_grew(db) {
            let store = db.open().await;
            let signer = TreeHeadSigner::new(&ServerKey::from_bytes([3; 32]));
            let clock = medhub_core::ManualClock::new(jiff::Timestamp::from_second(1_800_000_000).unwrap());
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("heads.jsonl");
            let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let export = HeadExport { file: Some(file.clone()), syslog: Some(collector.local_addr().unwrap()) };
            assert_eq!(sign_if_grown(&store, &signer, &export, &clock).await.unwrap(), None, "an empty log");

            let record = |i: i64| {
                medhub_core::audit::AuditRecord::new(
                    jiff::Timestamp::from_second(1_800_000_000 + i).unwrap(),
                    "http",
                    medhub_core::audit::Outcome::Allow,
                )
            };
            store.append_audit(&[record(1), record(2)]).await.unwrap();
            let first = sign_if_grown(&store, &signer, &export, &clock).await.unwrap().unwrap();
            assert_eq!(first.head.size, 2);
            assert_eq!(first.head.root, store.audit_head().await.unwrap().tree().unwrap().root());
            assert_eq!(sign_if_grown(&store, &signer, &export, &clock).await.unwrap(), None, "not grown");
            store.append_audit(&[record(3)]).await.unwrap();
            let second = sign_if_grown(&store, &signer, &export, &clock).await.unwrap().unwrap();
            assert_eq!(store.latest_tree_head().await.unwrap(), Some(second.clone()));

            let text = std::fs::read_to_string(&file).unwrap();
            let heads = read_exported(&text, &signer.public_key()).unwrap();
            assert_eq!(heads, vec![first.head, second.head], "each head exported once, in order");

            // The same heads reached the syslog collector, in RFC 5424 form.
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut buf = vec![0u8; 2048];
                let (n, _) = tokio::time::timeout(Duration::from_secs(5), collector.recv_from(&mut buf)).await.unwrap().unwrap();
                let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
                assert!(msg.starts_with("<110>1 2027-01-15T08:00:00Z "), "{msg}");
                let json = msg.split(" audit-tree-head - ").nth(1).unwrap();
                got.extend(read_exported(json, &signer.public_key()).unwrap());
            }
            assert_eq!(got, vec![first.head, second.head]);
        }
    }
}
