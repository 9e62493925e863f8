//! DRY with a real vocabulary (SmolLM2's): llama.cpp's sequence-breaker strings become the
//! tokens that contain them, a breaker stops a repeat, and the penalty is
//! `multiplier × base^(length − allowed_length)`; a logit-bias token outside the
//! vocabulary is refused by name.

mod common;

use std::sync::OnceLock;

use pagoda::cpu::model_file::ModelFile;
use pagoda::cpu::sampler::{
    BreakerVocabulary, Sampler, SamplerConfig, SamplerError, SequenceBreakers,
};
use pagoda::cpu::tokenizer::Tokenizer;

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let file = ModelFile::open(common::model_path()).expect("model file");
        Tokenizer::from_gguf(&file.gguf()).expect("tokenizer")
    })
}

#[test]
fn one_character_breakers_are_exactly_the_tokens_containing_them() {
    let tok = tokenizer();
    for breaker in ["\n", ":", "\"", "*"] {
        let table = SequenceBreakers::from_strings(&[breaker.to_string()], tok);
        let mut count = 0;
        for id in 0..tok.vocab_size() as u32 {
            let contains = tok.piece(id).contains(&breaker.as_bytes()[0]);
            assert_eq!(table.is_single_token(id), contains, "{breaker:?} and token {id}");
            count += usize::from(contains);
        }
        assert!(count > 0, "some token contains {breaker:?}");
    }
}

/// The longest `L` with `tokens[j + 1 − L ..= j] == tokens[n − L ..]`, for each `j`: the
/// repeat that `tokens[j + 1]` would extend.
fn longest_repeat_before(tokens: &[u32], next: u32) -> usize {
    let n = tokens.len();
    (0..n - 1)
        .filter(|&j| tokens[j + 1] == next)
        .map(|j| (0..=j).take_while(|&l| tokens[j - l] == tokens[n - 1 - l]).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_newline_breaker_cuts_the_repeat_the_penalty_grows_with() {
    let tok = tokenizer();
    let history = tok.encode("one two three four\none two three four\none two", false, false);
    let newline = tok.encode("\n", false, false);
    assert_eq!(newline.len(), 1);
    let three = tok.encode(" three", false, false);
    assert_eq!(three.len(), 1);
    let (newline, three) = (newline[0], three[0]);
    let after_newline =
        history.len() - 1 - history.iter().rposition(|&t| t == newline).expect("a newline");
    let longest = longest_repeat_before(&history, three);
    assert!(longest > after_newline, "the repeat spans the newline: {longest}");

    let penalty_of = |breakers: Vec<String>| {
        let cfg = SamplerConfig {
            dry_multiplier: 0.5,
            dry_base: 1.5,
            dry_allowed_length: 1,
            dry_sequence_breakers: breakers,
            ..SamplerConfig::greedy()
        };
        let mut s = Sampler::with_vocabulary(cfg, tok).expect("sampler");
        history.iter().for_each(|&t| s.accept(t));
        let mut logits = vec![0.0f32; tok.vocab_size()];
        s.sample(&mut logits);
        (-logits[three as usize], logits.iter().filter(|&&l| l != 0.0).count())
    };
    let want = |len: usize| (0.5f64 * 1.5f64.powi(len as i32 - 1)) as f32;
    // Without breakers the whole repeat counts; with llama.cpp's defaults only what follows
    // the last newline.
    let (none, _) = penalty_of(vec![]);
    assert_eq!(none, want(longest));
    let (default, penalized) = penalty_of(SamplerConfig::default().dry_sequence_breakers);
    assert_eq!(default, want(after_newline));
    assert!(default < none);
    assert!(penalized >= 1);
}

#[test]
fn dry_needs_the_vocabulary_and_bias_ids_must_be_in_it() {
    let tok = tokenizer();
    let dry = SamplerConfig { dry_multiplier: 0.8, ..SamplerConfig::default() };
    assert_eq!(Sampler::new(dry.clone()).unwrap_err(), SamplerError::NeedsVocabulary);
    assert!(Sampler::with_vocabulary(dry, tok).is_ok());
    let n = tok.vocab_size() as u32;
    let bias = |t: u32| SamplerConfig { logit_bias: vec![(t, -1.0)], ..SamplerConfig::default() };
    assert!(Sampler::with_vocabulary(bias(n - 1), tok).is_ok());
    let err = Sampler::with_vocabulary(bias(n), tok).unwrap_err();
    assert!(err.to_string().contains(&format!("logit bias token {n}")), "{err}");
}
