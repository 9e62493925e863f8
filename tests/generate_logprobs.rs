//! The single-sequence generator's log-probabilities (`Generator::with_logprobs`): the
//! softmax of the model's logits, before anything the sampler does (penalties, temperature,
//! filters), checked against logits computed separately; asking for them changes no token.

mod common;

use pagoda::cpu::generate::{GenerateOptions, Generator, TokenStep};
use pagoda::cpu::model::{Llama, Session, SessionOptions};
use pagoda::cpu::sampler::{Sampler, SamplerConfig};
use pagoda::cpu::tokenizer::Tokenizer;

const PROMPT: &str = "Once upon a time, in a small village,";

fn model() -> (Llama, Tokenizer) {
    common::model_and_tokenizer()
}

fn generate(
    model: &Llama,
    tok: &Tokenizer,
    sampler: SamplerConfig,
    top: Option<usize>,
) -> Vec<TokenStep> {
    let mut session = Session::new(model, SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(sampler).unwrap();
    let prompt = tok.encode(PROMPT, true, true);
    let opts = GenerateOptions { n_predict: Some(16), ignore_eos: true, ..Default::default() };
    let mut g = Generator::start(&mut session, &mut sampler, &prompt, &opts).unwrap();
    if let Some(top) = top {
        g = g.with_logprobs(top);
    }
    let mut steps = Vec::new();
    while let Some(step) = g.step_decoded(&mut session, &mut sampler, tok).unwrap() {
        steps.push(step);
    }
    steps
}

/// `ln softmax(logits)`, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    logits.iter().map(|&l| l as f64 - z).collect()
}

#[test]
fn greedy_logprobs_rank_the_chosen_token_first() {
    let (model, tok) = model();
    let steps = generate(&model, &tok, SamplerConfig::greedy(), Some(5));
    assert_eq!(steps.len(), 16);
    for s in &steps {
        let lp = s.logprobs.as_ref().expect("asked for");
        assert!(lp.logprob <= 0.0 && lp.logprob.is_finite(), "{lp:?}");
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0], (s.token, lp.logprob), "greedy takes the most likely");
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1), "sorted: {lp:?}");
    }
    let plain = generate(&model, &tok, SamplerConfig::greedy(), None);
    assert!(plain.iter().all(|s| s.logprobs.is_none()));
    let ids = |s: &[TokenStep]| s.iter().map(|s| s.token).collect::<Vec<_>>();
    assert_eq!(ids(&plain), ids(&steps), "log-probabilities change no token");
}

#[test]
fn logprobs_are_the_model_distribution_before_penalties_and_temperature() {
    let (model, tok) = model();
    // Penalties, temperature and filters that change the sampling distribution a lot.
    let sampler = SamplerConfig {
        temperature: 1.7,
        top_k: 5,
        repeat_penalty: 1.8,
        seed: 7,
        ..SamplerConfig::default()
    };
    let steps = generate(&model, &tok, sampler, Some(3));
    // The same tokens' logits, computed in a session of their own.
    let mut session = Session::new(&model, SessionOptions::default()).unwrap();
    let mut logits = session.eval(&tok.encode(PROMPT, true, true)).unwrap();
    for s in &steps {
        let want = log_softmax(&logits);
        let lp = s.logprobs.as_ref().unwrap();
        assert!((lp.logprob as f64 - want[s.token as usize]).abs() < 1e-3, "{lp:?}");
        let mut ranked: Vec<(usize, f64)> = want.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (&(t, l), &(want_t, want_l)) in lp.top.iter().zip(&ranked) {
            assert_eq!(t as usize, want_t);
            assert!((l as f64 - want_l).abs() < 1e-3, "{l} vs {want_l}");
        }
        logits = session.eval(&[s.token]).unwrap();
    }
}
