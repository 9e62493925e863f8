//! The generation loop: prompt, then sample → append → repeat, streaming each token.
//!
//! With the KV cache (the default) each step runs one token through the model and
//! attends over the cached pages: O(N) work per token, O(N²) for the sequence. With
//! [`GenerateOptions::no_kv_cache`] every step clears the cache and re-processes the
//! whole sequence — the lecture's O(N³) baseline, kept for the complexity experiment.

use std::time::{Duration, Instant};

use crate::model::{ModelError, Session};
use crate::sampler::Sampler;

/// Settings of one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (`None`: until end of generation or the context is full).
    pub n_predict: Option<usize>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Recompute the whole sequence every step instead of using the cache.
    pub no_kv_cache: bool,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (it is included in `tokens`).
    EndOfGeneration,
    /// `n_predict` tokens were generated.
    Length,
    /// The context is full.
    ContextFull,
}

impl StopReason {
    /// A short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration => "eog",
            StopReason::Length => "length",
            StopReason::ContextFull => "context",
        }
    }
}

/// What a generation produced and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Generated token ids, in order.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Time spent on the prompt.
    pub prompt_time: Duration,
    /// Time spent generating (sampling included).
    pub gen_time: Duration,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_time)
    }

    /// Generated tokens per second.
    pub fn gen_tps(&self) -> f64 {
        rate(self.tokens.len(), self.gen_time)
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// A generation cut short by an error; `partial` holds everything generated before it.
#[derive(Debug)]
pub struct GenerateError {
    /// What went wrong.
    pub error: ModelError,
    /// The tokens generated before the error (already streamed).
    pub partial: Generation,
}

impl std::fmt::Display for GenerateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (after {} generated tokens)", self.error, self.partial.tokens.len())
    }
}

impl std::error::Error for GenerateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Appends `prompt` to the session, then generates, calling `on_token` for each new
/// token as soon as it is chosen. `is_eog` says which tokens end generation.
///
/// The prompt must fit in the context with room for at least one token; a prompt that
/// does not is an error before anything runs. Running out of context later is a normal
/// stop ([`StopReason::ContextFull`]).
pub fn generate(
    session: &mut Session<'_>,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    is_eog: impl Fn(u32) -> bool,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, Box<GenerateError>> {
    let mut gen = Generation {
        tokens: Vec::new(),
        stop: StopReason::Length,
        prompt_tokens: prompt.len(),
        prompt_time: Duration::ZERO,
        gen_time: Duration::ZERO,
    };
    let n_ctx = session.options().n_ctx;
    if session.len() + prompt.len() >= n_ctx || prompt.is_empty() && session.is_empty() {
        let error = if prompt.is_empty() && session.is_empty() {
            ModelError::Invalid("the prompt is empty".into())
        } else {
            ModelError::ContextFull { needed: session.len() + prompt.len() + 1, n_ctx }
        };
        return Err(Box::new(GenerateError { error, partial: gen }));
    }
    for &t in session.tokens().iter().chain(prompt) {
        sampler.accept(t);
    }
    let t0 = Instant::now();
    let mut logits = if prompt.is_empty() {
        // Continue from the cached sequence: recompute the last token's logits.
        let last = *session.tokens().last().expect("non-empty session");
        let n = session.len();
        session.truncate(n - 1);
        session.eval(&[last])
    } else {
        session.eval(prompt)
    };
    gen.prompt_time = t0.elapsed();
    let t1 = Instant::now();
    loop {
        let mut l = match logits {
            Ok(l) => l,
            Err(error) => {
                gen.gen_time = t1.elapsed();
                return Err(Box::new(GenerateError { error, partial: gen }));
            }
        };
        let tok = sampler.sample(&mut l);
        sampler.accept(tok);
        gen.tokens.push(tok);
        on_token(tok);
        if !opts.ignore_eos && is_eog(tok) {
            gen.stop = StopReason::EndOfGeneration;
            break;
        }
        if opts.n_predict.is_some_and(|n| gen.tokens.len() >= n) {
            gen.stop = StopReason::Length;
            break;
        }
        if session.remaining() == 0 {
            gen.stop = StopReason::ContextFull;
            break;
        }
        logits = if opts.no_kv_cache {
            let mut all = session.tokens().to_vec();
            all.push(tok);
            session.clear();
            session.eval(&all)
        } else {
            session.eval(&[tok])
        };
    }
    gen.gen_time = t1.elapsed();
    Ok(gen)
}
