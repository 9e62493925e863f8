//! What every subcommand shares: model and thread flags, loading with friendly errors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use pagoda_core::evict::KvPolicy;
use pagoda_cpu::engine::EngineConfig;
use pagoda_cpu::model::{KvType, Llama, Numerics, SessionOptions};
use pagoda_cpu::model_file::default_model_path;
use pagoda_cpu::sampler::{Sampler, SamplerConfig};
use pagoda_cpu::tokenizer::Tokenizer;

/// A boxed error with a message made for the terminal.
pub type CliResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// `-m` and `-t`.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model file (GGUF). Default: $PAGODA_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Memory-map the model file (no copy, less memory) instead of reading it into memory
    /// with huge pages (the default: faster decode).
    #[arg(long = "mmap")]
    pub mmap: bool,
    /// Float order: fast (the default: pagoda's own order, batch-invariant: the same logits
    /// alone, in any batch, chunking or thread count) or exact (llama.cpp's bits).
    #[arg(long = "numerics", default_value = "fast", value_parser = parse_numerics)]
    pub numerics: Numerics,
}

/// clap's parser for `--numerics`.
pub fn parse_numerics(s: &str) -> Result<Numerics, String> {
    s.parse().map_err(|e: pagoda_cpu::model::UnknownNumerics| e.to_string())
}

/// Context and KV cache flags.
#[derive(Args, Clone, Debug)]
pub struct ContextArgs {
    /// Context size in tokens (default: 2048; 512 for perplexity, as llama.cpp).
    #[arg(short = 'c', long = "ctx-size",
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub ctx: Option<u32>,
    /// Tokens per forward pass while processing a prompt (default: 512; for perplexity,
    /// llama-perplexity's rows per sequence: 512 / max(1, 2048 / c), so 128 at -c 512).
    #[arg(short = 'b', long = "batch-size",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub batch: Option<u32>,
    /// KV page format: f32, f16, bf16, q8_0 or q4_0 (the block formats need head_dim % 32 == 0).
    #[arg(long = "kv-type", default_value = "f16", value_parser = parse_kv_type)]
    pub kv_type: KvType,
    /// Tokens per KV page.
    #[arg(long = "block-size", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub block_size: u32,
}

/// `--kv-type` values: every [`KvType`] by name.
pub fn parse_kv_type(s: &str) -> Result<KvType, String> {
    KvType::from_name(s).ok_or_else(|| {
        format!("unknown KV type '{s}' (expected one of {})", KvType::NAMES.join(", "))
    })
}

/// `--kv-policy`, for the commands that run one sequence.
#[derive(Args, Clone, Debug)]
pub struct PolicyArgs {
    /// KV eviction policy: full (default), sink:S,window:W (StreamingLLM), window:W,
    /// h2o:BUDGET or pyramid:BUDGET (PyramidKV; BUDGET in tokens, or N% of -c). See
    /// docs/kv-eviction.md.
    #[arg(long = "kv-policy", default_value = "full", value_parser = parse_kv_policy)]
    pub kv_policy: KvPolicy,
}

/// `--kv-policy` values: [`KvPolicy::parse`], with the reason and the accepted forms.
pub fn parse_kv_policy(s: &str) -> Result<KvPolicy, String> {
    KvPolicy::parse(s).map_err(|e| format!("bad KV policy '{s}': {e}"))
}

impl PolicyArgs {
    /// The policy, checked against the context, page size and the model's `n_layers` (an H2O
    /// or pyramid budget must be at least two pages); a mismatch is a usage error (exit 2),
    /// like a bad flag.
    pub fn checked(&self, opts: &SessionOptions, n_layers: usize) -> KvPolicy {
        if let Err(e) = self.kv_policy.resolve_layer(opts.n_ctx, opts.block_size, 0, n_layers) {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--kv-policy {} with -c {} and --block-size {}: {e}\n",
                    self.kv_policy, opts.n_ctx, opts.block_size
                ),
            )
            .exit();
        }
        self.kv_policy
    }
}

impl ContextArgs {
    /// Session options from the flags; `default_ctx` when -c is not given, 512 tokens per
    /// forward pass when -b is not.
    pub fn session(&self, default_ctx: usize) -> SessionOptions {
        self.session_with(default_ctx, |_| 512)
    }

    /// [`session`](Self::session) with `default_batch(n_ctx)` when -b is not given.
    pub fn session_with(
        &self,
        default_ctx: usize,
        default_batch: impl Fn(usize) -> usize,
    ) -> SessionOptions {
        let n_ctx = self.ctx.map_or(default_ctx, |c| c as usize);
        SessionOptions {
            n_ctx,
            kv_type: self.kv_type,
            block_size: self.block_size as usize,
            n_batch: self.batch.map_or_else(|| default_batch(n_ctx), |b| b as usize),
        }
    }
}

/// The engine's flags (`batch`, `serve`): the shared page pool and the batch budget.
#[derive(Args, Clone, Debug)]
pub struct EngineArgs {
    /// Pages in the shared KV pool (all-layer pages; under pyramid the pool holds
    /// kv-pages × n_layers single-layer pages, the same bytes).
    #[arg(long = "kv-pages", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub kv_pages: u32,
    /// Most tokens per forward pass (decode tokens plus prompt chunks).
    #[arg(long = "max-batch-tokens", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_batch_tokens: u32,
    /// Tokens per KV page.
    #[arg(long = "block-size", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub block_size: u32,
    /// KV page format: f32, f16, bf16, q8_0 or q4_0.
    #[arg(long = "kv-type", default_value = "f16", value_parser = parse_kv_type)]
    pub kv_type: KvType,
    /// Turn off prefix caching.
    #[arg(long = "no-prefix-cache")]
    pub no_prefix_cache: bool,
    /// KV eviction policy of every sequence: full (default), sink:S,window:W, window:W,
    /// h2o:BUDGET or pyramid:BUDGET (tokens, or N% of the model's context length); each
    /// sequence evicts its own pages, never one another sequence shares. See
    /// docs/kv-eviction.md.
    #[arg(long = "kv-policy", default_value = "full", value_parser = parse_kv_policy)]
    pub kv_policy: KvPolicy,
}

impl EngineArgs {
    /// The engine settings from the flags.
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            kv_pages: self.kv_pages as usize,
            block_size: self.block_size as usize,
            kv_type: self.kv_type,
            max_batch_tokens: self.max_batch_tokens as usize,
            prefix_caching: !self.no_prefix_cache,
        }
    }
}

/// Sampling flags, llama.cpp's names and defaults. Negative numbers parse where they mean
/// something: `--temp -1` (greedy), `--repeat-last-n -1` and `--dry-penalty-last-n -1` (the
/// whole context), `--presence-penalty -0.5`, `--logit-bias 15043-1`.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 or below (e.g. -1) is greedy.
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true,
          value_parser = float_in("--temp", f32::MIN, f32::MAX))]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40, allow_negative_numbers = true)]
    pub top_k: usize,
    /// Top-p (1.0 = off).
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Min-p (0.0 = off).
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Locally typical sampling, parameter p in [0, 1] (1.0 = off).
    #[arg(long = "typical", visible_alias = "typical-p", default_value_t = 1.0,
          allow_negative_numbers = true, value_parser = float_in("--typical", 0.0, 1.0))]
    pub typical: f32,
    /// Repetition penalty (1.0 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Tokens the penalties look back over (0 = off, -1 = the whole context).
    #[arg(long = "repeat-last-n", default_value = "64", allow_negative_numbers = true,
          value_parser = parse_last_n)]
    pub repeat_last_n: usize,
    /// Subtract this from the logit of every token already in the window (0.0 = off;
    /// negative favours repeats).
    #[arg(long = "presence-penalty", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float_in("--presence-penalty", f32::MIN, f32::MAX))]
    pub presence_penalty: f32,
    /// Subtract this times its count in the window from every token's logit (0.0 = off;
    /// negative favours repeats).
    #[arg(long = "frequency-penalty", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float_in("--frequency-penalty", f32::MIN, f32::MAX))]
    pub frequency_penalty: f32,
    /// DRY multiplier (0.0 = off): a token extending a repeat of n tokens loses
    /// multiplier × base^(n − allowed length).
    #[arg(long = "dry-multiplier", default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = float_in("--dry-multiplier", 0.0, f32::MAX))]
    pub dry_multiplier: f32,
    /// DRY base (>= 1).
    #[arg(long = "dry-base", default_value_t = 1.75, allow_negative_numbers = true,
          value_parser = float_in("--dry-base", 1.0, f32::MAX))]
    pub dry_base: f32,
    /// Repeats up to this many tokens are not penalized by DRY.
    #[arg(long = "dry-allowed-length", default_value_t = 2, allow_negative_numbers = true)]
    pub dry_allowed_length: usize,
    /// Tokens DRY scans for repeats (0 = off, -1 = the whole context).
    #[arg(long = "dry-penalty-last-n", default_value = "-1", allow_negative_numbers = true,
          value_parser = parse_last_n)]
    pub dry_penalty_last_n: usize,
    /// A DRY sequence breaker (repeatable; replaces the defaults "\n" ":" "\"" "*";
    /// "none": no breakers).
    #[arg(long = "dry-sequence-breaker", value_name = "STRING")]
    pub dry_sequence_breaker: Vec<String>,
    /// Mirostat: 0 = off, 2 = Mirostat 2.0 (logit bias, temperature, Mirostat: the
    /// penalties, DRY, top-k, typical, top-p and min-p are not used, as in llama.cpp).
    #[arg(long = "mirostat", default_value_t = 0, allow_negative_numbers = true,
          value_parser = parse_mirostat)]
    pub mirostat: u8,
    /// Mirostat learning rate, parameter eta.
    #[arg(long = "mirostat-lr", default_value_t = 0.1, allow_negative_numbers = true,
          value_parser = float_in("--mirostat-lr", 0.0, f32::MAX))]
    pub mirostat_lr: f32,
    /// Mirostat target entropy (surprise, in bits), parameter tau.
    #[arg(long = "mirostat-ent", default_value_t = 5.0, allow_negative_numbers = true,
          value_parser = float_in("--mirostat-ent", 0.0, f32::MAX))]
    pub mirostat_ent: f32,
    /// Add BIAS to a token's logit: TOKEN_ID+BIAS or TOKEN_ID-BIAS (e.g. 15043+1, 15043-1;
    /// 15043-inf bans the token). Repeatable.
    #[arg(long = "logit-bias", value_name = "TOKEN_ID(+|-)BIAS", allow_negative_numbers = true,
          value_parser = parse_logit_bias)]
    pub logit_bias: Vec<(u32, f32)>,
    /// Random seed (default: fixed, so runs are reproducible).
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
}

/// A parser of a finite float in `[lo, hi]` whose error names `flag`.
fn float_in(
    flag: &'static str,
    lo: f32,
    hi: f32,
) -> impl Fn(&str) -> Result<f32, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f32 = s.trim().parse().map_err(|_| format!("{flag} takes a number, got '{s}'"))?;
        if !v.is_finite() || v < lo || v > hi {
            return Err(match (lo == f32::MIN, hi == f32::MAX) {
                (true, true) => format!("{flag} must be finite, got {s}"),
                (false, true) => format!("{flag} must be >= {lo}, got {s}"),
                _ => format!("{flag} must be in [{lo}, {hi}], got {s}"),
            });
        }
        Ok(v)
    }
}

/// A token window: a count, 0 (off) or -1 (the whole context, `usize::MAX`).
fn parse_last_n(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) => Ok(usize::MAX),
        Ok(n) if n >= 0 => usize::try_from(n).map_err(|_| format!("{n} is too large")),
        _ => Err(format!("expected a token count, 0 (off) or -1 (the whole context), got '{s}'")),
    }
}

/// `--mirostat`: 0 or 2 (version 1 is not implemented).
fn parse_mirostat(s: &str) -> Result<u8, String> {
    match s.trim() {
        "0" => Ok(0),
        "2" => Ok(2),
        "1" => Err("Mirostat v1 is not implemented: use --mirostat 2 (Mirostat 2.0)".into()),
        _ => Err(format!("--mirostat is 0 (off) or 2 (Mirostat 2.0), got '{s}'")),
    }
}

/// `--logit-bias TOKEN_ID(+|-)BIAS`, llama.cpp's form: `15043+1`, `15043-0.5`, `15043-inf`.
fn parse_logit_bias(s: &str) -> Result<(u32, f32), String> {
    let form =
        || format!("--logit-bias takes TOKEN_ID+BIAS or TOKEN_ID-BIAS (e.g. 15043-1), got '{s}'");
    let at = s.find(['+', '-']).filter(|&i| i > 0).ok_or_else(form)?;
    let token: u32 = s[..at].parse().map_err(|_| form())?;
    let magnitude = &s[at + 1..];
    // Only a plain number or inf: no second sign, no NaN.
    if magnitude.is_empty() || magnitude.starts_with(['+', '-']) {
        return Err(form());
    }
    let v: f32 = magnitude.parse().map_err(|_| form())?;
    if v.is_nan() {
        return Err(form());
    }
    let bias = if s.as_bytes()[at] == b'-' { -v } else { v };
    if bias == f32::INFINITY {
        return Err(format!(
            "--logit-bias {s}: +inf is not a bias (use a large finite one; -inf bans a token)"
        ));
    }
    Ok((token, bias))
}

impl SamplingArgs {
    /// The sampler settings (DRY's breakers as strings: "none" alone clears them).
    pub fn config(&self) -> SamplerConfig {
        let defaults = SamplerConfig::default();
        let dry_sequence_breakers = if self.dry_sequence_breaker.is_empty() {
            defaults.dry_sequence_breakers.clone()
        } else {
            // llama.cpp: "none" clears the list (what follows it is added again).
            let last_none = self.dry_sequence_breaker.iter().rposition(|b| b == "none");
            self.dry_sequence_breaker[last_none.map_or(0, |i| i + 1)..].to_vec()
        };
        SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            dry_multiplier: self.dry_multiplier,
            dry_base: self.dry_base,
            dry_allowed_length: self.dry_allowed_length,
            dry_penalty_last_n: self.dry_penalty_last_n,
            dry_sequence_breakers,
            mirostat: self.mirostat,
            mirostat_tau: self.mirostat_ent,
            mirostat_eta: self.mirostat_lr,
            logit_bias: self.logit_bias.clone(),
            seed: self.seed.unwrap_or(defaults.seed),
        }
    }

    /// The sampler for a loaded model: DRY's breakers matched against its vocabulary, and a
    /// `--logit-bias` token outside it a usage error (exit 2) naming the flag.
    pub fn sampler(&self, tokenizer: &Tokenizer) -> CliResult<Sampler> {
        let cfg = self.config();
        let n = tokenizer.vocab_size();
        if let Some(&(token, _)) = cfg.logit_bias.iter().find(|(t, _)| *t as usize >= n) {
            return Err(Box::new(Exit {
                code: 2,
                message: Some(format!(
                    "error: --logit-bias: token {token} is outside the model's vocabulary \
                     ({n} tokens)"
                )),
            }));
        }
        Ok(Sampler::with_vocabulary(cfg, tokenizer)?)
    }
}

/// A loaded model, its tokenizer and how long loading took.
pub struct Loaded {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

/// The cores this process may use (affinity and cgroup quotas included); 1 if unknown.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Builds rayon's global pool now, so that a failure (threads cannot be spawned, e.g.
/// under a memory limit) is an error here instead of a panic inside the first parallel
/// loop. `requested` (`-t`) above the available cores is clamped to them, with a warning:
/// more threads than cores only slow the kernels down. Returns the thread count.
pub fn init_threads(requested: Option<usize>) -> CliResult<usize> {
    let cores = available_cores();
    let n = match requested {
        Some(t) if t > cores => {
            log::warn!("-t {t}: only {cores} cores are available; using {cores} threads");
            cores
        }
        Some(t) => t.max(1),
        None => cores,
    };
    // Address space for the threads first: a thread whose stack was mapped but whose
    // signal stack then cannot be (std allocates it inside the new thread) aborts the process.
    // Reserving more than the threads take, and giving it back, makes a memory limit fail
    // here, as an error, or not at all.
    let probe = n.saturating_mul(WORKER_STACK + (256 << 10)).saturating_add(4 << 20);
    let mut room = Vec::<u8>::new();
    room.try_reserve_exact(probe).map_err(|_| {
        format!(
            "cannot start {n} worker threads: not enough memory for their stacks ({probe} bytes)"
        )
    })?;
    drop(std::hint::black_box(room)); // a real allocation, not optimised away
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(WORKER_STACK)
        .build_global()
        .map_err(|e| format!("cannot start {n} worker threads: {e}"))?;
    Ok(n)
}

/// Stack of each worker thread: std's default for spawned threads (2 MiB), set explicitly so
/// that the memory probe of [`init_threads`] knows it.
const WORKER_STACK: usize = 2 << 20;

/// Sets up the thread pool and loads model + tokenizer, with errors that say what to do.
pub fn load(args: &ModelArgs) -> CliResult<Loaded> {
    init_threads(args.threads.map(usize::from))?;
    let t0 = Instant::now();
    let explicit = args.model.is_some();
    let path = args.model.clone().unwrap_or_else(default_model_path);
    if !path.exists() {
        let hint = if explicit {
            String::new()
        } else {
            " (fetch the default model with scripts/fetch-model.sh, or pass -m / set PAGODA_MODEL)"
                .to_string()
        };
        return Err(format!("model file '{}' not found{hint}", path.display()).into());
    }
    let model = if args.mmap {
        Llama::load_mapped_with(&path, args.numerics)
    } else {
        Llama::load_with(&path, args.numerics)
    };
    let model = model.map_err(|e| -> Box<dyn std::error::Error> {
        match e {
            // Holds names from the file (the architecture): no raw control characters.
            pagoda_cpu::model::ModelError::Unsupported(m) => {
                format!("unsupported model: {}", escape_controls(&m)).into()
            }
            e => e.into(),
        }
    })?;
    let tokenizer = Tokenizer::from_gguf(&model.gguf()).map_err(|e| {
        use pagoda_cpu::tokenizer::TokenizerError as E;
        // Names from the file are escaped (they may hold terminal escape sequences).
        let e = match e {
            E::UnknownModel(m) => format!(
                "unsupported tokenizer.ggml.model \"{}\" (supported: gpt2, llama)",
                escape(&m)
            ),
            E::UnknownPre(p) => format!("unsupported tokenizer.ggml.pre \"{}\"", escape(&p)),
            e => e.to_string(),
        };
        format!("{}: tokenizer: {e}", path.display())
    })?;
    Ok(Loaded { model, tokenizer, load_time: t0.elapsed() })
}

/// Reads a prompt file, insisting on UTF-8.
pub fn read_text_file(path: &std::path::Path) -> CliResult<String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "'{}' is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
        .into()
    })
}

/// An error that ends the command with its own exit status, printing `message` (if any) to
/// stderr as it is (no `error:` prefix).
#[derive(Debug)]
pub struct Exit {
    /// The exit status.
    pub code: u8,
    /// What to print on stderr, if anything.
    pub message: Option<String>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or(""))
    }
}

impl std::error::Error for Exit {}

/// A usage error found after clap parsed the flags (a missing `-p`, a value out of range
/// that only makes sense with another flag): `error: MESSAGE` and clap's hint on stderr,
/// exit status 2, as clap's own usage errors.
pub fn usage_error(message: &str) -> Box<dyn std::error::Error> {
    Box::new(Exit {
        code: 2,
        message: Some(format!("error: {message}\n\nFor more information, try '--help'.")),
    })
}

/// Exit status after stdout's reader went away (EPIPE): 128 + SIGPIPE, what a shell
/// reports for `cat` killed by SIGPIPE. Nothing is printed.
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Whether `e` (or an error it wraps) is a write to a closed pipe.
pub fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// Writes `s` to stdout and flushes. A closed pipe stays an `io::Error` of kind
/// `BrokenPipe` (the command then exits quietly, see [`EXIT_BROKEN_PIPE`]); any other
/// failure says it was stdout.
pub fn write_stdout(s: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|()| out.flush()).map_err(stdout_error)
}

/// A failed write to stdout as an error: `BrokenPipe` kept as it is (quiet exit), anything
/// else named (`writing to stdout: No space left on device`).
pub fn stdout_error(e: std::io::Error) -> Box<dyn std::error::Error> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Box::new(e)
    } else {
        format!("writing to stdout: {e}").into()
    }
}

/// `s` with control characters, quotes and backslashes escaped (Rust's `escape_debug`):
/// strings from a model file may hold terminal escape sequences, which must not reach the
/// terminal raw.
pub fn escape(s: &str) -> String {
    s.escape_debug().collect()
}

/// `s` with only its control characters (terminal escapes, newlines) escaped.
pub fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { c.escape_debug().collect() } else { c.to_string() })
        .collect()
}

/// `s` escaped and in double quotes, cut to `max_chars` (then followed by `…`).
pub fn quoted(s: &str, max_chars: usize) -> String {
    let escaped = escape(s);
    if escaped.chars().count() > max_chars {
        format!("\"{}\"…", escaped.chars().take(max_chars).collect::<String>())
    } else {
        format!("\"{escaped}\"")
    }
}

/// Whether `a` and `b` name the same existing file (same device and inode on Unix, same
/// canonical path elsewhere). False if either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// A file written whole or not at all: the contents go to a temporary file in the same
/// directory (`.NAME.PID.tmp`), which [`commit`](Self::commit) flushes, syncs to disk
/// and renames over the target. Until then the target keeps its old contents; a crash
/// leaves at most the temporary file; dropping without `commit` removes it. Every error
/// names the target (and the temporary file where that is the one that failed).
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// The temporary file [`create`](Self::create) uses for `target` in process `pid`.
    pub fn temp_path(target: &Path, pid: u32) -> PathBuf {
        let name = target.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy());
        target.with_file_name(format!(".{name}.{pid}.tmp"))
    }

    /// Starts writing `target` (a symlink is followed: the file it points to is replaced).
    /// Fails at once if the directory is not writable.
    pub fn create(target: &Path) -> Result<AtomicFile, String> {
        let meta = std::fs::metadata(target).ok();
        if let Some(m) = &meta {
            if !m.is_file() {
                return Err(format!("'{}' is not a regular file", target.display()));
            }
        }
        // Replace what a symlink points to, not the link itself.
        let target = match meta {
            Some(_) => target
                .canonicalize()
                .map_err(|e| format!("cannot resolve '{}': {e}", target.display()))?,
            None => target.to_path_buf(),
        };
        let tmp = Self::temp_path(&target, std::process::id());
        let file = File::create(&tmp).map_err(|e| {
            format!("cannot write '{}' (temporary file '{}'): {e}", target.display(), tmp.display())
        })?;
        if let Some(m) = std::fs::metadata(&target).ok().filter(|m| m.is_file()) {
            // Keep the old file's permissions.
            let _ = file.set_permissions(m.permissions());
        }
        Ok(AtomicFile { target, tmp, file: Some(BufWriter::new(file)) })
    }

    fn io_error(&self, e: std::io::Error) -> String {
        format!(
            "cannot write '{}' (temporary file '{}'): {e}",
            self.target.display(),
            self.tmp.display()
        )
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        let r = match self.file.as_mut() {
            Some(f) => f.write_all(bytes),
            None => return Err(format!("'{}' is already committed", self.target.display())),
        };
        r.map_err(|e| self.io_error(e))
    }

    /// Writes out what is buffered (to the temporary file: readers of the target see
    /// nothing until `commit`).
    pub fn flush(&mut self) -> Result<(), String> {
        let r = match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        };
        r.map_err(|e| self.io_error(e))
    }

    /// Flushes, syncs and renames the temporary file over the target.
    pub fn commit(mut self) -> Result<(), String> {
        let Some(w) = self.file.take() else { return Ok(()) };
        let synced =
            w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all().map(|()| f));
        if let Err(e) = synced {
            let msg = self.io_error(e);
            let _ = std::fs::remove_file(&self.tmp);
            return Err(msg);
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(format!(
                "cannot replace '{}' with '{}': {e}",
                self.target.display(),
                self.tmp.display()
            ));
        }
        // Make the rename itself durable (best effort: not every platform can open a
        // directory).
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// One process at a time writing an output file: an advisory lock (`flock`) on
/// `.NAME.lock` beside it, held until dropped (the lock file is then removed). A second
/// `pagoda batch -o FILE` while the first runs is refused, instead of the last rename
/// silently replacing the first run's results.
pub struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    /// The lock file of `target`.
    pub fn lock_path(target: &Path) -> PathBuf {
        let name = target.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy());
        target.with_file_name(format!(".{name}.lock"))
    }

    /// Takes the lock of `target`, or says who holds it.
    pub fn acquire(target: &Path) -> Result<OutputLock, String> {
        let path = Self::lock_path(target);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                format!("cannot lock '{}' (lock file '{}'): {e}", target.display(), path.display())
            })?;
        match file.try_lock() {
            Ok(()) => Ok(OutputLock { path, _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "'{}' is being written by another pagoda process (it holds '{}'); \
                 wait for it or choose another output",
                target.display(),
                path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(format!(
                "cannot lock '{}' (lock file '{}'): {e}",
                target.display(),
                path.display()
            )),
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked: a process that opened it before sees the lock until
        // the file (and the lock) goes away with this handle.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `contents` to `path` atomically ([`AtomicFile`]).
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), String> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(contents)?;
    f.commit()
}

/// Fails unless `dir` exists as a directory (or can be created) and a file can be created
/// in it; checked before a long experiment that ends by writing there.
pub fn check_writable_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("output directory '{}': cannot create it: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("output directory '{}' is not a directory", dir.display()));
    }
    let probe = dir.join(format!(".pagoda-write-test.{}", std::process::id()));
    File::create(&probe)
        .map_err(|e| format!("output directory '{}' is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_from_model_files_reach_the_terminal_escaped() {
        let evil = "llama\u{1b}]0;pwned\u{7}\u{1b}[2J\n";
        for shown in [escape(evil), escape_controls(evil), quoted(evil, 100)] {
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert!(shown.contains("llama"), "{shown:?}");
        }
        assert_eq!(escape_controls("architecture 'x'"), "architecture 'x'");
    }
}
