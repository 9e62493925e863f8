//! One model layer for every Llama-family variant: what tells the variants apart is read
//! from the file (config fields, optional tensors), shown on synthetic models: Llama 3's
//! `rope_freqs` frequency divisors and an untied `output.weight`. (Gemma 3, the other
//! family, is checked against llama.cpp on the real model in `tests/model_gemma3.rs`.)

mod common;

use common::synthetic::SyntheticLlama;
use pagoda::cpu::model::{Family, KvType, Session, SessionOptions};

const PROMPT: [u32; 7] = [1, 7, 30, 12, 5, 44, 3];

fn logits_of(m: &SyntheticLlama, tokens: &[u32]) -> Vec<f32> {
    let model = m.load().unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(model.config().family, Family::Llama);
    let opts = SessionOptions { n_ctx: 32, kv_type: KvType::F32, ..Default::default() };
    let mut s = Session::new(&model, opts).unwrap();
    s.eval(tokens).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn embeddings(m: &SyntheticLlama) -> Vec<f32> {
    m.tensors().into_iter().find(|(n, _, _)| n == "token_embd.weight").unwrap().2
}

#[test]
fn a_missing_output_weight_ties_the_lm_head_to_the_embeddings() {
    let untied = SyntheticLlama::tiny();
    let mut tied = untied.clone();
    tied.omit("output.weight");
    let mut explicit = untied.clone();
    explicit.set_tensor("output.weight", embeddings(&untied));
    let (u, t, e) =
        (logits_of(&untied, &PROMPT), logits_of(&tied, &PROMPT), logits_of(&explicit, &PROMPT));
    // Tied = an output.weight that holds the embeddings, bit for bit.
    assert_eq!(bits(&t), bits(&e));
    // The synthetic output.weight differs from the embeddings, and so do the logits.
    assert_ne!(bits(&u), bits(&t));
}

#[test]
fn rope_freqs_divide_the_rotation_angles() {
    let base = SyntheticLlama::tiny();
    let pairs = base.head_dim() / 2;
    let with = |f: Vec<f32>| {
        let mut m = base.clone();
        m.set_tensor_shaped("rope_freqs.weight", &[pairs as u64], f);
        m
    };
    let plain = logits_of(&base, &PROMPT);
    // Divisors of 1 are no scaling at all: the same bits.
    assert_eq!(bits(&logits_of(&with(vec![1.0; pairs]), &PROMPT)), bits(&plain));
    // Llama 3.1-like divisors: low frequencies (late pairs) slowed down.
    let scaled: Vec<f32> = (0..pairs).map(|i| if i < pairs / 2 { 1.0 } else { 8.0 }).collect();
    let m = with(scaled);
    let model = m.load().unwrap();
    assert_eq!(model.weights().rope_freqs.as_deref().map(<[f32]>::len), Some(pairs));
    assert_ne!(bits(&logits_of(&m, &PROMPT)), bits(&plain));
    // At position 0 every angle is 0 whatever the divisors: one token sees no change.
    assert_eq!(bits(&logits_of(&m, &PROMPT[..1])), bits(&logits_of(&base, &PROMPT[..1])));
}

#[test]
fn bad_rope_freqs_are_refused_naming_the_tensor() {
    let base = SyntheticLlama::tiny();
    let pairs = base.head_dim() / 2;
    let mut zero = base.clone();
    zero.set_tensor_shaped("rope_freqs.weight", &[pairs as u64], vec![0.0; pairs]);
    let e = zero.load().unwrap_err().to_string();
    assert!(e.contains("rope_freqs.weight") && e.contains("<= 0"), "{e}");
    let mut short = base.clone();
    short.set_tensor_shaped("rope_freqs.weight", &[pairs as u64 - 1], vec![1.0; pairs - 1]);
    let e = short.load().unwrap_err().to_string();
    assert!(e.contains("rope_freqs.weight") && e.contains("elements"), "{e}");
}
