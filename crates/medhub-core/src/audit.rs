//! Audit records: one shape for every access decision and security event, so that an auditor
//! can answer "who did what, to what, when, from where, and was it allowed". Ids and route
//! patterns only: never message bodies, tokens, codes or passwords.

use jiff::Timestamp;

use crate::ids::{SessionId, UserId};

/// How an audited action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An access decision that let the request through.
    Allow,
    /// An access decision that refused it.
    Deny,
    /// A security event that happened (a sign-in, a role change).
    Success,
    /// A security event that was attempted and failed (a wrong password).
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Outcome::Allow, Outcome::Deny, Outcome::Success, Outcome::Failure].into_iter().find(|o| o.as_str() == s)
    }
}

/// One audited decision or event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: Timestamp,
    /// Who acted, when known.
    pub actor: Option<UserId>,
    pub session: Option<SessionId>,
    /// What was done: `http`, `ws.frame`, `auth.sign_in`, `auth.mfa`, `auth.step_up`,
    /// `session.end`, `user.update`, `role.grant`, ...
    pub action: String,
    /// What it was done to: `GET /api/v1/conversations/<id>`, a user id, a role key.
    pub target: Option<String>,
    pub outcome: Outcome,
    /// Why, in a word or two: the error code of a denial, the reason a session ended.
    pub reason: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
}

/// The version byte that starts [`AuditRecord::leaf_data`]. A new field makes a new version;
/// old records keep the encoding they were hashed with.
pub const LEAF_VERSION: u8 = 1;

impl AuditRecord {
    /// The record's canonical bytes: what the audit log's Merkle leaf hashes (RFC 9162
    /// `SHA-256(0x00 || data)`), so that the server, `medhub audit verify` and an auditor's
    /// own script agree byte for byte. Layout (docs/audit.md):
    ///
    /// - the version byte (1);
    /// - `at` as microseconds since the Unix epoch, an 8-byte big-endian signed integer;
    /// - then `actor`, `session`, `action`, `target`, `outcome`, `reason`, `ip`, each as one
    ///   byte 0 (absent) or 1 (present) followed, when present, by a 4-byte big-endian length
    ///   and the bytes: the 16 bytes of a UUID, or UTF-8 text (`outcome` as its name).
    ///
    /// Lengths make the encoding unambiguous: no two records share their bytes.
    pub fn leaf_data(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.action.len() + self.target.as_ref().map_or(0, String::len));
        out.push(LEAF_VERSION);
        out.extend_from_slice(&self.at.as_microsecond().to_be_bytes());
        let actor = self.actor.map(|a| a.as_uuid().into_bytes());
        let session = self.session.map(|s| s.as_uuid().into_bytes());
        put(&mut out, actor.as_ref().map(|b| &b[..]));
        put(&mut out, session.as_ref().map(|b| &b[..]));
        put(&mut out, Some(self.action.as_bytes()));
        put(&mut out, self.target.as_deref().map(str::as_bytes));
        put(&mut out, Some(self.outcome.as_str().as_bytes()));
        put(&mut out, self.reason.as_deref().map(str::as_bytes));
        put(&mut out, self.ip.as_deref().map(str::as_bytes));
        out
    }
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

    fn record() -> AuditRecord {
        AuditRecord {
            at: Timestamp::from_microsecond(1_800_000_000_123_456).unwrap(),
            actor: Some(UserId::from_uuid(uuid::Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10))),
            session: None,
            action: "http".into(),
            target: Some("GET /x".into()),
            outcome: Outcome::Deny,
            reason: Some(String::new()),
            ip: None,
        }
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
        let base = record();
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
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(base.leaf_data()));
        for v in &variants {
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
