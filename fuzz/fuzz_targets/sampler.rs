//! Fuzz the sampler: any settings (any f32 including NaN and ±inf, any usize, any logit
//! bias, DRY with any breaker token sequences, Mirostat) are accepted or rejected by
//! `validate`, and `Sampler::with_breakers` agrees (`Sampler::new` too, but for DRY's
//! breaker strings, which need the vocabulary); a sampler that exists picks a token inside
//! the logits from any logits (NaN and ±inf included), step after step, never panicking,
//! and never a banned (-inf biased) token while another one is allowed under greedy.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pagoda_cpu::sampler::{argmax, Sampler, SamplerConfig, SamplerError, SequenceBreakers};

#[derive(Arbitrary, Debug)]
struct Input {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    typical_p: f32,
    repeat_penalty: f32,
    repeat_last_n: usize,
    seed: u64,
    /// Tokens fed to the history before sampling (prompt), any id.
    accepted: Vec<u32>,
    /// Logits (at least one: `sample` takes one per vocabulary entry).
    first_logit: f32,
    logits: Vec<f32>,
    steps: u8,
    frequency_penalty: f32,
    presence_penalty: f32,
    dry_multiplier: f32,
    dry_base: f32,
    dry_allowed_length: u8,
    dry_penalty_last_n: usize,
    /// DRY breakers as token sequences (head, then tail).
    dry_breakers: Vec<Vec<u32>>,
    /// DRY breakers as strings (only `Sampler::new`'s refusal is checked with them).
    dry_breaker_strings: Vec<String>,
    mirostat: u8,
    mirostat_tau: f32,
    mirostat_eta: f32,
    logit_bias: Vec<(u32, f32)>,
}

fuzz_target!(|input: Input| {
    let cfg = SamplerConfig {
        temperature: input.temperature,
        top_k: input.top_k,
        top_p: input.top_p,
        min_p: input.min_p,
        typical_p: input.typical_p,
        repeat_penalty: input.repeat_penalty,
        repeat_last_n: input.repeat_last_n,
        frequency_penalty: input.frequency_penalty,
        presence_penalty: input.presence_penalty,
        dry_multiplier: input.dry_multiplier,
        dry_base: input.dry_base,
        dry_allowed_length: usize::from(input.dry_allowed_length),
        dry_penalty_last_n: input.dry_penalty_last_n,
        dry_sequence_breakers: input.dry_breaker_strings.clone(),
        mirostat: input.mirostat,
        mirostat_tau: input.mirostat_tau,
        mirostat_eta: input.mirostat_eta,
        logit_bias: input.logit_bias.iter().take(16).copied().collect(),
        seed: input.seed,
    };
    let valid = cfg.validate();
    match Sampler::new(cfg.clone()) {
        Ok(_) => assert!(valid.is_ok(), "new accepted {cfg:?}"),
        Err(SamplerError::NeedsVocabulary) => {
            assert!(valid.is_ok() && cfg.dry_enabled(), "needs vocabulary: {cfg:?}")
        }
        Err(e) => assert_eq!(valid, Err(e)),
    }
    let breakers: Vec<Vec<u32>> =
        input.dry_breakers.iter().take(8).map(|b| b.iter().take(8).copied().collect()).collect();
    let sampler =
        Sampler::with_breakers(cfg.clone(), SequenceBreakers::from_token_sequences(&breakers));
    assert_eq!(valid.is_ok(), sampler.is_ok(), "validate and with_breakers disagree on {cfg:?}");
    let Ok(mut sampler) = sampler else { return };
    assert_eq!(sampler.config(), &cfg);
    for &t in input.accepted.iter().take(256) {
        sampler.accept(t);
    }
    let mut logits = vec![input.first_logit];
    logits.extend(input.logits.iter().take(255));
    let plain = cfg.repeat_penalty == 1.0
        && cfg.frequency_penalty == 0.0
        && cfg.presence_penalty == 0.0
        && !cfg.dry_enabled()
        && cfg.typical_p >= 1.0
        && cfg.logit_bias.is_empty();
    for _ in 0..=input.steps % 8 {
        let mut l = logits.clone();
        let token = sampler.sample(&mut l);
        assert!((token as usize) < logits.len(), "token {token} of {} logits", logits.len());
        if cfg.temperature <= 0.0 && plain {
            assert_eq!(token, argmax(&logits), "greedy without bias or penalty is argmax");
        }
        if cfg.temperature <= 0.0 && l.iter().all(|x| !x.is_nan()) {
            // Greedy takes a token of the largest final logit (a banned one only when every
            // token is banned).
            if l.iter().any(|&x| x > f32::NEG_INFINITY) && cfg.mirostat == 0 && cfg.typical_p >= 1.0
            {
                assert_eq!(l[token as usize], l[argmax(&l) as usize], "greedy picked {token}");
            }
        }
        sampler.accept(token);
    }
});
