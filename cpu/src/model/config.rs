//! The Llama hyper-parameters, read from GGUF metadata.

use pagoda_core::gguf::{Gguf, Value};

use super::ModelError;

/// Largest `llama.rope.dimension_count` pagoda rotates (RoPE tables are sized for it).
pub const MAX_ROPE_DIMS: usize = 1024;

/// Shape and constants of a Llama-family model (`general.architecture = llama`).
///
/// Every field comes from the file's `llama.*` metadata; optional keys fall back to
/// llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks (`llama.block_count`).
    pub n_layers: usize,
    /// Residual stream width (`llama.embedding_length`).
    pub dim: usize,
    /// SwiGLU hidden width (`llama.feed_forward_length`).
    pub ffn_dim: usize,
    /// Query heads (`llama.attention.head_count`).
    pub n_heads: usize,
    /// Key/value heads (`llama.attention.head_count_kv`, default `n_heads`).
    pub n_kv_heads: usize,
    /// Elements per head: `dim / n_heads`.
    pub head_dim: usize,
    /// Rotated dims per head (`llama.rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// RoPE frequency base (`llama.rope.freq_base`, default 10 000).
    pub rope_base: f32,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`, default 1e-5).
    pub rms_eps: f32,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Context length the model was trained for (`llama.context_length`).
    pub context_length: usize,
}

impl LlamaConfig {
    /// Reads the config; errors name the missing or inconsistent key.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, ModelError> {
        let arch = g.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::Unsupported(format!(
                "architecture '{arch}' (pagoda runs 'llama' models)"
            )));
        }
        let u = |k: &str| -> Result<usize, ModelError> { Ok(g.get_u32(k)? as usize) };
        let opt_u = |k: &str| -> Result<Option<usize>, ModelError> {
            match g.get(k) {
                None => Ok(None),
                Some(_) => Ok(Some(g.get_u32(k)? as usize)),
            }
        };
        let opt_f = |k: &str, default: f32| -> Result<f32, ModelError> {
            match g.get(k) {
                None => Ok(default),
                Some(_) => Ok(g.get_f32(k)?),
            }
        };
        let n_layers = u("llama.block_count")?;
        let dim = u("llama.embedding_length")?;
        let ffn_dim = u("llama.feed_forward_length")?;
        let n_heads = u("llama.attention.head_count")?;
        let n_kv_heads = opt_u("llama.attention.head_count_kv")?.unwrap_or(n_heads);
        for (key, v) in [
            ("llama.block_count", n_layers),
            ("llama.embedding_length", dim),
            ("llama.feed_forward_length", ffn_dim),
            ("llama.attention.head_count", n_heads),
            ("llama.attention.head_count_kv", n_kv_heads),
        ] {
            if v == 0 {
                return invalid(format!("{key} is 0"));
            }
        }
        if dim % n_heads != 0 {
            return invalid(format!(
                "llama.embedding_length {dim} is not a multiple of llama.attention.head_count {n_heads}"
            ));
        }
        if n_heads % n_kv_heads != 0 {
            return invalid(format!(
                "llama.attention.head_count {n_heads} is not a multiple of \
                 llama.attention.head_count_kv {n_kv_heads}"
            ));
        }
        let head_dim = dim / n_heads;
        let n_rot = opt_u("llama.rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return invalid(format!(
                "llama.rope.dimension_count {n_rot} must be even and at most head_dim {head_dim}"
            ));
        }
        if n_rot > MAX_ROPE_DIMS {
            return Err(ModelError::Unsupported(format!(
                "llama.rope.dimension_count {n_rot}: pagoda rotates at most {MAX_ROPE_DIMS} dims per head"
            )));
        }

        // Every count is checked against the tensors before anything is sized by it: the
        // file holds the weights, so a count they disagree with is a corrupt header.
        let embd = g.tensor("token_embd.weight")?;
        let embd_cols = embd.row_len() as usize;
        if embd.dims().len() != 2 || embd_cols != dim {
            return invalid(format!(
                "llama.embedding_length {dim} does not match token_embd.weight of shape {:?} \
                 (expected [{dim}, vocab])",
                embd.dims()
            ));
        }
        let vocab_size = usize::try_from(embd.n_rows()).unwrap_or(usize::MAX);
        if vocab_size == 0 {
            return invalid("token_embd.weight has no rows (an empty vocabulary)".into());
        }
        if let Some(Value::Array(a)) = g.get("tokenizer.ggml.tokens") {
            if a.len() > vocab_size {
                return invalid(format!(
                    "token_embd.weight has {vocab_size} rows but tokenizer.ggml.tokens \
                     lists {} tokens: every token needs an embedding",
                    a.len()
                ));
            }
        }
        // Nine tensors per block: a block count the tensor table cannot hold is refused
        // before anything is allocated per block; then the last block must be there.
        let max_layers = g.tensor_count() / 9;
        if n_layers > max_layers {
            return invalid(format!(
                "llama.block_count {n_layers} exceeds what the file's {} tensors can hold \
                 ({max_layers} blocks of 9 tensors)",
                g.tensor_count()
            ));
        }
        let last = format!("blk.{}.attn_norm.weight", n_layers - 1);
        if g.tensor(&last).is_err() {
            return invalid(format!(
                "llama.block_count {n_layers}: the file has no tensor '{last}'"
            ));
        }
        // Head counts and the FFN width against the first block's matrices.
        let rows_of = |name: &str| -> Result<Option<u64>, ModelError> {
            match g.tensor(name) {
                Ok(t) if t.dims().len() == 2 => Ok(Some(t.n_rows())),
                Ok(t) => {
                    invalid(format!("tensor '{name}' has shape {:?}, expected 2 dims", t.dims()))
                }
                Err(_) => Ok(None), // named by the weight loader
            }
        };
        let expect = |name: &str, key: &str, value: usize, want: usize| -> Result<(), ModelError> {
            match rows_of(name)? {
                Some(rows) if rows != want as u64 => invalid(format!(
                    "{key} {value} does not match tensor '{name}' ({rows} rows, expected {want})"
                )),
                _ => Ok(()),
            }
        };
        let ffn_name = "blk.0.ffn_gate.weight";
        expect(ffn_name, "llama.feed_forward_length", ffn_dim, ffn_dim)?;
        expect("blk.0.attn_q.weight", "llama.attention.head_count", n_heads, n_heads * head_dim)?;
        expect(
            "blk.0.attn_k.weight",
            "llama.attention.head_count_kv",
            n_kv_heads,
            n_kv_heads * head_dim,
        )?;

        let context_length = opt_u("llama.context_length")?.unwrap_or(2048);
        if context_length == 0 {
            return invalid("llama.context_length is 0".into());
        }
        let rope_base = opt_f("llama.rope.freq_base", 10_000.0)?;
        if !(rope_base.is_finite() && rope_base > 0.0) {
            return invalid(format!(
                "llama.rope.freq_base must be finite and > 0, got {rope_base}"
            ));
        }
        let rms_eps = opt_f("llama.attention.layer_norm_rms_epsilon", 1e-5)?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return invalid(format!(
                "llama.attention.layer_norm_rms_epsilon must be finite and > 0, got {rms_eps}"
            ));
        }
        Ok(LlamaConfig {
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            n_rot,
            rope_base,
            rms_eps,
            vocab_size,
            context_length,
        })
    }

    /// f32s of one token's keys (or values): `n_kv_heads × head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

fn invalid<T>(m: String) -> Result<T, ModelError> {
    Err(ModelError::Invalid(m))
}
