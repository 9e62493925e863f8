//! Fuzz the sampler: any settings (any f32 including NaN and ±inf, any usize) are accepted
//! or rejected by `validate`, and `Sampler::new` agrees; a sampler that exists picks a token
//! inside the logits from any logits (NaN and ±inf included), step after step, never
//! panicking.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pagoda_cpu::sampler::{argmax, Sampler, SamplerConfig};

#[derive(Arbitrary, Debug)]
struct Input {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    repeat_last_n: usize,
    seed: u64,
    /// Tokens fed to the repetition window before sampling (prompt), any id.
    accepted: Vec<u32>,
    /// Logits (at least one: `sample` takes one per vocabulary entry).
    first_logit: f32,
    logits: Vec<f32>,
    steps: u8,
    frequency_penalty: f32,
    presence_penalty: f32,
}

fuzz_target!(|input: Input| {
    let cfg = SamplerConfig {
        temperature: input.temperature,
        top_k: input.top_k,
        top_p: input.top_p,
        min_p: input.min_p,
        repeat_penalty: input.repeat_penalty,
        repeat_last_n: input.repeat_last_n,
        frequency_penalty: input.frequency_penalty,
        presence_penalty: input.presence_penalty,
        seed: input.seed,
    };
    let valid = cfg.validate();
    let sampler = Sampler::new(cfg.clone());
    assert_eq!(valid.is_ok(), sampler.is_ok(), "validate and new disagree on {cfg:?}");
    let Ok(mut sampler) = sampler else { return };
    assert_eq!(sampler.config(), &cfg);
    for &t in input.accepted.iter().take(256) {
        sampler.accept(t);
    }
    let mut logits = vec![input.first_logit];
    logits.extend(input.logits.iter().take(255));
    for _ in 0..=input.steps % 8 {
        let mut l = logits.clone();
        let token = sampler.sample(&mut l);
        assert!((token as usize) < logits.len(), "token {token} of {} logits", logits.len());
        if cfg.temperature <= 0.0 && cfg.repeat_penalty == 1.0 {
            assert_eq!(token, argmax(&logits), "greedy without penalty is argmax");
        }
        sampler.accept(token);
    }
});
