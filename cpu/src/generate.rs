//! The generation loop: prompt, then sample → append → repeat, streaming each token.
//!
//! With the KV cache (the default) each step runs one token through the model and
//! attends over the cached pages: O(N) work per token, O(N²) for the sequence. With
//! [`GenerateOptions::no_kv_cache`] every step clears the cache and re-processes the
//! whole sequence — the lecture's O(N³) baseline, kept for the complexity experiment.
//!
//! Beyond tokens, a [`Generator`] can stop at stop strings
//! ([`with_stop_strings`](Generator::with_stop_strings), text through
//! [`step_decoded`](Generator::step_decoded)), report log-probabilities
//! ([`with_logprobs`](Generator::with_logprobs)) and report the prompt's progress chunk by
//! chunk ([`start_with_progress`](Generator::start_with_progress)), and follow a grammar
//! ([`with_constraint`](Generator::with_constraint)): the mask of step t+1 is computed on a
//! thread of its own while the forward pass of token t runs, then applied to the logits
//! before sampling.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::engine::TokenLogprobs;
use crate::grammar::{GrammarError, Mask, MaskStats, Matcher};
use crate::model::{ModelError, Session};
use crate::sampler::{log_probs, Sampler};
use crate::stop::StopMatcher;
use crate::tokenizer::{Tokenizer, Utf8Buffer};

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
    /// The text reached one of the stop strings
    /// ([`Generator::with_stop_strings`]); the token that completed it is the last of
    /// `tokens`, and the text ends just before the stop string.
    StopString,
    /// The constraint ([`Generator::with_constraint`]) is complete: nothing may follow but
    /// the end of generation.
    ConstraintComplete,
}

impl StopReason {
    /// A short name for output: `"eog"`, `"length"`, `"context"`, `"stop"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration => "eog",
            StopReason::Length => "length",
            StopReason::ContextFull => "context",
            StopReason::StopString => "stop",
            StopReason::ConstraintComplete => "constraint",
        }
    }

    /// OpenAI's `finish_reason` for it: `"stop"` for an end-of-generation token, a stop
    /// string or a complete constraint (the text ended), `"length"` for `n_predict`,
    /// `"context"` for a full context.
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration
            | StopReason::StopString
            | StopReason::ConstraintComplete => "stop",
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
    /// With a constraint ([`Generator::with_constraint`]): what its masks cost.
    pub constraint: Option<ConstraintCost>,
}

/// The cost of a constraint's masks in one generation.
///
/// A mask is computed on its own thread while the forward pass runs, so its compute time
/// ([`masks`](Self::masks)) is mostly hidden; what the generation paid for it is
/// [`critical`](Self::critical): waiting for the mask once the logits were ready
/// ([`wait`](Self::wait); the first token's mask, which has no forward pass to hide
/// behind, counts whole), applying it to the logits, committing the chosen token and
/// handing the matcher to the mask thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConstraintCost {
    /// Masks computed and the time spent computing them.
    pub masks: MaskStats,
    /// Time the generation spent on the constraint on its critical path (`wait` included).
    pub critical: Duration,
    /// Of `critical`, the time spent waiting for masks.
    pub wait: Duration,
}

impl ConstraintCost {
    /// Mean compute time per mask (one per generated token), in microseconds.
    pub fn mask_us_per_token(&self) -> f64 {
        self.masks.mean_us()
    }

    /// Mean time on the critical path per mask, in microseconds.
    pub fn critical_us_per_token(&self) -> f64 {
        self.per_mask_us(self.critical)
    }

    /// Mean time waiting for a mask, in microseconds.
    pub fn wait_us_per_token(&self) -> f64 {
        self.per_mask_us(self.wait)
    }

    fn per_mask_us(&self, d: Duration) -> f64 {
        if self.masks.masks == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e6 / self.masks.masks as f64
        }
    }
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

/// One generated token as [`Generator::step_decoded`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenStep {
    /// The token.
    pub token: u32,
    /// The text it adds to the output, as it may be shown now: UTF-8 completed across
    /// tokens, text that could still become a stop string held back until decided,
    /// nothing of an end-of-generation token that ends the generation (with
    /// [`GenerateOptions::ignore_eos`] its piece is text like any other) and nothing from
    /// a stop string on; the last step flushes what was held. Concatenated, the steps'
    /// texts are the generation's output text. Often empty.
    pub text: String,
    /// Its log-probability and the most likely alternatives, with
    /// [`Generator::with_logprobs`].
    pub logprobs: Option<TokenLogprobs>,
}

/// The text side of a generation with a tokenizer: UTF-8 reassembly and the stop strings.
#[derive(Clone, Debug, Default)]
struct TextState {
    utf8: Utf8Buffer,
    stop: StopMatcher,
}

/// The generation loop one token at a time, for callers that pull tokens (an iterator, a
/// C callback, a server) instead of handing [`generate`] a closure.
///
/// It does not hold the session, the sampler or the tokenizer, so a caller can keep them
/// side by side in one struct; pass the same ones to every call. [`start`](Self::start)
/// runs the prompt; each [`step`](Self::step) (or [`step_decoded`](Self::step_decoded))
/// first runs the previous token through the model (if any), then samples and returns the
/// next token, until a stop.
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
    /// How many alternatives to report with each token's log-probability, if any.
    logprobs: Option<usize>,
    /// Decoded text and stop strings (used by [`step_decoded`](Self::step_decoded)).
    text: TextState,
    /// The grammar the tokens must follow, if any.
    constraint: Option<Constraint>,
}

/// A generation's constraint: its matcher, the thread that computes its masks, and what
/// the masks cost on the critical path.
///
/// The matcher goes back and forth: the generator commits each token to it (and learns at
/// once whether the grammar is complete), then hands it to the worker, which computes the
/// next position's mask while the caller handles the token and the forward pass of that
/// token runs; the generator waits only for what is left of it once the logits are ready.
///
/// ```text
///   generator: sample t, commit t ─► forward(t) ─────────────► take mask ─► apply, sample t+1
///   worker:                      └─► compute mask(t+1) ──────┘
/// ```
#[derive(Debug)]
struct Constraint {
    /// The matcher, when it is not at the worker (boxed: it travels between threads).
    matcher: Option<Box<Matcher>>,
    /// The mask thread (`None` if it could not be started: masks are then computed inline).
    worker: Option<MaskWorker>,
    critical: Duration,
    wait: Duration,
}

/// A thread that computes masks: it receives a matcher, and sends it back with its mask.
struct MaskWorker {
    jobs: Option<mpsc::Sender<Box<Matcher>>>,
    done: mpsc::Receiver<(Box<Matcher>, Result<Mask, GrammarError>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MaskWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskWorker").finish_non_exhaustive()
    }
}

impl MaskWorker {
    /// Starts the thread; `None` if the system has none to give.
    fn start() -> Option<MaskWorker> {
        let (jobs, job_rx) = mpsc::channel::<Box<Matcher>>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pagoda-mask".into())
            .spawn(move || {
                for mut matcher in job_rx {
                    let mask = matcher.compute_mask();
                    if done_tx.send((matcher, mask)).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(MaskWorker { jobs: Some(jobs), done, thread: Some(thread) })
    }
}

impl Drop for MaskWorker {
    fn drop(&mut self) {
        // Closing the job channel ends the worker's loop (after the mask it may be computing).
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Constraint {
    /// Sends the matcher to the worker to compute the next mask (kept here without one).
    fn prefetch(&mut self) {
        if let (Some(worker), Some(matcher)) = (&self.worker, self.matcher.take()) {
            match worker.jobs.as_ref().map(|jobs| jobs.send(matcher)) {
                Some(Ok(())) => {}
                Some(Err(mpsc::SendError(matcher))) => self.matcher = Some(matcher),
                None => {}
            }
        }
    }

    /// The mask of the current position: the worker's, or computed here.
    fn mask(&mut self) -> Result<Mask, GrammarError> {
        if let Some(matcher) = &mut self.matcher {
            return matcher.compute_mask();
        }
        let received = self.worker.as_ref().map(|w| w.done.recv());
        match received {
            Some(Ok((matcher, mask))) => {
                self.matcher = Some(matcher);
                mask
            }
            // The worker died with the matcher.
            _ => Err(GrammarError::Rejected {
                message: "the constraint's mask thread stopped".into(),
            }),
        }
    }

    /// Commits `token`; whether the grammar is complete.
    fn commit(&mut self, token: u32) -> Result<bool, GrammarError> {
        let matcher = self.matcher.as_mut().ok_or_else(|| GrammarError::Rejected {
            message: "the constraint's matcher is missing".into(),
        })?;
        matcher.commit(token)?;
        Ok(matcher.is_finished())
    }

    fn cost(&self) -> ConstraintCost {
        ConstraintCost {
            masks: self.matcher.as_ref().map(|m| m.stats()).unwrap_or_default(),
            critical: self.critical,
            wait: self.wait,
        }
    }
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
        Self::start_with_progress(session, sampler, prompt, opts, |_, _| {})
    }

    /// [`start`](Self::start), calling `progress(done, total)` after each chunk of the
    /// prompt (chunks of the session's `n_batch` tokens, the same forward passes `start`
    /// runs): `done` prompt tokens of `total` are in the session, the last call with
    /// `done == total`. Not called for an empty prompt (a continued session).
    pub fn start_with_progress(
        session: &mut Session<'_>,
        sampler: &mut Sampler,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Generator, Box<GenerateError>> {
        let mut gen = Generation {
            tokens: Vec::new(),
            stop: StopReason::Length,
            prompt_tokens: prompt.len(),
            prompt_time: Duration::ZERO,
            gen_time: Duration::ZERO,
            constraint: None,
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
            eval_prompt(session, prompt, &mut progress)
        };
        gen.prompt_time = t0.elapsed();
        let generator = |gen, logits, done| Generator {
            opts: opts.clone(),
            logits,
            pending: None,
            gen,
            started: None,
            done,
            logprobs: None,
            text: TextState::default(),
            constraint: None,
        };
        match logits {
            // `n_predict = 0`: the prompt is in the session, nothing is sampled.
            Ok(_) if opts.n_predict == Some(0) => Ok(generator(gen, None, true)),
            Ok(l) => Ok(generator(gen, Some(l), false)),
            Err(error) => Err(Box::new(GenerateError { error, partial: gen })),
        }
    }

    /// Stops the generation at the first of `stops` in its text (empty strings are
    /// ignored): the token that completes one is the last, [`Generation::stop`] is
    /// [`StopReason::StopString`], and the text ([`TokenStep::text`]) ends just before it.
    /// Text that may still become a stop string is held back until the next token decides.
    /// Stop strings need the text: generate with [`step_decoded`](Self::step_decoded)
    /// (plain [`step`](Self::step) refuses to run with stop strings set).
    pub fn with_stop_strings<S: Into<String>>(
        mut self,
        stops: impl IntoIterator<Item = S>,
    ) -> Self {
        self.text.stop = StopMatcher::new(stops);
        self
    }

    /// Reports each token's log-probability and the `top` most likely tokens with theirs
    /// ([`TokenStep::logprobs`]). They are of the model's distribution — the softmax of the
    /// logits as the model computed them, before anything the sampler does (penalties,
    /// logit bias, DRY, temperature, top-k/top-p/min-p and the other filters) and before a
    /// constraint's mask — as OpenAI's `logprobs`
    /// (and the engine's [`TokenEvent::logprobs`](crate::engine::TokenEvent::logprobs)),
    /// so they do not depend on the sampling settings; under greedy sampling without
    /// penalties the chosen token is the first alternative.
    pub fn with_logprobs(mut self, top: usize) -> Self {
        self.logprobs = Some(top);
        self
    }

    /// Makes the tokens follow `matcher`'s grammar (from
    /// [`Grammar::matcher`](crate::grammar::Grammar::matcher), at its start): before each
    /// sampling the tokens it does not allow get `-inf` logits, and each chosen token is
    /// committed to it. The mask for the next token is computed on a thread of the
    /// generator's own while the forward pass of the current one runs ([`ConstraintCost`] in
    /// [`Generation::constraint`] says what it cost). Generation stops with
    /// [`StopReason::ConstraintComplete`] when the grammar is complete (or at an
    /// end-of-generation token it allows, as usual); a grammar that allows no token at some
    /// point ends it with an error ([`ModelError::Invalid`]).
    pub fn with_constraint(mut self, matcher: Matcher) -> Self {
        self.gen.constraint = Some(ConstraintCost::default());
        self.constraint = Some(Constraint {
            matcher: Some(Box::new(matcher)),
            worker: MaskWorker::start(),
            critical: Duration::ZERO,
            wait: Duration::ZERO,
        });
        self
    }

    /// The stop strings (see [`with_stop_strings`](Self::with_stop_strings)).
    pub fn stop_strings(&self) -> &[String] {
        self.text.stop.stops()
    }

    /// The next token, or `None` once generation has stopped ([`Generation::stop`] says
    /// why). An error (the model failed) also ends generation. With stop strings set this
    /// is an error ([`ModelError::Invalid`]): they need [`step_decoded`](Self::step_decoded).
    pub fn step(
        &mut self,
        session: &mut Session<'_>,
        sampler: &mut Sampler,
        is_eog: impl Fn(u32) -> bool,
    ) -> Result<Option<u32>, ModelError> {
        if !self.done && !self.text.stop.stops().is_empty() {
            self.done = true;
            return Err(ModelError::Invalid(
                "stop strings need the tokens' text: generate with Generator::step_decoded".into(),
            ));
        }
        Ok(self.timed_step(session, sampler, &is_eog)?.map(|(tok, _)| tok))
    }

    /// [`step`](Self::step), with the token's text decoded by `tokenizer` (the model's, the
    /// same every call) and checked against the stop strings, and its log-probabilities
    /// when asked for. Its end-of-generation tokens ([`Tokenizer::is_eog`]) end generation.
    pub fn step_decoded(
        &mut self,
        session: &mut Session<'_>,
        sampler: &mut Sampler,
        tokenizer: &Tokenizer,
    ) -> Result<Option<TokenStep>, ModelError> {
        let Some((token, logprobs)) = self.timed_step(session, sampler, |t| tokenizer.is_eog(t))?
        else {
            return Ok(None);
        };
        let t = &mut self.text;
        // An end-of-generation token that ends it is not text.
        let ends = self.gen.stop == StopReason::EndOfGeneration && self.done;
        let piece = if ends { String::new() } else { t.utf8.push(tokenizer, token) };
        let (mut text, stopped) = t.stop.push(&piece);
        if stopped {
            self.stop(StopReason::StopString);
        } else if self.done {
            // The last token: flush the incomplete UTF-8 and the held stop-string start.
            let (tail, stopped) = t.stop.push(&t.utf8.finish());
            text.push_str(&tail);
            if stopped {
                self.gen.stop = StopReason::StopString;
            } else {
                text.push_str(&t.stop.finish());
            }
        }
        Ok(Some(TokenStep { token, text, logprobs }))
    }

    /// After [`step_decoded`](Self::step_decoded) failed: the text it was holding back (an
    /// incomplete UTF-8 character, a possible start of a stop string), which no step will
    /// return any more. Empty after a stop string.
    pub fn take_held_text(&mut self) -> String {
        let t = &mut self.text;
        let (mut out, stopped) = t.stop.push(&t.utf8.finish());
        if !stopped {
            out.push_str(&t.stop.finish());
        }
        out
    }

    /// Runs one step with its timing; `None` once done.
    fn timed_step(
        &mut self,
        session: &mut Session<'_>,
        sampler: &mut Sampler,
        is_eog: impl Fn(u32) -> bool,
    ) -> Result<Option<(u32, Option<TokenLogprobs>)>, ModelError> {
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
    ) -> Result<(u32, Option<TokenLogprobs>), ModelError> {
        let (mut l, mask) = self.logits_and_mask(session)?;
        // The model's distribution: the logits before the mask and the sampler change them.
        let raw = self.logprobs.map(|top| (l.clone(), top));
        if let (Some(mask), Some(c)) = (mask, &mut self.constraint) {
            let t = Instant::now();
            if mask.is_empty() {
                return Err(constraint_error(GrammarError::Rejected {
                    message: "the constraint allows no token here".into(),
                }));
            }
            mask.apply(&mut l);
            c.critical += t.elapsed();
        }
        let tok = sampler.sample(&mut l);
        let logprobs = raw.and_then(|(raw, top)| {
            let (logprob, top) = log_probs(&raw, tok, top)?;
            Some(TokenLogprobs { logprob, top })
        });
        let eog = !self.opts.ignore_eos && is_eog(tok);
        let length = self.opts.n_predict.is_some_and(|n| self.gen.tokens.len() + 1 >= n);
        let full = session.remaining() == 0;
        let mut complete = false;
        if let Some(c) = &mut self.constraint {
            let t = Instant::now();
            complete = c.commit(tok).map_err(constraint_error)?;
            self.gen.constraint = Some(c.cost());
            if !(eog || complete || length || full) {
                c.prefetch();
            }
            c.critical += t.elapsed();
            if let Some(cost) = &mut self.gen.constraint {
                cost.critical = c.critical;
                cost.wait = c.wait;
            }
        }
        sampler.accept(tok);
        self.gen.tokens.push(tok);
        self.pending = Some(tok);
        if eog {
            self.stop(StopReason::EndOfGeneration);
        } else if complete {
            self.stop(StopReason::ConstraintComplete);
        } else if length {
            self.stop(StopReason::Length);
        } else if full {
            self.stop(StopReason::ContextFull);
        }
        Ok((tok, logprobs))
    }

    /// The logits of the next position (running the pending token through the model if
    /// they are not there yet) and, with a constraint, its mask for that position — which
    /// its worker has been computing since the last commit.
    fn logits_and_mask(
        &mut self,
        session: &mut Session<'_>,
    ) -> Result<(Vec<f32>, Option<Mask>), ModelError> {
        let logits = match (self.logits.take(), self.pending.take()) {
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
        let Some(c) = &mut self.constraint else { return Ok((logits, None)) };
        let t = Instant::now();
        let mask = c.mask().map_err(constraint_error)?;
        c.critical += t.elapsed();
        c.wait += t.elapsed();
        Ok((logits, Some(mask)))
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

/// A constraint's failure as the generator reports it.
fn constraint_error(e: GrammarError) -> ModelError {
    ModelError::Invalid(format!("constraint: {e}"))
}

/// Runs `prompt` through the session in chunks of its `n_batch` tokens (as
/// [`Session::eval`] does), reporting each chunk; returns the last position's logits.
fn eval_prompt(
    session: &mut Session<'_>,
    prompt: &[u32],
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<f32>, ModelError> {
    let n_batch = session.options().n_batch.max(1);
    let total = prompt.len();
    let mut done = 0;
    let mut logits = Vec::new();
    for chunk in prompt.chunks(n_batch) {
        done += chunk.len();
        logits = if done == total {
            session.eval(chunk)?
        } else {
            // No logits for a chunk that is not the last.
            session.eval_all(chunk, chunk.len())?
        };
        progress(done, total);
    }
    Ok(logits)
}
