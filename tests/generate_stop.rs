//! The single-sequence generator's stop strings (`Generator::with_stop_strings`,
//! `step_decoded`): generation ends at the token that completes the earliest stop string,
//! the text ends just before it, and text that might still become one is held back, never
//! lost; plain `step` refuses stop strings instead of ignoring them.

mod common;

use pagoda::cpu::generate::{GenerateOptions, Generation, Generator, StopReason, TokenStep};
use pagoda::cpu::model::{Llama, ModelError, Numerics, Session, SessionOptions};
use pagoda::cpu::sampler::{Sampler, SamplerConfig};
use pagoda::cpu::tokenizer::Tokenizer;

const PROMPT: &str = "The capital of France is";

/// In exact numerics: the greedy text runs to the length limit (fast ends it earlier).
fn model() -> (Llama, Tokenizer) {
    let (model, tok) = common::model_and_tokenizer();
    (model.with_numerics(Numerics::Exact), tok)
}

/// Greedy generation of at most `n` tokens with `stops`, through `step_decoded`.
fn generate(
    model: &Llama,
    tok: &Tokenizer,
    n: usize,
    stops: &[&str],
) -> (Vec<TokenStep>, Generation) {
    let mut session = Session::new(model, SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
    let prompt = tok.encode(PROMPT, true, true);
    let opts = GenerateOptions { n_predict: Some(n), ..Default::default() };
    let mut g = Generator::start(&mut session, &mut sampler, &prompt, &opts)
        .unwrap()
        .with_stop_strings(stops.iter().copied());
    let mut steps = Vec::new();
    while let Some(step) = g.step_decoded(&mut session, &mut sampler, tok).unwrap() {
        steps.push(step);
    }
    (steps, g.finish())
}

fn text(steps: &[TokenStep]) -> String {
    steps.iter().map(|s| s.text.as_str()).collect()
}

/// The text of `tokens` decoded together.
fn decoded(tok: &Tokenizer, tokens: &[u32]) -> String {
    let bytes: Vec<u8> =
        tokens.iter().flat_map(|&t| tok.token_to_bytes(t).unwrap().to_vec()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn stop_string_ends_at_the_completing_token_with_the_text_cut_before_it() {
    let (model, tok) = model();
    let (free_steps, free) = generate(&model, &tok, 48, &[]);
    assert_eq!(free.stop, StopReason::Length);
    let full = text(&free_steps);
    assert_eq!(full, decoded(&tok, &free.tokens), "without stops the texts are the tokens");
    // A stop string across a token boundary, well inside the text: the last two characters
    // of token 10's text and the first two of the text after it.
    let boundary = decoded(&tok, &free.tokens[..11]).len();
    let before: String =
        full[..boundary].chars().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect();
    let after: String = full[boundary..].chars().take(2).collect();
    let stop = format!("{before}{after}");
    let cut = full.find(&stop).expect("the stop string is in the text");
    // The token that completes it: the first whose text so far contains it.
    let last = (0..free.tokens.len())
        .find(|&j| decoded(&tok, &free.tokens[..=j]).contains(&stop))
        .unwrap();
    assert!(last + 1 < free.tokens.len(), "{stop:?} must stop the generation early");

    let (steps, stopped) = generate(&model, &tok, 48, &[&stop]);
    assert_eq!(stopped.stop, StopReason::StopString);
    assert_eq!(stopped.stop.as_str(), "stop");
    assert_eq!(stopped.stop.finish_reason(), "stop");
    assert_eq!(stopped.tokens, free.tokens[..=last], "stops at the completing token");
    assert_eq!(text(&steps), full[..cut], "the text ends just before {stop:?}");
    assert_eq!(steps.iter().map(|s| s.token).collect::<Vec<_>>(), stopped.tokens);
}

#[test]
fn the_earliest_of_several_stop_strings_wins() {
    let (model, tok) = model();
    let (free_steps, free) = generate(&model, &tok, 48, &[]);
    let full = text(&free_steps);
    // Two words of the text; the later one listed first.
    let words: Vec<&str> = full.split_whitespace().filter(|w| w.len() >= 3).collect();
    assert!(words.len() >= 4, "{full:?}");
    let (early, late) = (words[1], words[3]);
    let cut = full.find(early).unwrap().min(full.find(late).unwrap());
    let (steps, stopped) = generate(&model, &tok, 48, &[late, early]);
    assert_eq!(stopped.stop, StopReason::StopString);
    assert_eq!(text(&steps), full[..cut]);
    assert!(stopped.tokens.len() < free.tokens.len());
    assert_eq!(stopped.tokens, free.tokens[..stopped.tokens.len()]);
}

#[test]
fn text_that_may_start_a_stop_string_is_held_back_then_released() {
    let (model, tok) = model();
    let (free_steps, free) = generate(&model, &tok, 32, &[]);
    let full = text(&free_steps);
    // A stop string that begins like the text's newlines but never completes.
    assert!(full.contains('\n'), "{full:?}");
    let (steps, held) = generate(&model, &tok, 32, &["\n\u{7}never"]);
    assert_eq!(held.stop, StopReason::Length);
    assert_eq!(held.tokens, free.tokens);
    assert_eq!(text(&steps), full, "nothing is lost");
    // Some newline was held back: the texts differ step by step, not in total.
    let per_step = |s: &[TokenStep]| s.iter().map(|s| s.text.clone()).collect::<Vec<_>>();
    assert_ne!(per_step(&steps), per_step(&free_steps), "a newline should have been held back");
}

#[test]
fn plain_step_refuses_stop_strings() {
    let (model, tok) = model();
    let mut session = Session::new(&model, SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
    let prompt = tok.encode(PROMPT, true, true);
    let opts = GenerateOptions { n_predict: Some(4), ..Default::default() };
    let mut g = Generator::start(&mut session, &mut sampler, &prompt, &opts)
        .unwrap()
        .with_stop_strings(["Paris"]);
    assert_eq!(g.stop_strings(), ["Paris".to_string()]);
    let e = g.step(&mut session, &mut sampler, |t| tok.is_eog(t)).unwrap_err();
    assert!(matches!(&e, ModelError::Invalid(m) if m.contains("step_decoded")), "{e}");
    assert!(g.is_done());
}
