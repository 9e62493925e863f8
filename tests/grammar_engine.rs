//! Constrained generation in the engine (`Request::constraint`): greedy output under a JSON
//! schema and under "any JSON object" parses and validates, finishes with `Stop` when the
//! grammar completes, is the same with and without computing masks during the forward pass,
//! and forked samples follow the grammar on their own. Prints the mask cost per token and
//! how much of it sampling waited for (both models).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pagoda::cpu::engine::{Engine, EngineConfig, FinishReason, Request, RequestOutput};
use pagoda::cpu::grammar::{ConstraintSpec, Grammar, TokenEnv};
use pagoda::cpu::model::Llama;
use pagoda::cpu::sampler::SamplerConfig;
use pagoda::cpu::tokenizer::Tokenizer;
use serde_json::{json, Value};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "likes": {"type": "array", "items": {"enum": ["tea", "code", "cats"]}, "minItems": 1, "maxItems": 2}
        },
        "required": ["name", "age", "likes"],
        "additionalProperties": false
    })
}

/// Runs `requests` in one engine; returns the outputs by request id, and prints the
/// engine's mask figures under `label`.
fn run(model: &Llama, requests: Vec<Request>, overlap: bool, label: &str) -> Vec<RequestOutput> {
    let mut engine =
        Engine::new(model, EngineConfig::default()).unwrap().with_mask_overlap(overlap);
    for r in requests {
        engine.submit(r).unwrap();
    }
    let t0 = Instant::now();
    let mut out = engine.run_to_completion().unwrap();
    let wall = t0.elapsed();
    let s = engine.stats();
    eprintln!(
        "{label} (overlap {overlap}): {} tokens in {:.0} ms over {} steps; {} masks, {:.1} µs \
         per mask, sampling waited {:.1} µs per mask after the forward pass",
        s.generated_tokens,
        wall.as_secs_f64() * 1e3,
        s.steps,
        s.masks,
        s.mask_us_per_token().unwrap_or(0.0),
        s.mask_wait.as_secs_f64() * 1e6 / s.masks.max(1) as f64,
    );
    assert!(s.masks > 0);
    out.sort_by_key(|o| o.id);
    out
}

fn text(tok: &Tokenizer, tokens: &[u32]) -> String {
    let kept: Vec<u32> = tokens.iter().copied().filter(|&t| !tok.is_eog(t)).collect();
    tok.decode(&kept)
}

fn check_model(path: &Path, name: &str, prompt: &str) {
    let model = Llama::load(path).expect("load model");
    let tok = Tokenizer::from_gguf(&model.gguf()).expect("tokenizer");
    let env = TokenEnv::new(&tok).unwrap();
    let by_schema = Arc::new(Grammar::compile(&env, ConstraintSpec::JsonSchema(schema())).unwrap());
    let any_object = Arc::new(Grammar::compile(&env, ConstraintSpec::JsonObject).unwrap());
    let prompt = tok.encode(prompt, true, true);
    let requests = || {
        vec![
            Request {
                constraint: Some(by_schema.clone()),
                stop_tokens: tok.eog_ids().to_vec(),
                ..Request::greedy(1, prompt.clone(), 96)
            },
            Request {
                constraint: Some(any_object.clone()),
                stop_tokens: tok.eog_ids().to_vec(),
                ..Request::greedy(2, prompt.clone(), 96)
            },
            // Three samples at temperature 1 (forked after the prompt), no stop tokens: the
            // grammar alone ends them.
            Request {
                constraint: Some(by_schema.clone()),
                n: 3,
                sampler: SamplerConfig { temperature: 1.0, seed: 11, ..SamplerConfig::default() },
                ..Request::greedy(3, prompt.clone(), 96)
            },
        ]
    };
    let overlapped = run(&model, requests(), true, name);
    let serial = run(&model, requests(), false, name);
    assert_eq!(overlapped, serial, "{name}: the same tokens with and without overlap");
    for out in &overlapped {
        for (k, s) in out.samples.iter().enumerate() {
            let t = text(&tok, &s.tokens);
            assert_eq!(s.finish, FinishReason::Stop, "{name} {} sample {k}: {t:?}", out.id);
            let v: Value = serde_json::from_str(&t)
                .unwrap_or_else(|e| panic!("{name} {} sample {k}: {e}: {t:?}", out.id));
            assert!(v.is_object(), "{t}");
            if out.id.0 != 2 {
                let o = v.as_object().unwrap();
                assert_eq!(o.len(), 3, "{t}");
                assert!(v["name"].as_str().is_some_and(|n| n.chars().count() <= 16), "{t}");
                assert!(v["age"].as_i64().is_some_and(|a| (0..=120).contains(&a)), "{t}");
                let likes = v["likes"].as_array().unwrap();
                assert!((1..=2).contains(&likes.len()), "{t}");
                assert!(likes
                    .iter()
                    .all(|l| ["tea", "code", "cats"].contains(&l.as_str().unwrap())));
            }
            eprintln!("{name} {} sample {k}: {t}", out.id);
        }
    }
    // Without stop tokens the grammar's end is the last token: no EOS among them.
    for s in &overlapped[2].samples {
        assert!(s.tokens.iter().all(|&t| !tok.is_eog(t)), "{name}: {:?}", s.tokens);
    }
}

#[test]
fn smollm2_constrained_greedy_and_sampled_output_validates() {
    check_model(
        &common::model_path(),
        "SmolLM2",
        "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n",
    );
}

#[test]
fn gemma3_constrained_output_validates() {
    check_model(&common::gemma3_model_path(), "Gemma 3", "A person described as JSON: ");
}
