//! What every subcommand shares: model and thread flags, loading with friendly errors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use pagoda_core::evict::KvPolicy;
use pagoda_cpu::model::{KvType, Llama, SessionOptions};
use pagoda_cpu::model_file::default_model_path;
use pagoda_cpu::sampler::SamplerConfig;
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
}

/// Context and KV cache flags.
#[derive(Args, Clone, Debug)]
pub struct ContextArgs {
    /// Context size in tokens (default: 2048; 512 for perplexity, as llama.cpp).
    #[arg(short = 'c', long = "ctx-size",
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub ctx: Option<u32>,
    /// Tokens per forward pass while processing a prompt.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub batch: u32,
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
    /// Session options from the flags; `default_ctx` when -c is not given.
    pub fn session(&self, default_ctx: usize) -> SessionOptions {
        SessionOptions {
            n_ctx: self.ctx.map_or(default_ctx, |c| c as usize),
            kv_type: self.kv_type,
            block_size: self.block_size as usize,
            n_batch: self.batch as usize,
        }
    }
}

/// Sampling flags, llama.cpp's names and defaults.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1.0 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0.0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1.0 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back over.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: fixed, so runs are reproducible).
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The sampler settings.
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed.unwrap_or(SamplerConfig::default().seed),
        }
    }
}

/// A loaded model, its tokenizer and how long loading took.
pub struct Loaded {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

/// Sets up the thread pool and loads model + tokenizer, with errors that say what to do.
pub fn load(args: &ModelArgs) -> CliResult<Loaded> {
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t as usize)
            .build_global()
            .map_err(|e| format!("cannot set up {t} threads: {e}"))?;
    }
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
    let model = if args.mmap { Llama::load_mapped(&path)? } else { Llama::load(&path)? };
    let tokenizer = Tokenizer::from_gguf(&model.gguf())
        .map_err(|e| format!("{}: tokenizer: {e}", path.display()))?;
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
