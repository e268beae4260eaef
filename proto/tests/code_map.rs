//! ARCHITECTURE.md's code map names every source file of every crate, so that a module added
//! without a word about where it belongs fails the build's tests instead of going unmapped.
//!
//! The map has one section per crate (`### \`node/\` (…)`). A file `src/a/b.rs` is named when
//! its crate's section mentions, in backticks, `a/b.rs`, `b.rs`, or (for a file in a
//! directory the section describes) the module name `b`; a directory module `src/a/mod.rs`
//! when it mentions `a/`. Crate roots (`lib.rs`, `main.rs`) and unit-test files (`tests.rs`,
//! `*_tests.rs`) need no entry. This lives in the proto crate only because every crate depends on it; it
//! reads the other crates' sources as files.

use std::path::{Path, PathBuf};

/// The workspace's crates, by directory.
const CRATES: [&str; 8] = [
    "proto",
    "raft-store",
    "node",
    "gateway",
    "client",
    "cli",
    "testkit",
    "chaos-tests",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the proto crate sits in the workspace")
        .to_path_buf()
}

/// The text of one crate's section of the code map.
fn section<'a>(doc: &'a str, dir: &str) -> Option<&'a str> {
    let heading = format!("### `{dir}/`");
    let start = doc.find(&heading)?;
    let rest = &doc[start + heading.len()..];
    let end = rest
        .find("\n### ")
        .into_iter()
        .chain(rest.find("\n## "))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `section` names the file at `rel` (relative to the crate's `src/`).
fn named(section: &str, rel: &Path) -> bool {
    let tick = |s: &str| section.contains(&format!("`{s}`"));
    let rel_s = rel.to_string_lossy().replace('\\', "/");
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let parent = rel.parent().map(|p| p.to_string_lossy().replace('\\', "/"));
    if name == "mod.rs" {
        return parent.is_some_and(|p| tick(&format!("{p}/")) || tick(&rel_s));
    }
    let stem = name.trim_end_matches(".rs");
    tick(&rel_s)
        || tick(&name)
        || parent.is_some_and(|p| !p.is_empty() && tick(&format!("{p}/")) && tick(stem))
}

#[test]
fn the_code_map_names_every_source_file() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let mut missing = Vec::new();
    let mut checked = 0;
    for dir in CRATES {
        let Some(text) = section(&doc, dir) else {
            missing.push(format!("{dir}/: no section `### `{dir}/`` in the code map"));
            continue;
        };
        let src = root.join(dir).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(!files.is_empty(), "no sources under {}", src.display());
        files.sort();
        for f in files {
            let rel = f.strip_prefix(&src).expect("under src").to_path_buf();
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if rel.parent() == Some(Path::new("")) && (name == "lib.rs" || name == "main.rs") {
                continue;
            }
            if name.ends_with("tests.rs") {
                continue;
            }
            checked += 1;
            if !named(text, &rel) {
                missing.push(format!("{dir}/src/{}", rel.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} files checked: is the layout what this test expects?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn a_file_counts_as_named_only_by_its_own_names() {
    let text = "- `transport/`: the Raft transport (`client.rs`, `probe`).\n- `cluster.rs`: joins.";
    assert!(named(text, Path::new("transport/client.rs")));
    assert!(named(text, Path::new("transport/probe.rs")));
    assert!(named(text, Path::new("cluster.rs")));
    assert!(named(text, Path::new("transport/mod.rs")));
    assert!(!named(text, Path::new("transport/server.rs")));
    assert!(!named(text, Path::new("probe.rs")));
    assert!(!named(text, Path::new("cluster/mod.rs")));
    assert!(!named(text, Path::new("placement.rs")));
}
