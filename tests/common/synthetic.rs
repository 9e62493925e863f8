//! Synthetic Llama models as GGUF bytes: a tiny, deterministic model whose every
//! hyper-parameter, metadata entry and tensor a test can change.
//!
//! ```ignore
//! let mut m = SyntheticLlama::tiny();
//! m.set_f32("llama.rope.freq_base", -1.0);          // any metadata entry
//! m.set_tensor("blk.0.attn_norm.weight", vec![f32::NAN; m.dim]);
//! let err = m.load().unwrap_err();
//! ```
//!
//! Every tensor is F32 unless [`SyntheticLlama::set_type`] says otherwise, in which case
//! its values are quantized to that type (pagoda-core's `quantize_row`, ggml's bytes), or
//! written as zero bytes of the type's size where pagoda has no quantizer (ggml order:
//! `[cols, rows]`). Weights are small pseudo-random values from a fixed seed; norm gains
//! are 1. `load` goes through `ModelFile::from_vec` and
//! `Llama::from_file`, the path every real file takes.
#![allow(dead_code)]

use pagoda::core::ggml_type::GgmlType;
use pagoda::core::gguf::ValueType;
use pagoda::core::quant::quantize_row;
use pagoda::cpu::model::{Llama, ModelError};
use pagoda::cpu::model_file::ModelFile;

/// A metadata value of the writer.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    /// GGUF u32.
    U32(u32),
    /// GGUF f32.
    F32(f32),
    /// GGUF string.
    Str(String),
    /// GGUF array of strings.
    Strs(Vec<String>),
}

/// A synthetic Llama model (see the module docs).
#[derive(Clone, Debug)]
pub struct SyntheticLlama {
    /// Transformer blocks whose tensors are written.
    pub n_layers: usize,
    /// Residual width.
    pub dim: usize,
    /// SwiGLU width.
    pub ffn_dim: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Rows of `token_embd.weight` (and of the LM head).
    pub vocab: usize,
    /// Seed of the weights.
    pub seed: u64,
    /// Metadata in file order; `set_*` replaces an entry or appends it.
    pub meta: Vec<(String, Meta)>,
    /// Tensors replaced by the test: name → values (shape unchanged unless `dims` given).
    pub tensor_overrides: Vec<(String, Option<Vec<u64>>, Vec<f32>)>,
    /// Tensors left out of the file.
    pub omitted: Vec<String>,
    /// Tensors stored in a type other than F32: name → type.
    pub types: Vec<(String, GgmlType)>,
}

impl SyntheticLlama {
    /// 2 layers, dim 64, 4 query / 2 KV heads (head_dim 16), FFN 96, vocab 48.
    pub fn tiny() -> Self {
        Self::with_shape(2, 64, 96, 4, 2, 48)
    }

    /// A model of the given shape, with every `llama.*` key written explicitly.
    pub fn with_shape(
        n_layers: usize,
        dim: usize,
        ffn_dim: usize,
        n_heads: usize,
        n_kv_heads: usize,
        vocab: usize,
    ) -> Self {
        let mut m = SyntheticLlama {
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            vocab,
            seed: 0x5EED,
            meta: Vec::new(),
            tensor_overrides: Vec::new(),
            omitted: Vec::new(),
            types: Vec::new(),
        };
        m.set("general.architecture", Meta::Str("llama".into()));
        m.set_u32("llama.block_count", n_layers as u32);
        m.set_u32("llama.embedding_length", dim as u32);
        m.set_u32("llama.feed_forward_length", ffn_dim as u32);
        m.set_u32("llama.attention.head_count", n_heads as u32);
        m.set_u32("llama.attention.head_count_kv", n_kv_heads as u32);
        m.set_u32("llama.rope.dimension_count", (dim / n_heads) as u32);
        m.set_f32("llama.rope.freq_base", 10_000.0);
        m.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
        m.set_u32("llama.context_length", 256);
        m
    }

    /// Sets (or adds) a metadata entry.
    pub fn set(&mut self, key: &str, v: Meta) -> &mut Self {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.meta.push((key.to_string(), v)),
        }
        self
    }

    /// Sets a u32 entry.
    pub fn set_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.set(key, Meta::U32(v))
    }

    /// Sets an f32 entry.
    pub fn set_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.set(key, Meta::F32(v))
    }

    /// Removes a metadata entry.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.meta.retain(|(k, _)| k != key);
        self
    }

    /// A tokenizer vocabulary of `n` tokens (`tokenizer.ggml.tokens`).
    pub fn with_vocabulary(&mut self, n: usize) -> &mut Self {
        self.set("tokenizer.ggml.tokens", Meta::Strs((0..n).map(|i| format!("t{i}")).collect()))
    }

    /// Replaces a tensor's values (same shape).
    pub fn set_tensor(&mut self, name: &str, values: Vec<f32>) -> &mut Self {
        self.tensor_overrides.retain(|(n, _, _)| n != name);
        self.tensor_overrides.push((name.to_string(), None, values));
        self
    }

    /// Replaces a tensor with one of another shape (ggml order).
    pub fn set_tensor_shaped(&mut self, name: &str, dims: &[u64], values: Vec<f32>) -> &mut Self {
        self.tensor_overrides.retain(|(n, _, _)| n != name);
        self.tensor_overrides.push((name.to_string(), Some(dims.to_vec()), values));
        self
    }

    /// Leaves a tensor out of the file.
    pub fn omit(&mut self, name: &str) -> &mut Self {
        self.omitted.push(name.to_string());
        self
    }

    /// Elements per head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Every tensor of the model: name, ggml dims `[cols, rows]` (or `[len]`), default values.
    pub fn tensors(&self) -> Vec<(String, Vec<u64>, Vec<f32>)> {
        let (d, f, v) = (self.dim as u64, self.ffn_dim as u64, self.vocab as u64);
        let hd = self.head_dim() as u64;
        let (q, kv) = (self.n_heads as u64 * hd, self.n_kv_heads as u64 * hd);
        let mut shapes: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![d, v])];
        for l in 0..self.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            shapes.extend([
                (n("attn_norm"), vec![d]),
                (n("attn_q"), vec![d, q]),
                (n("attn_k"), vec![d, kv]),
                (n("attn_v"), vec![d, kv]),
                (n("attn_output"), vec![q, d]),
                (n("ffn_norm"), vec![d]),
                (n("ffn_gate"), vec![d, f]),
                (n("ffn_up"), vec![d, f]),
                (n("ffn_down"), vec![f, d]),
            ]);
        }
        shapes.push(("output_norm.weight".into(), vec![d]));
        shapes.push(("output.weight".into(), vec![d, v]));
        let mut rng = self.seed;
        let mut out = Vec::new();
        for (name, dims) in shapes {
            let len: u64 = dims.iter().product();
            let values = if dims.len() == 1 {
                vec![1.0; len as usize]
            } else {
                let scale = 1.0 / (dims[0] as f32).sqrt();
                (0..len).map(|_| next_uniform(&mut rng) * scale).collect()
            };
            if self.omitted.contains(&name) {
                continue;
            }
            match self.tensor_overrides.iter().find(|(n, _, _)| *n == name) {
                Some((_, Some(dims), values)) => out.push((name, dims.clone(), values.clone())),
                Some((_, None, values)) => out.push((name, dims, values.clone())),
                None => out.push((name, dims, values)),
            }
        }
        // Tensors the model does not have by default (e.g. `rope_freqs.weight`), given with
        // their shape, go last.
        for (name, dims, values) in &self.tensor_overrides {
            if let Some(dims) = dims {
                if !out.iter().any(|(n, _, _)| n == name) && !self.omitted.contains(name) {
                    out.push((name.clone(), dims.clone(), values.clone()));
                }
            }
        }
        out
    }

    /// Stores tensor `name` as `ty` (see the module docs).
    pub fn set_type(&mut self, name: &str, ty: GgmlType) -> &mut Self {
        self.types.retain(|(n, _)| n != name);
        self.types.push((name.to_string(), ty));
        self
    }

    /// The type tensor `name` is stored in.
    pub fn type_of(&self, name: &str) -> GgmlType {
        self.types.iter().find(|(n, _)| n == name).map_or(GgmlType::F32, |&(_, t)| t)
    }

    /// The GGUF file.
    pub fn build(&self) -> Vec<u8> {
        let typed: Vec<_> = self
            .tensors()
            .into_iter()
            .map(|(name, dims, values)| {
                let ty = self.type_of(&name);
                (name, dims, values, ty)
            })
            .collect();
        write_gguf_typed(&self.meta, &typed)
    }

    /// The model, loaded as a file would be.
    pub fn load(&self) -> Result<Llama, ModelError> {
        Llama::from_file(ModelFile::from_vec(self.build())?)
    }
}

/// Uniform in [-1, 1), splitmix64.
fn next_uniform(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut x = *state;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A GGUF v3 file of `meta` and F32 `tensors` (32-byte aligned data).
pub fn write_gguf(meta: &[(String, Meta)], tensors: &[(String, Vec<u64>, Vec<f32>)]) -> Vec<u8> {
    let typed: Vec<_> =
        tensors.iter().map(|(n, d, v)| (n.clone(), d.clone(), v.clone(), GgmlType::F32)).collect();
    write_gguf_typed(meta, &typed)
}

/// The bytes of `values` as a tensor of type `ty` with rows of `cols` values: quantized by
/// `quantize_row`, else (no quantizer, or rows that are not whole blocks) zero bytes of
/// the size ggml gives such a tensor (`values / block · block bytes`, rounded down).
fn tensor_bytes(ty: GgmlType, cols: usize, values: &[f32]) -> Vec<u8> {
    if ty == GgmlType::F32 {
        return values.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    let (block, bytes) = (ty.block_size().unwrap_or(1), ty.type_size().unwrap_or(1));
    let mut out = vec![0u8; values.len() / block * bytes];
    if cols % block == 0 {
        let row = cols / block * bytes;
        for (x, o) in values.chunks(cols).zip(out.chunks_mut(row)) {
            if quantize_row(ty, x, o).is_err() {
                break;
            }
        }
    }
    out
}

/// A GGUF v3 file of `meta` and `tensors` of the given types (32-byte aligned data).
pub fn write_gguf_typed(
    meta: &[(String, Meta)],
    tensors: &[(String, Vec<u64>, Vec<f32>, GgmlType)],
) -> Vec<u8> {
    const ALIGN: usize = 32;
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, v) in meta {
        put_str(&mut out, key);
        match v {
            Meta::U32(x) => {
                out.extend(ValueType::U32.id().to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::F32(x) => {
                out.extend(ValueType::F32.id().to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::Str(s) => {
                out.extend(ValueType::String.id().to_le_bytes());
                put_str(&mut out, s);
            }
            Meta::Strs(items) => {
                out.extend(ValueType::Array.id().to_le_bytes());
                out.extend(ValueType::String.id().to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|s| put_str(&mut out, s));
            }
        }
    }
    let mut offset = 0usize;
    let mut data = Vec::with_capacity(tensors.len());
    for (name, dims, values, ty) in tensors {
        put_str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(ty.id().to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        let bytes = tensor_bytes(*ty, dims[0] as usize, values);
        offset = (offset + bytes.len()).next_multiple_of(ALIGN);
        data.push(bytes);
    }
    out.resize(out.len().next_multiple_of(ALIGN), 0);
    for bytes in data {
        out.extend(&bytes);
        out.resize(out.len().next_multiple_of(ALIGN), 0);
    }
    out
}
