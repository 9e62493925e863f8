//! Shared helpers of the workspace-level tests.
#![allow(dead_code)]

pub mod golden;
pub mod sha256;
pub mod synthetic;
pub mod tempdir;

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

/// The default model, loaded, and its tokenizer.
pub fn model_and_tokenizer() -> (pagoda::cpu::model::Llama, pagoda::cpu::tokenizer::Tokenizer) {
    let model = pagoda::cpu::model::Llama::load(model_path()).expect("load the default model");
    let tok = pagoda::cpu::tokenizer::Tokenizer::from_gguf(&model.gguf()).expect("its tokenizer");
    (model, tok)
}

/// The Gemma 3 270M Q4_K_M model's path (`models/gemma-3-270m-q4_k_m.gguf`); panics with
/// instructions if it is missing (tests that need it must fail loudly, never pass silently).
pub fn gemma3_model_path() -> PathBuf {
    let p = root().join("models").join(GEMMA3_MODEL_FILE);
    assert!(
        p.exists(),
        "model file {} is missing: run scripts/fetch-model.sh gemma3 (or scripts/fetch-model.sh all)",
        p.display()
    );
    p
}

/// The file name `scripts/fetch-model.sh gemma3` writes under models/.
pub const GEMMA3_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// The property tests' proptest settings: `cases` cases unless `PROPTEST_CASES` says
/// otherwise (then proptest's own reading of it), and no failure files written into the tree.
pub fn proptest_config(cases: u32) -> proptest::prelude::ProptestConfig {
    use proptest::prelude::ProptestConfig;
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
    }
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

/// xorshift64*: the tests' one source of deterministic pseudo-random data (a failing case
/// replays from its seed).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo)
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}
