//! The engine's text and stop strings (`Engine::with_tokenizer`, `Request::stop`,
//! `TokenEvent::text`): a sample's event texts add up to its decoded tokens; a stop string
//! ends the sample at the token that completes it, with the text cut before it; samples of
//! one request stop on their own; without a tokenizer stop strings are refused.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use pagoda::cpu::engine::{Engine, EngineConfig, EngineError, FinishReason, Request, RequestId};
use pagoda::cpu::model::Llama;
use pagoda::cpu::sampler::SamplerConfig;
use pagoda::cpu::tokenizer::Tokenizer;

fn model() -> (Llama, Arc<Tokenizer>) {
    let model = Llama::load(common::model_path()).expect("load model");
    let tok = Tokenizer::from_gguf(&model.gguf()).expect("tokenizer");
    (model, Arc::new(tok))
}

/// Runs `requests` to completion; per (request, sample): the concatenated event texts, the
/// finish reason of the last event, and the sample's tokens.
fn run(
    engine: &mut Engine<'_>,
    requests: Vec<Request>,
) -> BTreeMap<(u64, usize), (String, FinishReason, Vec<u32>)> {
    for r in requests {
        engine.submit(r).unwrap();
    }
    let mut texts: BTreeMap<(u64, usize), (String, Option<FinishReason>)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    while engine.has_unfinished() {
        let step = engine.step().unwrap();
        for t in step.tokens {
            let e = texts.entry((t.id.0, t.sample)).or_default();
            assert!(e.1.is_none(), "{:?}: a token after the sample's last", (t.id, t.sample));
            e.0.push_str(&t.text.expect("the engine has a tokenizer"));
            e.1 = t.finish;
        }
        for r in step.finished {
            for (k, s) in r.samples.into_iter().enumerate() {
                let (text, finish) = texts.remove(&(r.id.0, k)).unwrap_or_default();
                assert_eq!(finish, Some(s.finish), "the last event says why it stopped");
                out.insert((r.id.0, k), (text, s.finish, s.tokens));
            }
        }
        engine.check_invariants().unwrap();
    }
    assert_eq!(engine.pages_held(), 0);
    out
}

fn sampled(seed: u64) -> SamplerConfig {
    SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..Default::default() }
}

#[test]
fn stop_strings_cut_the_text_and_end_the_sample_at_the_completing_token() {
    let (model, tok) = model();
    let config = EngineConfig { kv_pages: 64, ..EngineConfig::default() };
    let prompts = ["The capital of France is", "Once upon a time", "1, 2, 3, 4,"];
    let base: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            n: 2,
            sampler: if i == 0 { SamplerConfig::greedy() } else { sampled(7 + i as u64) },
            stop_tokens: tok.eog_ids().to_vec(),
            ..Request::greedy(i as u64, tok.encode(p, true, true), 40)
        })
        .collect();
    // Unstopped: each sample's texts are its decoded tokens (end-of-generation excluded).
    let mut engine = Engine::new(&model, config.clone()).unwrap().with_tokenizer(tok.clone());
    let full = run(&mut engine, base.clone());
    for ((id, k), (text, _, tokens)) in &full {
        let shown: Vec<u32> = tokens.iter().copied().filter(|t| !tok.is_eog(*t)).collect();
        assert_eq!(*text, tok.decode(&shown), "request {id} sample {k}");
    }
    // Stop strings from the middle of each request's sample-0 text (3 characters, which
    // span token boundaries or not), plus one that never occurs.
    let mut requests = Vec::new();
    let mut want = BTreeMap::new();
    for r in &base {
        let (text0, _, _) = &full[&(r.id.0, 0)];
        let chars: Vec<char> = text0.chars().collect();
        assert!(chars.len() > 12, "request {}: text too short to test: {text0:?}", r.id.0);
        let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
        for k in 0..r.n {
            let (text, finish, tokens) = &full[&(r.id.0, k)];
            let expected = match text.find(&stop) {
                Some(at) => {
                    // The sample stops at the first token whose text completes the stop string.
                    let n_tok = (1..=tokens.len())
                        .find(|&n| {
                            let shown: Vec<u32> =
                                tokens[..n].iter().copied().filter(|t| !tok.is_eog(*t)).collect();
                            tok.decode(&shown).contains(&stop)
                        })
                        .expect("the stop string's tokens");
                    (text[..at].to_string(), FinishReason::Stop, tokens[..n_tok].to_vec())
                }
                None => (text.clone(), *finish, tokens.clone()),
            };
            want.insert((r.id.0, k), expected);
        }
        requests.push(Request { stop: vec!["never occurs \u{1F600}".into(), stop], ..r.clone() });
    }
    let mut engine = Engine::new(&model, config).unwrap().with_tokenizer(tok.clone());
    let got = run(&mut engine, requests);
    assert_eq!(got, want);
    assert!(got.values().filter(|v| v.1 == FinishReason::Stop).count() >= 3);
}

#[test]
fn stop_strings_without_a_tokenizer_are_refused() {
    let (model, _) = model();
    let mut engine = Engine::new(&model, EngineConfig::default()).unwrap();
    let req = Request { stop: vec!["x".into()], ..Request::greedy(1, vec![1, 2, 3], 4) };
    match engine.submit(req) {
        Err(EngineError::InvalidRequest { id, reason }) => {
            assert_eq!(id, RequestId(1));
            assert!(reason.contains("tokenizer"), "{reason}");
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}
