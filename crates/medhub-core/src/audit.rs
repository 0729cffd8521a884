//! Audit records: one shape for every access decision and security event, so that an auditor
//! can answer "who did what, to what, when, from where, and was it allowed". Ids and route
//! patterns only: never message bodies, tokens, codes or passwords.

use jiff::Timestamp;

use crate::ids::{OrgId, SessionId, UserId};

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// An access decision that let the request through.
    Allow,
    /// An access decision that refused it.
    Deny,
    /// A security event or change that happened (a sign-in, a role change).
    Success,
    /// A security event that was attempted and refused on its merits (a wrong password).
    Failure,
    /// An action that failed on the server's side (the database was away).
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [Outcome::Allow, Outcome::Deny, Outcome::Success, Outcome::Failure, Outcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One audited decision, event or access. Ids and hashes only (docs/audit.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// The leaf encoding this record was (or will be) hashed with: 1 for records written
    /// before the fields from `org` on existed, [`LEAF_VERSION`] for new ones.
    pub version: u8,
    pub at: Timestamp,
    /// The organization the action happened in; every search is scoped by it.
    pub org: Option<OrgId>,
    /// Who acted, when known.
    pub actor: Option<UserId>,
    pub session: Option<SessionId>,
    /// The client device: the first 16 bytes of SHA-256 of its user agent, in hex.
    pub device: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// What was done: `http`, `ws.frame`, `auth.sign_in`, `patient.read`, `role.grant`, …
    pub action: String,
    /// What it was done to: `conversation`, `message`, `user`, `session`, `role`, `grant`,
    /// `org`, `patient`, `hold`, `export`, `report`.
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// The EHR's patient id, when the object concerns one.
    pub patient_ref: Option<String>,
    /// Detail: the route of an HTTP decision, the setting changed, a role key.
    pub target: Option<String>,
    pub outcome: Outcome,
    /// Why, in a word or two: the error code of a denial, the reason a session ended, the
    /// SHA-256 of a typed reason. Never text a user typed.
    pub reason: Option<String>,
    /// Which server wrote it (`server.node`, `server.region`).
    pub node: Option<String>,
    pub region: Option<String>,
}

/// The version byte that starts a new record's [`AuditRecord::leaf_data`]. A new field makes
/// a new version; old records keep the encoding they were hashed with.
pub const LEAF_VERSION: u8 = 2;

impl AuditRecord {
    /// A new record of `action` at `at`, every optional field empty.
    pub fn new(at: Timestamp, action: impl Into<String>, outcome: Outcome) -> Self {
        AuditRecord {
            version: LEAF_VERSION,
            at,
            org: None,
            actor: None,
            session: None,
            device: None,
            ip: None,
            action: action.into(),
            object_type: None,
            object_id: None,
            patient_ref: None,
            target: None,
            outcome,
            reason: None,
            node: None,
            region: None,
        }
    }

    /// The object acted on.
    pub fn object(mut self, kind: &str, id: impl ToString) -> Self {
        self.object_type = Some(kind.to_owned());
        self.object_id = Some(id.to_string());
        self
    }

    pub fn patient(mut self, patient: impl ToString) -> Self {
        self.patient_ref = Some(patient.to_string());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// The record's canonical bytes: what the audit log's Merkle leaf hashes (RFC 9162
    /// `SHA-256(0x00 || data)`), so that the server, `medhub audit verify` and an auditor's
    /// own script agree byte for byte. Layout (docs/audit.md):
    ///
    /// - the version byte;
    /// - `at` as microseconds since the Unix epoch, an 8-byte big-endian signed integer;
    /// - then the fields, each as one byte 0 (absent) or 1 (present) followed, when present,
    ///   by a 4-byte big-endian length and the bytes: the 16 bytes of a UUID, or UTF-8 text
    ///   (`outcome` as its name). Version 2: `org`, `actor`, `session`, `device`, `ip`,
    ///   `action`, `object_type`, `object_id`, `patient_ref`, `target`, `outcome`, `reason`,
    ///   `node`, `region`. Version 1: `actor`, `session`, `action`, `target`, `outcome`,
    ///   `reason`, `ip`.
    ///
    /// Lengths make the encoding unambiguous: no two records share their bytes. A version-1
    /// record that holds a version-2 field is encoded as version 2 with the byte 1, which no
    /// stored leaf can match: a field added to an old record is an edit.
    pub fn leaf_data(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.action.len() + self.target.as_ref().map_or(0, String::len));
        out.push(self.version);
        out.extend_from_slice(&self.at.as_microsecond().to_be_bytes());
        let org = self.org.map(|o| o.as_uuid().into_bytes());
        let actor = self.actor.map(|a| a.as_uuid().into_bytes());
        let session = self.session.map(|s| s.as_uuid().into_bytes());
        if self.version == 1 && !self.has_v2_fields() {
            put(&mut out, actor.as_ref().map(|b| &b[..]));
            put(&mut out, session.as_ref().map(|b| &b[..]));
            put(&mut out, Some(self.action.as_bytes()));
            put(&mut out, text(&self.target));
            put(&mut out, Some(self.outcome.as_str().as_bytes()));
            put(&mut out, text(&self.reason));
            put(&mut out, text(&self.ip));
            return out;
        }
        put(&mut out, org.as_ref().map(|b| &b[..]));
        put(&mut out, actor.as_ref().map(|b| &b[..]));
        put(&mut out, session.as_ref().map(|b| &b[..]));
        put(&mut out, text(&self.device));
        put(&mut out, text(&self.ip));
        put(&mut out, Some(self.action.as_bytes()));
        put(&mut out, text(&self.object_type));
        put(&mut out, text(&self.object_id));
        put(&mut out, text(&self.patient_ref));
        put(&mut out, text(&self.target));
        put(&mut out, Some(self.outcome.as_str().as_bytes()));
        put(&mut out, text(&self.reason));
        put(&mut out, text(&self.node));
        put(&mut out, text(&self.region));
        out
    }

    fn has_v2_fields(&self) -> bool {
        self.org.is_some()
            || self.device.is_some()
            || self.object_type.is_some()
            || self.object_id.is_some()
            || self.patient_ref.is_some()
            || self.node.is_some()
            || self.region.is_some()
    }
}

/// The SHA-256 of a user agent, first 16 bytes in hex: a device fingerprint for audit
/// records that does not keep the string itself (user agents can identify people).
pub fn device_hash(user_agent: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(user_agent.as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn text(field: &Option<String>) -> Option<&[u8]> {
    field.as_deref().map(str::as_bytes)
}

fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            // Fields are short (an action, a route, an address); a record never nears 4 GiB.
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&bytes[..len as usize]);
        }
    }
}

/// A tree head: the log's size and root at an instant. Signed with the server's Ed25519 key
/// and exported outside the database, it pins everything the log held then: a later rewrite
/// of those records, however consistent, gives another root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    pub size: u64,
    pub root: crate::merkle::Hash,
    pub at: Timestamp,
}

impl TreeHead {
    /// The bytes the signature covers: a domain tag, then the size (8 bytes big-endian), the
    /// root, and the time as microseconds since the Unix epoch (8 bytes big-endian, signed).
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = b"medhub audit tree head v1\n".to_vec();
        m.extend_from_slice(&self.size.to_be_bytes());
        m.extend_from_slice(&self.root);
        m.extend_from_slice(&self.at.as_microsecond().to_be_bytes());
        m
    }
}

/// What [`LogVerifier`] found wrong first. Each names where to look.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogFault {
    /// Leaf numbers are not 0, 1, 2, …: a record was deleted, inserted or renumbered.
    #[error("record {found} stands where record {expected} belongs: records were deleted, inserted or renumbered")]
    Gap { expected: u64, found: u64 },
    /// The record's bytes do not give the leaf hash stored with it: it was edited.
    #[error("record {seq} does not match its leaf hash: it was edited")]
    LeafMismatch { seq: u64 },
    /// The log holds fewer records than its head says: records at the end were removed.
    #[error("the log ends after {size} records, but its head says {head}: records at the end were removed")]
    Truncated { size: u64, head: u64 },
    /// The log holds more records than its head says: records were added at the end.
    #[error("the log holds {size} records, but its head says {head}: records were added at the end")]
    Longer { size: u64, head: u64 },
    /// The records give another tree than the head (or a tree head) recorded: records were
    /// reordered, or edited together with their leaf hashes.
    #[error("the first {size} records do not give the recorded root: records were reordered or rewritten")]
    RootMismatch { size: u64 },
}

/// Checks an audit log streamed in `seq` order: every leaf is recomputed from its record, the
/// numbering must be exact, and the tree must come out as the head (and any tree head on the
/// way) recorded. O(n) time, O(log n) memory.
#[derive(Clone, Debug, Default)]
pub struct LogVerifier {
    tree: crate::merkle::Tree,
}

impl LogVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next entry as stored.
    pub fn push(&mut self, seq: u64, record: &AuditRecord, stored_leaf: &[u8]) -> Result<(), LogFault> {
        let expected = self.tree.size();
        if seq != expected {
            return Err(LogFault::Gap { expected, found: seq });
        }
        let leaf = crate::merkle::leaf_hash(&record.leaf_data());
        if stored_leaf != leaf {
            return Err(LogFault::LeafMismatch { seq });
        }
        self.tree.push(leaf);
        Ok(())
    }

    /// Records checked so far.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The root of the records checked so far.
    pub fn root(&self) -> crate::merkle::Hash {
        self.tree.root()
    }

    /// Checks the records so far against a tree head of this size and root.
    pub fn check_root(&self, root: &crate::merkle::Hash) -> Result<(), LogFault> {
        if self.tree.root() == *root { Ok(()) } else { Err(LogFault::RootMismatch { size: self.tree.size() }) }
    }

    /// Checks the end of the log against its head.
    pub fn finish(&self, head_size: u64, head_root: &crate::merkle::Hash) -> Result<(), LogFault> {
        let size = self.tree.size();
        if size < head_size {
            return Err(LogFault::Truncated { size, head: head_size });
        }
        if size > head_size {
            return Err(LogFault::Longer { size, head: head_size });
        }
        self.check_root(head_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 record: the worked example of docs/audit.md.
    fn record() -> AuditRecord {
        AuditRecord {
            version: 1,
            actor: Some(UserId::from_uuid(uuid::Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10))),
            target: Some("GET /x".into()),
            reason: Some(String::new()),
            ..AuditRecord::new(Timestamp::from_microsecond(1_800_000_000_123_456).unwrap(), "http", Outcome::Deny)
        }
    }

    /// A version-2 record: the second worked example of docs/audit.md.
    fn record_v2() -> AuditRecord {
        AuditRecord {
            org: Some(OrgId::from_uuid(uuid::Uuid::from_u128(0xaa))),
            device: Some("00112233445566778899aabbccddeeff".into()),
            ip: Some("10.0.0.7".into()),
            node: Some("n1".into()),
            ..record().object("conversation", "c1").patient("P42")
        }
        .into_v2()
    }

    impl AuditRecord {
        fn into_v2(mut self) -> Self {
            self.version = 2;
            self
        }
    }

    #[test]
    fn the_version_2_encoding_is_exactly_the_documented_layout() {
        let mut want = vec![2u8];
        want.extend_from_slice(&1_800_000_000_123_456i64.to_be_bytes());
        let field = |want: &mut Vec<u8>, b: &[u8]| {
            want.push(1);
            want.extend_from_slice(&(b.len() as u32).to_be_bytes());
            want.extend_from_slice(b);
        };
        field(&mut want, &uuid::Uuid::from_u128(0xaa).into_bytes());
        field(&mut want, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        want.push(0); // no session
        field(&mut want, b"00112233445566778899aabbccddeeff");
        field(&mut want, b"10.0.0.7");
        field(&mut want, b"http");
        field(&mut want, b"conversation");
        field(&mut want, b"c1");
        field(&mut want, b"P42");
        field(&mut want, b"GET /x");
        field(&mut want, b"deny");
        field(&mut want, b"");
        field(&mut want, b"n1");
        want.push(0); // no region
        assert_eq!(record_v2().leaf_data(), want);
    }

    #[test]
    fn a_version_2_field_added_to_an_old_record_changes_its_bytes() {
        let old = record();
        let edited = AuditRecord { patient_ref: Some("P1".into()), ..old.clone() };
        assert_ne!(old.leaf_data(), edited.leaf_data());
        // Relabelling a new record as old changes its bytes too.
        let new = AuditRecord { org: None, device: None, node: None, ..record_v2() };
        let relabelled =
            AuditRecord { version: 1, object_type: None, object_id: None, patient_ref: None, ..new.clone() };
        assert_ne!(
            AuditRecord { object_type: None, object_id: None, patient_ref: None, ..new }.leaf_data(),
            relabelled.leaf_data()
        );
    }

    #[test]
    fn device_hashes_are_sixteen_bytes_of_sha256() {
        let d = device_hash("Mozilla/5.0");
        assert_eq!(d.len(), 32);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(d, device_hash("Mozilla/5.1"));
    }

    #[test]
    fn the_leaf_encoding_is_exactly_the_documented_layout() {
        let mut want = vec![1u8];
        want.extend_from_slice(&1_800_000_000_123_456i64.to_be_bytes());
        want.extend_from_slice(&[1, 0, 0, 0, 16]);
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        want.push(0); // no session
        want.extend_from_slice(&[1, 0, 0, 0, 4]);
        want.extend_from_slice(b"http");
        want.extend_from_slice(&[1, 0, 0, 0, 6]);
        want.extend_from_slice(b"GET /x");
        want.extend_from_slice(&[1, 0, 0, 0, 4]);
        want.extend_from_slice(b"deny");
        want.extend_from_slice(&[1, 0, 0, 0, 0]); // an empty reason is not an absent one
        want.push(0); // no ip
        assert_eq!(record().leaf_data(), want);
    }

    #[test]
    fn no_two_different_records_share_their_bytes() {
        let mut seen = std::collections::HashSet::new();
        for base in [record(), record_v2()] {
            let variants = [
                AuditRecord { at: Timestamp::from_microsecond(1_800_000_000_123_457).unwrap(), ..base.clone() },
                AuditRecord { actor: None, ..base.clone() },
                AuditRecord { session: Some(SessionId::from_uuid(uuid::Uuid::nil())), ..base.clone() },
                // Moving a character across a field boundary changes the bytes.
                AuditRecord { action: "http G".into(), target: Some("ET /x".into()), ..base.clone() },
                AuditRecord { target: None, ..base.clone() },
                AuditRecord { outcome: Outcome::Allow, ..base.clone() },
                AuditRecord { reason: None, ..base.clone() },
                AuditRecord { ip: Some(String::new()), ..base.clone() },
            ];
            assert!(seen.insert(base.leaf_data()));
            for v in &variants {
                assert!(seen.insert(v.leaf_data()), "{v:?} encodes like another record");
            }
        }
        let base = record_v2();
        for v in [
            AuditRecord { org: None, ..base.clone() },
            AuditRecord { device: None, ..base.clone() },
            AuditRecord { object_type: None, ..base.clone() },
            AuditRecord { object_id: Some("c2".into()), ..base.clone() },
            AuditRecord { patient_ref: Some(String::new()), ..base.clone() },
            AuditRecord { node: None, ..base.clone() },
            AuditRecord { region: Some("eu".into()), ..base.clone() },
            AuditRecord { object_type: Some("conversationc".into()), object_id: Some("1".into()), ..base.clone() },
        ] {
            assert!(seen.insert(v.leaf_data()), "{v:?} encodes like another record");
        }
    }

    fn log(n: u64) -> Vec<(u64, AuditRecord, crate::merkle::Hash)> {
        (0..n)
            .map(|i| {
                let r = AuditRecord { action: format!("a{i}"), ..record() };
                let leaf = crate::merkle::leaf_hash(&r.leaf_data());
                (i, r, leaf)
            })
            .collect()
    }

    fn verify(
        entries: &[(u64, AuditRecord, crate::merkle::Hash)],
        head: (u64, crate::merkle::Hash),
    ) -> Result<(), LogFault> {
        let mut v = LogVerifier::new();
        for (seq, r, leaf) in entries {
            v.push(*seq, r, leaf)?;
        }
        v.finish(head.0, &head.1)
    }

    #[test]
    fn the_verifier_names_each_kind_of_tampering() {
        let good = log(10);
        let leaves: Vec<_> = good.iter().map(|e| e.2).collect();
        let head = (10, crate::merkle::root(&leaves));
        assert_eq!(verify(&good, head), Ok(()));

        let mut edited = good.clone();
        edited[4].1.target = Some("GET /other".into());
        assert_eq!(verify(&edited, head), Err(LogFault::LeafMismatch { seq: 4 }));

        // Edited with its leaf hash recomputed: the tree no longer matches the head.
        edited[4].2 = crate::merkle::leaf_hash(&edited[4].1.leaf_data());
        assert_eq!(verify(&edited, head), Err(LogFault::RootMismatch { size: 10 }));

        let mut deleted = good.clone();
        deleted.remove(6);
        assert_eq!(verify(&deleted, head), Err(LogFault::Gap { expected: 6, found: 7 }));

        // Two records swapped together with their numbers: each still matches its hash.
        let mut reordered = good.clone();
        reordered.swap(2, 3);
        let (a, b) = (reordered[2].0, reordered[3].0);
        reordered[2].0 = b;
        reordered[3].0 = a;
        assert_eq!(verify(&reordered, head), Err(LogFault::RootMismatch { size: 10 }));

        let mut inserted = good.clone();
        let extra = AuditRecord { action: "forged".into(), ..record() };
        let leaf = crate::merkle::leaf_hash(&extra.leaf_data());
        inserted.insert(5, (5, extra, leaf));
        assert_eq!(verify(&inserted, head), Err(LogFault::Gap { expected: 6, found: 5 }));

        assert_eq!(verify(&good[..8], head), Err(LogFault::Truncated { size: 8, head: 10 }));
        let longer = log(11);
        assert_eq!(verify(&longer, head), Err(LogFault::Longer { size: 11, head: 10 }));
    }
}
