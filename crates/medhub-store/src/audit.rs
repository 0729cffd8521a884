//! Verifying the audit log as stored: the streaming check behind `medhub audit verify`
//! (docs/audit.md). It reads the records in `seq` order, a page at a time, and hands them to
//! the core's [`LogVerifier`]; memory stays O(log n) however long the log is.

use medhub_core::audit::{LogFault, LogVerifier, TreeHead};
use medhub_core::merkle::Hash;

use crate::{Store, StoreError};

/// Records read per query.
const PAGE: u32 = 10_000;

/// A log that verified: its size and root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub size: u64,
    pub root: Hash,
}

/// What verifying found: the whole log good, or the first fault and how far the check got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Good(Verified),
    Bad { fault: LogFault, checked: u64 },
}

/// Checks the whole log against its head and against `exported` tree heads (their signatures
/// already checked by the caller): at each head's size the records must give that head's
/// root, and the log may not end before the largest one. `progress(done, total)` is called
/// after each page.
pub async fn verify_log(
    store: &(impl Store + ?Sized),
    exported: &[TreeHead],
    mut progress: impl FnMut(u64, u64),
) -> Result<Verdict, StoreError> {
    let head = store.audit_head().await?;
    let head_root = head.tree()?.root();
    let mut heads: Vec<&TreeHead> = exported.iter().collect();
    heads.sort_by_key(|h| h.size);
    let mut next = heads.iter().peekable();
    let mut verifier = LogVerifier::new();
    loop {
        // Every exported head whose size the check has reached.
        while let Some(h) = next.next_if(|h| h.size <= verifier.size()) {
            if let Err(fault) = verifier.check_root(&h.root) {
                return Ok(Verdict::Bad { fault, checked: verifier.size() });
            }
        }
        let want = next.peek().map_or(PAGE, |h| u32::try_from(h.size - verifier.size()).unwrap_or(PAGE).min(PAGE));
        let page = store.audit_log(verifier.size(), want).await?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            if let Err(fault) = verifier.push(e.seq, &e.record, &e.leaf_hash) {
                return Ok(Verdict::Bad { fault, checked: verifier.size() });
            }
        }
        progress(verifier.size(), head.size);
    }
    if let Some(h) = next.next() {
        let fault = LogFault::Truncated { size: verifier.size(), head: h.size };
        return Ok(Verdict::Bad { fault, checked: verifier.size() });
    }
    Ok(match verifier.finish(head.size, &head_root) {
        Ok(()) => Verdict::Good(Verified { size: verifier.size(), root: verifier.root() }),
        Err(fault) => Verdict::Bad { fault, checked: verifier.size() },
    })
}
