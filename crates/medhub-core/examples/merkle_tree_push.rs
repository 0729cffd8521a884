//! Times `merkle::Tree` pushing 1,000,000 leaf hashes and computing the root: the cost of a
//! verifier's pass over a million-record audit log, once the leaves are read. A benchmark,
//! not a test: it prints the time and asserts nothing about it.
//!
//! `cargo run --release -p medhub-core --example merkle_tree_push`
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use medhub_core::merkle::{Tree, leaf_hash};

const LEAVES: u64 = 1_000_000;

fn main() {
    // Leaf hashes are made before the clock starts: a verifier reads them from the store.
    let leaves: Vec<_> = (0..LEAVES).map(|i| leaf_hash(&i.to_be_bytes())).collect();

    let started = Instant::now();
    let mut tree = Tree::new();
    for leaf in black_box(&leaves) {
        tree.push(*leaf);
    }
    let root = black_box(tree.root());
    let elapsed = started.elapsed();

    let hex: String = root.iter().map(|byte| format!("{byte:02x}")).collect();
    println!("{} leaves pushed and root computed in {:.1} ms (root {hex})", tree.size(), elapsed.as_secs_f64() * 1e3);
}
