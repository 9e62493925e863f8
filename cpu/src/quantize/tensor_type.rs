//! llama.cpp's choice of a type for each tensor (`llama_tensor_get_type` in
//! src/llama-quant.cpp), for the presets pagoda writes, and the tensor order it works in.
//!
//! Per tensor, in llama.cpp's order ([`llama_order`]):
//!
//! 1. Only 2-D (and 3-D) tensors whose name ends in `weight` are quantized, minus norms,
//!    MoE gates and a list of small special tensors ([`allows_quantization`]); the rest
//!    keep their type (F32 norms stay F32).
//! 2. F32/F16/BF16 presets give every such tensor that type. Quantized presets start
//!    from the preset's default type and apply the *mix*: the output tensor (or, with tied
//!    embeddings, `token_embd`) gets Q6_K (Q8_0 when its rows are not whole 256-value
//!    blocks); `attn_v` and `ffn_down` get more bits in some layers (`use_more_bits`:
//!    the first and last eighth and every third layer in between) for the _M/_L presets;
//!    `attn_output` is bumped for Q2_K and Q3_K_M/L.
//! 3. Fallback: a type whose block does not divide the row length is replaced (Q4_K →
//!    Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, IQ4_XS → IQ4_NL), and by F16 if
//!    even that does not fit. SmolLM2's 576-wide rows are 2.25 blocks of 256.
//!
//! The counters that drive the layer bumps (`i_attention_wv`, `i_ffn_down`) count tensors
//! as they are visited, so the visiting order is part of the format.

use std::cmp::Ordering;
use std::fmt;

use pagoda_core::gguf::{Gguf, Value};
use pagoda_core::quant::GgmlType;

use super::Preset;

/// What the type choice needs from one tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorDesc<'a> {
    /// The tensor's name.
    pub name: &'a str,
    /// Its shape in ggml order (`ne[0]` is the row length), padded with 1s.
    pub ne: [u64; 4],
    /// Its type in the input.
    pub ty: GgmlType,
}

impl TensorDesc<'_> {
    /// ggml's `ggml_n_dims`: the number of dimensions up to the last one above 1 (at
    /// least 1). A `[576, 1]` tensor is 1-D.
    pub fn n_dims(&self) -> usize {
        (1..4).rev().find(|&i| self.ne[i] > 1).map_or(1, |i| i + 1)
    }
}

/// The model hyper-parameters llama.cpp's choice looks at, from the GGUF metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelParams {
    /// `general.architecture`.
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: u32,
    /// `{arch}.expert_count` (0 if absent).
    pub n_expert: u32,
    /// `{arch}.attention.head_count` (layer 0's when per layer; 0 if absent).
    pub n_head: u32,
    /// `{arch}.attention.head_count_kv` (layer 0's; `n_head` if absent).
    pub n_head_kv: u32,
}

/// Metadata the type choice needs is missing or malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamsError {
    /// A required key is absent.
    Missing(String),
    /// A key has a type or value llama.cpp would not accept.
    Invalid {
        /// The key.
        key: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsError::Missing(k) => write!(f, "metadata key {k} is missing"),
            ParamsError::Invalid { key, expected } => {
                write!(f, "metadata key {key} is not {expected}")
            }
        }
    }
}

impl std::error::Error for ParamsError {}

impl ModelParams {
    /// Reads the parameters as llama.cpp's loader does (`load_hparams`).
    pub fn from_gguf(g: &Gguf<'_>) -> Result<ModelParams, ParamsError> {
        let arch = match g.get("general.architecture") {
            Some(Value::Str(s)) => s.to_string(),
            Some(_) => {
                return Err(ParamsError::Invalid {
                    key: "general.architecture".into(),
                    expected: "a string",
                })
            }
            None => return Err(ParamsError::Missing("general.architecture".into())),
        };
        let key = |k: &str| format!("{arch}.{k}");
        let n_layer = scalar_or_first(g, &key("block_count"))?
            .ok_or_else(|| ParamsError::Missing(key("block_count")))?;
        if n_layer == 0 || n_layer > 512 {
            return Err(ParamsError::Invalid {
                key: key("block_count"),
                expected: "between 1 and 512 (LLAMA_MAX_LAYERS)",
            });
        }
        let n_expert = scalar_or_first(g, &key("expert_count"))?.unwrap_or(0);
        let n_head = scalar_or_first(g, &key("attention.head_count"))?.unwrap_or(0);
        let n_head_kv = scalar_or_first(g, &key("attention.head_count_kv"))?.unwrap_or(n_head);
        Ok(ModelParams { arch, n_layer, n_expert, n_head, n_head_kv })
    }

    /// `hparams.n_gqa()`: query heads per KV head (0 without KV heads).
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// Whether llama.cpp classifies the model as `LLM_TYPE_70B` (which bumps `attn_v`).
    pub fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_expert != 8 && self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// A u32 key that may also be a per-layer array (then its first element), as
/// `get_key_or_arr` reads it.
fn scalar_or_first(g: &Gguf<'_>, key: &str) -> Result<Option<u32>, ParamsError> {
    let invalid = || ParamsError::Invalid { key: key.to_string(), expected: "a u32" };
    let v = match g.get(key) {
        None => return Ok(None),
        Some(Value::Array(a)) => match a.iter().next() {
            Some(v) => v,
            None => return Err(invalid()),
        },
        Some(v) => v,
    };
    v.as_integer().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(invalid)
}

/// The layer of a `blk.N.` tensor name, read as C's `sscanf(name, "blk.%d.")` reads it
/// (the `%d` skips leading whitespace and takes a sign).
pub fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (neg, rest) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let v = rest[..digits]
        .bytes()
        .fold(0i64, |v, b| v.saturating_mul(10).saturating_add(i64::from(b - b'0')));
    Some(if neg { -v } else { v })
}

/// llama.cpp's tensor order (`weight_name_comparer`): tensors outside `blk.N.` first,
/// then by layer number, each group by name (bytewise).
pub fn llama_order(a: &str, b: &str) -> Ordering {
    let la = layer_of(a).unwrap_or(-1);
    let lb = layer_of(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.cmp(b))
}

/// Whether llama.cpp quantizes this tensor at all (`tensor_allows_quantization`, with
/// `--leave-output-tensor` off); the rest are copied as they are.
pub fn allows_quantization(t: &TensorDesc<'_>) -> bool {
    if t.n_dims() < 2 {
        return false;
    }
    let name = t.name;
    // llama.cpp tests `name.rfind("weight") == name.size() - 6`; for a 5-byte name both
    // sides are SIZE_MAX, so 5-byte names count as ending in "weight".
    let ends_in_weight = name.ends_with("weight") || name.len() == 5;
    const NEVER: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    // Positional embeddings and token types (BERT-like architectures; Llama has neither).
    const NEVER_EXACT: &[&str] = &["position_embd.weight", "token_types.weight"];
    ends_in_weight && !NEVER.iter().any(|s| name.contains(s)) && !NEVER_EXACT.contains(&name)
}

/// llama.cpp's broad tensor categories (`tensor_get_category`), tested in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttentionQ,
    AttentionV,
    AttentionK,
    AttentionQkv,
    AttentionKvB,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    fn of(name: &str) -> Category {
        use Category::*;
        if name == "output.weight" {
            Output
        } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            TokenEmbd
        } else if name.contains("attn_qkv.weight") {
            AttentionQkv
        } else if name.contains("attn_kv_b.weight") {
            AttentionKvB
        } else if name.contains("attn_v.weight") {
            AttentionV
        } else if name.contains("attn_k.weight") {
            AttentionK
        } else if name.contains("attn_q.weight") {
            AttentionQ
        } else if name.contains("attn_output.weight") {
            AttentionOutput
        } else if name.contains("ffn_up") {
            FfnUp
        } else if name.contains("ffn_gate") {
            FfnGate
        } else if name.contains("ffn_down") {
            FfnDown
        } else {
            Other
        }
    }

    /// `category_is_attn_v`: the V-like projections, more sensitive to quantization.
    fn is_attn_v(self) -> bool {
        matches!(self, Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB)
    }
}

/// Why no type could be chosen for a tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypeError {
    /// In a mixture-of-experts model, a tensor's layer could not be read from its name,
    /// or is outside the model's layers.
    BadLayer {
        /// The tensor.
        tensor: String,
        /// The model's layer count.
        n_layer: u32,
    },
    /// The row length fits neither the type nor any fallback llama.cpp defines for it.
    NoFallback {
        /// The tensor.
        tensor: String,
        /// The type it could not be given.
        ty: GgmlType,
    },
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeError::BadLayer { tensor, n_layer } => write!(
                f,
                "tensor {}: cannot tell its layer (expected blk.N. with N below {n_layer})",
                tensor.escape_debug()
            ),
            TypeError::NoFallback { tensor, ty } => {
                write!(f, "tensor {}: no fallback is defined for type {ty}", tensor.escape_debug())
            }
        }
    }
}

impl std::error::Error for TypeError {}

/// The types chosen for a list of tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeChoice {
    /// The output type of each tensor, in the order given.
    pub types: Vec<GgmlType>,
    /// How many tensors needed a fallback type (llama.cpp warns about them).
    pub n_fallback: usize,
}

/// Chooses every tensor's output type for `preset` as llama-quantize does (no importance
/// matrix, no overrides). `tensors` must be in [`llama_order`].
pub fn choose_types(
    params: &ModelParams,
    preset: Preset,
    tensors: &[TensorDesc<'_>],
) -> Result<TypeChoice, TypeError> {
    let mut state = State::new(params, preset, tensors);
    let types = tensors.iter().map(|t| state.tensor_type(t)).collect::<Result<Vec<_>, _>>()?;
    Ok(TypeChoice { types, n_fallback: state.n_fallback })
}

/// `quantize_state_impl`: counters advanced as tensors are visited.
struct State<'p> {
    params: &'p ModelParams,
    preset: Preset,
    has_tied_embeddings: bool,
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
    n_fallback: usize,
}

/// `use_more_bits`: the first and last eighth of the layers, and every third in between.
fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

fn block(ty: GgmlType) -> u64 {
    ty.block_size().unwrap_or(1) as u64
}

/// `ggml_is_quantized`: every block format, not the plain float and integer types.
pub fn is_quantized(ty: GgmlType) -> bool {
    use GgmlType::*;
    !matches!(ty, F32 | F16 | BF16 | F64 | I8 | I16 | I32 | I64)
}

impl<'p> State<'p> {
    fn new(params: &'p ModelParams, preset: Preset, tensors: &[TensorDesc<'_>]) -> Self {
        let categories = tensors.iter().map(|t| Category::of(t.name));
        let n_attention_wv = categories.clone().filter(|c| c.is_attn_v()).count() as i64;
        let has_tied_embeddings = !categories.clone().any(|c| c == Category::Output);
        State {
            params,
            preset,
            has_tied_embeddings,
            n_attention_wv,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            n_fallback: 0,
        }
    }

    /// `llama_tensor_get_type`.
    fn tensor_type(&mut self, t: &TensorDesc<'_>) -> Result<GgmlType, TypeError> {
        if !allows_quantization(t) {
            return Ok(t.ty);
        }
        let default = self.preset.default_type();
        if !is_quantized(default) {
            return Ok(default);
        }
        let ty = self.mix_type(default, t)?;
        self.fallback(t, ty)
    }

    /// (`i_layer`, `n_layer`) of a per-layer tensor: its position among its kind, or, in
    /// mixture-of-experts models (whose expert tensors are not one per layer), the layer
    /// in its name (`layer_info`).
    fn layer_info(&self, counter: i64, t: &TensorDesc<'_>) -> Result<(i64, i64), TypeError> {
        let n_layer = i64::from(self.params.n_layer);
        if self.params.n_expert <= 1 {
            return Ok((counter, n_layer));
        }
        match layer_of(t.name) {
            Some(i) if (0..n_layer).contains(&i) => Ok((i, n_layer)),
            _ => Err(TypeError::BadLayer { tensor: t.name.into(), n_layer: self.params.n_layer }),
        }
    }

    /// `llama_tensor_get_type_impl`, for the presets pagoda writes (the branches for
    /// IQ1/IQ2/IQ3, Q2_K_S and MXFP4 presets, and those needing an importance matrix,
    /// never apply).
    fn mix_type(&mut self, mut ty: GgmlType, t: &TensorDesc<'_>) -> Result<GgmlType, TypeError> {
        use GgmlType as T;
        use Preset as P;
        let p = self.preset;
        let falcon = self.params.is_falcon();
        let n_expert = self.params.n_expert;
        let category = Category::of(t.name);
        if category == Category::Output
            || (self.has_tied_embeddings && category == Category::TokenEmbd)
        {
            if falcon || t.ne[0] % block(ty) != 0 {
                ty = T::Q8_0;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
        } else if category == Category::TokenEmbd {
            // Only the IQ1/IQ2/IQ3/TQ presets change untied embeddings.
        } else if category.is_attn_v() {
            let gqa4 = self.params.n_gqa() >= 4;
            let (i, n) = (self.i_attention_wv, self.n_attention_wv);
            match p {
                P::Q2_K => ty = if gqa4 { T::Q4_K } else { T::Q3_K },
                P::Q3_K_M => ty = if i < 2 { T::Q5_K } else { T::Q4_K },
                P::Q3_K_L => ty = T::Q5_K,
                P::IQ4_NL | P::IQ4_XS if gqa4 => ty = T::Q5_K,
                P::Q4_K_M | P::Q5_K_M if use_more_bits(i, n) => ty = T::Q6_K,
                P::Q4_K_S if i < 4 => ty = T::Q5_K,
                _ => {}
            }
            if self.params.is_70b() && matches!(ty, T::Q3_K | T::Q4_K) {
                // 8 query heads share each V head: more bits cost little.
                ty = T::Q5_K;
            }
            if n_expert == 8 {
                ty = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if category == Category::AttentionK {
            if n_expert == 8 {
                ty = T::Q8_0;
            }
        } else if category == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, t)?;
            match p {
                P::Q2_K => ty = T::Q3_K,
                P::Q3_K_M => {
                    ty = if i < n / 16 {
                        T::Q5_K
                    } else if !falcon || use_more_bits(i, n) {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                P::Q3_K_L => ty = if falcon { T::Q4_K } else { T::Q5_K },
                P::Q4_K_M => {
                    if falcon {
                        ty = if i < n / 16 {
                            T::Q6_K
                        } else if use_more_bits(i, n) {
                            T::Q5_K
                        } else {
                            T::Q4_K
                        };
                    } else if use_more_bits(i, n) {
                        ty = T::Q6_K;
                    }
                }
                P::IQ4_NL | P::IQ4_XS if i < n / 8 => ty = T::Q5_K,
                P::Q5_K_M if use_more_bits(i, n) => ty = T::Q6_K,
                P::Q4_K_S if !falcon && i < n / 8 => ty = T::Q5_K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if category == Category::AttentionOutput {
            if falcon {
                if p == P::Q3_K_L {
                    ty = T::Q4_K;
                }
            } else if n_expert == 8 {
                if matches!(
                    p,
                    P::Q2_K | P::Q3_K_S | P::Q3_K_M | P::IQ4_NL | P::Q4_K_S | P::Q4_K_M | P::IQ4_XS
                ) {
                    ty = T::Q5_K;
                }
            } else {
                match p {
                    P::Q2_K => ty = T::Q3_K,
                    P::Q3_K_M => ty = T::Q4_K,
                    P::Q3_K_L => ty = T::Q5_K,
                    _ => {}
                }
            }
        } else if category == Category::FfnGate {
            // Only IQ3_XS changes these; the layer is still checked.
            self.layer_info(self.i_ffn_gate, t)?;
            self.i_ffn_gate += 1;
        } else if category == Category::FfnUp {
            self.layer_info(self.i_ffn_up, t)?;
            self.i_ffn_up += 1;
        }
        Ok(ty)
    }

    /// `tensor_type_fallback`: a type whose block does not divide the row length.
    fn fallback(&mut self, t: &TensorDesc<'_>, ty: GgmlType) -> Result<GgmlType, TypeError> {
        use GgmlType as T;
        let ncols = t.ne[0];
        let qk = block(ty);
        if ncols % qk == 0 {
            return Ok(ty);
        }
        self.n_fallback += 1;
        let mut fb = match ty {
            T::IQ1_S
            | T::IQ1_M
            | T::IQ2_XXS
            | T::IQ2_XS
            | T::IQ2_S
            | T::IQ3_XXS
            | T::IQ3_S
            | T::IQ4_XS => T::IQ4_NL,
            T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
            T::Q4_K => T::Q5_0,
            T::Q5_K => T::Q5_1,
            T::Q6_K => T::Q8_0,
            // A 32-value type has nothing smaller to fall back to: F16 below.
            _ if qk <= 32 => ty,
            _ => return Err(TypeError::NoFallback { tensor: t.name.into(), ty }),
        };
        if ncols % block(fb) != 0 {
            fb = T::F16;
        }
        Ok(fb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm() -> ModelParams {
        ModelParams { arch: "llama".into(), n_layer: 30, n_expert: 0, n_head: 9, n_head_kv: 3 }
    }

    #[test]
    fn order_puts_non_layer_tensors_first_then_layers_numerically() {
        let mut names = vec![
            "blk.10.attn_k.weight",
            "token_embd.weight",
            "blk.2.ffn_up.weight",
            "blk.2.attn_k.weight",
            "output_norm.weight",
        ];
        names.sort_by(|a, b| llama_order(a, b));
        assert_eq!(
            names,
            [
                "output_norm.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_k.weight"
            ]
        );
        assert_eq!(layer_of("blk. -3.x"), Some(-3));
        assert_eq!(layer_of("blk.x"), None);
    }

    #[test]
    fn norms_and_1d_tensors_keep_their_type() {
        let norm =
            TensorDesc { name: "blk.0.attn_norm.weight", ne: [576, 1, 1, 1], ty: GgmlType::F32 };
        assert!(!allows_quantization(&norm));
        let gate = TensorDesc { name: "blk.0.ffn_gate_inp.weight", ne: [576, 8, 1, 1], ..norm };
        assert!(!allows_quantization(&gate));
        let q = TensorDesc { name: "blk.0.attn_q.weight", ne: [576, 576, 1, 1], ..norm };
        assert!(allows_quantization(&q));
        let bias = TensorDesc { name: "blk.0.attn_q.bias", ..q };
        assert!(!allows_quantization(&bias));
    }

    #[test]
    fn k_quants_fall_back_on_576_wide_rows() {
        let t = [
            TensorDesc { name: "token_embd.weight", ne: [576, 49152, 1, 1], ty: GgmlType::Q8_0 },
            TensorDesc { name: "blk.0.attn_q.weight", ne: [576, 576, 1, 1], ty: GgmlType::Q4_1 },
            TensorDesc { name: "blk.0.ffn_down.weight", ne: [1536, 576, 1, 1], ty: GgmlType::Q4_1 },
        ];
        let c = choose_types(&smollm(), Preset::Q4_K_M, &t).unwrap();
        // Tied embeddings: Q6_K, which does not fit 576 → Q8_0; attn_q Q4_K → Q5_0;
        // ffn_down in layer 0 of 30 gets more bits: Q6_K, and 1536 = 6 × 256 fits.
        assert_eq!(c.types, [GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q6_K]);
        assert_eq!(c.n_fallback, 1);
        let c = choose_types(&smollm(), Preset::IQ4_XS, &t).unwrap();
        assert_eq!(c.types, [GgmlType::Q8_0, GgmlType::IQ4_NL, GgmlType::Q5_K]);
        let c = choose_types(&smollm(), Preset::F16, &t).unwrap();
        assert_eq!(c.types, [GgmlType::F16; 3]);
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_30_layers() {
        let more: Vec<i64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }
}
