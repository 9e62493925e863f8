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
    /// Most tokens to generate (`None`: until end of generation or the context is full;
    /// `Some(0)`: run the prompt into the session and generate nothing).
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
/// The prompt must fit in the context with room for at least one token (none when
/// `n_predict` is `Some(0)`); a prompt that
/// does not is an error before anything runs. Running out of context later is a normal
/// stop ([`StopReason::ContextFull`]). The loop is [`Generator`], one token per step.
pub fn generate(
    session: &mut Session<'_>,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    is_eog: impl Fn(u32) -> bool,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, Box<GenerateError>> {
    let mut g = Generator::start(session, sampler, prompt, opts)?;
    loop {
        match g.step(session, sampler, &is_eog) {
            Ok(Some(tok)) => on_token(tok),
            Ok(None) => return Ok(g.finish()),
            Err(error) => return Err(Box::new(GenerateError { error, partial: g.finish() })),
        }
    }
}

/// The generation loop one token at a time, for callers that pull tokens (an iterator, a
/// C callback, a server) instead of handing [`generate`] a closure.
///
/// It does not hold the session or the sampler, so a caller can keep all three side by
/// side in one struct; pass the same two to every call. [`start`](Self::start) runs the
/// prompt; each [`step`](Self::step) first runs the previous token through the model (if
/// any), then samples and returns the next token, until a stop.
#[derive(Debug)]
pub struct Generator {
    opts: GenerateOptions,
    /// Logits of the next position, when already computed (after the prompt).
    logits: Option<Vec<f32>>,
    /// The last token returned, still to be run through the model.
    pending: Option<u32>,
    gen: Generation,
    /// When the first step began.
    started: Option<Instant>,
    done: bool,
}

impl Generator {
    /// Appends `prompt` to the session (an empty prompt continues a non-empty session) and
    /// computes the logits of the first token to generate. Errors as [`generate`].
    pub fn start(
        session: &mut Session<'_>,
        sampler: &mut Sampler,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Generator, Box<GenerateError>> {
        let mut gen = Generation {
            tokens: Vec::new(),
            stop: StopReason::Length,
            prompt_tokens: prompt.len(),
            prompt_time: Duration::ZERO,
            gen_time: Duration::ZERO,
        };
        let n_ctx = session.options().n_ctx;
        let empty = prompt.is_empty() && session.is_empty();
        // Room for the prompt and (unless nothing is to be generated) one token.
        let room = usize::from(opts.n_predict != Some(0));
        if empty || session.len() + prompt.len() + room > n_ctx {
            let error = if empty {
                ModelError::Invalid("the prompt is empty".into())
            } else {
                ModelError::ContextFull { needed: session.len() + prompt.len() + room, n_ctx }
            };
            return Err(Box::new(GenerateError { error, partial: gen }));
        }
        for &t in session.tokens().iter().chain(prompt) {
            sampler.accept(t);
        }
        let t0 = Instant::now();
        let logits = if prompt.is_empty() {
            // Continue from the cached sequence: recompute the last token's logits.
            let last = *session.tokens().last().expect("non-empty session");
            let n = session.len();
            session.truncate(n - 1);
            session.eval(&[last])
        } else {
            session.eval(prompt)
        };
        gen.prompt_time = t0.elapsed();
        match logits {
            // `n_predict = 0`: the prompt is in the session, nothing is sampled.
            Ok(_) if opts.n_predict == Some(0) => Ok(Generator {
                opts: opts.clone(),
                logits: None,
                pending: None,
                gen,
                started: None,
                done: true,
            }),
            Ok(l) => Ok(Generator {
                opts: opts.clone(),
                logits: Some(l),
                pending: None,
                gen,
                started: None,
                done: false,
            }),
            Err(error) => Err(Box::new(GenerateError { error, partial: gen })),
        }
    }

    /// The next token, or `None` once generation has stopped ([`Generation::stop`] says
    /// why). An error (the model failed) also ends generation.
    pub fn step(
        &mut self,
        session: &mut Session<'_>,
        sampler: &mut Sampler,
        is_eog: impl Fn(u32) -> bool,
    ) -> Result<Option<u32>, ModelError> {
        if self.done {
            return Ok(None);
        }
        let t1 = *self.started.get_or_insert_with(Instant::now);
        let result = self.next_token(session, sampler, &is_eog);
        if result.is_err() {
            self.done = true;
        }
        self.gen.gen_time = t1.elapsed();
        result.map(Some)
    }

    fn next_token(
        &mut self,
        session: &mut Session<'_>,
        sampler: &mut Sampler,
        is_eog: impl Fn(u32) -> bool,
    ) -> Result<u32, ModelError> {
        let mut l = match (self.logits.take(), self.pending.take()) {
            (Some(l), _) => l,
            (None, Some(tok)) if self.opts.no_kv_cache => {
                let mut all = session.tokens().to_vec();
                all.push(tok);
                session.clear();
                session.eval(&all)?
            }
            (None, Some(tok)) => session.eval(&[tok])?,
            (None, None) => unreachable!("a generator that is not done has logits or a token"),
        };
        let tok = sampler.sample(&mut l);
        sampler.accept(tok);
        self.gen.tokens.push(tok);
        self.pending = Some(tok);
        if !self.opts.ignore_eos && is_eog(tok) {
            self.stop(StopReason::EndOfGeneration);
        } else if self.opts.n_predict.is_some_and(|n| self.gen.tokens.len() >= n) {
            self.stop(StopReason::Length);
        } else if session.remaining() == 0 {
            self.stop(StopReason::ContextFull);
        }
        Ok(tok)
    }

    fn stop(&mut self, reason: StopReason) {
        self.gen.stop = reason;
        self.done = true;
    }

    /// Whether generation has stopped.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// What has been generated so far (all of it once [`is_done`](Self::is_done)).
    pub fn generation(&self) -> &Generation {
        &self.gen
    }

    /// Ends the generation, returning what it produced.
    pub fn finish(self) -> Generation {
        self.gen
    }
}
