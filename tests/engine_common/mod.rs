//! Helpers shared by the engine tests (`tests/engine_*.rs`).
#![allow(dead_code)]

use pagoda::core::evict::KvPolicy;
use pagoda::cpu::engine::{Engine, EngineStats, RequestOutput, StepOutput};
use pagoda::cpu::model::{KvType, Llama, Session, SessionOptions};
use pagoda::cpu::sampler::argmax;

use crate::common::synthetic::{write_gguf, Meta};

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
    prompt_in(seed, len, 20_000).into_iter().map(|t| 200 + t).collect()
}

/// Steps `engine` to the end, checking its invariants after every step; returns the
/// outputs in finishing order and every step's output.
/// A request of `prompt_len` tokens that found `cached` of them in the prefix cache (`hits`
/// pages) prefilled only the rest: its output and the engine's statistics before and after it
/// say so.
pub fn assert_prefilled_only_suffix(
    done: &RequestOutput,
    before: &EngineStats,
    after: &EngineStats,
    prompt_len: usize,
    cached: usize,
    hits: u64,
) {
    assert_eq!(done.cached_prompt_tokens, cached);
    assert_eq!(after.prefill_skipped - before.prefill_skipped, cached as u64);
    assert_eq!(
        after.prefill_computed - before.prefill_computed,
        (prompt_len - cached) as u64,
        "the request must prefill only its suffix"
    );
    assert_eq!(after.prefix_hits - before.prefix_hits, hits);
}

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

/// Shape of [`tiny_llama`]: small enough that thousands of engine requests run in seconds.
#[derive(Clone, Copy, Debug)]
pub struct TinyShape {
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab: usize,
    pub context_length: usize,
}

impl Default for TinyShape {
    /// 2 layers, width 64, 4 query heads over 2 KV heads (GQA), 256 tokens, context 2048.
    fn default() -> Self {
        TinyShape {
            n_layers: 2,
            dim: 64,
            ffn_dim: 128,
            n_heads: 4,
            n_kv_heads: 2,
            vocab: 256,
            context_length: 2048,
        }
    }
}

/// A synthetic Llama (every weight F32, pseudo-random from `seed`), built as a GGUF file in
/// memory and loaded like a real one ([`ModelFile::from_vec`](pagoda::cpu::model_file::ModelFile::from_vec)).
/// Random weights give varied, deterministic greedy outputs: what the engine tests compare.
pub fn tiny_llama(shape: TinyShape, seed: u64) -> Llama {
    use pagoda::cpu::model_file::ModelFile;
    let bytes = tiny_llama_gguf(shape, seed);
    Llama::from_file(ModelFile::from_vec(bytes).expect("tiny GGUF")).expect("tiny llama")
}

/// The GGUF bytes of [`tiny_llama`].
pub fn tiny_llama_gguf(shape: TinyShape, seed: u64) -> Vec<u8> {
    let s = shape;
    let head_dim = s.dim / s.n_heads;
    let kv_dim = s.n_kv_heads * head_dim;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = |n: usize, scale: f32, offset: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                offset + scale * ((x >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            })
            .collect()
    };
    // (name, dims in ggml order [cols, rows], values)
    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    let mut matrix = |name: String, rows: usize, cols: usize, scale: f32| {
        (name, vec![cols as u64, rows as u64], rnd(rows * cols, scale, 0.0))
    };
    let w = 1.0 / (s.dim as f32).sqrt();
    tensors.push(matrix("token_embd.weight".into(), s.vocab, s.dim, 1.0));
    for l in 0..s.n_layers {
        let n = |k: &str| format!("blk.{l}.{k}.weight");
        tensors.push(matrix(n("attn_q"), s.dim, s.dim, w));
        tensors.push(matrix(n("attn_k"), kv_dim, s.dim, w));
        tensors.push(matrix(n("attn_v"), kv_dim, s.dim, w));
        tensors.push(matrix(n("attn_output"), s.dim, s.dim, w));
        tensors.push(matrix(n("ffn_gate"), s.ffn_dim, s.dim, w));
        tensors.push(matrix(n("ffn_up"), s.ffn_dim, s.dim, w));
        tensors.push(matrix(n("ffn_down"), s.dim, s.ffn_dim, 1.0 / (s.ffn_dim as f32).sqrt()));
    }
    let mut rnd2 = {
        let mut y = seed ^ 0xABCD_EF01;
        move |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    y = y.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    1.0 + 0.1 * ((y >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                })
                .collect()
        }
    };
    for l in 0..s.n_layers {
        tensors.push((format!("blk.{l}.attn_norm.weight"), vec![s.dim as u64], rnd2(s.dim)));
        tensors.push((format!("blk.{l}.ffn_norm.weight"), vec![s.dim as u64], rnd2(s.dim)));
    }
    tensors.push(("output_norm.weight".into(), vec![s.dim as u64], rnd2(s.dim)));
    tensors.push(matrix("output.weight".into(), s.vocab, s.dim, 4.0 * w));

    let arch = ("general.architecture".to_string(), Meta::Str("llama".into()));
    let counts = [
        ("llama.block_count", s.n_layers),
        ("llama.embedding_length", s.dim),
        ("llama.feed_forward_length", s.ffn_dim),
        ("llama.attention.head_count", s.n_heads),
        ("llama.attention.head_count_kv", s.n_kv_heads),
        ("llama.context_length", s.context_length),
    ]
    .map(|(k, v)| (k.to_string(), Meta::U32(v as u32)));
    let meta: Vec<(String, Meta)> = std::iter::once(arch).chain(counts).collect();
    write_gguf(&meta, &tensors)
}

/// `len` pseudo-random token ids below `vocab`, reproducible from `seed`.
pub fn prompt_in(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}
