//! `pagoda batch`: many requests from a JSONL file, run concurrently through the engine.
//!
//! Input, one request per line (blank lines are skipped):
//!
//! ```text
//! {"id": "a", "prompt": "Once upon a time", "n_predict": 64, "temperature": 0.8, "seed": 7}
//! ```
//!
//! Only `prompt` is required; `id` defaults to the line number, `n_predict` to `-n`, the
//! sampling fields to the command's flags (`temperature`, `seed`, `top_k`, `top_p`, `min_p`,
//! and llama.cpp server's `typical_p`, `repeat_penalty`, `repeat_last_n`, `presence_penalty`,
//! `frequency_penalty`, `mirostat`, `mirostat_tau`, `mirostat_eta`, `dry_*`, `logit_bias`: see
//! `sampling_fields`), `stop` (a string or an array) to `--stop`, `logprobs` (alternatives per
//! token; the result then has a `"logprobs"` array) to `--logprobs`. Structured output: `"grammar"` (GBNF text),
//! `"json_schema"` (a schema) or `"response_format"` (OpenAI's object: `{"type":
//! "json_object"}`, `{"type": "json_schema", "json_schema": {"schema": …}}`, `{"type":
//! "text"}`), at most one; a line without them takes `--grammar` / `--json-schema` /
//! `--json-object`. A constrained request ends with `"finish": "stop"` when its grammar is
//! complete. Output, one line per request as it finishes:
//!
//! ```text
//! {"id": "a", "text": "…", "tokens": […], "finish": "length", "prompt_tokens": 5,
//!  "cached_prompt_tokens": 0, "preemptions": 0}
//! ```
//!
//! A line that cannot be parsed, or a request that can never fit, is one failed result,
//! `{"id": …, "error": "…"}`, and the rest run; the exit status is then 1 and stderr says how
//! many failed. `--strict` aborts on the first bad line instead, with no results.
//!
//! `-o FILE` is written atomically: results go to `.FILE.PID.tmp` beside it, which is synced
//! and renamed over FILE at the end (also after an interrupt or an engine error, with the
//! results completed so far); until then FILE keeps its old contents. `-o` may not name the
//! input or the model. `--append` resumes: FILE's result lines are kept, the requests whose
//! ids already have a result are skipped (failed ones are run again), and old + new lines
//! replace FILE atomically.
//!
//! SIGINT / SIGTERM: the current engine step finishes, every completed result is written,
//! the unfinished ids are listed on stderr and the exit status is 130 / 143. A second signal
//! ends the process at once.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use pagoda_cpu::engine::{Engine, EngineStats, Request, RequestId, RequestOutput, TokenLogprobs};
use pagoda_cpu::sampler::SamplerConfig;
use pagoda_cpu::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

use crate::constraint::{request_fields, ConstraintArgs, GrammarCache, RequestConstraint};
use crate::sampling_fields;
use pagoda_cpu::grammar::{ConstraintSpec, TokenEnv};

use crate::common::{
    load, read_text_file, same_file, stdout_error, AtomicFile, CliResult, EngineArgs, Exit,
    ModelArgs, OutputLock, SamplingArgs,
};

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Requests, one JSON object per line.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Write results here instead of stdout (atomically: FILE is replaced at the end).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Resume into -o FILE: keep its results, skip the requests whose ids it already has.
    #[arg(long = "append", requires = "output")]
    append: bool,
    /// Abort on the first bad line or unrunnable request (no results) instead of reporting
    /// it as a failed result and running the rest.
    #[arg(long = "strict")]
    strict: bool,
    /// Tokens to generate for lines without "n_predict".
    #[arg(short = 'n', long = "n-predict", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    n_predict: u32,
    #[command(flatten)]
    engine: EngineArgs,
    /// Keep generating past end-of-turn tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    constraint: ConstraintArgs,
    /// Stop string for lines without "stop" (repeatable): a sample's text ends just before
    /// the first one, with finish "stop".
    #[arg(long = "stop", value_name = "STR")]
    stop: Vec<String>,
    /// Log-probabilities for lines without "logprobs": each token's, with the N most likely
    /// alternatives, in the result's "logprobs" array.
    #[arg(long = "logprobs", value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    logprobs: Option<u32>,
}

/// One parsed request line of a batch file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRequest {
    /// 1-based line number in the file.
    pub line_no: usize,
    /// The caller's id (a JSON string or number; the line number when absent), echoed back.
    pub id: Value,
    /// The prompt (never empty).
    pub prompt: String,
    /// Tokens to generate (≥ 1).
    pub n_predict: usize,
    /// Sampler settings: the command's defaults with the line's fields applied (validated).
    pub sampler: SamplerConfig,
    /// The line's `grammar` / `json_schema` / `response_format` (not yet compiled).
    pub constraint: RequestConstraint,
    /// The line's `"stop"` (a string or an array of strings); `None`: the command's `--stop`.
    pub stop: Option<Vec<String>>,
    /// The line's `"logprobs"` (alternatives per token); `None`: the command's `--logprobs`.
    pub logprobs: Option<usize>,
}

/// The fields of a request line besides [`sampling_fields::FIELDS`].
const FIELDS: &str = "id, prompt, n_predict, temperature, seed, top_k, top_p, min_p, stop, \
     logprobs, grammar, json_schema, response_format";

/// Every field a line may have, for the error that names an unknown one.
fn known_fields() -> String {
    let mut all: Vec<&str> = FIELDS.split(", ").collect();
    all.extend(sampling_fields::FIELDS);
    all.join(", ")
}

/// Parses one request line (`{"id":…,"prompt":…,…}`) of a batch file: `line_no` is named in
/// every error, `defaults` are the sampler settings of fields the line leaves out, `n_predict`
/// the default number of tokens. Never panics, whatever `text` holds; an error says what is
/// wrong with the line (`line 3: missing "prompt"`).
pub fn parse_request_line(
    text: &str,
    line_no: usize,
    defaults: &SamplerConfig,
    n_predict: usize,
) -> Result<ParsedRequest, String> {
    let at = |m: String| format!("line {line_no}: {m}");
    let v: Value = serde_json::from_str(text).map_err(|e| at(format!("not valid JSON ({e})")))?;
    let Value::Object(obj) = v else {
        return Err(at("expected a JSON object".into()));
    };
    let known =
        |k: &str| FIELDS.split(", ").any(|f| f == k) || sampling_fields::FIELDS.contains(&k);
    if let Some(k) = obj.keys().find(|k| !known(k)) {
        return Err(at(format!("unknown field {} (known: {})", json!(k), known_fields())));
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(at("\"prompt\" is empty".into())),
        Some(_) => return Err(at("\"prompt\" must be a string".into())),
        None => return Err(at("missing \"prompt\"".into())),
    };
    let id = match obj.get("id") {
        None => json!(line_no),
        Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
        Some(_) => return Err(at("\"id\" must be a string or a number".into())),
    };
    let uint = |k: &str, min: u64| -> Result<Option<u64>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) if x >= min => Ok(Some(x)),
                _ => Err(at(format!("\"{k}\" must be an integer ≥ {min}, got {v}"))),
            },
        }
    };
    let float = |k: &str| -> Result<Option<f32>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(Some(x as f32)),
                _ => Err(at(format!("\"{k}\" must be a finite number, got {v}"))),
            },
        }
    };
    let mut sampler = defaults.clone();
    if let Some(t) = float("temperature")? {
        sampler.temperature = t;
    }
    if let Some(s) = uint("seed", 0)? {
        sampler.seed = s;
    }
    if let Some(k) = uint("top_k", 0)? {
        sampler.top_k = usize::try_from(k).unwrap_or(usize::MAX);
    }
    if let Some(p) = float("top_p")? {
        sampler.top_p = p;
    }
    if let Some(p) = float("min_p")? {
        sampler.min_p = p;
    }
    sampling_fields::apply(&obj, &mut sampler).map_err(|(_, m)| at(m))?;
    sampler.validate().map_err(|e| at(e.to_string()))?;
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|s| s.as_str().filter(|s| !s.is_empty()).map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    at("\"stop\" must be a string or an array of non-empty strings".into())
                })?,
        ),
        Some(v) => {
            return Err(at(format!("\"stop\" must be a string or an array of strings, got {v}")))
        }
    };
    let logprobs = match uint("logprobs", 0)? {
        Some(k) if k > 100 => return Err(at(format!("\"logprobs\" must be at most 100, got {k}"))),
        k => k.map(|k| k as usize),
    };
    let n_predict = match uint("n_predict", 1)? {
        None => n_predict,
        Some(x) => usize::try_from(x).unwrap_or(usize::MAX),
    };
    let constraint = request_fields(&obj).map_err(at)?;
    Ok(ParsedRequest { line_no, id, prompt, n_predict, sampler, constraint, stop, logprobs })
}

/// One line of the input: a request, or why it cannot run.
enum Entry {
    Ok(Box<ParsedRequest>),
    Failed { id: Value, error: String },
}

/// The id a bad line asked for, if it got that far; else its line number.
fn id_of_bad_line(text: &str, line_no: usize) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => match o.get("id") {
            Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
            _ => json!(line_no),
        },
        _ => json!(line_no),
    }
}

/// Parses the input. A bad line or a duplicate id is an error under `strict`, else a failed
/// entry.
fn read_lines(
    path: &Path,
    defaults: &SamplerConfig,
    n: usize,
    strict: bool,
) -> CliResult<Vec<Entry>> {
    let text = read_text_file(path)?;
    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let parsed = parse_request_line(raw, i + 1, defaults, n).and_then(|line| {
            if seen.insert(line.id.to_string()) {
                Ok(line)
            } else {
                Err(format!("line {}: duplicate id {}", i + 1, line.id))
            }
        });
        match parsed {
            Ok(line) => lines.push(Entry::Ok(Box::new(line))),
            Err(e) if strict => return Err(format!("{}: {e}", path.display()).into()),
            Err(e) => lines.push(Entry::Failed {
                id: id_of_bad_line(raw, i + 1),
                error: format!("{}: {e}", path.display()),
            }),
        }
    }
    if lines.is_empty() {
        return Err(format!("{}: no requests", path.display()).into());
    }
    Ok(lines)
}

/// `--append`: the result lines of an earlier run (failed ones dropped: they run again) and
/// the ids they answer.
fn read_previous(path: &Path) -> CliResult<(Vec<String>, HashSet<String>)> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8(b)
            .map_err(|_| format!("--append: '{}' is not valid UTF-8", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(format!("--append: cannot read '{}': {e}", path.display()).into()),
    };
    let (mut kept, mut ids) = (Vec::new(), HashSet::new());
    let n_lines = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) if o.contains_key("id") => {
                if !o.contains_key("error") {
                    ids.insert(o["id"].to_string());
                    kept.push(line.to_string());
                }
            }
            // A cut last line (from a tool that does not write atomically): run it again.
            Err(_) if i + 1 == n_lines && !text.ends_with('\n') => log::warn!(
                "--append: '{}': line {} is incomplete; dropped, its request runs again",
                path.display(),
                i + 1
            ),
            _ => {
                return Err(format!(
                    "--append: '{}': line {} is not a result line (a JSON object with \"id\"); \
                     refusing to replace the file",
                    path.display(),
                    i + 1
                )
                .into())
            }
        }
    }
    Ok((kept, ids))
}

/// Where results go: stdout, a file replaced atomically, or a file that is not a regular
/// file (a device or FIFO such as /dev/null), written in place.
enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    Atomic(AtomicFile),
    Direct(PathBuf, BufWriter<File>),
}

impl Sink {
    fn open(output: Option<&Path>) -> CliResult<Sink> {
        let Some(p) = output else { return Ok(Sink::Stdout(std::io::stdout().lock())) };
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Err(format!("-o '{}' is a directory", p.display()).into()),
            Ok(m) if !m.is_file() => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(|e| format!("cannot open '{}': {e}", p.display()))?;
                Ok(Sink::Direct(p.to_path_buf(), BufWriter::new(f)))
            }
            _ => Ok(Sink::Atomic(AtomicFile::create(p)?)),
        }
    }

    fn line(&mut self, line: &str) -> CliResult {
        let bytes = format!("{line}\n");
        match self {
            Sink::Stdout(o) => o.write_all(bytes.as_bytes()).map_err(stdout_error),
            Sink::Atomic(f) => f.write_all(bytes.as_bytes()).map_err(Into::into),
            Sink::Direct(p, f) => f
                .write_all(bytes.as_bytes())
                .map_err(|e| format!("cannot write '{}': {e}", p.display()).into()),
        }
    }

    /// Makes what was written visible to a reader now (stdout, a device); an atomic file
    /// only shows its contents at [`finish`](Self::finish).
    fn flush(&mut self) -> CliResult {
        match self {
            Sink::Stdout(o) => o.flush().map_err(stdout_error),
            Sink::Atomic(f) => f.flush().map_err(Into::into),
            Sink::Direct(p, f) => {
                f.flush().map_err(|e| format!("cannot write '{}': {e}", p.display()).into())
            }
        }
    }

    fn finish(self) -> CliResult {
        match self {
            Sink::Stdout(mut o) => o.flush().map_err(stdout_error),
            Sink::Atomic(f) => f.commit().map_err(Into::into),
            Sink::Direct(p, mut f) => {
                f.flush().map_err(|e| format!("cannot write '{}': {e}", p.display()).into())
            }
        }
    }
}

/// SIGINT / SIGTERM, noted instead of ending the process (a second one ends it at once).
struct Interrupt {
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    fn install() -> CliResult<Interrupt> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let signal = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            let setup = || -> std::io::Result<()> {
                // The shutdown goes first: it only fires once `armed` is set by a first signal.
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, armed.clone())?;
                signal_hook::flag::register(sig, armed.clone())?;
                signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)?;
                Ok(())
            };
            setup().map_err(|e| format!("cannot install a handler for signal {sig}: {e}"))?;
        }
        Ok(Interrupt { signal })
    }

    /// The signal received, if any.
    fn received(&self) -> Option<usize> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

fn signal_name(sig: usize) -> &'static str {
    match sig {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    }
}

pub fn main(a: BatchArgs) -> CliResult {
    let defaults = a.sampling.config();
    // Read and parsed before the model loads: a bad file fails at once.
    let default_constraint = a.constraint.spec()?;
    let entries = read_lines(&a.file, &defaults, a.n_predict as usize, a.strict)?;
    let model_path =
        a.model.model.clone().unwrap_or_else(pagoda_cpu::model_file::default_model_path);
    if let Some(o) = &a.output {
        if same_file(o, &a.file) {
            return Err(format!("-o '{}' is the input file (-f)", o.display()).into());
        }
        if same_file(o, &model_path) {
            return Err(format!("-o '{}' is the model file", o.display()).into());
        }
    }
    // Held to the end: a second run on the same output is refused, not interleaved.
    let _lock = match &a.output {
        Some(o) if std::fs::metadata(o).map_or(true, |m| m.is_file()) => {
            Some(OutputLock::acquire(o)?)
        }
        _ => None,
    };
    let (previous, done_ids) = match (&a.output, a.append) {
        (Some(o), true) => read_previous(o)?,
        _ => Default::default(),
    };
    let mut sink = Sink::open(a.output.as_deref())?;
    for line in &previous {
        sink.line(line)?;
    }
    let total = entries.len();
    let mut failed = 0usize;
    let mut skipped = 0usize;
    let mut lines = Vec::new();
    for e in entries {
        match e {
            Entry::Ok(l) if done_ids.contains(&l.id.to_string()) => skipped += 1,
            Entry::Ok(l) => lines.push(*l),
            Entry::Failed { id, error } => {
                sink.line(&json!({ "id": id, "error": error }).to_string())?;
                failed += 1;
            }
        }
    }
    sink.flush()?;
    if skipped > 0 {
        eprintln!("batch: {skipped} of {total} requests already have results; skipped");
    }
    let interrupt = Interrupt::install()?;
    let (stats_line, unfinished, step_error) = if lines.is_empty() {
        (None, Vec::new(), None)
    } else {
        run_requests(&a, default_constraint, &lines, &mut sink, &interrupt, &mut failed)?
    };
    sink.finish()?;
    if let Some(s) = stats_line {
        eprintln!("{s}");
    }
    let ids = |v: &[usize]| v.iter().map(|&i| lines[i].id.to_string()).collect::<Vec<_>>();
    if let Some(e) = step_error {
        return Err(format!(
            "{e} (completed results were written; unfinished ids: {})",
            ids(&unfinished).join(", ")
        )
        .into());
    }
    if let Some(sig) = interrupt.received() {
        return Err(Box::new(Exit {
            code: 128 + sig.min(127) as u8,
            message: Some(format!(
                "batch: interrupted by {}; completed results were written; {} unfinished: {}",
                signal_name(sig),
                unfinished.len(),
                ids(&unfinished).join(", ")
            )),
        }));
    }
    if failed > 0 {
        let to = a.output.as_ref().map_or("stdout".into(), |p| format!("'{}'", p.display()));
        return Err(format!(
            "{failed} of {total} requests failed (their \"error\" lines are in {to})"
        )
        .into());
    }
    Ok(())
}

/// What the engine part leaves behind: the summary line, the indices (into `lines`) of the
/// requests not finished, and a step error that stopped the engine.
type RunOutcome = (Option<String>, Vec<usize>, Option<String>);

fn run_requests(
    a: &BatchArgs,
    default_constraint: Option<(ConstraintSpec, String)>,
    lines: &[ParsedRequest],
    sink: &mut Sink,
    interrupt: &Interrupt,
    failed: &mut usize,
) -> CliResult<RunOutcome> {
    let loaded = load(&a.model)?;
    let tok = Arc::new(loaded.tokenizer);
    let tok = &tok;
    // The engine has the tokenizer: each token's text, cut at stop strings; DRY's breakers.
    let mut engine = Engine::with_policy(&loaded.model, a.engine.config(), a.engine.kv_policy)?
        .with_tokenizer(tok.clone());
    let stop_tokens = if a.ignore_eos { Vec::new() } else { tok.eog_ids().to_vec() };
    // The token environment only when some request is constrained.
    let constrained = default_constraint.is_some()
        || lines.iter().any(|l| matches!(l.constraint, RequestConstraint::Spec(_)));
    let env = if constrained { Some(TokenEnv::new(tok)?) } else { None };
    let mut grammars = GrammarCache::default();
    let default_grammar = match (&default_constraint, &env) {
        (Some((spec, what)), Some(env)) => {
            Some(grammars.get(env, spec).map_err(|e| format!("{what}: {e}"))?)
        }
        _ => None,
    };
    // Requests in the engine, by index into `lines`.
    let mut pending = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        let where_ = || format!("{}: line {} (id {})", a.file.display(), l.line_no, l.id);
        let constraint = match &l.constraint {
            RequestConstraint::Default => default_grammar.clone(),
            RequestConstraint::Text => None,
            RequestConstraint::Spec(spec) => {
                let compiled = env
                    .as_ref()
                    .ok_or_else(|| "no token environment".to_string())
                    .and_then(|env| grammars.get(env, spec));
                match compiled {
                    Ok(g) => Some(g),
                    Err(e) => {
                        let error = format!("{}: {}: {e}", where_(), spec.kind());
                        if a.strict {
                            return Err(error.into());
                        }
                        sink.line(&json!({ "id": l.id, "error": error }).to_string())?;
                        *failed += 1;
                        continue;
                    }
                }
            }
        };
        let req = Request {
            id: RequestId(i as u64),
            prompt: tok.encode(&l.prompt, true, true),
            max_tokens: l.n_predict,
            sampler: l.sampler.clone(),
            n: 1,
            stop_tokens: stop_tokens.clone(),
            logprobs: l.logprobs.or(a.logprobs.map(|k| k as usize)),
            stop: l.stop.clone().unwrap_or_else(|| a.stop.clone()),
            constraint,
        };
        match engine.submit(req) {
            Ok(_) => {
                pending.insert(i, ());
            }
            Err(e) => {
                let error = format!("{}: {e}", where_());
                if a.strict {
                    return Err(error.into());
                }
                sink.line(&json!({ "id": l.id, "error": error }).to_string())?;
                *failed += 1;
            }
        }
    }
    sink.flush()?;
    let progress = std::io::stderr().is_terminal();
    // Page counts are in the pool's pages: single-layer pages under a per-layer policy.
    let pool_pages = engine.cache().pool().capacity();
    let unit = if engine.tables_per_sequence() > 1 { "single-layer pages" } else { "pages" };
    let t0 = Instant::now();
    let mut done = 0usize;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut step_error = None;
    // Each request's text and log-probabilities as its tokens arrive.
    let mut streamed: BTreeMap<usize, Streamed> = BTreeMap::new();
    while engine.has_unfinished() && interrupt.received().is_none() {
        let step = match engine.step() {
            Ok(s) => s,
            Err(e) => {
                step_error = Some(e.to_string());
                break;
            }
        };
        for e in &step.tokens {
            let acc = streamed.entry(e.id.0 as usize).or_default();
            acc.text.push_str(e.text.as_deref().unwrap_or(""));
            if let Some(lp) = &e.logprobs {
                acc.logprobs.push(logprob_json(tok, e.token, lp));
            }
        }
        for r in &step.finished {
            let i = r.id.0 as usize;
            let acc = streamed.remove(&i).unwrap_or_default();
            sink.line(&result_json(&lines[i], r, acc).to_string())?;
            pending.remove(&i);
            done += 1;
        }
        if !step.finished.is_empty() {
            sink.flush()?;
        }
        if progress && last_draw.elapsed() >= Duration::from_millis(200) {
            last_draw = Instant::now();
            let s = engine.stats();
            eprint!(
                "\r\x1b[2K[{done}/{}] requests | {:.1} tokens/s | {} / {pool_pages} {unit}",
                lines.len(),
                s.generated_tokens as f64 / t0.elapsed().as_secs_f64(),
                engine.pages_held(),
            );
        }
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    let stats = summary(lines.len(), engine.stats(), t0.elapsed(), pool_pages, unit);
    Ok((Some(stats), pending.into_keys().collect(), step_error))
}

/// What the engine's token events said of one request (one sample): its text (UTF-8
/// completed, cut before a stop string, without stop tokens) and log-probabilities.
#[derive(Default)]
struct Streamed {
    text: String,
    logprobs: Vec<Value>,
}

/// One token's log-probabilities: `{"token", "piece", "logprob", "top_logprobs": [...]}`.
fn logprob_json(tok: &Tokenizer, token: u32, lp: &TokenLogprobs) -> Value {
    let piece = |t: u32| String::from_utf8_lossy(tok.token_to_bytes(t).unwrap_or(&[])).into_owned();
    let top: Vec<Value> = lp
        .top
        .iter()
        .map(|&(t, l)| json!({ "token": t, "piece": piece(t), "logprob": l }))
        .collect();
    json!({ "token": token, "piece": piece(token), "logprob": lp.logprob, "top_logprobs": top })
}

fn result_json(line: &ParsedRequest, r: &RequestOutput, streamed: Streamed) -> Value {
    let s = &r.samples[0];
    let mut m = Map::new();
    m.insert("id".into(), line.id.clone());
    m.insert("text".into(), json!(streamed.text));
    m.insert("tokens".into(), json!(s.tokens));
    m.insert("finish".into(), json!(s.finish.as_str()));
    m.insert("prompt_tokens".into(), json!(r.prompt_tokens));
    m.insert("cached_prompt_tokens".into(), json!(r.cached_prompt_tokens));
    m.insert("preemptions".into(), json!(r.preemptions));
    if !streamed.logprobs.is_empty() {
        m.insert("logprobs".into(), Value::Array(streamed.logprobs));
    }
    Value::Object(m)
}

/// The closing line; `unit` names the pool's pages ("pages", or "single-layer pages" under a
/// per-layer policy, in which peak and KV utilisation are counted).
fn summary(requests: usize, s: &EngineStats, wall: Duration, pages: usize, unit: &str) -> String {
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{:.1}%", 100.0 * v));
    let grammar = match s.mask_us_per_token() {
        Some(us) => format!(
            " | grammar masks {} ({us:.0} µs each, {:.0} µs per mask waited after the forward \
             pass)",
            s.masks,
            s.mask_wait.as_secs_f64() * 1e6 / s.masks as f64
        ),
        None => String::new(),
    };
    format!(
        "requests {requests} | generated {} tokens | wall {:.2} s | {:.1} tokens/s aggregate | \
         peak {} / {pages} {unit} | KV utilisation {} | prefix-cache hits {} ({} / {} pages, \
         {} prompt tokens skipped, {} computed) | preemptions {}{grammar}",
        s.generated_tokens,
        wall.as_secs_f64(),
        s.generated_tokens as f64 / wall.as_secs_f64().max(1e-9),
        s.peak_pages,
        pct(s.kv_utilisation()),
        pct(s.prefix_hit_rate()),
        s.prefix_hits,
        s.prefix_lookups,
        s.prefill_skipped,
        s.prefill_computed,
        s.preemptions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_request_line_rejects_hostile_lines_without_panicking() {
        let d = SamplerConfig::default();
        let deep = "[".repeat(100_000);
        for bad in [
            "",
            "null",
            "[]",
            deep.as_str(),
            "{\"prompt\":\"x\",\"temperature\":1e300}",
            "{\"prompt\":\"x\",\"top_p\":-1}",
            "{\"prompt\":\"x\",\"n_predict\":0}",
            "{\"prompt\":\"x\",\"seed\":-1}",
            "{\"prompt\":\"x\",\"id\":[1]}",
            "{\"prompt\":\"\"}",
            "{\"prompt\":\"x\",\"\\u001b[31m\":1}",
        ] {
            let e = parse_request_line(bad, 7, &d, 3).unwrap_err();
            assert!(e.starts_with("line 7: "), "{e}");
            assert!(!e.contains('\u{1b}'), "raw escape in {e:?}");
        }
        let ok = parse_request_line(
            "{\"id\":\"a\",\"prompt\":\"hi\",\"n_predict\":18446744073709551615,\"top_k\":5}",
            1,
            &d,
            3,
        )
        .unwrap();
        assert_eq!(ok.id, json!("a"));
        assert_eq!(ok.sampler.top_k, 5);
        assert_eq!(parse_request_line("{\"prompt\":\"hi\"}", 4, &d, 3).unwrap().n_predict, 3);
    }
}
