//! Helpers shared by the engine tests (`tests/engine_*.rs`).
#![allow(dead_code)]

use pagoda::core::evict::KvPolicy;
use pagoda::cpu::engine::{Engine, RequestOutput, StepOutput};
use pagoda::cpu::model::{KvType, Llama, Session, SessionOptions};
use pagoda::cpu::sampler::argmax;

/// The unbatched reference: `steps` greedy tokens of `prompt` through a [`Session`] of its
/// own (prompt in one chunk, then one token at a time) with pages of `block_size` tokens
/// (the page size changes the order of attention's per-page sums, so it must match).
pub fn reference(model: &Llama, prompt: &[u32], steps: usize, block_size: usize) -> Vec<u32> {
    let opts = SessionOptions { block_size, ..SessionOptions::default() };
    let mut s = Session::new(model, opts).expect("session");
    greedy(&mut s, prompt, steps)
}

/// The reference under an evicting `policy`: `steps` greedy tokens of `prompt` alone in a
/// [`Session`] with the model's whole context (as the engine, whose percentage budgets are of
/// it), f16 pages of `block_size`; fails if the session never evicted (the comparison would
/// prove nothing). Also returns the session's table count (one per layer under PyramidKV).
pub fn evicting_reference(
    model: &Llama,
    policy: KvPolicy,
    block_size: usize,
    prompt: &[u32],
    steps: usize,
) -> (Vec<u32>, usize) {
    let opts = SessionOptions {
        n_ctx: model.config().context_length,
        kv_type: KvType::F16,
        block_size,
        ..SessionOptions::default()
    };
    let mut s = Session::with_policy(model, opts, policy).expect("session");
    let out = greedy(&mut s, prompt, steps);
    assert!(s.evicted_pages() > 0, "the reference never evicted: the test proves nothing");
    (out, s.tables().len())
}

/// `steps` greedy tokens of `prompt` through `s`: the prompt in one call, then one token at
/// a time.
pub fn greedy(s: &mut Session<'_>, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut logits = s.eval(prompt).expect("prompt");
    let mut out = Vec::new();
    for i in 0..steps {
        let t = argmax(&logits);
        out.push(t);
        if i + 1 < steps {
            logits = s.eval(&[t]).expect("decode");
        }
    }
    out
}

/// `len` pseudo-random token ids (ordinary vocabulary range), reproducible from `seed`.
pub fn prompt(seed: u64, len: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            200 + (x % 20_000) as u32
        })
        .collect()
}

/// Steps `engine` to the end, checking its invariants after every step; returns the
/// outputs in finishing order and every step's output.
pub fn run_checked(engine: &mut Engine<'_>) -> (Vec<RequestOutput>, Vec<StepOutput>) {
    let mut done = Vec::new();
    let mut steps = Vec::new();
    engine.check_invariants().expect("invariants before the first step");
    while engine.has_unfinished() {
        let out = engine.step().expect("step");
        engine.check_invariants().unwrap_or_else(|e| panic!("after step {}: {e}", steps.len()));
        done.extend(out.finished.iter().cloned());
        steps.push(out);
    }
    (done, steps)
}

/// Property-test cases: `PROPTEST_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
