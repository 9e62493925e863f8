//! The hyper-parameters of a Llama-family model, read from GGUF metadata.
//!
//! One config describes every family pagoda runs: the families differ by the fields of
//! [`Family`]-derived blocks (norm placement, activation, QK-norm, RoPE pairing, windows per
//! layer, embedding scale), never by a separate forward pass.
//!
//! | field                | `llama`                   | `gemma3`                                   |
//! |----------------------|---------------------------|--------------------------------------------|
//! | `head_dim`           | `dim / n_heads`           | `attention.key_length` (256 for 270M)      |
//! | `rope_style`         | adjacent pairs            | NeoX halves                                |
//! | `ffn_act`            | SiLU (SwiGLU)             | GELU-tanh (GeGLU)                          |
//! | `qk_norm`            | no                        | RMSNorm per head of Q and K                |
//! | `post_norms`         | no                        | RMSNorm after attention and after the FFN  |
//! | `embed_scale`        | none                      | `√dim`                                     |
//! | `q_scale`            | none (scores × 1/√hd)     | queries × `1/√key_length`, scores × 1      |
//! | `layer_windows`      | all `None`                | 5 of every 6 layers: `sliding_window`      |
//! | `rope_base_local`    | —                         | 10 000 on windowed layers                  |

use pagoda_core::gguf::{Gguf, Value};

use super::ModelError;

/// The architectures pagoda runs (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Family {
    /// `llama`: Llama 2/3, SmolLM, Mistral-style dense models.
    Llama,
    /// `gemma3`: Gemma 3 text models.
    Gemma3,
}

impl Family {
    /// The GGUF name (`general.architecture`), also the metadata key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Gemma3 => "gemma3",
        }
    }

    fn from_name(arch: &str) -> Option<Self> {
        match arch {
            "llama" => Some(Family::Llama),
            "gemma3" => Some(Family::Gemma3),
            _ => None,
        }
    }
}

/// Which dims of a head rotate together under RoPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// `(x[2i], x[2i+1])`: llama.cpp's `LLAMA_ROPE_TYPE_NORM` (Llama GGUFs).
    Adjacent,
    /// `(x[i], x[i + n_rot/2])`: `LLAMA_ROPE_TYPE_NEOX` (Gemma, GPT-NeoX).
    Neox,
}

/// The gate activation of the gated feed-forward network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// `silu(gate) ⊙ up` (SwiGLU).
    Silu,
    /// `gelu_tanh(gate) ⊙ up` (GeGLU), with ggml's f16 lookup table.
    GeluTanh,
}

/// Largest `llama.rope.dimension_count` pagoda rotates (RoPE tables are sized for it).
pub const MAX_ROPE_DIMS: usize = 1024;

/// Shape and constants of a Llama-family model (`general.architecture` = `llama` or
/// `gemma3`).
///
/// Every field comes from the file's `{arch}.*` metadata; optional keys fall back to
/// llama.cpp's defaults. [`LlamaConfig::llama`] gives the Llama blocks for a hand-built shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// The architecture.
    pub family: Family,
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
    /// How RoPE pairs dims.
    pub rope_style: RopeStyle,
    /// The FFN gate activation.
    pub ffn_act: FfnActivation,
    /// RMSNorm of each query and key head (`attn_q_norm`, `attn_k_norm`, `head_dim` gains).
    pub qk_norm: bool,
    /// RMSNorm of the attention and FFN outputs before each residual add
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// Token embeddings are multiplied by this (Gemma: `√dim`).
    pub embed_scale: Option<f32>,
    /// Queries are multiplied by this after RoPE and attention scores are not scaled
    /// (Gemma's `f_attention_scale`); `None`: scores are scaled by `1/√head_dim`.
    pub q_scale: Option<f32>,
    /// Per layer: `Some(W)` if the layer attends only to the last `W` positions (a query at
    /// `p` sees `p-W+1 ..= p`), `None` for full causal attention. `n_layers` entries.
    pub layer_windows: Vec<Option<usize>>,
    /// RoPE base of windowed layers (Gemma 3: 10 000; `rope_base` elsewhere).
    pub rope_base_local: f32,
}

impl LlamaConfig {
    /// Reads the config; errors name the missing or inconsistent key.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, ModelError> {
        let arch = g.get_str("general.architecture")?;
        let Some(family) = Family::from_name(arch) else {
            return Err(ModelError::Unsupported(format!(
                "architecture '{arch}' (pagoda runs 'llama' and 'gemma3' models)"
            )));
        };
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| -> Result<usize, ModelError> { Ok(g.get_u32(&key(k))? as usize) };
        let opt_u = |k: &str| -> Result<Option<usize>, ModelError> {
            let k = key(k);
            match g.get(&k) {
                None => Ok(None),
                Some(_) => Ok(Some(g.get_u32(&k)? as usize)),
            }
        };
        let opt_f = |k: &str, default: f32| -> Result<f32, ModelError> {
            let k = key(k);
            match g.get(&k) {
                None => Ok(default),
                Some(_) => Ok(g.get_f32(&k)?),
            }
        };
        let n_layers = u("block_count")?;
        let dim = u("embedding_length")?;
        let ffn_dim = u("feed_forward_length")?;
        let n_heads = u("attention.head_count")?;
        let n_kv_heads = opt_u("attention.head_count_kv")?.unwrap_or(n_heads);
        for (k, v) in [
            ("block_count", n_layers),
            ("embedding_length", dim),
            ("feed_forward_length", ffn_dim),
            ("attention.head_count", n_heads),
            ("attention.head_count_kv", n_kv_heads),
        ] {
            if v == 0 {
                return invalid(format!("{} is 0", key(k)));
            }
        }
        if n_heads % n_kv_heads != 0 {
            return invalid(format!(
                "{} {n_heads} is not a multiple of {} {n_kv_heads}",
                key("attention.head_count"),
                key("attention.head_count_kv")
            ));
        }
        // Heads may be wider than dim / n_heads (Gemma 3 270M: 640 wide, 4 heads of 256).
        let key_length = opt_u("attention.key_length")?;
        let value_length = opt_u("attention.value_length")?;
        let head_dim = match key_length {
            Some(k) => k,
            None if dim % n_heads == 0 => dim / n_heads,
            None => {
                return invalid(format!(
                    "{} {dim} is not a multiple of {} {n_heads}",
                    key("embedding_length"),
                    key("attention.head_count")
                ))
            }
        };
        if head_dim == 0 {
            return invalid(format!("{} is 0", key("attention.key_length")));
        }
        if let Some(v) = value_length {
            if v != head_dim {
                return Err(ModelError::Unsupported(format!(
                    "{} {v} differs from the key length {head_dim} (pagoda needs equal K and V \
                     head widths)",
                    key("attention.value_length")
                )));
            }
        }
        let n_rot = opt_u("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return invalid(format!(
                "{} {n_rot} must be even and at most head_dim {head_dim}",
                key("rope.dimension_count")
            ));
        }
        if n_rot > MAX_ROPE_DIMS {
            return Err(ModelError::Unsupported(format!(
                "{} {n_rot}: pagoda rotates at most {MAX_ROPE_DIMS} dims per head",
                key("rope.dimension_count")
            )));
        }

        // Every count is checked against the tensors before anything is sized by it: the
        // file holds the weights, so a count they disagree with is a corrupt header.
        let embd = g.tensor("token_embd.weight")?;
        let embd_cols = embd.row_len() as usize;
        if embd.dims().len() != 2 || embd_cols != dim {
            return invalid(format!(
                "{} {dim} does not match token_embd.weight of shape {:?} \
                 (expected [{dim}, vocab])",
                key("embedding_length"),
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
        // Nine tensors per block (at least): a block count the tensor table cannot hold is
        // refused before anything is allocated per block; then the last block must be there.
        let max_layers = g.tensor_count() / 9;
        if n_layers > max_layers {
            return invalid(format!(
                "{} {n_layers} exceeds what the file's {} tensors can hold \
                 ({max_layers} blocks of 9 tensors)",
                key("block_count"),
                g.tensor_count()
            ));
        }
        let last = format!("blk.{}.attn_norm.weight", n_layers - 1);
        if g.tensor(&last).is_err() {
            return invalid(format!(
                "{} {n_layers}: the file has no tensor '{last}'",
                key("block_count")
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
        let expect = |name: &str, k: &str, value: usize, want: usize| -> Result<(), ModelError> {
            match rows_of(name)? {
                Some(rows) if rows != want as u64 => invalid(format!(
                    "{} {value} does not match tensor '{name}' ({rows} rows, expected {want})",
                    key(k)
                )),
                _ => Ok(()),
            }
        };
        let ffn_name = "blk.0.ffn_gate.weight";
        let heads_dim = n_heads.checked_mul(head_dim).ok_or_else(|| {
            ModelError::Invalid(format!("head_count {n_heads} × head_dim {head_dim} overflows"))
        })?;
        let kv_heads_dim = n_kv_heads.checked_mul(head_dim).ok_or_else(|| {
            ModelError::Invalid(format!(
                "head_count_kv {n_kv_heads} × head_dim {head_dim} overflows"
            ))
        })?;
        expect(ffn_name, "feed_forward_length", ffn_dim, ffn_dim)?;
        expect("blk.0.attn_q.weight", "attention.head_count", n_heads, heads_dim)?;
        expect("blk.0.attn_k.weight", "attention.head_count_kv", n_kv_heads, kv_heads_dim)?;

        let context_length = opt_u("context_length")?.unwrap_or(2048);
        if context_length == 0 {
            return invalid(format!("{} is 0", key("context_length")));
        }
        let positive = |k: &str, default: f32| -> Result<f32, ModelError> {
            let v = opt_f(k, default)?;
            if !(v.is_finite() && v > 0.0) {
                return invalid(format!("{} must be finite and > 0, got {v}", key(k)));
            }
            Ok(v)
        };
        let rope_base = positive("rope.freq_base", 10_000.0)?;
        let rms_eps = positive("attention.layer_norm_rms_epsilon", 1e-5)?;
        let mut c = LlamaConfig::llama(n_layers, dim, ffn_dim, n_heads, n_kv_heads, head_dim);
        c.family = family;
        c.n_rot = n_rot;
        c.rope_base = rope_base;
        c.rms_eps = rms_eps;
        c.vocab_size = vocab_size;
        c.context_length = context_length;
        c.rope_base_local = rope_base;
        if family == Family::Gemma3 {
            c.rope_style = RopeStyle::Neox;
            c.ffn_act = FfnActivation::GeluTanh;
            c.qk_norm = true;
            c.post_norms = true;
            c.embed_scale = Some((dim as f32).sqrt());
            // llama.cpp (gemma3.cpp): 1/√(dim/heads) for the 27B model (62 layers), else
            // 1/√key_length.
            let scale_dim = if n_layers == 62 { dim / n_heads } else { head_dim };
            c.q_scale = Some(1.0 / (scale_dim as f32).sqrt());
            c.rope_base_local = positive("rope.freq_base_swa", 10_000.0)?;
            if let Some(w) = opt_u("attention.sliding_window")?.filter(|&w| w > 0) {
                // llama.cpp's gemma3 pattern: layer l is windowed unless l % P == P - 1
                // (P = sliding_window_pattern, default 6): 5 local layers, then a global one.
                let period = opt_u("attention.sliding_window_pattern")?.unwrap_or(6);
                for (l, win) in c.layer_windows.iter_mut().enumerate() {
                    let local = period == 0 || l % period < period - 1;
                    *win = local.then_some(w);
                }
            }
        }
        Ok(c)
    }

    /// A Llama-family shape with the Llama blocks (SwiGLU, adjacent-pair RoPE, pre-norms
    /// only, no windows) and llama.cpp's defaults for the constants: RoPE base 10 000,
    /// RMSNorm epsilon 1e-5, context 2048, vocabulary 0 (set it). For models built by hand.
    pub fn llama(
        n_layers: usize,
        dim: usize,
        ffn_dim: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        LlamaConfig {
            family: Family::Llama,
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            n_rot: head_dim,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
            vocab_size: 0,
            context_length: 2048,
            rope_style: RopeStyle::Adjacent,
            ffn_act: FfnActivation::Silu,
            qk_norm: false,
            post_norms: false,
            embed_scale: None,
            q_scale: None,
            layer_windows: vec![None; n_layers],
            rope_base_local: 10_000.0,
        }
    }

    /// The window of layer `l` (`None`: full attention).
    pub fn window(&self, l: usize) -> Option<usize> {
        self.layer_windows.get(l).copied().flatten()
    }

    /// The RoPE base of layer `l`.
    pub fn layer_rope_base(&self, l: usize) -> f32 {
        if self.window(l).is_some() {
            self.rope_base_local
        } else {
            self.rope_base
        }
    }

    /// Whether any layer is windowed.
    pub fn has_windows(&self) -> bool {
        self.layer_windows.iter().any(Option::is_some)
    }

    /// f32s of one token's keys (or values): `n_kv_heads × head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

fn invalid<T>(m: String) -> Result<T, ModelError> {
    Err(ModelError::Invalid(m))
}
