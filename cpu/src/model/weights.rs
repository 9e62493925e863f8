//! Where each weight lives in the mapped file.
//!
//! Weights are never copied (except the tiny f32 norm vectors): a [`Weight`] records
//! the type, shape and byte range of a tensor inside the map, and
//! [`Weight::matrix`] turns it into a kernel view on demand.

use std::ops::Range;
use std::sync::Arc;

use pagoda_core::gguf::Gguf;
use pagoda_core::quant::GgmlType;

use crate::kernels::repacked::{self, Repacked};
use crate::kernels::repacked_float::{self, RepackedFloat};
use crate::kernels::{QuantMatrix, SimdLevel};

use super::{LlamaConfig, ModelError};

/// A 2-D weight inside the mapped file: `rows × cols`, row-major, ggml type `ty`.
///
/// ggml's shape `[ne0, ne1]` is `[cols, rows]`: `ne0` is the row length.
#[derive(Clone, Debug)]
pub struct Weight {
    /// The tensor's name in the file.
    pub name: String,
    /// Element type.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features (row length).
    pub cols: usize,
    /// Byte range of the data within the file.
    pub range: Range<usize>,
    /// The rows repacked for fast numerics' matmul (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL,
    /// IQ4_XS, Q3_K, Q4_K, Q5_K, Q6_K, F16 and BF16 weights of a model computing in
    /// [`Numerics::Fast`](super::Numerics::Fast)), else `None`.
    pub fast: Option<FastWeight>,
}

impl Weight {
    /// Whether llama.cpp (x86, AVX-512 build) repacks this matrix at load and so computes it
    /// in its repacked kernels' order: Q4_0, IQ4_NL, Q4_K and Q2_K with a row count that is
    /// a multiple of 8, not the token embedding (kept in its plain buffer for lookups, also
    /// when it serves as the LM head).
    pub fn repacked_by_llamacpp(&self) -> bool {
        matches!(self.ty, GgmlType::Q4_0 | GgmlType::IQ4_NL | GgmlType::Q4_K | GgmlType::Q2_K)
            && self.rows % 8 == 0
            && self.name != "token_embd.weight"
    }
}

/// A weight's copy for fast numerics' matmul: which repacked layout, by weight type.
#[derive(Clone, Debug)]
pub enum FastWeight {
    /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS, Q3_K, Q4_K, Q5_K, Q6_K
    /// ([`crate::kernels::repacked`]).
    Quant(Arc<Repacked>),
    /// F16, BF16 ([`crate::kernels::repacked_float`]).
    Float(Arc<RepackedFloat>),
}

impl Weight {
    fn load(g: &Gguf<'_>, name: &str, rows: usize, cols: usize) -> Result<Self, ModelError> {
        let t = g.tensor(name)?;
        t.check_supported()?;
        let dims = t.dims();
        let got_cols = dims.first().copied().unwrap_or(1) as usize;
        let got_rows = (t.n_elements() / dims.first().copied().unwrap_or(1).max(1)) as usize;
        if got_cols != cols || got_rows != rows {
            return Err(ModelError::Invalid(format!(
                "tensor '{name}' has shape {dims:?}, expected [{cols}, {rows}]"
            )));
        }
        let start = (t.data().as_ptr() as usize) - (g.bytes().as_ptr() as usize);
        // Validate once that the kernels accept this shape and type.
        QuantMatrix::new(t.ggml_type(), rows, cols, t.data())
            .map_err(|e| ModelError::Invalid(format!("tensor '{name}': {e}")))?;
        Ok(Weight {
            name: name.to_string(),
            ty: t.ggml_type(),
            rows,
            cols,
            range: start..start + t.data().len(),
            fast: None,
        })
    }

    /// The kernel view of this weight over the file's bytes.
    pub fn matrix<'a>(&self, file: &'a [u8]) -> QuantMatrix<'a> {
        QuantMatrix::new(self.ty, self.rows, self.cols, &file[self.range.clone()])
            .expect("weight shape validated at load")
    }

    /// Bytes of the weight.
    pub fn bytes(&self) -> usize {
        self.range.len()
    }
}

fn load_f32(g: &Gguf<'_>, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let t = g.tensor(name)?;
    if t.n_elements() as usize != len {
        return Err(ModelError::Invalid(format!(
            "tensor '{name}' has {} elements, expected {len}",
            t.n_elements()
        )));
    }
    let mut out = vec![0.0f32; len];
    pagoda_core::quant::dequantize_row(t.ggml_type(), t.data(), &mut out)
        .map_err(|e| ModelError::Invalid(format!("tensor '{name}': {e}")))?;
    // Norm gains are small: check them here rather than let a NaN reach every token.
    if let Some(i) = out.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::Invalid(format!(
            "tensor '{name}' holds a non-finite value ({} at index {i})",
            out[i]
        )));
    }
    Ok(out)
}

/// One transformer block's weights. Shapes are `(rows, cols)` = `(out, in)`.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// `(dim)` RMSNorm gain before attention.
    pub attn_norm: Vec<f32>,
    /// `(n_heads · head_dim, dim)` query projection.
    pub wq: Weight,
    /// `(n_kv_heads · head_dim, dim)` key projection.
    pub wk: Weight,
    /// `(n_kv_heads · head_dim, dim)` value projection.
    pub wv: Weight,
    /// `(dim, n_heads · head_dim)` attention output projection.
    pub wo: Weight,
    /// `(dim)` RMSNorm gain before the FFN.
    pub ffn_norm: Vec<f32>,
    /// `(ffn_dim, dim)` SwiGLU gate.
    pub w_gate: Weight,
    /// `(ffn_dim, dim)` SwiGLU up.
    pub w_up: Weight,
    /// `(dim, ffn_dim)` SwiGLU down.
    pub w_down: Weight,
    /// `(head_dim)` RMSNorm gains of each query and key head (QK-norm, Gemma 3), as a pair.
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// `(dim)` RMSNorm gains of the attention output and of the FFN output before their
    /// residual adds (Gemma 3), as a pair.
    pub post_norms: Option<(Vec<f32>, Vec<f32>)>,
}

/// All weights of a Llama model.
#[derive(Clone, Debug)]
pub struct LlamaWeights {
    /// `(vocab, dim)` token embeddings.
    pub token_embd: Weight,
    /// The blocks, in order.
    pub layers: Vec<LayerWeights>,
    /// `(dim)` final RMSNorm gain.
    pub output_norm: Vec<f32>,
    /// `(vocab, dim)` LM head: `output.weight`, or `token_embd` when tied (absent).
    pub output: Weight,
    /// `(n_rot / 2)` RoPE frequency divisors (`rope_freqs.weight`, Llama 3.1+): pair `i`
    /// rotates by `θᵢ / rope_freqs[i]`. `None`: no scaling.
    pub rope_freqs: Option<Vec<f32>>,
}

impl LlamaWeights {
    /// Locates every weight and checks its shape against `c`.
    pub fn load(g: &Gguf<'_>, c: &LlamaConfig) -> Result<Self, ModelError> {
        // `c` may be built by hand: its products are checked, not trusted.
        let dims = |heads: usize, what: &str| {
            heads.checked_mul(c.head_dim).ok_or_else(|| {
                ModelError::Invalid(format!("{what} {heads} × head_dim {} overflows", c.head_dim))
            })
        };
        let q_dim = dims(c.n_heads, "head_count")?;
        let kv_dim = dims(c.n_kv_heads, "head_count_kv")?;
        let token_embd = Weight::load(g, "token_embd.weight", c.vocab_size, c.dim)?;
        let output = match g.tensor("output.weight") {
            Ok(_) => Weight::load(g, "output.weight", c.vocab_size, c.dim)?,
            Err(_) => token_embd.clone(),
        };
        // Grown layer by layer (not sized by `n_layers` up front): a block count larger than
        // the file's tensors stops at the first missing one instead of allocating for it.
        let mut layers = Vec::new();
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            layers.push(LayerWeights {
                attn_norm: load_f32(g, &n("attn_norm"), c.dim)?,
                wq: Weight::load(g, &n("attn_q"), q_dim, c.dim)?,
                wk: Weight::load(g, &n("attn_k"), kv_dim, c.dim)?,
                wv: Weight::load(g, &n("attn_v"), kv_dim, c.dim)?,
                wo: Weight::load(g, &n("attn_output"), c.dim, q_dim)?,
                ffn_norm: load_f32(g, &n("ffn_norm"), c.dim)?,
                w_gate: Weight::load(g, &n("ffn_gate"), c.ffn_dim, c.dim)?,
                w_up: Weight::load(g, &n("ffn_up"), c.ffn_dim, c.dim)?,
                w_down: Weight::load(g, &n("ffn_down"), c.dim, c.ffn_dim)?,
                qk_norm: match c.qk_norm {
                    true => Some((
                        load_f32(g, &n("attn_q_norm"), c.head_dim)?,
                        load_f32(g, &n("attn_k_norm"), c.head_dim)?,
                    )),
                    false => None,
                },
                post_norms: match c.post_norms {
                    true => Some((
                        load_f32(g, &n("post_attention_norm"), c.dim)?,
                        load_f32(g, &n("post_ffw_norm"), c.dim)?,
                    )),
                    false => None,
                },
            });
        }
        let rope_freqs = match g.tensor("rope_freqs.weight") {
            Ok(_) => {
                let f = load_f32(g, "rope_freqs.weight", c.n_rot / 2)?;
                if let Some(i) = f.iter().position(|&x| x <= 0.0) {
                    return Err(ModelError::Invalid(format!(
                        "tensor 'rope_freqs.weight' holds a divisor <= 0 ({} at index {i})",
                        f[i]
                    )));
                }
                Some(f)
            }
            Err(_) => None,
        };
        Ok(LlamaWeights {
            token_embd,
            layers,
            output_norm: load_f32(g, "output_norm.weight", c.dim)?,
            output,
            rope_freqs,
        })
    }

    /// Repacks for fast numerics' matmul at `level` every matrix (blocks and LM head) whose
    /// type has a repacked kernel there ([`repacked::accelerated`]: Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, IQ4_NL, IQ4_XS, Q3_K, Q4_K, Q5_K, Q6_K; [`repacked_float::accelerated`]: F16,
    /// BF16),
    /// or drops the repacked copies (`None`). `file` is the mapped file.
    ///
    /// The F16 and BF16 copies share one allocation ([`RepackedFloat::new_all`], in the
    /// order the forward pass reads them), so that a small model's matrices get huge pages
    /// too.
    ///
    /// A copy that cannot be allocated leaves its matrix (for F16 and BF16: every such
    /// matrix) on the exact kernels (still batch-invariant) and is reported: the first such
    /// failure is the error, after every other matrix was tried.
    pub fn set_repacked(
        &mut self,
        file: &[u8],
        level: Option<SimdLevel>,
    ) -> Result<(), ModelError> {
        let mut failed: Option<ModelError> = None;
        let mut oom = |bytes: usize| {
            failed.get_or_insert(ModelError::OutOfMemory {
                what: "fast numerics' repacked weights (--numerics exact needs no copy)".into(),
                bytes: (bytes != usize::MAX).then_some(bytes),
            });
        };
        let mut all = self.matrices_mut();
        for w in all.iter_mut() {
            w.fast = None; // the old copies go first: never two at once
        }
        let Some(level) = level else {
            return Ok(());
        };
        let is_float = |w: &Weight| matches!(w.ty, GgmlType::F16 | GgmlType::BF16);
        let floats: Vec<_> = all.iter().filter(|w| is_float(w)).map(|w| w.matrix(file)).collect();
        let floats = if repacked_float::accelerated(level) { floats } else { Vec::new() };
        match RepackedFloat::new_all(&floats) {
            Ok(copies) => {
                let targets = all.iter_mut().filter(|w| is_float(w));
                for (w, r) in targets.zip(copies) {
                    w.fast = r.map(|r| FastWeight::Float(Arc::new(r)));
                }
            }
            Err(bytes) => oom(bytes),
        }
        for w in all.iter_mut().filter(|w| !is_float(w) && repacked::accelerated(level)) {
            match Repacked::new(&w.matrix(file)) {
                Ok(r) => w.fast = r.map(|r| FastWeight::Quant(Arc::new(r))),
                Err(bytes) => oom(bytes),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Repacks, for exact numerics, the Q4_0 and IQ4_NL matrices llama.cpp repacks on x86 whose repacked
    /// order pagoda's [`repacked`] kernel computes bit for bit: Q4_0 and IQ4_NL with a row
    /// count that is a multiple of 8 (llama.cpp's `q4_0_8x8_q8_0` and `iq4_nl_8x8_q8_0`:
    /// per block `acc = fma((float) isum, d_w·d_a, acc)`, for decode and prompts alike).
    /// Not the token embedding used as LM head (llama.cpp keeps it in its plain buffer).
    /// At levels without a SIMD repacked kernel the scalar specification runs. Drops every
    /// other copy. A copy that cannot be allocated is reported as [`set_repacked`] does.
    ///
    /// [`set_repacked`]: Self::set_repacked
    pub fn set_llamacpp_repacked(&mut self, file: &[u8]) -> Result<(), ModelError> {
        self.set_repacked(file, None)?;
        let mut failed = None;
        let all = self.matrices_mut();
        let ours = |w: &Weight| {
            matches!(w.ty, GgmlType::Q4_0 | GgmlType::IQ4_NL) && w.repacked_by_llamacpp()
        };
        for w in all.into_iter().filter(|w| ours(w)) {
            match Repacked::new(&w.matrix(file)) {
                Ok(r) => w.fast = r.map(|r| FastWeight::Quant(Arc::new(r))),
                Err(bytes) => {
                    failed.get_or_insert(ModelError::OutOfMemory {
                        what: "exact numerics' repacked Q4_0/IQ4_NL weights".into(),
                        bytes: (bytes != usize::MAX).then_some(bytes),
                    });
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Every matrix a forward pass multiplies by, in its order: each layer's seven, then the
    /// LM head.
    fn matrices_mut(&mut self) -> Vec<&mut Weight> {
        let mut all: Vec<&mut Weight> = Vec::new();
        for l in &mut self.layers {
            all.extend([
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.w_gate,
                &mut l.w_up,
                &mut l.w_down,
            ]);
        }
        all.push(&mut self.output);
        all
    }

    /// Bytes of weights read to decode one token: every matrix once, plus the LM head.
    pub fn bytes_per_token(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.wq.bytes()
                    + l.wk.bytes()
                    + l.wv.bytes()
                    + l.wo.bytes()
                    + l.w_gate.bytes()
                    + l.w_up.bytes()
                    + l.w_down.bytes()
                    + 8 * l.attn_norm.len()
                    + l.post_norms.as_ref().map_or(0, |(a, f)| 4 * (a.len() + f.len()))
                    + l.qk_norm.as_ref().map_or(0, |(q, k)| 4 * (q.len() + k.len()))
            })
            .sum();
        layers + self.output.bytes() + 4 * self.output_norm.len()
    }
}
