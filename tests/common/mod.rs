//! Shared helpers of the workspace-level tests.
#![allow(dead_code)]

pub mod synthetic;

use std::path::{Path, PathBuf};

/// The workspace root (the facade package's manifest dir).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The default model's path; panics with instructions if it is missing (tests that need
/// the model must fail loudly, never pass silently).
pub fn model_path() -> PathBuf {
    let p = pagoda::cpu::model_file::workspace_model_path(root());
    assert!(
        p.exists(),
        "model file {} is missing: run scripts/fetch-model.sh (or set PAGODA_MODEL)",
        p.display()
    );
    p
}

/// Parses a JSON file under tests/data.
pub fn data_json(rel: &str) -> serde_json::Value {
    let p = root().join("tests/data").join(rel);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A JSON array of integers as u32s.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}
