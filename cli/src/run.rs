//! `pagoda run`: generate from a prompt, streaming to stdout.
//!
//! Output: the text as it is generated (default), one JSON object at the end (`--json`), or
//! one JSON line per token and a summary line (`--json-stream`). `--stop STR` ends the text
//! before a stop string; `--logprobs N` adds each token's log-probability and the N most
//! likely alternatives (of the model's distribution, before penalties and filters).
//! `--grammar FILE`, `--json-schema FILE|JSON` and `--json-object` constrain the text; the
//! masks are computed beside the forward pass and their cost per token is reported.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgGroup, Args};
use pagoda_cpu::engine::{Engine, EngineConfig, FinishReason, Request, RequestId, TokenLogprobs};
use pagoda_cpu::generate::{ConstraintCost, GenerateOptions, Generation, Generator};
use pagoda_cpu::grammar::{Grammar, TokenEnv};
use pagoda_cpu::model::{ModelError, Session};
use pagoda_cpu::sampler::SamplerConfig;
use pagoda_cpu::tokenizer::Tokenizer;
use serde_json::{json, Value};

use crate::common::{
    load, read_text_file, stdout_error, CliResult, ContextArgs, Exit, Loaded, ModelArgs,
    PolicyArgs, SamplingArgs,
};
use crate::constraint::ConstraintArgs;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "file"])))]
#[command(group(ArgGroup::new("json_output").args(["json", "json_stream"])))]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the prompt from a file (UTF-8).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    n_predict: i64,
    #[command(flatten)]
    ctx: ContextArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    constraint: ConstraintArgs,
    /// Keep generating past end-of-turn tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Stop the text before this string (repeatable: the earliest of them); the token that
    /// completes it is the last generated, finish_reason "stop".
    #[arg(long = "stop", value_name = "STR",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    stop: Vec<String>,
    /// Report each token's log-probability and the N most likely alternatives (0-100) in
    /// the JSON output (needs --json or --json-stream). They are of the model's
    /// distribution: before penalties, logit bias, temperature, filters and a grammar.
    #[arg(long = "logprobs", value_name = "N", requires = "json_output",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    logprobs: Option<u32>,
    /// Recompute the whole sequence every step (the O(N³) baseline).
    #[arg(long = "no-kv-cache", conflicts_with = "kv_policy")]
    no_kv_cache: bool,
    /// Print one JSON object instead of streaming text (a JSON array with --samples).
    #[arg(long = "json", conflicts_with = "json_stream")]
    json: bool,
    /// Print one JSON line per token as it is generated ({"token", "piece": the text it
    /// adds, "logprob"}), then {"summary": the --json object}.
    #[arg(long = "json-stream", conflicts_with = "samples")]
    json_stream: bool,
    /// Draw N samples: the prompt is prefilled once and its pages shared by all samples
    /// (copy-on-write); sample i uses seed + i. Printed in turn.
    #[arg(long = "samples", default_value_t = 1, conflicts_with_all = ["no_kv_cache", "kv_policy"],
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    samples: u32,
}

/// How `run` prints what it generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutputMode {
    /// The text, as it is generated.
    Text,
    /// One JSON object at the end.
    Json,
    /// One JSON line per token, then a summary line.
    JsonStream,
}

impl RunArgs {
    fn output(&self) -> OutputMode {
        match (self.json, self.json_stream) {
            (_, true) => OutputMode::JsonStream,
            (true, false) => OutputMode::Json,
            (false, false) => OutputMode::Text,
        }
    }

    /// Alternatives per token: `--logprobs N`; the chosen token's alone for `--json-stream`.
    fn top_logprobs(&self) -> Option<usize> {
        match (self.logprobs, self.output()) {
            (Some(n), _) => Some(n as usize),
            (None, OutputMode::JsonStream) => Some(0),
            (None, _) => None,
        }
    }
}

pub fn main(a: RunArgs) -> CliResult {
    let prompt = match (&a.prompt, &a.file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => read_text_file(f)?,
        // Unreachable through clap (the `input` group), kept as the usage error it would be.
        _ => {
            return Err(Box::new(Exit {
                code: 2,
                message: Some("error: give a prompt with -p PROMPT or -f FILE".into()),
            }))
        }
    };
    // The sampling settings, a constraint flag's file and JSON are checked before the model
    // loads.
    a.sampling.config().validate()?;
    let constrained = a.constraint.spec()?.is_some();
    let loaded = load(&a.model)?;
    let tok = &loaded.tokenizer;
    let prompt_ids = tok.encode(&prompt, true, true);
    if prompt_ids.is_empty() {
        return Err("the prompt is empty".into());
    }
    // DRY's sequence breakers are matched against the vocabulary; a --logit-bias token
    // outside it is a usage error.
    let mut sampler = a.sampling.sampler(tok)?;
    let grammar = if constrained { a.constraint.compile(&TokenEnv::new(tok)?)? } else { None };
    if a.samples > 1 {
        return run_samples(&a, &loaded, prompt_ids, sampler.config().clone(), grammar);
    }
    let opts = a.ctx.session(2048);
    let policy = a.policy.checked(&opts, loaded.model.config().n_layers);
    let mut session = Session::with_policy(&loaded.model, opts, policy)?;
    let gen_opts = GenerateOptions {
        n_predict: (a.n_predict >= 0).then_some(a.n_predict as usize),
        ignore_eos: a.ignore_eos,
        no_kv_cache: a.no_kv_cache,
    };
    let mode = a.output();
    let mut stdout = std::io::stdout().lock();
    let mut text = String::new();
    let mut logprobs = Vec::new();
    let mut progress = PromptProgress::new(prompt_ids.len(), session.options().n_batch);
    let started = Generator::start_with_progress(
        &mut session,
        &mut sampler,
        &prompt_ids,
        &gen_opts,
        |done, total| progress.update(done, total),
    );
    progress.clear();
    let (gen, err) = match started {
        Err(e) => (e.partial, Some(e.error)),
        Ok(g) => {
            let mut g = g.with_stop_strings(a.stop.iter().cloned());
            if let Some(n) = a.top_logprobs() {
                g = g.with_logprobs(n);
            }
            if let Some(grammar) = &grammar {
                g = g.with_constraint(grammar.matcher());
            }
            let mut err = None;
            loop {
                let step = match g.step_decoded(&mut session, &mut sampler, tok) {
                    Ok(Some(step)) => step,
                    Ok(None) => break,
                    Err(e) => {
                        let tail = g.take_held_text();
                        if mode == OutputMode::Text {
                            stdout.write_all(tail.as_bytes()).map_err(stdout_error)?;
                        }
                        text.push_str(&tail);
                        err = Some(e);
                        break;
                    }
                };
                text.push_str(&step.text);
                let lp = step.logprobs.as_ref().map(|l| logprob_json(tok, step.token, l));
                // A failed write (a closed pipe: `pagoda run … | head`) stops generation at once.
                match mode {
                    OutputMode::Text => stdout.write_all(step.text.as_bytes()),
                    OutputMode::Json => Ok(()),
                    OutputMode::JsonStream => {
                        let mut line = json!({ "token": step.token, "piece": step.text });
                        if let Some(Value::Object(lp)) = &lp {
                            line["logprob"] = lp["logprob"].clone();
                            if a.logprobs.is_some() {
                                line["top_logprobs"] = lp["top_logprobs"].clone();
                            }
                        }
                        writeln!(stdout, "{line}")
                    }
                }
                .and_then(|()| stdout.flush())
                .map_err(stdout_error)?;
                if a.logprobs.is_some() {
                    logprobs.extend(lp);
                }
            }
            (g.finish(), err)
        }
    };
    if mode == OutputMode::Text {
        writeln!(stdout).and_then(|()| stdout.flush()).map_err(stdout_error)?;
        eprintln!(
            "load {:.2} s | prompt {} tokens, {:.1} t/s | generated {} tokens, {:.1} t/s | KV {} pages, {} bytes",
            loaded.load_time.as_secs_f64(),
            gen.prompt_tokens,
            gen.prompt_tps(),
            gen.tokens.len(),
            gen.gen_tps(),
            session.kv_pages_in_use(),
            session.kv_bytes_in_use(),
        );
        if let Some(c) = &gen.constraint {
            eprintln!(
                "constraint: {} masks, {:.1} µs/token to compute, {:.1} µs/token on the critical \
                 path ({:.1} waiting for the mask)",
                c.masks.masks,
                c.mask_us_per_token(),
                c.critical_us_per_token(),
                c.wait_us_per_token()
            );
        }
    } else {
        let mut obj = json!({
            "prompt_tokens": prompt_ids,
            "tokens": gen.tokens,
            "text": text,
            "stop": gen.stop.as_str(),
            "finish_reason": gen.stop.finish_reason(),
            "timings": timings(&gen, loaded.load_time.as_secs_f64()),
            "kv": { "pages": session.kv_pages_in_use(), "bytes": session.kv_bytes_in_use(),
                    "block_size": session.cache().block_size(),
                    "policy": policy.to_string(), "peak_bytes": session.peak_kv_bytes(),
                    "evicted_pages": session.evicted_pages() },
        });
        if a.logprobs.is_some() {
            obj["logprobs"] = Value::Array(logprobs);
        }
        if let Some(e) = &err {
            obj["error"] = json!(e.to_string());
        }
        if mode == OutputMode::JsonStream {
            obj = json!({ "summary": obj });
        }
        writeln!(stdout, "{obj}").and_then(|()| stdout.flush()).map_err(stdout_error)?;
    }
    match err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// One token's log-probabilities as JSON: `{"token", "piece", "logprob", "top_logprobs":
/// [{"token", "piece", "logprob"}, …]}`, where a piece is the token's own text (invalid
/// UTF-8 of a partial character shown as U+FFFD).
fn logprob_json(tok: &Tokenizer, token: u32, lp: &TokenLogprobs) -> Value {
    let entry =
        |t: u32, logprob: f32| json!({ "token": t, "piece": piece(tok, t), "logprob": logprob });
    let mut v = entry(token, lp.logprob);
    v["top_logprobs"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
    v
}

/// The text of token `t` alone.
fn piece(tok: &Tokenizer, t: u32) -> String {
    String::from_utf8_lossy(tok.token_to_bytes(t).unwrap_or_default()).into_owned()
}

/// `prompt: 1024/8192 tokens (12%)` on stderr, redrawn in place while a prompt of more than
/// one batch is processed, and erased when it is done; only when stderr is a terminal.
struct PromptProgress {
    enabled: bool,
    shown: bool,
}

impl PromptProgress {
    fn new(prompt_tokens: usize, n_batch: usize) -> Self {
        PromptProgress {
            enabled: prompt_tokens > n_batch && std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn update(&mut self, done: usize, total: usize) {
        if !self.enabled || done >= total {
            return;
        }
        let pct = done * 100 / total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\rprompt: {done}/{total} tokens ({pct}%)").and_then(|()| err.flush());
        self.shown = true;
    }

    /// Erases the line, if one was drawn.
    fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K").and_then(|()| err.flush());
            self.shown = false;
        }
    }
}

fn timings(g: &Generation, load_s: f64) -> Value {
    json!({
        "load_ms": load_s * 1e3,
        "prompt_n": g.prompt_tokens,
        "prompt_ms": g.prompt_time.as_secs_f64() * 1e3,
        "prompt_per_second": g.prompt_tps(),
        "predicted_n": g.tokens.len(),
        "predicted_ms": g.gen_time.as_secs_f64() * 1e3,
        "predicted_per_second": g.gen_tps(),
        "constraint": g.constraint.as_ref().map(constraint_json),
    })
}

/// A constraint's mask figures: masks, compute time per token (mostly beside the forward
/// pass) and time per token on the critical path, in microseconds.
fn constraint_json(c: &ConstraintCost) -> Value {
    json!({
        "masks": c.masks.masks,
        "mask_us_per_token": c.mask_us_per_token(),
        "mask_max_us": c.masks.max.as_secs_f64() * 1e6,
        "critical_us_per_token": c.critical_us_per_token(),
        "wait_us_per_token": c.wait_us_per_token(),
    })
}

/// One sample of `--samples N` as the engine streamed it.
#[derive(Default)]
struct SampleText {
    tokens: Vec<u32>,
    text: String,
    logprobs: Vec<Value>,
    finish: Option<FinishReason>,
}

/// `--samples N`: one request of N samples through the engine (prefill once, fork).
fn run_samples(
    a: &RunArgs,
    loaded: &Loaded,
    prompt_ids: Vec<u32>,
    sampler: SamplerConfig,
    grammar: Option<Arc<Grammar>>,
) -> CliResult {
    let tok = &loaded.tokenizer;
    let opts = a.ctx.session(2048);
    let n = a.samples as usize;
    if prompt_ids.len() >= opts.n_ctx {
        return Err(
            ModelError::ContextFull { needed: prompt_ids.len() + 1, n_ctx: opts.n_ctx }.into()
        );
    }
    let room = opts.n_ctx - prompt_ids.len();
    let seed = sampler.seed;
    let mut samples: Vec<SampleText> = (0..n).map(|_| SampleText::default()).collect();
    // `-n 0`: every sample is empty; the engine (at least one token a request) is not asked.
    let summary = if a.n_predict == 0 {
        for s in &mut samples {
            s.finish = Some(FinishReason::Length);
        }
        None
    } else {
        let max_tokens = if a.n_predict > 0 { (a.n_predict as usize).min(room) } else { room };
        // The shared prompt pages, plus each sample's own growth and its copy of the last page.
        let bs = opts.block_size;
        let kv_pages = prompt_ids.len().div_ceil(bs) + n * (max_tokens.div_ceil(bs) + 1);
        let config = EngineConfig {
            kv_pages,
            block_size: bs,
            kv_type: opts.kv_type,
            max_batch_tokens: opts.n_batch,
            prefix_caching: false,
        };
        // The engine's own copy of the tokenizer: the text of each token, cut at stop strings.
        let engine_tok = Tokenizer::from_gguf(&loaded.model.gguf())?;
        let mut engine = Engine::new(&loaded.model, config)?.with_tokenizer(Arc::new(engine_tok));
        let stop_tokens = if a.ignore_eos { Vec::new() } else { tok.eog_ids().to_vec() };
        engine.submit(Request {
            id: RequestId(0),
            prompt: prompt_ids.clone(),
            max_tokens,
            sampler,
            n,
            stop_tokens,
            logprobs: a.logprobs.map(|n| n as usize),
            stop: a.stop.clone(),
            constraint: grammar,
        })?;
        let t0 = std::time::Instant::now();
        while engine.has_unfinished() {
            for e in engine.step()?.tokens {
                let s = samples.get_mut(e.sample).ok_or("the engine returned an unknown sample")?;
                s.tokens.push(e.token);
                s.text.push_str(e.text.as_deref().unwrap_or_default());
                if let Some(lp) = &e.logprobs {
                    s.logprobs.push(logprob_json(tok, e.token, lp));
                }
                s.finish = s.finish.or(e.finish);
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let st = engine.stats();
        let masks = st.mask_us_per_token().map_or(String::new(), |us| {
            format!(
                " | constraint: {} masks, {us:.1} µs/token to compute, {:.1} µs/token waited",
                st.masks,
                st.mask_wait.as_secs_f64() * 1e6 / st.masks.max(1) as f64
            )
        });
        Some(format!(
            "load {:.2} s | prompt {} tokens once | {n} samples, {} tokens, {:.1} t/s | \
             KV peak {} pages ({} bytes){masks}",
            loaded.load_time.as_secs_f64(),
            prompt_ids.len(),
            st.generated_tokens,
            st.generated_tokens as f64 / wall.max(1e-9),
            st.peak_pages,
            st.peak_pages * engine.cache().page_bytes(),
        ))
    };
    let mut stdout = std::io::stdout().lock();
    let mut all = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let sample_seed = seed.wrapping_add(i as u64);
        // The engine says Stop for a stop token, a stop string and a complete grammar.
        let ended_by_eog = s.tokens.last().is_some_and(|&t| !a.ignore_eos && tok.is_eog(t));
        let (stop, finish_reason) = match s.finish {
            Some(FinishReason::Stop) if ended_by_eog => ("eog", "stop"),
            Some(FinishReason::Stop) if !a.stop.is_empty() => ("stop", "stop"),
            Some(FinishReason::Stop) => ("constraint", "stop"),
            _ => ("length", "length"),
        };
        if a.json {
            let mut obj = json!({ "sample": i, "seed": sample_seed, "tokens": s.tokens,
                                  "text": s.text, "stop": stop, "finish_reason": finish_reason });
            if a.logprobs.is_some() {
                obj["logprobs"] = Value::Array(s.logprobs.clone());
            }
            all.push(obj);
        } else {
            writeln!(stdout, "--- sample {i} (seed {sample_seed}) ---")
                .and_then(|()| writeln!(stdout, "{}", s.text))
                .map_err(stdout_error)?;
        }
    }
    if a.json {
        writeln!(stdout, "{}", Value::Array(all)).map_err(stdout_error)?;
    }
    stdout.flush().map_err(stdout_error)?;
    if let Some(summary) = summary {
        eprintln!("{summary}");
    }
    Ok(())
}
