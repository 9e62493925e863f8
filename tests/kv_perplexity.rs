//! Perplexity with each KV page format on the GPL-3 text at -c 512, against llama.cpp's
//! figures with quantized caches (tests/data/llamacpp/perplexity_kv_dev.json) and against
//! our own f32 cache. One test runs the formats one after another (about 20 s each in a
//! release build; running them in parallel would only fight over the cores).
//!
//! Targets:
//! - f16 within 1% of llama.cpp's f16 figure, q8_0 within 1% of llama.cpp's q8_0 figure;
//! - bf16 at most 1% above our f32;
//! - q8_0 (Hadamard-rotated rows) at most 0.3% above our f32, in exact and fast numerics
//!   (measured 2026-12-07 at AVX-512, where q8_0 pages are scored against q8_0-quantized
//!   queries: +0.02% exact, +0.12% fast; before the rotation the gap moved between +0.28%
//!   and +0.52% with the kernels' float order);
//! - q4_0 (the calibrated key offset and scales, rotated rows, least-squares block scales:
//!   `cpu/src/model/kv_transform.rs`) at most 3% above our f32 (measured +2.2%; +4.3% with
//!   the rotation alone, +22.6% before it; llama.cpp's q4_0 cache is +5.9% over its f16).
//!   Issue 18's target; fast numerics too (measured +2.8%).

mod common;

use pagoda::cpu::model::{KvType, Llama, Numerics, SessionOptions};
use pagoda::cpu::tokenizer::Tokenizer;

/// llama.cpp's PPL for `kv_type` from the reference file.
fn llamacpp_ppl(reference: &serde_json::Value, kv_type: &str) -> f64 {
    let runs = reference["runs"].as_array().expect("runs");
    let run = runs.iter().find(|r| r["kv_type"] == kv_type).expect("a run of that type");
    run["ppl"].as_f64().unwrap()
}

#[test]
fn gpl3_perplexity_at_ctx_512_per_kv_format() {
    let model =
        Llama::load(common::model_path()).expect("load model").with_numerics(Numerics::Exact);
    let tok = Tokenizer::from_gguf(&model.gguf()).expect("tokenizer");
    let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
    let tokens = tok.encode(&text, true, false);
    let reference = common::data_json("llamacpp/perplexity_kv_dev.json");

    let types = [KvType::F32, KvType::F16, KvType::Bf16, KvType::Q8_0, KvType::Q4_0];
    let mut ppl = Vec::new();
    for t in types {
        let opts = SessionOptions { n_ctx: 512, kv_type: t, ..SessionOptions::default() };
        let r = pagoda::cpu::perplexity::perplexity(&model, &tokens, &opts, |_, _| {}).unwrap();
        assert_eq!(r.chunks, 14, "{t}: GPL-3 at -c 512 is 14 chunks");
        let bytes = t.bytes_per_token(model.config()).unwrap();
        eprintln!("{t:>5}: PPL {:.4} ± {:.5}, {bytes} KV bytes per token", r.ppl, r.ppl_stderr);
        ppl.push(r.ppl);
    }
    let [f32_ppl, f16_ppl, bf16_ppl, q8_ppl, q4_ppl] = ppl[..] else { unreachable!() };
    let rel = |a: f64, b: f64| (a - b) / b;

    for (name, got) in [("f16", f16_ppl), ("q8_0", q8_ppl)] {
        let want = llamacpp_ppl(&reference, name);
        let d = rel(got, want);
        eprintln!("{name:>5}: {:+.3}% vs llama.cpp's {want}", d * 100.0);
        assert!(
            d.abs() < 0.01,
            "{name}: PPL {got:.4} is {:+.3}% from llama.cpp's {want}",
            d * 100.0
        );
    }
    for (name, got, budget) in [
        ("f16", f16_ppl, f64::INFINITY),
        ("bf16", bf16_ppl, 0.01),
        ("q8_0", q8_ppl, 0.003),
        ("q4_0", q4_ppl, 0.03),
    ] {
        let d = rel(got, f32_ppl);
        eprintln!("{name:>5}: {:+.3}% vs our f32 {f32_ppl:.4}", d * 100.0);
        assert!(d <= budget, "{name}: PPL {got:.4} is {:+.3}% above f32's {f32_ppl:.4}", d * 100.0);
    }

    // Fast numerics (the default) calibrate their own basis (q4_0 within 3% there too) and,
    // at AVX-512, score q8_0 pages in integers against q8_0 queries (within 0.3%).
    let fast = model.with_numerics(Numerics::Fast);
    let [f32_fast, q8_fast, q4_fast] = [KvType::F32, KvType::Q8_0, KvType::Q4_0].map(|t| {
        let opts = SessionOptions { n_ctx: 512, kv_type: t, ..SessionOptions::default() };
        pagoda::cpu::perplexity::perplexity(&fast, &tokens, &opts, |_, _| {}).unwrap().ppl
    });
    for (name, got, budget) in [("q8_0", q8_fast, 0.003), ("q4_0", q4_fast, 0.03)] {
        let d = rel(got, f32_fast);
        eprintln!("{name:>5}: {:+.3}% vs our f32 {f32_fast:.4}, fast numerics", d * 100.0);
        assert!(
            d <= budget,
            "fast {name}: PPL {got:.4} is {:+.3}% above f32's {f32_fast:.4}",
            d * 100.0
        );
    }
}
