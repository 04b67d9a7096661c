//! Helpers shared by the offline tests.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/upstream`, if present. Tests that need it skip (and say so) when it is absent.
pub fn upstream() -> Option<PathBuf> {
    let p = root().join("../shared/upstream");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared/upstream is absent; upstream-data assertions not run");
        None
    }
}

/// Reads an upstream file.
pub fn upstream_file(rel: &str) -> Option<Vec<u8>> {
    upstream().map(|u| std::fs::read(u.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

/// Writes files into a fresh evidence folder.
pub fn evidence(files: &[(&str, &[u8])]) -> (tempfile::TempDir, meshcheck::evidence::Evidence) {
    let dir = tempfile::tempdir().unwrap();
    for (rel, bytes) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let ev = meshcheck::evidence::Evidence::new(dir.path());
    (dir, ev)
}

/// Compares text with a golden file; `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing golden {} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the output; rerun with UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}
