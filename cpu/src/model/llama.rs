//! The forward pass of the Llama family (Llama, Gemma 3) over memory-mapped GGUF weights
//! and the paged KV cache.
//!
//! One function per step of the architecture; the steps in brackets are the family blocks
//! [`LlamaConfig`] switches on (Gemma 3 has them all, Llama none):
//!
//! ```text
//! x = embed(tokens) [· embed_scale]                   (n, dim)
//! for each layer l:
//!     h = rmsnorm(x) · attn_norm
//!     q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ                   (n, n_heads·hd), (n, n_kv·hd) ×2
//!     [q, k = rmsnorm per head · q_norm, k_norm]      (QK-norm)
//!     rope(q, k) at each token's position, base of layer l, adjacent or NeoX pairs
//!     [q ·= q_scale]
//!     write k, v into the sequence's KV pages
//!     a = attention(q, cached k, v)  (causal [, last W positions on windowed layers])
//!     x += [rmsnorm](a·Woᵀ) [· post_attention_norm]
//!     h = rmsnorm(x) · ffn_norm
//!     x += [rmsnorm]((act(h·Wgateᵀ) ⊙ h·Wupᵀ)·Wdownᵀ) [· post_ffw_norm]   act: SiLU | GELU
//! logits = rmsnorm(x) · output_norm · Woutᵀ           (n_out, vocab)
//! ```
//!
//! A chunk of `n` tokens runs through each matmul at once (each weight block is read once
//! per chunk); generation is a chunk of one. Nothing already in the cache is recomputed.

use std::path::Path;
use std::sync::OnceLock;

use pagoda_core::attention::AttnConfig;
use pagoda_core::gguf::Gguf;
use pagoda_core::kv::{KvFormat, KvPages};
use pagoda_core::ops::RopeTable;
use rayon::prelude::*;

use crate::attention::{
    paged_attention, paged_attention_aligned, paged_attention_f16, paged_attention_f16_tiled,
    TILED_MIN_ROWS,
};
use crate::kernels::{Kernels, MatmulScratch};
use crate::model_file::ModelFile;

use super::batch::{Batch, BatchLayout, SeqSpan};
use super::config::{FfnActivation, RopeStyle};
use super::kv_cache::{Attention, AttentionFn, KvCache, KvStore};
use super::kv_slab::KvSlab;
use super::kv_transform::{self, KvStats, KvTransform};
use super::numerics::Numerics;
use super::weights::{FastWeight, LlamaWeights, Weight};
use super::{LlamaConfig, ModelError, MAX_ROPE_DIMS};

/// `n_rot / 2` of the RoPE table for heads of up to 256 rotated dims (every common Llama).
const ROPE_PAIRS: usize = 128;
/// `n_rot / 2` of the table for wider heads, up to [`MAX_ROPE_DIMS`] (checked at load).
const WIDE_ROPE_PAIRS: usize = MAX_ROPE_DIMS / 2;

/// Which positions of a chunk need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (prefilling a chunk that is not the last).
    None,
    /// Only the last token's (generation).
    Last,
    /// Every token's from index `start` of the chunk on (perplexity, teacher forcing).
    From(usize),
}

/// A Llama model: the mapped file, its config and where each weight lives.
pub struct Llama {
    file: ModelFile,
    config: LlamaConfig,
    weights: LlamaWeights,
    kernels: Kernels,
    /// Check every layer's output for non-finite values (`PAGODA_CHECK_FINITE=1`).
    check_finite: bool,
    /// The float order of the forward pass.
    numerics: Numerics,
    /// The basis of q8_0 / q4_0 pages, calibrated at their first use
    /// ([`kv_transform`](Self::kv_transform)); reset when the numerics or kernels change.
    kv_transform: OnceLock<KvTransform>,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("file", &self.file.path())
            .field("config", &self.config)
            .finish()
    }
}

/// Reusable buffers for [`Llama::forward`].
#[derive(Debug, Default)]
pub struct ForwardScratch {
    matmul: MatmulScratch,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    out: Vec<f32>,
    /// One head (QK-norm) or one row (post-norms) being normalised.
    row: Vec<f32>,
    /// When `Some`, every layer's RoPE'd queries are appended here (see
    /// [`ForwardScratch::record_queries`]).
    queries: Option<Vec<f32>>,
    /// When `Some`, every layer adds each token's RoPE'd queries and key after the
    /// sequence's first token (the KV calibration pass).
    kv_stats: Option<KvStats>,
}

impl ForwardScratch {
    /// Starts (or stops) recording the queries of the next forward passes: after RoPE, each
    /// layer appends its `n_tokens × n_heads × head_dim` queries, so one pass records
    /// `[layer][token][head][d]`. KV eviction policies score pages with them (H2O).
    pub fn record_queries(&mut self, on: bool) {
        self.queries = on.then(Vec::new);
    }

    /// The queries recorded since the last call (empty if not recording); recording goes on.
    pub fn take_queries(&mut self) -> Vec<f32> {
        self.queries.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Starts gathering KV statistics into `stats` (`None`: stops); returns what was
    /// gathered before.
    pub(crate) fn record_kv_stats(&mut self, stats: Option<KvStats>) -> Option<KvStats> {
        std::mem::replace(&mut self.kv_stats, stats)
    }
}

impl ForwardScratch {
    /// Reserves the buffers of a forward pass of `n_tokens` tokens through a model of shape
    /// `c` (logits aside), so that a batch too large for memory is an error here instead of
    /// an abort later. Sizes are computed with overflow checks.
    pub fn reserve(&mut self, c: &LlamaConfig, n_tokens: usize) -> Result<(), ModelError> {
        let q_dim = c.n_heads * c.head_dim;
        let bufs: [(&mut Vec<f32>, usize, &str); 9] = [
            (&mut self.x, c.dim, "hidden states"),
            (&mut self.h, c.dim, "normed hidden states"),
            (&mut self.out, c.dim, "block outputs"),
            (&mut self.q, q_dim, "queries"),
            (&mut self.att, q_dim, "attention outputs"),
            (&mut self.k, c.kv_dim(), "keys"),
            (&mut self.v, c.kv_dim(), "values"),
            (&mut self.gate, c.ffn_dim, "FFN gate activations"),
            (&mut self.up, c.ffn_dim, "FFN up activations"),
        ];
        for (v, width, what) in bufs {
            let n = size(n_tokens, width, what)?;
            reserve(v, n, what)?;
        }
        Ok(())
    }
}

/// `a × b` f32s, or [`ModelError::OutOfMemory`] naming `what` if that overflows.
fn size(a: usize, b: usize, what: &str) -> Result<usize, ModelError> {
    a.checked_mul(b)
        .filter(|&n| n <= isize::MAX as usize / size_of::<f32>())
        .ok_or_else(|| ModelError::OutOfMemory { what: what.to_string(), bytes: None })
}

/// Room for `n` f32s in `v` without aborting: [`ModelError::OutOfMemory`] if the allocator
/// refuses.
fn reserve(v: &mut Vec<f32>, n: usize, what: &str) -> Result<(), ModelError> {
    if n > v.len() {
        v.try_reserve_exact(n - v.len()).map_err(|_| ModelError::OutOfMemory {
            what: what.to_string(),
            bytes: n.checked_mul(size_of::<f32>()),
        })?;
    }
    Ok(())
}

/// `v` resized to `a × b` f32s (new ones zero), fallibly (see [`reserve`]).
fn resize<'v>(
    v: &'v mut Vec<f32>,
    a: usize,
    b: usize,
    what: &str,
) -> Result<&'v mut [f32], ModelError> {
    let n = size(a, b, what)?;
    reserve(v, n, what)?;
    v.resize(n, 0.0);
    Ok(&mut v[..n])
}

/// Whether every value is finite: one pass, in independent lanes the compiler vectorizes
/// (`x · 0` is 0 for finite `x` and NaN for NaN or ±∞).
fn all_finite(v: &[f32]) -> bool {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x * 0.0;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| x * 0.0).sum();
    acc.iter().sum::<f32>() + tail == 0.0
}

/// What [`Llama::run`] names when the last hidden state is non-finite and the layers were not
/// checked: the pass is rerun with every layer checked to name the first bad one.
const HIDDEN_STATE: &str = "hidden state";

impl Llama {
    /// Reads a GGUF model file into memory (huge pages where granted) and validates it:
    /// the faster choice for inference ([`ModelFile::read`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::from_file(ModelFile::read(path.as_ref())?)
    }

    /// [`load`](Self::load) computing in `numerics` (exact numerics never repack: no copy of
    /// the weights is made).
    pub fn load_with(path: impl AsRef<Path>, numerics: Numerics) -> Result<Self, ModelError> {
        Self::from_file_with(ModelFile::read(path.as_ref())?, numerics)
    }

    /// [`load_mapped`](Self::load_mapped) computing in `numerics`.
    pub fn load_mapped_with(
        path: impl AsRef<Path>,
        numerics: Numerics,
    ) -> Result<Self, ModelError> {
        Self::from_file_with(ModelFile::open(path.as_ref())?, numerics)
    }

    /// Maps a GGUF model file read-only and validates it: no copy, the page cache's
    /// 4 KiB pages ([`ModelFile::open`]).
    pub fn load_mapped(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::from_file(ModelFile::open(path.as_ref())?)
    }

    /// Builds the model over an already opened file, in the default numerics.
    pub fn from_file(file: ModelFile) -> Result<Self, ModelError> {
        Self::from_file_with(file, Numerics::default())
    }

    /// Builds the model over an already opened file, computing in `numerics`. Fast numerics
    /// repack some matrices ([`with_numerics`](Self::with_numerics)); a copy that cannot be
    /// allocated is [`ModelError::OutOfMemory`].
    pub fn from_file_with(file: ModelFile, numerics: Numerics) -> Result<Self, ModelError> {
        let g = file.gguf();
        let config = LlamaConfig::from_gguf(&g)?;
        let weights = LlamaWeights::load(&g, &config)?;
        let check_finite = std::env::var_os("PAGODA_CHECK_FINITE").is_some_and(|v| v == "1");
        let kernels = Kernels::detect();
        let kv_transform = OnceLock::new();
        let mut model =
            Llama { file, config, weights, kernels, check_finite, numerics, kv_transform };
        model.refresh_repacked()?;
        Ok(model)
    }

    /// Checks every layer's output for NaN and infinities (on by default when the
    /// environment has `PAGODA_CHECK_FINITE=1`). Without it the forward pass checks only
    /// the last hidden state and the logits (a negligible cost), and names the first bad
    /// layer by running the pass again with the checks on; with it, every pass pays one
    /// scan of the hidden state per layer.
    pub fn with_finite_checks(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }

    /// Computes in `numerics`' float order ([`Numerics`]; the default is `Fast`, and `Exact`
    /// gives llama.cpp's bits).
    ///
    /// Fast numerics repack the Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS, Q3_K, Q4_K and
    /// Q5_K matrices at AVX-512 and AVX2 (a copy of their bytes: [`crate::kernels::repacked`])
    /// and the F16 and BF16 ones at AVX-512 ([`crate::kernels::repacked_float`]); otherwise
    /// such copies are dropped.
    ///
    /// A repacked copy that cannot be allocated leaves its matrix on the exact kernel (the
    /// model stays batch-invariant, its numerics a mix); [`try_with_numerics`] says so
    /// instead.
    ///
    /// [`try_with_numerics`]: Self::try_with_numerics
    pub fn with_numerics(mut self, numerics: Numerics) -> Self {
        self.numerics = numerics;
        let _mixed_if_out_of_memory = self.refresh_repacked();
        self
    }

    /// [`with_numerics`](Self::with_numerics), failing with [`ModelError::OutOfMemory`]
    /// when a repacked copy cannot be allocated.
    pub fn try_with_numerics(mut self, numerics: Numerics) -> Result<Self, ModelError> {
        self.numerics = numerics;
        self.refresh_repacked()?;
        Ok(self)
    }

    /// Repacked copies exactly of the matrices whose type has a repacked kernel at this level,
    /// in fast numerics; in exact numerics of the Q4_0 and IQ4_NL matrices llama.cpp repacks
    /// (their repacked order is llama.cpp's, [`LlamaWeights::set_llamacpp_repacked`]).
    fn refresh_repacked(&mut self) -> Result<(), ModelError> {
        self.kv_transform = OnceLock::new(); // calibrated in the numerics and kernels in use
        match self.numerics {
            Numerics::Fast => {
                self.weights.set_repacked(self.file.bytes(), Some(self.kernels.level()))
            }
            _ => self.weights.set_llamacpp_repacked(self.file.bytes()),
        }
    }

    /// The basis q8_0 and q4_0 pages store keys and values in ([`KvTransform`]): calibrated
    /// by one pass over a built-in text with f32 pages at the first call (the first forward
    /// pass over such pages), then kept. Deterministic: the same model, numerics and
    /// kernels give the same transform.
    pub fn kv_transform(&self) -> Result<&KvTransform, ModelError> {
        if let Some(t) = self.kv_transform.get() {
            return Ok(t);
        }
        let t = kv_transform::calibrate(self)?;
        Ok(self.kv_transform.get_or_init(|| t))
    }

    /// The float order of the forward pass.
    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    /// Uses the kernels of an explicit SIMD level (tests force each level).
    ///
    /// Fast numerics repack for the new level as [`with_numerics`](Self::with_numerics) does.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        let _mixed_if_out_of_memory = self.refresh_repacked();
        self
    }

    /// The kernels in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The weights' locations.
    pub fn weights(&self) -> &LlamaWeights {
        &self.weights
    }

    /// The file's metadata and tensors.
    pub fn gguf(&self) -> Gguf<'_> {
        self.file.gguf()
    }

    /// The mapped file.
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    /// The forward pass over a batch [`prepare`](KvCache::prepare)d in `cache`: every
    /// item's new tokens (a decode step of some sequences, prompt chunks of others) go
    /// through each matmul together, so each weight is read once per pass; their K/V are
    /// written into the slots the batch reserved; attention reads each sequence's own
    /// pages. Returns each item's logits as it asked for (`n_out × vocab`, row-major).
    ///
    /// On error the K/V written may be partial: give the batch back with
    /// [`KvCache::rollback`], which returns the tables to their old lengths.
    ///
    /// Called from a thread outside rayon's pool (a program's main thread), the pass runs
    /// on one of the pool's workers while the caller waits: its ~150 parallel regions (5 per
    /// layer) are then entered from inside the pool, not each handed over from outside and
    /// waited for (about 5 µs apiece: docs/benchmarks.md, synchronisation points).
    pub fn forward(
        &self,
        cache: &mut KvCache,
        batch: &Batch,
        scratch: &mut ForwardScratch,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.forward_in_pool(cache, batch, scratch));
        }
        self.forward_in_pool(cache, batch, scratch)
    }

    /// [`forward`](Self::forward) on the current thread.
    fn forward_in_pool(
        &self,
        cache: &mut KvCache,
        batch: &Batch,
        scratch: &mut ForwardScratch,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let layout = batch.layout();
        if let Some(&bad) = layout.tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "token id {bad} is outside the vocabulary ({} tokens)",
                self.config.vocab_size
            )));
        }
        let groups = if cache.per_layer() { self.config.n_layers } else { 1 };
        if layout.slots.len() != groups {
            return Err(ModelError::Invalid(format!(
                "a batch of {} table groups for a cache of {} pages (needs {groups})",
                layout.slots.len(),
                if cache.per_layer() { "single-layer" } else { "all-layer" }
            )));
        }
        let transform = if cache.kv_type().rotates() { Some(self.kv_transform()?) } else { None };
        // Fast: the aligned, batch-invariant split of the page-blocked kernel for every
        // format; exact: `exact` (llama.cpp's f16 kernel for f16 pages).
        let fast = self.numerics == Numerics::Fast;
        fn with<T>(
            exact: AttentionFn<T>,
            fast: bool,
            transform: Option<&KvTransform>,
        ) -> Attention<'_, T> {
            Attention { exact, exact_batched: None, fast, transform }
        }
        let r = transform;
        match cache.store_mut() {
            KvStore::F32(kv) => self.run(kv, layout, scratch, with(paged_attention, fast, None)),
            KvStore::F16(kv) => {
                let attend = Attention {
                    exact_batched: Some(paged_attention_f16_tiled),
                    ..with(paged_attention_f16, fast, None)
                };
                self.run(kv, layout, scratch, attend)
            }
            KvStore::Bf16(kv) => self.run(kv, layout, scratch, with(paged_attention, fast, None)),
            KvStore::Q8_0(kv) => self.run(kv, layout, scratch, with(paged_attention, fast, r)),
            KvStore::Q4_0(kv) => self.run(kv, layout, scratch, with(paged_attention, fast, r)),
        }
    }

    /// The pass over a laid-out batch, checked for non-finite values: the last hidden state
    /// and the logits always (one pass over each), every layer's output under
    /// [`with_finite_checks`](Self::with_finite_checks). When the unchecked pass finds a
    /// non-finite hidden state it runs again with every layer checked (it writes the same
    /// K/V into the same slots) to name the first bad layer.
    fn run<T: KvFormat + bytemuck::Pod>(
        &self,
        kv: &mut KvPages<T, KvSlab<T>>,
        b: &BatchLayout,
        s: &mut ForwardScratch,
        attend: Attention<'_, T>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let recorded = s.queries.as_ref().map(Vec::len);
        let mut result = self.run_pass(kv, b, s, attend, self.check_finite);
        if let Err(ModelError::NonFinite { layer: None, what }) = &result {
            if what == HIDDEN_STATE && !self.check_finite {
                if let (Some(log), Some(len)) = (&mut s.queries, recorded) {
                    log.truncate(len);
                }
                result = self.run_pass(kv, b, s, attend, true);
            }
        }
        if result.is_err() {
            if let (Some(log), Some(len)) = (&mut s.queries, recorded) {
                log.truncate(len);
            }
        }
        result
    }

    fn run_pass<T: KvFormat + bytemuck::Pod>(
        &self,
        kv: &mut KvPages<T, KvSlab<T>>,
        b: &BatchLayout,
        s: &mut ForwardScratch,
        attend: Attention<'_, T>,
        check_layers: bool,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        let n = b.tokens.len();
        let x = resize(&mut s.x, n, c.dim, "hidden states")?;
        self.embed(&b.tokens, x)?;
        let non_finite = |layer, what: &str| ModelError::NonFinite { layer, what: what.into() };
        if check_layers && !all_finite(&s.x) {
            return Err(non_finite(None, "token embeddings"));
        }
        for l in 0..c.n_layers {
            self.attention_block(l, kv, b, s, attend)?;
            self.ffn_block(l, n, s)?;
            if check_layers && !all_finite(&s.x) {
                return Err(non_finite(Some(l), HIDDEN_STATE));
            }
        }
        if !all_finite(&s.x) {
            return Err(non_finite(None, HIDDEN_STATE));
        }
        self.output(b, s)
    }

    /// `x[t] = token_embd[tokens[t]]`, dequantized.
    fn embed(&self, tokens: &[u32], x: &mut [f32]) -> Result<(), ModelError> {
        let w = &self.weights.token_embd;
        let row_bytes = w.bytes() / w.rows;
        let bytes = self.file.bytes();
        for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(w.cols)) {
            let start = w.range.start + t as usize * row_bytes;
            pagoda_core::quant::dequantize_row(w.ty, &bytes[start..start + row_bytes], row)
                .map_err(|e| ModelError::Invalid(format!("{}: {e}", w.name)))?;
            if let Some(scale) = self.config.embed_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    /// `out (n × w.rows) = x (n × w.cols) · wᵀ`.
    fn matmul(
        &self,
        w: &Weight,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        let kernel_error = |source| ModelError::Kernel { weight: w.name.clone(), source };
        match &w.fast {
            Some(FastWeight::Quant(r)) => {
                return self.kernels.matmul_repacked(r, x, n, out, scratch).map_err(kernel_error)
            }
            Some(FastWeight::Float(r)) => {
                return self
                    .kernels
                    .matmul_repacked_float(r, x, n, out, scratch)
                    .map_err(kernel_error)
            }
            None => {}
        }
        let m = w.matrix(self.file.bytes());
        if self.numerics == Numerics::Exact {
            let repacked = w.repacked_by_llamacpp();
            return self
                .kernels
                .matmul_exact(&m, x, n, out, scratch, repacked)
                .map_err(kernel_error);
        }
        self.kernels.matmul(&m, x, n, out, scratch).map_err(kernel_error)
    }

    /// Several matmuls of the same input: `outs[i] = x · ws[i]ᵀ`. Quantizes `x` once and
    /// runs one parallel region when the weights share a type and width (they do in every
    /// GGUF pagoda has seen), on the exact kernels or, for F16/BF16 weights with fast copies,
    /// on `repacked_float`'s; falls back to one call each otherwise.
    fn matmul_multi<const N: usize>(
        &self,
        ws: [&Weight; N],
        x: &[f32],
        n: usize,
        mut outs: [&mut [f32]; N],
        scratch: &mut MatmulScratch,
    ) -> Result<(), ModelError> {
        let same = ws.iter().all(|w| w.ty == ws[0].ty && w.cols == ws[0].cols);
        let floats: Option<Vec<_>> = ws
            .iter()
            .map(|w| match &w.fast {
                Some(FastWeight::Float(r)) => Some(&**r),
                _ => None,
            })
            .collect();
        if let (true, Some(floats)) = (same, floats) {
            return self
                .kernels
                .matmul_repacked_float_multi(&floats, x, n, &mut outs, scratch)
                .map_err(|e| {
                    let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
                    ModelError::Invalid(format!("matmul {}: {e}", names.join("+")))
                });
        }
        if !same || ws.iter().any(|w| w.fast.is_some()) {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.matmul(w, x, n, out, scratch)?;
            }
            return Ok(());
        }
        let bytes = self.file.bytes();
        let mats = ws.map(|w| w.matrix(bytes));
        let result = if self.numerics == Numerics::Exact {
            let repacked = ws.iter().all(|w| w.repacked_by_llamacpp());
            if !repacked && ws.iter().any(|w| w.repacked_by_llamacpp()) {
                for (w, out) in ws.iter().zip(outs.iter_mut()) {
                    self.matmul(w, x, n, out, scratch)?;
                }
                return Ok(());
            }
            self.kernels.matmul_multi_exact(&mats, x, n, &mut outs, scratch, repacked)
        } else {
            self.kernels.matmul_multi(&mats, x, n, &mut outs, scratch)
        };
        result.map_err(|e| {
            let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
            ModelError::Invalid(format!("matmul {}: {e}", names.join("+")))
        })
    }

    /// `h = rmsnorm(x) · gain`, row by row.
    fn rmsnorm_rows(&self, x: &[f32], gain: &[f32], h: &mut [f32]) {
        let dim = self.config.dim;
        for (xr, hr) in x.chunks_exact(dim).zip(h.chunks_exact_mut(dim)) {
            self.kernels.rmsnorm(xr, gain, self.config.rms_eps, hr).expect("rows of dim");
        }
    }

    /// `rows = rmsnorm(rows) · gain`, in place, for rows of `gain.len()` (QK-norm of each
    /// head, post-norms of each token), through `tmp`.
    fn rmsnorm_in_place(&self, rows: &mut [f32], gain: &[f32], tmp: &mut Vec<f32>) {
        tmp.resize(gain.len(), 0.0);
        for r in rows.chunks_exact_mut(gain.len()) {
            self.kernels.rmsnorm(r, gain, self.config.rms_eps, tmp).expect("rows of gain.len()");
            r.copy_from_slice(tmp);
        }
    }

    /// RoPE of one token's queries and keys at `pos` in layer `l`, with a table of
    /// `P ≥ n_rot / 2` pairs.
    fn rope<const P: usize>(&self, l: usize, q: &mut [f32], k: &mut [f32], pos: usize) {
        let c = &self.config;
        debug_assert!(c.n_rot <= 2 * P, "n_rot {} exceeds the table", c.n_rot);
        // The C library's cosf/sinf, as llama.cpp calls them (libm's can differ by an ulp).
        let factors = self.weights.rope_freqs.as_deref();
        let base = c.layer_rope_base(l);
        let table = RopeTable::<P>::with_factors(pos, c.n_rot, base, factors, f32::cos, f32::sin);
        match c.rope_style {
            RopeStyle::Adjacent => {
                self.kernels.rope(q, c.head_dim, &table);
                self.kernels.rope(k, c.head_dim, &table);
            }
            RopeStyle::Neox => {
                self.kernels.rope_neox(q, c.head_dim, &table);
                self.kernels.rope_neox(k, c.head_dim, &table);
            }
        }
    }

    /// [`rope`](Self::rope) with the table size the model's `n_rot` needs.
    fn rope_at(&self, l: usize, q: &mut [f32], k: &mut [f32], pos: usize) {
        if self.config.n_rot <= 2 * ROPE_PAIRS {
            self.rope::<ROPE_PAIRS>(l, q, k, pos);
        } else {
            self.rope::<WIDE_ROPE_PAIRS>(l, q, k, pos);
        }
    }

    /// RoPE of one key (`n_kv_heads × head_dim`) at `pos` in layer `l`.
    pub(crate) fn rope_key(&self, l: usize, k: &mut [f32], pos: usize) {
        self.rope_at(l, &mut [], k, pos);
    }

    /// Pre-norm, QKV, RoPE, KV write, causal paged attention, output projection, residual.
    fn attention_block<T: KvFormat + bytemuck::Pod>(
        &self,
        l: usize,
        kv: &mut KvPages<T, KvSlab<T>>,
        b: &BatchLayout,
        s: &mut ForwardScratch,
        attend: Attention<'_, T>,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let n = b.tokens.len();
        let lw = &self.weights.layers[l];
        let (q_dim, kv_dim) = (c.n_heads * c.head_dim, c.kv_dim());
        let h = resize(&mut s.h, n, c.dim, "normed hidden states")?;
        self.rmsnorm_rows(&s.x, &lw.attn_norm, h);
        // q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ: one quantization of h, one parallel region.
        resize(&mut s.q, n, q_dim, "queries")?;
        resize(&mut s.k, n, kv_dim, "keys")?;
        resize(&mut s.v, n, kv_dim, "values")?;
        self.matmul_multi(
            [&lw.wq, &lw.wk, &lw.wv],
            &s.h,
            n,
            [&mut s.q[..], &mut s.k[..], &mut s.v[..]],
            &mut s.matmul,
        )?;

        if let Some((q_norm, k_norm)) = &lw.qk_norm {
            self.rmsnorm_in_place(&mut s.q, q_norm, &mut s.row);
            self.rmsnorm_in_place(&mut s.k, k_norm, &mut s.row);
        }

        // Which pages this layer uses: the sequence's table, or (single-layer pages) its
        // table for this layer, in slab layer 0.
        let (g, kl) = if b.per_layer { (l, 0) } else { (0, l) };
        // RoPE at each token's absolute position, then store K/V in the pages.
        let rows =
            s.q.chunks_exact_mut(q_dim)
                .zip(s.k.chunks_exact_mut(kv_dim))
                .zip(s.v.chunks_exact_mut(kv_dim));
        for (((q, k), v), (&(page, slot), &pos)) in rows.zip(b.slots[g].iter().zip(&b.positions)) {
            if let Some(stats) = &mut s.kv_stats {
                if pos > 0 {
                    stats.add_unrotated_key(l, k);
                }
            }
            self.rope_at(l, q, k, pos);
            if let Some(scale) = c.q_scale {
                q.iter_mut().for_each(|v| *v *= scale);
            }
            if let Some(stats) = &mut s.kv_stats {
                if pos > 0 {
                    stats.add(l, q, k);
                }
            }
            if let Some(t) = attend.transform {
                t.apply(l, q, k, v); // q8_0 / q4_0 pages (KvType::rotates)
            }
            kv.write(kl, page, slot, k, v)
                .map_err(|source| ModelError::Kv { what: "KV write".into(), source })?;
        }
        if let Some(log) = &mut s.queries {
            log.try_reserve(s.q.len()).map_err(|_| ModelError::OutOfMemory {
                what: "recorded queries".into(),
                bytes: (log.len() + s.q.len()).checked_mul(size_of::<f32>()),
            })?;
            log.extend_from_slice(&s.q);
        }

        // Causal attention: a token at position p of its sequence sees positions 0..=p of
        // that sequence's pages (a span's tokens sit at consecutive positions). Spans in
        // parallel; each call splits its own work over (token group, kv head, page range).
        let mut cfg =
            AttnConfig::new(c.n_heads, c.n_kv_heads, c.head_dim).map_err(ModelError::Attention)?;
        if c.q_scale.is_some() {
            cfg.scale = 1.0; // the queries carry the scale
        }
        cfg.window = c.window(l);
        let att = resize(&mut s.att, n, q_dim, "attention outputs")?;
        let kv_ref: &KvPages<T, KvSlab<T>> = kv;
        let level = self.kernels.level();
        let mut outs: Vec<(&SeqSpan, &mut [f32], &[f32])> = Vec::with_capacity(b.spans.len());
        let (mut att_rest, mut q_rest) = (&mut att[..], &s.q[..]);
        for sp in &b.spans {
            let (a, ar) = std::mem::take(&mut att_rest).split_at_mut(sp.n * q_dim);
            let (q, qr) = q_rest.split_at(sp.n * q_dim);
            outs.push((sp, a, q));
            att_rest = ar;
            q_rest = qr;
        }
        let bs = kv_ref.config().block_size.max(1);
        outs.into_par_iter().try_for_each(|(sp, out, q)| {
            // The sequence page of the table's page 0: the last new token's position minus
            // its table index (pages a sliding window gave back, or an eviction policy's).
            let last = b.positions.get(sp.off + sp.n - 1).copied().unwrap_or(0);
            let start_page = (last + 1).saturating_sub(sp.n_ctx[g]) / bs;
            let (pages, n_ctx) = (&sp.pages[g][..], sp.n_ctx[g]);
            // llama.cpp picks its flash-attention kernel by a sequence's rows in the batch
            // (the query rows of its cache stream in the ubatch).
            let exact = match attend.exact_batched {
                Some(tiled) if sp.n >= TILED_MIN_ROWS => tiled,
                _ => attend.exact,
            };
            if attend.fast {
                paged_attention_aligned(level, kv_ref, kl, pages, start_page, n_ctx, q, out, &cfg)
            } else {
                exact(level, kv_ref, kl, pages, n_ctx, q, out, &cfg)
            }
            .map_err(ModelError::Attention)?;
            if let Some(t) = attend.transform {
                t.restore(out); // Σ p·(H v) = H (Σ p·v): rotate back
            }
            Ok::<(), ModelError>(())
        })?;

        // x += [post_norm](att · Woᵀ)
        let o = resize(&mut s.out, n, c.dim, "block outputs")?;
        self.matmul(&lw.wo, &s.att, n, o, &mut s.matmul)?;
        if let Some((post_attn, _)) = &lw.post_norms {
            self.rmsnorm_in_place(&mut s.out, post_attn, &mut s.row);
        }
        s.x.iter_mut().zip(&s.out).for_each(|(x, o)| *x += o);
        Ok(())
    }

    /// Pre-norm, gated feed-forward (SwiGLU or GeGLU), [post-norm,] residual.
    fn ffn_block(&self, l: usize, n: usize, s: &mut ForwardScratch) -> Result<(), ModelError> {
        let c = &self.config;
        let lw = &self.weights.layers[l];
        let h = resize(&mut s.h, n, c.dim, "normed hidden states")?;
        self.rmsnorm_rows(&s.x, &lw.ffn_norm, h);
        resize(&mut s.gate, n, c.ffn_dim, "FFN gate activations")?;
        resize(&mut s.up, n, c.ffn_dim, "FFN up activations")?;
        self.matmul_multi(
            [&lw.w_gate, &lw.w_up],
            &s.h,
            n,
            [&mut s.gate[..], &mut s.up[..]],
            &mut s.matmul,
        )?;
        match c.ffn_act {
            FfnActivation::Silu => self.kernels.silu_mul(&mut s.gate, &s.up),
            FfnActivation::GeluTanh => self.kernels.gelu_mul(&mut s.gate, &s.up),
        }
        .expect("same length");
        let o = resize(&mut s.out, n, c.dim, "block outputs")?;
        self.matmul(&lw.w_down, &s.gate, n, o, &mut s.matmul)?;
        if let Some((_, post_ffn)) = &lw.post_norms {
            self.rmsnorm_in_place(&mut s.out, post_ffn, &mut s.row);
        }
        s.x.iter_mut().zip(&s.out).for_each(|(x, o)| *x += o);
        Ok(())
    }

    /// Final norm and LM head for the rows each item's `logits` asks for, in one matmul.
    fn output(&self, b: &BatchLayout, s: &mut ForwardScratch) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        // Rows of x that need logits, per span.
        let ranges: Vec<std::ops::Range<usize>> = b
            .spans
            .iter()
            .map(|sp| {
                let start = match sp.logits {
                    Logits::None => sp.n,
                    Logits::Last => sp.n.saturating_sub(1),
                    Logits::From(i) => i.min(sp.n),
                };
                sp.off + start..sp.off + sp.n
            })
            .collect();
        let rows: usize = ranges.iter().map(|r| r.len()).sum();
        let h = resize(&mut s.h, rows, c.dim, "normed hidden states")?;
        let mut at = 0;
        for r in &ranges {
            let len = r.len() * c.dim;
            self.rmsnorm_rows(
                &s.x[r.start * c.dim..r.end * c.dim],
                &self.weights.output_norm,
                &mut h[at..at + len],
            );
            at += len;
        }
        let mut all = Vec::new();
        resize(&mut all, rows, c.vocab_size, "logits")?;
        if rows > 0 {
            self.matmul(&self.weights.output, &s.h, rows, &mut all, &mut s.matmul)?;
        }
        if !all_finite(&all) {
            return Err(ModelError::NonFinite { layer: None, what: "logits".into() });
        }
        if ranges.len() == 1 {
            return Ok(vec![all]);
        }
        let mut out = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for r in &ranges {
            let len = r.len() * c.vocab_size;
            let mut item = Vec::new();
            reserve(&mut item, len, "logits")?;
            item.extend_from_slice(&all[at..at + len]);
            out.push(item);
            at += len;
        }
        Ok(out)
    }
}
