//! Load-time validation of Llama models and the run-time guards of the forward pass,
//! sampler and generation loop (adversarial-pass issue 20): bad files and settings give a
//! typed error naming what is wrong, never a panic, an abort or a silently wrong result.
//!
//! Every model here is synthetic (`common::synthetic`): tiny, F32, built in memory.

mod common;

use common::synthetic::{Meta, SyntheticLlama};
use pagoda::core::evict::KvPolicy;
use pagoda::cpu::generate::{GenerateOptions, Generator, StopReason};
use pagoda::cpu::model::{ForwardScratch, KvType, ModelError, Session, SessionOptions};
use pagoda::cpu::sampler::{Sampler, SamplerConfig};

fn load_err(m: &SyntheticLlama) -> String {
    match m.load() {
        Ok(_) => panic!("the model loaded"),
        Err(e) => e.to_string(),
    }
}

fn opts(n_ctx: usize) -> SessionOptions {
    SessionOptions { n_ctx, kv_type: KvType::F32, ..Default::default() }
}

// ---------------------------------------------------------------------------------
// 1. RoPE over more than 256 dims per head.

/// One head of 512 dims whose queries and keys are zero in the first 256 dims: only the
/// rotation of dims 256.. can make attention depend on position.
fn wide_head_model(n_rot: u32) -> SyntheticLlama {
    let mut m = SyntheticLlama::with_shape(1, 512, 32, 1, 1, 16);
    m.set_u32("llama.rope.dimension_count", n_rot);
    for name in ["blk.0.attn_q.weight", "blk.0.attn_k.weight"] {
        let (_, _, mut w) = m.tensors().into_iter().find(|(n, _, _)| n == name).unwrap();
        // Rows 0..256 (output dims 0..256 of the head) to zero; x16 so scores matter.
        w[..256 * 512].iter_mut().for_each(|x| *x = 0.0);
        w[256 * 512..].iter_mut().for_each(|x| *x *= 16.0);
        m.set_tensor(name, w);
    }
    m
}

fn last_logits(m: &SyntheticLlama, prompt: &[u32]) -> Vec<f32> {
    let model = m.load().unwrap();
    let mut s = Session::new(&model, opts(32)).unwrap();
    s.eval(prompt).unwrap()
}

#[test]
fn rope_rotates_every_dim_of_heads_wider_than_256() {
    let prompt = [1, 5, 9, 2, 7, 3];
    // n_rot 256 rotates only the zero half: attention ignores position.
    let unrotated = last_logits(&wide_head_model(256), &prompt);
    let rotated = last_logits(&wide_head_model(512), &prompt);
    assert_ne!(rotated, unrotated, "n_rot 512 must rotate dims 256..512");
    // And 384 rotates dims 256..384 only: different again.
    let partial = last_logits(&wide_head_model(384), &prompt);
    assert_ne!(partial, unrotated);
    assert_ne!(partial, rotated);
}

#[test]
fn rope_dimension_count_beyond_the_supported_maximum_is_refused() {
    let mut m = SyntheticLlama::with_shape(1, 1040, 8, 1, 1, 4);
    m.set_u32("llama.rope.dimension_count", 1040);
    let e = load_err(&m);
    assert!(e.contains("rope.dimension_count"), "{e}");
}

// ---------------------------------------------------------------------------------
// 2. Non-finite hyper-parameters and weights.

#[test]
fn nan_rms_epsilon_is_refused_at_load() {
    let mut m = SyntheticLlama::tiny();
    m.set_f32("llama.attention.layer_norm_rms_epsilon", f32::NAN);
    let e = load_err(&m);
    assert!(e.contains("layer_norm_rms_epsilon"), "{e}");
    m.set_f32("llama.attention.layer_norm_rms_epsilon", -1e-5);
    assert!(load_err(&m).contains("layer_norm_rms_epsilon"));
}

#[test]
fn non_positive_or_infinite_rope_freq_base_is_refused_at_load() {
    for base in [-1.0, 0.0, f32::INFINITY, f32::NAN] {
        let mut m = SyntheticLlama::tiny();
        m.set_f32("llama.rope.freq_base", base);
        let e = load_err(&m);
        assert!(e.contains("rope.freq_base"), "{base}: {e}");
    }
}

#[test]
fn nan_norm_vector_is_refused_at_load() {
    let mut m = SyntheticLlama::tiny();
    let mut gain = vec![1.0; m.dim];
    gain[3] = f32::NAN;
    m.set_tensor("blk.1.ffn_norm.weight", gain);
    let e = load_err(&m);
    assert!(e.contains("blk.1.ffn_norm.weight"), "{e}");
}

/// The tiny model with one infinite weight in layer 1's FFN down projection.
fn inf_in_layer_1() -> SyntheticLlama {
    let mut m = SyntheticLlama::tiny();
    let name = "blk.1.ffn_down.weight";
    let (_, _, mut w) = m.tensors().into_iter().find(|(n, _, _)| n == name).unwrap();
    w[5] = f32::INFINITY;
    m.set_tensor(name, w);
    m
}

#[test]
fn non_finite_logits_are_an_error_naming_the_first_bad_layer() {
    let model = inf_in_layer_1().load().unwrap();
    let mut s = Session::new(&model, opts(64)).unwrap();
    match s.eval(&[1, 2, 3]) {
        Err(ModelError::NonFinite { layer: Some(1), .. }) => {}
        other => panic!("expected NonFinite in layer 1, got {other:?}"),
    }
    // Nothing was appended: the sequence is unchanged.
    assert_eq!(s.len(), 0);
}

#[test]
fn finite_check_of_every_layer_names_the_first_bad_layer() {
    let model = inf_in_layer_1().load().unwrap().with_finite_checks(true);
    let mut s = Session::new(&model, opts(64)).unwrap();
    let e = s.eval(&[1, 2, 3]).unwrap_err();
    assert!(matches!(e, ModelError::NonFinite { layer: Some(1), .. }), "{e:?}");
    assert!(e.to_string().contains("layer 1"), "{e}");
}

#[test]
fn non_finite_lm_head_is_an_error_without_a_layer() {
    let mut m = SyntheticLlama::tiny();
    let (_, _, mut w) = m.tensors().into_iter().find(|(n, _, _)| n == "output.weight").unwrap();
    w[0] = f32::NAN;
    m.set_tensor("output.weight", w);
    let model = m.load().unwrap();
    let mut s = Session::new(&model, opts(64)).unwrap();
    let e = s.eval(&[1, 2]).unwrap_err();
    assert!(matches!(e, ModelError::NonFinite { layer: None, .. }), "{e:?}");
}

#[test]
fn greedy_generation_over_non_finite_weights_is_an_error_not_token_0() {
    let model = inf_in_layer_1().load().unwrap();
    let mut s = Session::new(&model, opts(64)).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
    let gopts = GenerateOptions { n_predict: Some(4), ..Default::default() };
    let r =
        pagoda::cpu::generate::generate(&mut s, &mut sampler, &[1, 2], &gopts, |_| false, |_| {});
    let e = r.unwrap_err();
    assert!(matches!(e.error, ModelError::NonFinite { .. }), "{e}");
    assert!(e.partial.tokens.is_empty());
}

// ---------------------------------------------------------------------------------
// 3. Context length, vocabulary, n_predict = 0.

#[test]
fn zero_context_length_is_refused_at_load() {
    let mut m = SyntheticLlama::tiny();
    m.set_u32("llama.context_length", 0);
    assert!(load_err(&m).contains("context_length"));
}

#[test]
fn embedding_with_fewer_rows_than_the_vocabulary_is_refused_at_load() {
    let mut m = SyntheticLlama::tiny();
    m.with_vocabulary(m.vocab + 10);
    let e = load_err(&m);
    assert!(e.contains("token_embd.weight") && e.contains("tokenizer.ggml.tokens"), "{e}");
    // As many rows as tokens (or more, padding) is fine.
    m.with_vocabulary(m.vocab);
    m.load().unwrap();
    m.with_vocabulary(m.vocab - 3);
    m.load().unwrap();
}

#[test]
fn n_predict_zero_generates_no_token() {
    let model = SyntheticLlama::tiny().load().unwrap();
    let mut s = Session::new(&model, opts(64)).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
    let gopts = GenerateOptions { n_predict: Some(0), ..Default::default() };
    let mut g = Generator::start(&mut s, &mut sampler, &[1, 2, 3], &gopts).unwrap();
    assert!(g.is_done());
    assert_eq!(g.step(&mut s, &mut sampler, |_| false).unwrap(), None);
    let gen = g.finish();
    assert_eq!((gen.tokens.len(), gen.stop), (0, StopReason::Length));
    let mut streamed = 0;
    let mut s = Session::new(&model, opts(64)).unwrap();
    let gen = pagoda::cpu::generate::generate(
        &mut s,
        &mut sampler,
        &[1, 2, 3],
        &gopts,
        |_| false,
        |_| streamed += 1,
    )
    .unwrap();
    assert_eq!((streamed, gen.tokens.len(), gen.stop), (0, 0, StopReason::Length));
}

// ---------------------------------------------------------------------------------
// 4. Counts from the file bounded before allocating.

#[test]
fn huge_block_count_is_refused_naming_the_field() {
    let mut m = SyntheticLlama::tiny();
    m.set_u32("llama.block_count", 1 << 30);
    let e = load_err(&m);
    assert!(e.contains("block_count"), "{e}");
    // One layer too many (its tensors are missing) names the field too.
    m.set_u32("llama.block_count", 3);
    let e = load_err(&m);
    assert!(e.contains("block_count") || e.contains("blk.2"), "{e}");
}

#[test]
fn counts_that_disagree_with_the_tensors_are_refused_naming_the_field() {
    let mut m = SyntheticLlama::tiny();
    m.set_u32("llama.embedding_length", 1 << 31);
    let e = load_err(&m);
    assert!(e.contains("embedding_length"), "{e}");

    let mut m = SyntheticLlama::tiny();
    m.set_u32("llama.attention.head_count", 64);
    m.set_u32("llama.attention.head_count_kv", 64);
    m.set_u32("llama.rope.dimension_count", 1);
    let e = load_err(&m);
    assert!(e.contains("head_count") || e.contains("dimension_count"), "{e}");

    let mut m = SyntheticLlama::tiny();
    m.set_u32("llama.feed_forward_length", u32::MAX);
    let e = load_err(&m);
    assert!(e.contains("feed_forward_length"), "{e}");

    let mut m = SyntheticLlama::tiny();
    m.set("llama.attention.head_count_kv", Meta::U32(u32::MAX));
    let e = load_err(&m);
    assert!(e.contains("head_count_kv"), "{e}");
}

// ---------------------------------------------------------------------------------
// 5. The repetition window.

#[test]
fn huge_repeat_last_n_does_not_abort_and_still_penalizes() {
    let cfg = SamplerConfig {
        repeat_last_n: 99_999_999_999_999,
        repeat_penalty: 2.0,
        ..SamplerConfig::greedy()
    };
    let mut s = Sampler::new(cfg).unwrap();
    for t in 0..1000 {
        s.accept(t % 7);
    }
    s.accept(5);
    let mut logits = vec![0.1, 2.0, -1.0, 1.9, 0.0, 3.0, -5.0, 2.5];
    // Tokens 0..=6 are all in the window (3.0 / 2 = 1.5 for token 5): unseen 7 (2.5) wins.
    assert_eq!(s.sample(&mut logits), 7);
}

// ---------------------------------------------------------------------------------
// 6. Scratch and KV sizes that cannot be allocated.

#[test]
fn forward_scratch_for_an_unallocatable_batch_is_an_error() {
    let model = SyntheticLlama::tiny().load().unwrap();
    let mut scratch = ForwardScratch::default();
    for n_tokens in [usize::MAX / 8, 1 << 58, 1 << 48] {
        let e = scratch.reserve(model.config(), n_tokens).unwrap_err();
        assert!(matches!(e, ModelError::OutOfMemory { .. }), "{n_tokens}: {e:?}");
    }
    scratch.reserve(model.config(), 512).unwrap();
}

// ---------------------------------------------------------------------------------
// 7. The KV pool under an eviction policy is capped at the context.

#[test]
fn evicting_policy_pool_is_capped_at_the_context_and_stops_there() {
    let model = SyntheticLlama::tiny().load().unwrap();
    let o = SessionOptions { n_ctx: 64, block_size: 16, ..opts(64) };
    for policy in ["window:1000000", "sink:4,window:1000000", "h2o:1000000", "pyramid:1000000"] {
        let p = KvPolicy::parse(policy).unwrap();
        let mut s = Session::with_policy(&model, o.clone(), p).unwrap();
        let per = if p.per_layer() { model.config().n_layers } else { 1 };
        let pages = s.cache().pool().capacity();
        assert!(pages <= per * (64 / 16 + 1), "{policy}: {pages} pages");
        // The context bounds the sequence: 64 tokens fit, the 65th does not.
        assert_eq!(s.remaining(), 64, "{policy}");
        let prompt: Vec<u32> = (0..64).map(|i| i % 48).collect();
        s.eval(&prompt).unwrap();
        assert_eq!(s.remaining(), 0, "{policy}");
        let e = s.eval(&[1]).unwrap_err();
        assert!(matches!(e, ModelError::ContextFull { n_ctx: 64, .. }), "{policy}: {e:?}");
    }
    // A policy that does evict within the context keeps its own small pool and runs past it.
    let mut s = Session::with_policy(&model, o, KvPolicy::parse("window:32").unwrap()).unwrap();
    let prompt: Vec<u32> = (0..100).map(|i| i % 48).collect();
    s.eval(&prompt).unwrap();
    assert_eq!(s.len(), 100);
    assert!(s.evicted_pages() > 0);
    assert!(s.cache().pool().capacity() <= 64 / 16 + 1);
}
