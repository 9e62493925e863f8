//! The Llama forward pass over memory-mapped GGUF weights and the paged KV cache.
//!
//! One function per step of the architecture, in the order of the paper:
//!
//! ```text
//! x = embed(tokens)                                  (n, dim)
//! for each layer:
//!     h = rmsnorm(x) · attn_norm
//!     q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ                  (n, n_heads·hd), (n, n_kv·hd) ×2
//!     rope(q, k) at each token's position
//!     write k, v into the sequence's KV pages
//!     a = attention(q, all cached k, v)  (causal)    (n, n_heads·hd)
//!     x += a·Woᵀ
//!     h = rmsnorm(x) · ffn_norm
//!     x += (silu(h·Wgateᵀ) ⊙ h·Wupᵀ)·Wdownᵀ
//! logits = rmsnorm(x) · output_norm · Woutᵀ          (n_out, vocab)
//! ```
//!
//! A chunk of `n` tokens runs through each matmul at once (each weight block is read once
//! per chunk); generation is a chunk of one. Nothing already in the cache is recomputed.

use std::path::Path;

use pagoda_core::attention::{paged_decode, AttnConfig};
use pagoda_core::gguf::Gguf;
use pagoda_core::kv::{KvElement, KvPages};
use pagoda_core::ops::{rope_inplace, RopeTable};
use pagoda_core::pool::PageId;
use rayon::prelude::*;

use crate::kernels::{Kernels, MatmulScratch};
use crate::model_file::ModelFile;

use super::kv_cache::{KvCache, KvStore, SeqTable};
use super::weights::{LlamaWeights, Weight};
use super::{LlamaConfig, ModelError};

/// Largest supported `n_rot / 2` (head_dim 256).
const MAX_ROPE_PAIRS: usize = 128;

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
}

fn resize(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

impl Llama {
    /// Opens, validates and maps a GGUF model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let file = ModelFile::open(path.as_ref())?;
        Self::from_file(file)
    }

    /// Builds the model over an already opened file.
    pub fn from_file(file: ModelFile) -> Result<Self, ModelError> {
        let g = file.gguf();
        let config = LlamaConfig::from_gguf(&g)?;
        let weights = LlamaWeights::load(&g, &config)?;
        Ok(Llama { file, config, weights, kernels: Kernels::detect() })
    }

    /// Uses the kernels of an explicit SIMD level (tests force each level).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
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

    /// Runs `tokens` through the model as the next tokens of the sequence `table`
    /// (whose first `table.len()` tokens are already cached): appends their K/V to the
    /// cache and returns the logits asked for (`n_out × vocab`, row-major).
    ///
    /// On error nothing is appended: the table keeps its old length.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        table: &mut SeqTable,
        tokens: &[u32],
        logits: Logits,
        scratch: &mut ForwardScratch,
    ) -> Result<Vec<f32>, ModelError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "token id {bad} is outside the vocabulary ({} tokens)",
                self.config.vocab_size
            )));
        }
        let pos0 = table.len();
        cache.append(table, tokens.len())?;
        let slots: Vec<(PageId, usize)> = (pos0..pos0 + tokens.len())
            .map(|p| {
                let s = table.slot(p).expect("slot appended above");
                (s.page, s.slot)
            })
            .collect();
        let pages = table.pages().to_vec();
        let result = match cache_store_mut(cache) {
            KvStore::F32(kv) => self.run(kv, &pages, &slots, pos0, tokens, logits, scratch),
            KvStore::F16(kv) => self.run(kv, &pages, &slots, pos0, tokens, logits, scratch),
        };
        if result.is_err() {
            cache.truncate(table, pos0);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn run<T: KvElement>(
        &self,
        kv: &mut KvPages<T, Vec<T>>,
        pages: &[PageId],
        slots: &[(PageId, usize)],
        pos0: usize,
        tokens: &[u32],
        logits: Logits,
        s: &mut ForwardScratch,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let n = tokens.len();
        let x = resize(&mut s.x, n * c.dim);
        self.embed(tokens, x)?;
        for l in 0..c.n_layers {
            self.attention_block(l, kv, pages, slots, pos0, n, s)?;
            self.ffn_block(l, n, s)?;
        }
        self.output(n, logits, s)
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
        let m = w.matrix(self.file.bytes());
        self.kernels
            .matmul(&m, x, n, out, scratch)
            .map_err(|e| ModelError::Invalid(format!("matmul {}: {e}", w.name)))
    }

    /// `h = rmsnorm(x) · gain`, row by row.
    fn rmsnorm_rows(&self, x: &[f32], gain: &[f32], h: &mut [f32]) {
        let dim = self.config.dim;
        for (xr, hr) in x.chunks_exact(dim).zip(h.chunks_exact_mut(dim)) {
            self.kernels.rmsnorm(xr, gain, self.config.rms_eps, hr).expect("rows of dim");
        }
    }

    /// Pre-norm, QKV, RoPE, KV write, causal paged attention, output projection, residual.
    #[allow(clippy::too_many_arguments)]
    fn attention_block<T: KvElement>(
        &self,
        l: usize,
        kv: &mut KvPages<T, Vec<T>>,
        pages: &[PageId],
        slots: &[(PageId, usize)],
        pos0: usize,
        n: usize,
        s: &mut ForwardScratch,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let lw = &self.weights.layers[l];
        let (q_dim, kv_dim) = (c.n_heads * c.head_dim, c.kv_dim());
        let h = resize(&mut s.h, n * c.dim);
        self.rmsnorm_rows(&s.x, &lw.attn_norm, h);
        let q = resize(&mut s.q, n * q_dim);
        self.matmul(&lw.wq, &s.h, n, q, &mut s.matmul)?;
        let k = resize(&mut s.k, n * kv_dim);
        self.matmul(&lw.wk, &s.h, n, k, &mut s.matmul)?;
        let v = resize(&mut s.v, n * kv_dim);
        self.matmul(&lw.wv, &s.h, n, v, &mut s.matmul)?;

        // RoPE at each token's absolute position, then store K/V in the pages.
        for t in 0..n {
            let table = RopeTable::<MAX_ROPE_PAIRS>::new(pos0 + t, c.n_rot, c.rope_base);
            rope_inplace(&mut s.q[t * q_dim..(t + 1) * q_dim], c.head_dim, &table);
            rope_inplace(&mut s.k[t * kv_dim..(t + 1) * kv_dim], c.head_dim, &table);
            let (page, slot) = slots[t];
            kv.write(
                l,
                page,
                slot,
                &s.k[t * kv_dim..(t + 1) * kv_dim],
                &s.v[t * kv_dim..(t + 1) * kv_dim],
            )
            .map_err(|e| ModelError::Invalid(format!("KV write: {e}")))?;
        }

        // Causal attention: token t sees positions 0..=pos0 + t. Tokens in parallel.
        let cfg = AttnConfig::new(c.n_heads, c.n_kv_heads, c.head_dim)
            .map_err(|e| ModelError::Invalid(format!("attention: {e}")))?;
        let att = resize(&mut s.att, n * q_dim);
        let kv_ref: &KvPages<T, Vec<T>> = kv;
        att.par_chunks_mut(q_dim).zip(s.q.par_chunks(q_dim)).enumerate().try_for_each(
            |(t, (out, q))| {
                paged_decode(kv_ref, l, pages, pos0 + t + 1, q, out, &cfg)
                    .map_err(|e| ModelError::Invalid(format!("attention: {e}")))
            },
        )?;

        // x += att · Woᵀ
        let o = resize(&mut s.out, n * c.dim);
        self.matmul(&lw.wo, &s.att, n, o, &mut s.matmul)?;
        s.x.iter_mut().zip(&s.out).for_each(|(x, o)| *x += o);
        Ok(())
    }

    /// Pre-norm, SwiGLU feed-forward, residual.
    fn ffn_block(&self, l: usize, n: usize, s: &mut ForwardScratch) -> Result<(), ModelError> {
        let c = &self.config;
        let lw = &self.weights.layers[l];
        let h = resize(&mut s.h, n * c.dim);
        self.rmsnorm_rows(&s.x, &lw.ffn_norm, h);
        let gate = resize(&mut s.gate, n * c.ffn_dim);
        self.matmul(&lw.w_gate, &s.h, n, gate, &mut s.matmul)?;
        let up = resize(&mut s.up, n * c.ffn_dim);
        self.matmul(&lw.w_up, &s.h, n, up, &mut s.matmul)?;
        self.kernels.silu_mul(&mut s.gate, &s.up).expect("same length");
        let o = resize(&mut s.out, n * c.dim);
        self.matmul(&lw.w_down, &s.gate, n, o, &mut s.matmul)?;
        s.x.iter_mut().zip(&s.out).for_each(|(x, o)| *x += o);
        Ok(())
    }

    /// Final norm and LM head for the rows `logits` asks for.
    fn output(
        &self,
        n: usize,
        logits: Logits,
        s: &mut ForwardScratch,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let start = match logits {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => n - 1,
            Logits::From(i) => i.min(n),
        };
        let rows = n - start;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let h = resize(&mut s.h, rows * c.dim);
        self.rmsnorm_rows(&s.x[start * c.dim..], &self.weights.output_norm, h);
        let mut out = vec![0.0f32; rows * c.vocab_size];
        self.matmul(&self.weights.output, &s.h, rows, &mut out, &mut s.matmul)?;
        Ok(out)
    }
}

fn cache_store_mut(cache: &mut KvCache) -> &mut KvStore {
    cache.store_mut()
}
