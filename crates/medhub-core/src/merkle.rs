//! The Merkle tree behind the tamper-evident audit log: RFC 9162 (Certificate Transparency
//! 2.0) section 2.1 over SHA-256, as pure functions.
//!
//! Each audit record is a leaf. The root of the first `n` leaves, signed by the server, is a
//! tree head. An inclusion proof shows that a record is in a signed tree. A consistency proof
//! shows that a later tree extends an earlier one, so nothing before it was removed or
//! rewritten. Leaf and node hashing are the same as RFC 6962's, so Certificate Transparency
//! tools can check medhub's proofs.
//!
//! There are three ways in, one for each kind of caller:
//!
//! - [`root`], [`inclusion_proof`] and [`consistency_proof`] take every leaf hash in memory.
//!   They are for tests and small exports.
//! - [`Tree`] takes leaves one at a time and keeps only the roots of its complete subtrees (at
//!   most 64). A verifier streaming a million leaves out of a database gets the root at every
//!   size it passes in one O(n) pass with O(log n) memory. It can stop and carry on later from
//!   [`Tree::frontier`].
//! - [`inclusion_plan`] and [`consistency_plan`] name the complete subtrees a proof is made of.
//!   A store that keeps subtree hashes can then make a proof without reading every leaf; see
//!   [`ProofPlan`].
//!
//! [`verify_inclusion`] and [`verify_consistency`] follow the RFC's verification algorithms
//! step by step. The comments give the RFC's step numbers.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// A SHA-256 hash: of a leaf, of an interior node, or the root of a tree.
pub type Hash = [u8; 32];

/// Why a proof was refused or could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is out of range for a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof was asked for, or offered, from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
    /// The proof has more or fewer hashes than the proof for these sizes and index has.
    #[error("wrong proof length: {actual} hashes where {expected} were expected")]
    WrongProofLength { expected: usize, actual: usize },
    /// The hashes recomputed from the proof do not match the root given for a tree of
    /// `tree_size` leaves. In a consistency proof a wrong old root can surface as a mismatch
    /// of the new one, because the old root is part of the new tree's path.
    #[error("root mismatch: the proof does not lead to the given root of the tree of {tree_size} leaves")]
    RootMismatch { tree_size: u64 },
    /// A saved frontier does not have one hash for each bit set in its tree size.
    #[error("a tree of {size} leaves has a frontier of {expected} hashes, not {actual}")]
    WrongFrontierLength { size: u64, expected: usize, actual: usize },
}

/// The hash of a leaf: SHA-256(0x00 || data) (RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(data).finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right) (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// The Merkle Tree Hash MTH of the tree with these leaf hashes (RFC 9162 §2.1.1). The empty
/// tree's root is SHA-256 of the empty string.
///
/// This is the RFC's recursive definition, written out as it stands; [`Tree`] computes the
/// same roots incrementally, and the tests check each against the other.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaves.split_at(split(leaves.len() as u64) as usize);
            node_hash(&root(left), &root(right))
        }
    }
}

/// An append-only Merkle tree that keeps only its frontier: the roots of the complete
/// subtrees its leaves divide into, one for each bit set in its size, largest first. That is
/// at most 64 hashes whatever the size.
///
/// [`Tree::push`] costs one node hash on average. [`Tree::root`] costs one node hash for each
/// bit set in the size, beyond the first. To check every signed tree head of an exported log in
/// one pass, push the leaves in order and compare the root whenever the size reaches a signed
/// head's size:
///
/// ```
/// use medhub_core::merkle::{leaf_hash, root, Tree};
///
/// let leaves: Vec<_> = (0u32..10).map(|i| leaf_hash(&i.to_be_bytes())).collect();
/// // Signed tree heads, in increasing size: (size, root).
/// let heads = [(3, root(&leaves[..3])), (8, root(&leaves[..8])), (10, root(&leaves))];
///
/// let mut tree = Tree::new();
/// let mut pending = heads.iter().peekable();
/// for leaf in &leaves {
///     tree.push(*leaf);
///     while let Some((_, head_root)) = pending.next_if(|(size, _)| *size == tree.size()) {
///         assert_eq!(tree.root(), *head_root);
///     }
/// }
/// assert!(pending.next().is_none());
/// ```
///
/// A verifier that stops can save [`Tree::size`] and [`Tree::frontier`] and later carry on
/// with [`Tree::from_frontier`]. A frontier read back from storage is only as trustworthy as
/// the storage. Compare its [`Tree::root`] with the signed head of that size before relying on
/// it; if they match, the frontier is the one that head signs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    size: u64,
    /// Invariant: `frontier.len() == size.count_ones()`.
    frontier: Vec<Hash>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of `size` leaves, resumed from its [`Tree::frontier`].
    pub fn from_frontier(size: u64, frontier: Vec<Hash>) -> Result<Self, ProofError> {
        let expected = size.count_ones() as usize;
        if frontier.len() != expected {
            return Err(ProofError::WrongFrontierLength { size, expected, actual: frontier.len() });
        }
        Ok(Tree { size, frontier })
    }

    /// The complete subtrees whose roots make up the frontier of a tree of `size` leaves, in
    /// frontier order. A store that keeps subtree hashes can rebuild a [`Tree`] of any size
    /// from these without reading its leaves.
    pub fn frontier_subtrees(size: u64) -> Vec<Subtree> {
        let mut subtrees = Vec::with_capacity(size.count_ones() as usize);
        complete_subtrees(0..size, &mut subtrees);
        subtrees
    }

    /// Appends a leaf hash (see [`leaf_hash`]).
    ///
    /// A log never reaches 2^64 - 1 leaves (at a million a second that takes 584,000 years),
    /// so the size is not checked for overflow.
    pub fn push(&mut self, leaf: Hash) {
        // Each trailing one bit of the size is a complete subtree that ends just before the new
        // leaf. Their sizes are 1, 2, 4, ... from the right, so the new leaf joins them all
        // into one subtree twice the size of the largest.
        let joined = self.size.trailing_ones() as usize;
        let kept = self.frontier.len() - joined;
        let node = self.frontier.drain(kept..).rev().fold(leaf, |right, left| node_hash(&left, &right));
        self.frontier.push(node);
        self.size += 1;
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree as it is now.
    pub fn root(&self) -> Hash {
        fold_right(&self.frontier)
    }

    /// The roots of the complete subtrees the leaves divide into, largest (leftmost) first:
    /// the subtrees of [`Tree::frontier_subtrees`] for this size.
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }
}

/// A complete subtree: the `2^level` leaves starting at leaf `index * 2^level`.
///
/// Its hash never changes once its last leaf is in the log. A store can therefore keep it
/// under the key `(level, index)` when it completes, and never update it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subtree {
    level: u8,
    index: u64,
}

impl Subtree {
    /// The height of the subtree: 0 for a single leaf.
    pub fn level(self) -> u8 {
        self.level
    }

    /// The position of the subtree among the subtrees of its level, from the left.
    pub fn index(self) -> u64 {
        self.index
    }

    /// The indexes of the leaves the subtree covers.
    pub fn leaves(self) -> Range<u64> {
        let start = self.index << self.level;
        start..start + (1 << self.level)
    }
}

/// A proof, described as the complete subtrees its hashes are made of.
///
/// Each proof hash is the root of one node of the RFC's tree. Most of those nodes are complete
/// subtrees. A node on the right edge of the tree may not be: its hash comes from the complete
/// subtrees it divides into, folded from right to left. A proof needs at most two subtree
/// hashes per level of the tree, and the same subtree never appears twice.
///
/// This is how a store that keeps subtree hashes will make a proof:
///
/// 1. `let plan = inclusion_plan(index, size)?` (or [`consistency_plan`]);
/// 2. read the hashes of `plan.subtrees()` in one query. On PostgreSQL that is one `UNNEST` of
///    levels and indexes; on SQLite it is a few indexed reads on a reader thread. Any subtree
///    it did not keep is computed from the level below, or from the leaves;
/// 3. `plan.resolve(|subtree| found.get(&subtree).copied().ok_or(...))`.
///
/// `resolve` takes a closure that can fail, so a synchronous store can also read each subtree
/// as it is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofPlan {
    /// The subtrees to look up, grouped by proof hash, in proof order.
    subtrees: Vec<Subtree>,
    /// Where each proof hash's group of `subtrees` ends.
    ends: Vec<usize>,
}

impl ProofPlan {
    /// The complete subtrees whose hashes the proof needs, in the order `resolve` asks for
    /// them.
    pub fn subtrees(&self) -> &[Subtree] {
        &self.subtrees
    }

    /// The proof, from the hash of each subtree in [`ProofPlan::subtrees`]. It is the same
    /// proof that [`inclusion_proof`] or [`consistency_proof`] makes from all the leaves.
    pub fn resolve<E>(&self, mut subtree_hash: impl FnMut(Subtree) -> Result<Hash, E>) -> Result<Vec<Hash>, E> {
        let hashes = self.subtrees.iter().map(|subtree| subtree_hash(*subtree)).collect::<Result<Vec<_>, E>>()?;
        let mut start = 0;
        Ok(self
            .ends
            .iter()
            .map(|&end| {
                let node = fold_right(&hashes[start..end]);
                start = end;
                node
            })
            .collect())
    }
}

/// The inclusion proof PATH(index, D[n]) for the leaf at `index` of the tree with these leaf
/// hashes (RFC 9162 §2.1.3.1), from the leaf's sibling up to the root's child.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    check_index(index, size)?;
    Ok(inclusion_path(index, size).into_iter().map(|node| range_root(leaves, node)).collect())
}

/// The subtrees of the inclusion proof for the leaf at `index` of a tree of `size` leaves.
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, ProofError> {
    check_index(index, size)?;
    Ok(plan(inclusion_path(index, size)))
}

/// The consistency proof PROOF(old_size, D[n]) between the first `old_size` leaves and all of
/// them (RFC 9162 §2.1.4.1). When `old_size` is 0 or the number of leaves, the proof is
/// empty: there is nothing to prove.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let nodes = consistency_nodes(old_size, leaves.len() as u64)?;
    Ok(nodes.into_iter().map(|node| range_root(leaves, node)).collect())
}

/// The subtrees of the consistency proof between trees of `old_size` and `new_size` leaves.
pub fn consistency_plan(old_size: u64, new_size: u64) -> Result<ProofPlan, ProofError> {
    Ok(plan(consistency_nodes(old_size, new_size)?))
}

/// Checks that `proof` shows the leaf hash `leaf` at `index` in the tree of `size` leaves whose
/// root is `root`, by the algorithm of RFC 9162 §2.1.3.2.
///
/// The proof binds `size` only as far as it shapes the leaf's path. For example, leaf 0's proof
/// in a tree of 3 leaves has the same shape as in a tree of 4. `size` and `root` must
/// therefore come together from one signed tree head.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    let wrong_length =
        || ProofError::WrongProofLength { expected: inclusion_path(index, size).len(), actual: proof.len() };
    // 1. Compare leaf_index against tree_size. If leaf_index >= tree_size, fail.
    check_index(index, size)?;
    // 2. Set fn to leaf_index and sn to tree_size - 1.
    let (mut f_n, mut s_n) = (index, size - 1);
    // 3. Set r to hash.
    let mut r = *leaf;
    // 4. For each value p in the inclusion_path array:
    for p in proof {
        // a. If sn is 0, then stop the iteration and fail the proof verification.
        if s_n == 0 {
            return Err(wrong_length());
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if f_n & 1 == 1 || f_n == s_n {
            // i. Set r to HASH(0x01 || p || r).
            r = node_hash(p, &r);
            // ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            //     LSB(fn) is set or fn is 0.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            // Otherwise: i. Set r to HASH(0x01 || r || p).
            r = node_hash(&r, p);
        }
        // c. Finally, right-shift both fn and sn one time.
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5. Compare sn to 0 and r against the root_hash. Both must be equal.
    if s_n != 0 {
        return Err(wrong_length());
    }
    if r != *root {
        return Err(ProofError::RootMismatch { tree_size: size });
    }
    Ok(())
}

/// Checks that `proof` shows the tree of `new_size` leaves with root `new_root` extends the
/// tree of `old_size` leaves with root `old_root`, by the algorithm of RFC 9162 §2.1.4.2.
///
/// The RFC's algorithm covers 0 < old_size < new_size. The two trivial cases have empty proofs.
/// When the sizes are equal, the roots must be equal. When `old_size` is 0, `old_root` must be
/// the empty tree's root, and any new tree extends it. As with [`verify_inclusion`], the sizes
/// and roots must come in pairs from signed tree heads.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let (first, second) = (old_size, new_size);
    let wrong_length = || ProofError::WrongProofLength {
        expected: consistency_nodes(first, second).map_or(0, |nodes| nodes.len()),
        actual: proof.len(),
    };
    if first > second {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    if first == 0 || first == second {
        if !proof.is_empty() {
            return Err(wrong_length());
        }
        let expected_old_root = if first == 0 { empty_root() } else { *new_root };
        if *old_root != expected_old_root {
            return Err(ProofError::RootMismatch { tree_size: first });
        }
        return Ok(());
    }
    // 1. If consistency_path is an empty array, stop and fail the proof verification.
    if proof.is_empty() {
        return Err(wrong_length());
    }
    // 2. If first is an exact power of 2, then prepend first_hash to the consistency_path
    //    array.
    let prepended = first.is_power_of_two().then_some(old_root);
    let mut path = prepended.into_iter().chain(proof);
    // 3. Set fn to first - 1 and sn to second - 1.
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    // 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5. Set both fr and sr to the first value in the consistency_path array.
    let Some(&start) = path.next() else {
        return Err(wrong_length());
    };
    let (mut fr, mut sr) = (start, start);
    // 6. For each subsequent value c in the consistency_path array:
    for c in path {
        // a. If sn is 0, then stop the iteration and fail the proof verification.
        if s_n == 0 {
            return Err(wrong_length());
        }
        // b. If LSB(fn) is set, or if fn is equal to sn, then:
        if f_n & 1 == 1 || f_n == s_n {
            // i. Set fr to HASH(0x01 || c || fr). Set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            // ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            //     LSB(fn) is set or fn is 0.
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            // Otherwise: i. Set sr to HASH(0x01 || sr || c).
            sr = node_hash(&sr, c);
        }
        // c. Finally, right-shift both fn and sn one time.
        f_n >>= 1;
        s_n >>= 1;
    }
    // 7. Verify that fr equals first_hash, that sr equals second_hash, and that sn is 0.
    if s_n != 0 {
        return Err(wrong_length());
    }
    if fr != *old_root {
        return Err(ProofError::RootMismatch { tree_size: first });
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch { tree_size: second });
    }
    Ok(())
}

/// SHA-256 of the empty string: MTH({}) (RFC 9162 §2.1.1).
fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n`, for `n >= 2`: where the RFC splits a tree of
/// `n` leaves into its left and right subtrees.
fn split(n: u64) -> u64 {
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

fn check_index(index: u64, size: u64) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    Ok(())
}

/// The root of the leaves covered by consecutive complete subtrees, given the subtrees' roots
/// from left to right, when the subtrees are a node of the RFC's tree divided largest first
/// (as [`complete_subtrees`] divides one). The RFC splits that node into its first subtree and
/// the rest, so its hash folds from the right. Of no subtrees at all, it is the empty root.
fn fold_right(roots: &[Hash]) -> Hash {
    roots.iter().rev().copied().reduce(|right, left| node_hash(&left, &right)).unwrap_or_else(empty_root)
}

/// Appends the complete subtrees that cover `leaves`, largest first.
///
/// Every node of the RFC's tree starts at a multiple of the smallest power of two at least as
/// large as the node. Taking the largest power of two that fits each time therefore always
/// gives an aligned subtree, and the result is the node's own division.
fn complete_subtrees(leaves: Range<u64>, subtrees: &mut Vec<Subtree>) {
    let mut start = leaves.start;
    let mut remaining = leaves.end - leaves.start;
    while remaining > 0 {
        let level = u64::BITS - 1 - remaining.leading_zeros();
        subtrees.push(Subtree { level: level as u8, index: start >> level });
        start += 1 << level;
        remaining -= 1 << level;
    }
}

/// The nodes (as leaf ranges) whose hashes are PATH(index, D[size]), in proof order. Needs
/// `index < size`.
fn inclusion_path(index: u64, size: u64) -> Vec<Range<u64>> {
    /// PATH(m, D[leaves]), with `m` counted from the start of `leaves`.
    fn path(m: u64, leaves: Range<u64>, nodes: &mut Vec<Range<u64>>) {
        let n = leaves.end - leaves.start;
        // PATH(0, {d(0)}) = {}
        if n == 1 {
            return;
        }
        let k = split(n);
        let mid = leaves.start + k;
        if m < k {
            // PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            path(m, leaves.start..mid, nodes);
            nodes.push(mid..leaves.end);
        } else {
            // PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
            path(m - k, mid..leaves.end, nodes);
            nodes.push(leaves.start..mid);
        }
    }
    let mut nodes = Vec::new();
    path(index, 0..size, &mut nodes);
    nodes
}

/// The nodes (as leaf ranges) whose hashes are PROOF(old_size, D[new_size]), in proof order.
fn consistency_nodes(old_size: u64, new_size: u64) -> Result<Vec<Range<u64>>, ProofError> {
    /// SUBPROOF(m, D[leaves], b), with `m` counted from the start of `leaves`. `b` says whether
    /// D[0:m] is the whole old tree, whose root the verifier already has.
    fn subproof(m: u64, leaves: Range<u64>, b: bool, nodes: &mut Vec<Range<u64>>) {
        let n = leaves.end - leaves.start;
        if m == n {
            // SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
            if !b {
                nodes.push(leaves);
            }
            return;
        }
        let k = split(n);
        let mid = leaves.start + k;
        if m <= k {
            // SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            subproof(m, leaves.start..mid, b, nodes);
            nodes.push(mid..leaves.end);
        } else {
            // SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            subproof(m - k, mid..leaves.end, false, nodes);
            nodes.push(leaves.start..mid);
        }
    }
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    let mut nodes = Vec::new();
    // The RFC defines PROOF for 0 < m <= n; the empty tree needs no proof either.
    if old_size > 0 {
        subproof(old_size, 0..new_size, true, &mut nodes);
    }
    Ok(nodes)
}

fn range_root(leaves: &[Hash], node: Range<u64>) -> Hash {
    root(&leaves[node.start as usize..node.end as usize])
}

fn plan(nodes: Vec<Range<u64>>) -> ProofPlan {
    let mut subtrees = Vec::new();
    let mut ends = Vec::with_capacity(nodes.len());
    for node in nodes {
        complete_subtrees(node, &mut subtrees);
        ends.push(subtrees.len());
    }
    ProofPlan { subtrees, ends }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference tree of the Certificate Transparency test suites: the inputs of its
    /// eight leaves. They are published in google/certificate-transparency
    /// `cpp/merkletree/merkle_tree_test.cc` (`kInputs`) and transparency-dev/merkle
    /// `testonly/constants.go` (`LeafInputs`).
    const CT_INPUTS: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

    /// The roots of the reference tree's first 0..=8 leaves. They are published as
    /// `kSHA256EmptyTreeHash` and `kSHA256Roots` in `merkle_tree_test.cc`, and as
    /// `RootHashes` in transparency-dev/merkle `testonly/constants.go`. A Python hashlib script
    /// written from the RFC's definitions gave the same values.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// The hash of every complete subtree of the reference tree, by level and index. They are
    /// published as `NodeHashes` in transparency-dev/merkle `testonly/constants.go`.
    const CT_NODES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];

    fn h(hex: &str) -> Hash {
        bytes(hex).try_into().unwrap()
    }

    fn bytes(hex: &str) -> Vec<u8> {
        assert_eq!(hex.len() % 2, 0, "{hex}");
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    fn hashes(hexes: &[&str]) -> Vec<Hash> {
        hexes.iter().map(|hex| h(hex)).collect()
    }

    fn ct_leaves() -> Vec<Hash> {
        CT_INPUTS.iter().map(|input| leaf_hash(&bytes(input))).collect()
    }

    /// Distinct leaves for the exhaustive tests.
    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn subtree_root(leaves: &[Hash], subtree: Subtree) -> Hash {
        range_root(leaves, subtree.leaves())
    }

    fn flipped(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out[bit / 8 % 32] ^= 1 << (bit % 8);
        out
    }

    #[test]
    fn hashes_match_the_rfc6962_hasher_vectors() {
        // transparency-dev/merkle rfc6962/rfc6962_test.go.
        assert_eq!(empty_root(), h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        assert_eq!(root(&[]), empty_root());
        assert_eq!(leaf_hash(b""), h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"));
        assert_eq!(leaf_hash(b"L123456"), h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"));
        // The node vector there hashes 0x01 || "N123" || "N456", which are not 32-byte
        // hashes; the reference tree's nodes below check node_hash instead.
        let nodes: Vec<Vec<Hash>> = CT_NODES.iter().map(|level| hashes(level)).collect();
        for pair in nodes.windows(2) {
            let (below, level) = (&pair[0], &pair[1]);
            for (index, node) in level.iter().enumerate() {
                assert_eq!(node_hash(&below[2 * index], &below[2 * index + 1]), *node);
            }
        }
        assert_eq!(nodes[0], ct_leaves());
    }

    #[test]
    fn roots_match_the_ct_reference_tree() {
        let leaves = ct_leaves();
        for (size, expected) in CT_ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..size]), h(expected), "size {size}");
        }
    }

    #[test]
    fn tree_matches_the_ct_reference_tree_and_its_compact_ranges() {
        // Frontiers as (level, index) into CT_NODES: transparency-dev/merkle
        // testonly/constants.go, `CompactTrees`.
        let frontiers: [&[(usize, usize)]; 9] = [
            &[],
            &[(0, 0)],
            &[(1, 0)],
            &[(1, 0), (0, 2)],
            &[(2, 0)],
            &[(2, 0), (0, 4)],
            &[(2, 0), (1, 2)],
            &[(2, 0), (1, 2), (0, 6)],
            &[(3, 0)],
        ];
        let mut tree = Tree::new();
        for (size, leaf) in std::iter::once(None).chain(ct_leaves().into_iter().map(Some)).enumerate() {
            if let Some(leaf) = leaf {
                tree.push(leaf);
            }
            assert_eq!(tree.size(), size as u64);
            assert_eq!(tree.root(), h(CT_ROOTS[size]), "size {size}");
            let expected: Vec<Hash> = frontiers[size].iter().map(|&(level, index)| h(CT_NODES[level][index])).collect();
            assert_eq!(tree.frontier(), expected, "size {size}");
            let positions: Vec<(usize, usize)> = Tree::frontier_subtrees(size as u64)
                .iter()
                .map(|subtree| (subtree.level() as usize, subtree.index() as usize))
                .collect();
            assert_eq!(positions, frontiers[size], "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_ct_vectors() {
        // `kSHA256Paths` in google/certificate-transparency cpp/merkletree/merkle_tree_test.cc,
        // whose leaf numbers count from 1; here indexes count from 0.
        let vectors: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let leaves = ct_leaves();
        for (index, size, expected) in vectors {
            let proof = inclusion_proof(&leaves[..size as usize], index).unwrap();
            assert_eq!(proof, hashes(expected), "index {index} size {size}");
            let root = h(CT_ROOTS[size as usize]);
            assert_eq!(verify_inclusion(&leaves[index as usize], index, size, &proof, &root), Ok(()));
        }
    }

    #[test]
    fn consistency_proofs_match_the_ct_vectors() {
        // `kSHA256Proofs` in google/certificate-transparency cpp/merkletree/merkle_tree_test.cc,
        // and (4, 8), whose one hash is the published node MTH(D[4:8]) (`NodeHashes` level 2,
        // index 1): an old size that is a power of two, so the old root is not in the proof.
        let vectors: [(u64, u64, &[&str]); 5] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (4, 8, &["6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
        ];
        let leaves = ct_leaves();
        for (old_size, new_size, expected) in vectors {
            let proof = consistency_proof(&leaves[..new_size as usize], old_size).unwrap();
            assert_eq!(proof, hashes(expected), "{old_size} -> {new_size}");
            let (old_root, new_root) = (h(CT_ROOTS[old_size as usize]), h(CT_ROOTS[new_size as usize]));
            assert_eq!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof), Ok(()));
        }
    }

    #[test]
    fn plans_resolved_from_the_published_node_hashes_give_the_same_proofs() {
        // Every complete subtree of the reference tree is published, so a plan for any tree
        // within it resolves from the table alone, as a store would resolve it.
        let leaves = ct_leaves();
        let lookup = |subtree: Subtree| {
            CT_NODES
                .get(subtree.level() as usize)
                .and_then(|level| level.get(subtree.index() as usize))
                .map(|hex| h(hex))
                .ok_or(subtree)
        };
        for size in 1..=8u64 {
            let tree = &leaves[..size as usize];
            for index in 0..size {
                assert_eq!(
                    inclusion_plan(index, size).unwrap().resolve(lookup),
                    Ok(inclusion_proof(tree, index).unwrap())
                );
            }
            for old_size in 0..=size {
                assert_eq!(
                    consistency_plan(old_size, size).unwrap().resolve(lookup),
                    Ok(consistency_proof(tree, old_size).unwrap())
                );
            }
        }
    }

    #[test]
    fn every_inclusion_proof_up_to_64_leaves_verifies_and_no_tampered_one_does() {
        const MAX: u64 = 64;
        let all = leaves(MAX);
        let roots: Vec<Hash> = (0..=MAX as usize).map(|n| root(&all[..n])).collect();
        for size in 1..=MAX {
            let tree = &all[..size as usize];
            let tree_root = roots[size as usize];
            for index in 0..size {
                let at = format!("index {index} of {size}");
                let leaf = tree[index as usize];
                let proof = inclusion_proof(tree, index).unwrap();
                let len = proof.len();
                assert_eq!(verify_inclusion(&leaf, index, size, &proof, &tree_root), Ok(()), "{at}");

                // The plan, resolved from subtree hashes, gives the same proof.
                let plan = inclusion_plan(index, size).unwrap();
                assert!(plan.subtrees().iter().all(|s| s.leaves().end <= size), "{at}");
                assert_eq!(plan.resolve(|s| Ok::<_, ()>(subtree_root(tree, s))), Ok(proof.clone()), "{at}");

                // A flipped bit in any proof element, or in the leaf.
                for element in 0..len {
                    let mut tampered = proof.clone();
                    tampered[element] = flipped(&tampered[element], element * 37 + index as usize);
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &tampered, &tree_root),
                        Err(ProofError::RootMismatch { tree_size: size }),
                        "{at}, element {element}"
                    );
                }
                assert_eq!(
                    verify_inclusion(&flipped(&leaf, 5), index, size, &proof, &tree_root),
                    Err(ProofError::RootMismatch { tree_size: size }),
                    "{at}"
                );

                // Any other index in the tree, and the first one past its end.
                for other in (0..size).filter(|&other| other != index) {
                    assert!(verify_inclusion(&leaf, other, size, &proof, &tree_root).is_err(), "{at} as {other}");
                }
                assert_eq!(
                    verify_inclusion(&leaf, size, size, &proof, &tree_root),
                    Err(ProofError::IndexOutOfRange { index: size, size })
                );

                // Any other size, with that tree's own root (a size and its root come together
                // from one signed tree head).
                for other in (1..=MAX).filter(|&other| other != size && index < other) {
                    assert!(
                        verify_inclusion(&leaf, index, other, &proof, &roots[other as usize]).is_err(),
                        "{at} as size {other}"
                    );
                }

                // Truncated and extended.
                if let Some((_, truncated)) = proof.split_last() {
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, truncated, &tree_root),
                        Err(ProofError::WrongProofLength { expected: len, actual: len - 1 }),
                        "{at}"
                    );
                }
                for extra in [tree_root, leaf, empty_root()] {
                    let mut extended = proof.clone();
                    extended.push(extra);
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &extended, &tree_root),
                        Err(ProofError::WrongProofLength { expected: len, actual: len + 1 }),
                        "{at}"
                    );
                }

                // A wrong root: the previous tree's, and one with a bit flipped.
                for wrong in [roots[size as usize - 1], flipped(&tree_root, 200)] {
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &proof, &wrong),
                        Err(ProofError::RootMismatch { tree_size: size }),
                        "{at}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_64_leaves_verifies_and_no_tampered_one_does() {
        const MAX: u64 = 64;
        let all = leaves(MAX);
        let roots: Vec<Hash> = (0..=MAX as usize).map(|n| root(&all[..n])).collect();
        for new_size in 1..=MAX {
            let tree = &all[..new_size as usize];
            let new_root = roots[new_size as usize];
            for old_size in 0..=new_size {
                let at = format!("{old_size} -> {new_size}");
                let old_root = roots[old_size as usize];
                let proof = consistency_proof(tree, old_size).unwrap();
                let len = proof.len();
                assert_eq!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof), Ok(()), "{at}");
                // Only the trivial cases have empty proofs.
                assert_eq!(proof.is_empty(), old_size == 0 || old_size == new_size, "{at}");

                // The plan, resolved from subtree hashes, gives the same proof.
                let plan = consistency_plan(old_size, new_size).unwrap();
                assert!(plan.subtrees().iter().all(|s| s.leaves().end <= new_size), "{at}");
                assert_eq!(plan.resolve(|s| Ok::<_, ()>(subtree_root(tree, s))), Ok(proof.clone()), "{at}");

                // A flipped bit in any proof element.
                for element in 0..len {
                    let mut tampered = proof.clone();
                    tampered[element] = flipped(&tampered[element], element * 37 + old_size as usize);
                    assert!(
                        matches!(
                            verify_consistency(old_size, new_size, &old_root, &new_root, &tampered),
                            Err(ProofError::RootMismatch { .. })
                        ),
                        "{at}, element {element}"
                    );
                }

                // Truncated and extended.
                if let Some((_, truncated)) = proof.split_last() {
                    assert_eq!(
                        verify_consistency(old_size, new_size, &old_root, &new_root, truncated),
                        Err(ProofError::WrongProofLength { expected: len, actual: len - 1 }),
                        "{at}"
                    );
                }
                for extra in [old_root, new_root, empty_root()] {
                    let mut extended = proof.clone();
                    extended.push(extra);
                    assert_eq!(
                        verify_consistency(old_size, new_size, &old_root, &new_root, &extended),
                        Err(ProofError::WrongProofLength { expected: len, actual: len + 1 }),
                        "{at}"
                    );
                }

                // A wrong old root: with a bit flipped, and the new tree's.
                let mut wrong_old_roots = vec![flipped(&old_root, 100)];
                if old_size != new_size {
                    wrong_old_roots.push(new_root);
                }
                for wrong in wrong_old_roots {
                    assert!(
                        matches!(
                            verify_consistency(old_size, new_size, &wrong, &new_root, &proof),
                            Err(ProofError::RootMismatch { .. })
                        ),
                        "{at}"
                    );
                }

                if old_size == 0 {
                    // The empty tree is a prefix of every tree: the new root is not checked,
                    // and there is no proof to tamper with.
                    continue;
                }

                // A wrong new root: with a bit flipped, and the previous tree's.
                for wrong in [flipped(&new_root, 100), roots[new_size as usize - 1]] {
                    assert!(
                        matches!(
                            verify_consistency(old_size, new_size, &old_root, &wrong, &proof),
                            Err(ProofError::RootMismatch { .. })
                        ),
                        "{at}"
                    );
                }

                // Any other new size, with that tree's own root.
                for other in (old_size..=MAX).filter(|&other| other != new_size) {
                    assert!(
                        verify_consistency(old_size, other, &old_root, &roots[other as usize], &proof).is_err(),
                        "{at} as -> {other}"
                    );
                }
                assert_eq!(
                    verify_consistency(new_size + 1, new_size, &old_root, &new_root, &proof),
                    Err(ProofError::SizesOutOfOrder { old_size: new_size + 1, new_size })
                );

                if old_size == new_size {
                    // An empty proof binds no old size: the empty tree (size 0) is consistent
                    // with this one too, and that is right.
                    continue;
                }

                // Any other old size, with that tree's own root.
                for other in (0..=new_size).filter(|&other| other != old_size) {
                    assert!(
                        verify_consistency(other, new_size, &roots[other as usize], &new_root, &proof).is_err(),
                        "{at} as {other} ->"
                    );
                }
            }
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let all = leaves(8);
        let roots: Vec<Hash> = (0..=8).map(|n| root(&all[..n])).collect();

        // old_size == new_size: no proof, and the roots must be equal.
        assert_eq!(consistency_proof(&all[..5], 5), Ok(vec![]));
        assert_eq!(verify_consistency(5, 5, &roots[5], &roots[5], &[]), Ok(()));
        assert_eq!(verify_consistency(5, 5, &roots[4], &roots[5], &[]), Err(ProofError::RootMismatch { tree_size: 5 }));
        assert_eq!(
            verify_consistency(5, 5, &roots[5], &roots[5], &[roots[5]]),
            Err(ProofError::WrongProofLength { expected: 0, actual: 1 })
        );

        // old_size == 0: no proof; the old root must be the empty tree's, the new one is free.
        assert_eq!(consistency_proof(&all[..5], 0), Ok(vec![]));
        assert_eq!(consistency_proof(&[], 0), Ok(vec![]));
        assert_eq!(verify_consistency(0, 5, &empty_root(), &roots[5], &[]), Ok(()));
        assert_eq!(verify_consistency(0, 0, &empty_root(), &empty_root(), &[]), Ok(()));
        assert_eq!(verify_consistency(0, 5, &roots[1], &roots[5], &[]), Err(ProofError::RootMismatch { tree_size: 0 }));
        assert_eq!(
            verify_consistency(0, 5, &empty_root(), &roots[5], &[roots[1]]),
            Err(ProofError::WrongProofLength { expected: 0, actual: 1 })
        );

        // old_size a power of two: the old root is not in the proof (the verifier prepends
        // it), and a proof that includes it anyway is refused.
        for (old_size, new_size) in [(1, 2), (1, 5), (2, 3), (4, 8), (4, 7), (2, 8)] {
            let proof = consistency_proof(&all[..new_size], old_size as u64).unwrap();
            assert!(!proof.contains(&roots[old_size]), "{old_size} -> {new_size}");
            assert_eq!(
                verify_consistency(old_size as u64, new_size as u64, &roots[old_size], &roots[new_size], &proof),
                Ok(())
            );
            let with_old_root: Vec<Hash> = std::iter::once(roots[old_size]).chain(proof.iter().copied()).collect();
            assert_eq!(
                verify_consistency(
                    old_size as u64,
                    new_size as u64,
                    &roots[old_size],
                    &roots[new_size],
                    &with_old_root
                ),
                Err(ProofError::WrongProofLength { expected: proof.len(), actual: proof.len() + 1 })
            );
        }
        assert_eq!(consistency_proof(&all[..8], 4), Ok(vec![root(&all[4..8])]));

        // Sizes out of order.
        assert_eq!(consistency_proof(&all[..3], 4), Err(ProofError::SizesOutOfOrder { old_size: 4, new_size: 3 }));
        assert_eq!(consistency_plan(4, 3), Err(ProofError::SizesOutOfOrder { old_size: 4, new_size: 3 }));
        assert_eq!(
            verify_consistency(4, 3, &roots[4], &roots[3], &[]),
            Err(ProofError::SizesOutOfOrder { old_size: 4, new_size: 3 })
        );
    }

    #[test]
    fn inclusion_edge_cases() {
        let all = leaves(3);
        assert_eq!(inclusion_proof(&[], 0), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
        assert_eq!(inclusion_proof(&all, 3), Err(ProofError::IndexOutOfRange { index: 3, size: 3 }));
        assert_eq!(inclusion_plan(0, 0), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
        assert_eq!(
            verify_inclusion(&all[0], 0, 0, &[], &empty_root()),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
        // A one-leaf tree: the proof is empty and the root is the leaf.
        assert_eq!(inclusion_proof(&all[..1], 0), Ok(vec![]));
        assert_eq!(verify_inclusion(&all[0], 0, 1, &[], &all[0]), Ok(()));
        assert_eq!(verify_inclusion(&all[1], 0, 1, &[], &all[0]), Err(ProofError::RootMismatch { tree_size: 1 }));
    }

    #[test]
    fn the_tree_size_is_bound_by_the_tree_head_not_by_the_proof() {
        // RFC 9162's verifier uses the size only to shape the path. Leaf 0 has the same path
        // shape in trees of 3 and 4 leaves, so a proof against the 3-leaf root also passes when
        // the size is given as 4. Sizes and roots must therefore come in signed pairs. With
        // the 4-leaf tree's own root, the same proof fails.
        let all = leaves(4);
        let proof = inclusion_proof(&all[..3], 0).unwrap();
        assert_eq!(verify_inclusion(&all[0], 0, 4, &proof, &root(&all[..3])), Ok(()));
        assert_eq!(
            verify_inclusion(&all[0], 0, 4, &proof, &root(&all)),
            Err(ProofError::RootMismatch { tree_size: 4 })
        );
    }

    #[test]
    fn tree_agrees_with_root_at_every_size_up_to_1000() {
        let all = leaves(1000);
        let mut tree = Tree::new();
        assert_eq!(tree.root(), root(&[]));
        for (n, leaf) in all.iter().enumerate() {
            tree.push(*leaf);
            let size = n as u64 + 1;
            assert_eq!(tree.size(), size);
            assert_eq!(tree.root(), root(&all[..=n]), "size {size}");
            assert_eq!(tree.frontier().len(), size.count_ones() as usize, "size {size}");
        }
    }

    #[test]
    fn tree_resumes_from_its_frontier_at_every_size() {
        const MAX: u64 = 160;
        let all = leaves(MAX);
        let roots: Vec<Hash> = (0..=MAX as usize).map(|n| root(&all[..n])).collect();
        let mut tree = Tree::new();
        for size in 0..=MAX {
            // The frontier is made of the subtrees frontier_subtrees names.
            let from_subtrees: Vec<Hash> =
                Tree::frontier_subtrees(size).into_iter().map(|s| subtree_root(&all, s)).collect();
            assert_eq!(tree.frontier(), from_subtrees, "size {size}");

            let mut resumed = Tree::from_frontier(size, tree.frontier().to_vec()).unwrap();
            assert_eq!(resumed, tree);
            for (n, leaf) in all.iter().enumerate().skip(size as usize) {
                resumed.push(*leaf);
                assert_eq!(resumed.root(), roots[n + 1], "resumed at {size}, size {}", n + 1);
            }
            if let Some(leaf) = all.get(size as usize) {
                tree.push(*leaf);
            }
        }
        assert_eq!(
            Tree::from_frontier(5, vec![roots[4]]),
            Err(ProofError::WrongFrontierLength { size: 5, expected: 2, actual: 1 })
        );
        assert_eq!(
            Tree::from_frontier(0, vec![roots[1]]),
            Err(ProofError::WrongFrontierLength { size: 0, expected: 0, actual: 1 })
        );
    }

    #[test]
    fn proofs_in_trees_of_up_to_2_pow_64_leaves_verify() {
        // In a tree whose leaves are all the same, every complete subtree of a level has the
        // same hash. That makes trees of any size computable, so this checks the index
        // arithmetic of the plans, Tree::from_frontier and both verifiers up to u64::MAX leaves.
        let level_hash: Vec<Hash> =
            std::iter::successors(Some(leaf_hash(b"same")), |h| Some(node_hash(h, h))).take(64).collect();
        let subtree = |s: Subtree| Ok::<_, ()>(level_hash[s.level() as usize]);
        let root_of = |size: u64| {
            let frontier = Tree::frontier_subtrees(size).into_iter().map(|s| level_hash[s.level() as usize]).collect();
            Tree::from_frontier(size, frontier).unwrap().root()
        };
        // The shortcut is sound: it agrees with root() where root() can be computed.
        for size in 0..=100 {
            assert_eq!(root_of(size), root(&vec![level_hash[0]; size as usize]), "size {size}");
        }

        let sizes = [1, 2, 3, 1000, (1 << 32) + 1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, u64::MAX - 1, u64::MAX];
        for size in sizes {
            let size_root = root_of(size);
            for index in [0, 1, size / 2, size / 3, size.saturating_sub(2), size - 1].into_iter().filter(|&i| i < size)
            {
                let plan = inclusion_plan(index, size).unwrap();
                assert!(plan.subtrees().len() <= 2 * 64, "{index} of {size}");
                let proof = plan.resolve(subtree).unwrap();
                assert!(proof.len() <= 64);
                assert_eq!(
                    verify_inclusion(&level_hash[0], index, size, &proof, &size_root),
                    Ok(()),
                    "{index} of {size}"
                );
            }
            for old_size in [1, 2, 3, size / 2, 1 << 62, size - 1, size].into_iter().filter(|&o| o >= 1 && o <= size) {
                let plan = consistency_plan(old_size, size).unwrap();
                assert!(plan.subtrees().len() <= 2 * 64, "{old_size} -> {size}");
                let proof = plan.resolve(subtree).unwrap();
                assert_eq!(
                    verify_consistency(old_size, size, &root_of(old_size), &size_root, &proof),
                    Ok(()),
                    "{old_size} -> {size}"
                );
            }
        }
    }
}
