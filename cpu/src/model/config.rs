//! The Llama hyper-parameters, read from GGUF metadata.

use pagoda_core::gguf::Gguf;

use super::ModelError;

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
        let bad = |m: String| Err(ModelError::Invalid(m));
        if n_layers == 0 || dim == 0 || ffn_dim == 0 || n_heads == 0 || n_kv_heads == 0 {
            return bad("a dimension in the llama.* metadata is 0".into());
        }
        if dim % n_heads != 0 {
            return bad(format!(
                "embedding_length {dim} is not a multiple of head_count {n_heads}"
            ));
        }
        if n_heads % n_kv_heads != 0 {
            return bad(format!(
                "head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}"
            ));
        }
        let head_dim = dim / n_heads;
        let n_rot = opt_u("llama.rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return bad(format!(
                "rope.dimension_count {n_rot} must be even and at most head_dim {head_dim}"
            ));
        }
        let embd = g.tensor("token_embd.weight")?;
        let vocab_size = embd.n_rows() as usize;
        Ok(LlamaConfig {
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            n_rot,
            rope_base: opt_f("llama.rope.freq_base", 10_000.0)?,
            rms_eps: opt_f("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
            vocab_size,
            context_length: opt_u("llama.context_length")?.unwrap_or(2048),
        })
    }

    /// f32s of one token's keys (or values): `n_kv_heads × head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
