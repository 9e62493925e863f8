//! [`Options`]: how to generate — length, sampling, context, KV page type.

use pagoda_cpu::generate::GenerateOptions;
use pagoda_cpu::model::{KvType, SessionOptions};
use pagoda_cpu::sampler::SamplerConfig;

/// Settings of a generation, built from [`Options::default`] with chained setters:
///
/// ```
/// let opts = pagoda::Options::default().max_tokens(64).temperature(0.0);
/// assert_eq!(opts.sampler().temperature, 0.0);
/// ```
///
/// The defaults are llama.cpp's: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, a
/// fixed seed (so runs repeat unless you change it), a 2048-token context with f16 KV
/// pages, and no limit on length but the context and the model's end-of-turn token.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    max_tokens: Option<usize>,
    sampler: SamplerConfig,
    n_ctx: usize,
    kv_type: KvType,
    ignore_eos: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_tokens: None,
            sampler: SamplerConfig::default(),
            n_ctx: SessionOptions::default().n_ctx,
            kv_type: SessionOptions::default().kv_type,
            ignore_eos: false,
        }
    }
}

impl Options {
    /// Greedy decoding (temperature 0): the same text every time.
    pub fn greedy() -> Self {
        Self::default().temperature(0.0)
    }

    /// Most tokens to generate.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Softmax temperature; `0` (or less) is greedy decoding.
    pub fn temperature(mut self, t: f32) -> Self {
        self.sampler.temperature = t;
        self
    }

    /// Keep the `k` most likely tokens (`0`: all).
    pub fn top_k(mut self, k: usize) -> Self {
        self.sampler.top_k = k;
        self
    }

    /// Nucleus sampling: the smallest set whose probability reaches `p` (`1.0`: off).
    pub fn top_p(mut self, p: f32) -> Self {
        self.sampler.top_p = p;
        self
    }

    /// Drop tokens less likely than `p ×` the most likely one (`0.0`: off).
    pub fn min_p(mut self, p: f32) -> Self {
        self.sampler.min_p = p;
        self
    }

    /// Penalise recently seen tokens (`1.0`: off) over the last `last_n` tokens.
    pub fn repeat_penalty(mut self, penalty: f32, last_n: usize) -> Self {
        self.sampler.repeat_penalty = penalty;
        self.sampler.repeat_last_n = last_n;
        self
    }

    /// Seed of the random generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.sampler.seed = seed;
        self
    }

    /// All sampling settings at once.
    pub fn sampling(mut self, sampler: SamplerConfig) -> Self {
        self.sampler = sampler;
        self
    }

    /// Context size in tokens: prompt plus generated text (plus, for a
    /// [`Session`](crate::Session), every earlier turn).
    pub fn context(mut self, n_ctx: usize) -> Self {
        self.n_ctx = n_ctx;
        self
    }

    /// KV page element type (`F16` by default; `Q8_0` and `Q4_0` save memory).
    pub fn kv_type(mut self, kv_type: KvType) -> Self {
        self.kv_type = kv_type;
        self
    }

    /// Keep generating past the model's end-of-turn tokens.
    pub fn ignore_eos(mut self, yes: bool) -> Self {
        self.ignore_eos = yes;
        self
    }

    /// The sampling settings.
    pub fn sampler(&self) -> &SamplerConfig {
        &self.sampler
    }

    /// The most tokens to generate, if limited.
    pub fn max_tokens_limit(&self) -> Option<usize> {
        self.max_tokens
    }

    /// The context size in tokens.
    pub fn context_len(&self) -> usize {
        self.n_ctx
    }

    /// The KV page element type.
    pub fn kv_page_type(&self) -> KvType {
        self.kv_type
    }

    /// Whether generation goes on past end-of-turn tokens.
    pub fn ignores_eos(&self) -> bool {
        self.ignore_eos
    }

    pub(crate) fn session_options(&self) -> SessionOptions {
        SessionOptions { n_ctx: self.n_ctx, kv_type: self.kv_type, ..SessionOptions::default() }
    }

    pub(crate) fn generate_options(&self) -> GenerateOptions {
        GenerateOptions {
            n_predict: self.max_tokens,
            ignore_eos: self.ignore_eos,
            no_kv_cache: false,
        }
    }
}
