//! The contract crate stays light: with its default features, `cargo tree -p executor-base
//! -e normal` lists at most 60 crates (issue #20). A new dependency, a feature turned on by
//! default, or a lock-file update that pulls a heavier tree fails here, not in a user's build.

use std::collections::BTreeSet;
use std::process::Command;

/// The limit #20 set for `cargo tree -p executor-base -e normal` (executor-base included).
const MAX_CRATES: usize = 60;

#[test]
fn the_contract_crate_with_default_features_lists_at_most_60_crates() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "executor-base",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        crates.iter().any(|c| c.starts_with("executor-base ")),
        "not a tree of executor-base: {crates:?}"
    );
    assert!(
        crates.len() <= MAX_CRATES,
        "executor-base's default features pull {} crates (at most {MAX_CRATES}): {crates:#?}",
        crates.len()
    );
    // The heavy parts are features, off by default.
    for heavy in [
        "reqwest ",
        "rusqlite ",
        "jsonwebtoken ",
        "rustls ",
        "tokio-postgres ",
    ] {
        assert!(
            !crates.iter().any(|c| c.starts_with(heavy)),
            "{heavy}is in the default tree"
        );
    }
}
