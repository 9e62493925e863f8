//! The basis quantized KV pages (q8_0, q4_0) store keys and values in, per layer:
//!
//! ```text
//! stored key    k' = H · ((k − c) ∘ s⁻¹)          query   q' = H · (q ∘ s)
//! stored value  v' = H · v                        output  o  = H · o'
//! ```
//!
//! with `H` the orthonormal Walsh–Hadamard rotation of each head (`pagoda_core::ops::Hadamard`,
//! `H = H⁻¹`), `c` a per-channel key offset and `s` per-channel key scales of each kv head.
//! None of it changes the attention in exact arithmetic, only what the 4- or 8-bit rounding
//! loses:
//!
//! - `q'·k' = q·(k − c) = q·k − q·c`: every score of one query moves by the same amount,
//!   which the softmax ignores. Keys carry a large offset shared by every token in the
//!   channels RoPE turns slowly; removed, it no longer sets each block's scale.
//! - `(q ∘ s)·(k ∘ s⁻¹) = q·k`: channels where keys vary much and queries little give up
//!   resolution to the ones the scores depend on. For a rounding error spread evenly by the
//!   rotation, `s_i = (σ_k,i / σ_q,i)^½` minimises `‖q ∘ s‖² ‖(k − c) ∘ s⁻¹‖²`; measured, the
//!   exponent ¼ does better. The scales are normalised to a geometric mean of 1 per head.
//! - Values keep their offset: subtracting their mean measured worse. Attention sinks (the
//!   first token) tend to carry values near 0 and much of every row's weight; an offset
//!   would give them the largest rounding error.
//!
//! RoPE turns the keys' offset with the position: `k = R(p)(μ + x)` for a mean `μ` before
//! RoPE. One `c` must serve every position (a shift that varied per key would change the
//! softmax), so `c` is `μ` turned by RoPE at each position below [`OFFSET_HORIZON`] and
//! averaged: the slow channels keep their offset, the fast ones average it away. A horizon
//! near the context in use does best; 1024 is the compromise (mean KL divergence from f32
//! pages, GPL-3, q4_0, fast numerics, at `-c 512` / `-c 4096`):
//!
//! | transform                          | `-c 512` | `-c 4096` |
//! |------------------------------------|---------:|----------:|
//! | rotation alone                     | 0.0728   | 0.0666    |
//! | offset, horizon 512                | 0.0320   | 0.0530    |
//! | offset, horizon 1024 (this)        | 0.0322   | 0.0489    |
//! | offset, horizon 2048               | 0.0356   | 0.0468    |
//! | offset, horizon 4096               | 0.0429   | 0.0400    |
//! | offset, horizon 8192               | 0.0625   | 0.0450    |
//!
//! (Scale exponent, with the calibration's own mean as the offset, at `-c 512`: 0.0447 at 0,
//! 0.0336 at ⅛, 0.0304 at ¼, 0.0321 at ⅜, 0.0327 at ½; with a value offset too 0.0352.)
//!
//! `μ`, `σ_k` and `σ_q` are calibrated once per model (and numerics, and SIMD level) by one
//! pass over a built-in text with f32 pages (`kv_calibration.txt`, ~400 tokens of prose,
//! dialogue, code and numbers written for pagoda), over the tokens after the first (the
//! first token's key is an outlier every sequence has): `σ_k` is the keys' standard
//! deviation after RoPE, `σ_q` the queries' root mean square (over the query heads that
//! share the kv head). docs/kv-memory.md has the perplexities.

use pagoda_core::ops::Hadamard;

use super::{KvType, Llama, LlamaConfig, ModelError, Session, SessionOptions};
use crate::tokenizer::Tokenizer;

/// The calibration text (module docs).
const CALIBRATION_TEXT: &str = include_str!("kv_calibration.txt");

/// Tokens of the calibration pass for a model without a tokenizer: ids spread over the
/// vocabulary by a fixed stride.
const FALLBACK_TOKENS: usize = 384;

/// Calibrates `model`'s transform: one pass over [`CALIBRATION_TEXT`] with f32 pages, in the
/// model's own numerics and kernels, gathering [`KvStats`].
pub(crate) fn calibrate(model: &Llama) -> Result<KvTransform, ModelError> {
    let c = model.config();
    let tokens = match Tokenizer::from_gguf(&model.gguf()) {
        Ok(tok) => tok.encode(CALIBRATION_TEXT, true, false),
        Err(_) => {
            let vocab = c.vocab_size.max(1) as u64;
            (0..FALLBACK_TOKENS as u64).map(|i| ((i * 7919 + 1) % vocab) as u32).collect()
        }
    };
    let opts = SessionOptions {
        n_ctx: tokens.len().max(1),
        kv_type: KvType::F32,
        ..SessionOptions::default()
    };
    let mut session = Session::new(model, opts)?;
    session.scratch_mut().record_kv_stats(Some(KvStats::new(c)));
    session.eval(&tokens)?;
    let stats = session.scratch_mut().record_kv_stats(None).ok_or_else(|| {
        ModelError::Invalid("the KV calibration pass recorded no statistics".into())
    })?;
    Ok(stats.transform(model))
}

/// Per-layer running sums of queries and keys: what the calibration pass gathers.
#[derive(Debug)]
pub(crate) struct KvStats {
    layers: Vec<LayerStats>,
}

#[derive(Debug, Clone)]
struct LayerStats {
    key_sum: Vec<f64>,
    key_sq: Vec<f64>,
    /// Keys before RoPE.
    unrotated_key_sum: Vec<f64>,
    query_sq: Vec<f64>,
    rows: u64,
}

impl KvStats {
    /// Empty sums for a model of shape `c`.
    pub(crate) fn new(c: &LlamaConfig) -> Self {
        let (kv_dim, q_dim) = (c.kv_dim(), c.n_heads * c.head_dim);
        let layer = LayerStats {
            key_sum: vec![0.0; kv_dim],
            key_sq: vec![0.0; kv_dim],
            unrotated_key_sum: vec![0.0; kv_dim],
            query_sq: vec![0.0; q_dim],
            rows: 0,
        };
        KvStats { layers: vec![layer; c.n_layers] }
    }

    /// Adds one token's key of `layer` before RoPE.
    pub(crate) fn add_unrotated_key(&mut self, layer: usize, k: &[f32]) {
        let Some(st) = self.layers.get_mut(layer) else { return };
        st.unrotated_key_sum.iter_mut().zip(k).for_each(|(s, &k)| *s += f64::from(k));
    }

    /// Adds one token's queries (`n_heads × head_dim`) and key (`n_kv_heads × head_dim`) of
    /// `layer`, after RoPE.
    pub(crate) fn add(&mut self, layer: usize, q: &[f32], k: &[f32]) {
        let Some(st) = self.layers.get_mut(layer) else { return };
        for (i, &k) in k.iter().enumerate() {
            st.key_sum[i] += f64::from(k);
            st.key_sq[i] += f64::from(k) * f64::from(k);
        }
        for (acc, &q) in st.query_sq.iter_mut().zip(q) {
            *acc += f64::from(q) * f64::from(q);
        }
        st.rows += 1;
    }

    /// The transform these sums calibrate (identity offsets and scales for a layer that saw
    /// no rows).
    pub(crate) fn transform(&self, model: &Llama) -> KvTransform {
        let c = model.config();
        let layers = (self.layers.iter().enumerate())
            .map(|(l, st)| {
                let offset = st.key_offset(|k, pos| model.rope_key(l, k, pos));
                st.transform(c.head_dim, offset)
            })
            .collect();
        KvTransform::new(c, layers)
    }
}

impl LayerStats {
    /// The mean key before RoPE, turned by RoPE at every position below [`OFFSET_HORIZON`]
    /// and averaged (module docs).
    fn key_offset(&self, rope: impl Fn(&mut [f32], usize)) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        let mean: Vec<f32> = self.unrotated_key_sum.iter().map(|&s| (s / n) as f32).collect();
        let horizon = OFFSET_HORIZON;
        let mut sum = vec![0.0f64; mean.len()];
        let mut k = mean.clone();
        for pos in 0..horizon {
            k.copy_from_slice(&mean);
            rope(&mut k, pos);
            sum.iter_mut().zip(&k).for_each(|(s, &k)| *s += f64::from(k));
        }
        sum.iter().map(|&s| (s / horizon as f64) as f32).collect()
    }

    fn transform(&self, hd: usize, key_offset: Vec<f32>) -> LayerTransform {
        let kv_dim = self.key_sum.len();
        let n = self.rows.max(1) as f64;
        let group = (self.query_sq.len() / kv_dim.max(1)).max(1);

        // ln s_i = (ln σ_k,i − ln σ_q,i) / 4, then shifted per head to a geometric mean 1.
        let mut log_scale: Vec<f64> = (0..kv_dim)
            .map(|i| {
                let m = self.key_sum[i] / n;
                let key_var = self.key_sq[i] / n - m * m;
                let (head, d) = (i / hd, i % hd);
                let query_ms =
                    (0..group).map(|g| self.query_sq[(head * group + g) * hd + d] / n).sum::<f64>()
                        / group as f64;
                let l = 0.125 * (key_var.ln() - query_ms.ln());
                if l.is_finite() {
                    l.clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE)
                } else {
                    0.0 // a channel that never varies (or a query channel always 0)
                }
            })
            .collect();
        for head in log_scale.chunks_mut(hd) {
            let mean = head.iter().sum::<f64>() / head.len() as f64;
            head.iter_mut().for_each(|l| *l -= mean);
        }
        let key_scale: Vec<f32> = log_scale.iter().map(|l| l.exp() as f32).collect();
        let key_inv_scale = key_scale.iter().map(|s| 1.0 / s).collect();
        LayerTransform { key_offset, key_scale, key_inv_scale }
    }
}

/// Positions the key offset is averaged over (module docs).
const OFFSET_HORIZON: usize = 1024;

/// Largest `|ln s|` (before the per-head shift): scales within e^±4 ≈ 1/55..55.
const MAX_LOG_SCALE: f64 = 4.0;

/// One layer's key offset and scales (`n_kv_heads × head_dim` each; module docs).
#[derive(Debug, Clone)]
struct LayerTransform {
    key_offset: Vec<f32>,
    key_scale: Vec<f32>,
    key_inv_scale: Vec<f32>,
}

/// The change of basis of quantized KV pages (module docs): built by the model's calibration
/// pass, applied to each token's query, key and value before the KV write, undone on the
/// attention output.
#[derive(Debug, Clone)]
pub struct KvTransform {
    rotation: Option<Hadamard>,
    head_dim: usize,
    /// Query heads per kv head.
    group: usize,
    layers: Vec<LayerTransform>,
}

impl KvTransform {
    fn new(c: &LlamaConfig, layers: Vec<LayerTransform>) -> Self {
        KvTransform {
            rotation: Hadamard::for_width(c.head_dim),
            head_dim: c.head_dim,
            group: (c.n_heads / c.n_kv_heads.max(1)).max(1),
            layers,
        }
    }

    /// Moves one token's queries (`n_heads × head_dim`), key and value (`n_kv_heads ×
    /// head_dim`) of `layer` into the stored basis, in place.
    pub fn apply(&self, layer: usize, q: &mut [f32], k: &mut [f32], v: &mut [f32]) {
        let t = &self.layers[layer];
        for (i, head) in q.chunks_exact_mut(self.head_dim).enumerate() {
            let kv_head = i / self.group;
            let s = &t.key_scale[kv_head * self.head_dim..][..self.head_dim];
            head.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
        }
        let key = k.iter_mut().zip(&t.key_offset).zip(&t.key_inv_scale);
        key.for_each(|((x, c), r)| *x = (*x - c) * r);
        if let Some(h) = self.rotation {
            h.rotate(q);
            h.rotate(k);
            h.rotate(v);
        }
    }

    /// Moves attention outputs (rows of `n_heads × head_dim`, any number of them) back from
    /// the stored basis, in place: values are only rotated.
    pub fn restore(&self, out: &mut [f32]) {
        if let Some(h) = self.rotation {
            h.rotate(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_rng::Rng;

    /// 4 query heads on 2 kv heads of 32.
    fn config() -> LlamaConfig {
        LlamaConfig { vocab_size: 10, ..LlamaConfig::llama(1, 64, 128, 4, 2, 32) }
    }

    fn vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.unit() * scale).collect()
    }

    /// Softmax attention of one token's queries over `keys` / `values` (f64), per query head.
    fn attend(c: &LlamaConfig, q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>]) -> Vec<f64> {
        let (hd, group) = (c.head_dim, c.n_heads / c.n_kv_heads);
        let mut out = vec![0.0; q.len()];
        for (h, qh) in q.chunks_exact(hd).enumerate() {
            let kv = (h / group) * hd..(h / group + 1) * hd;
            let dot = |k: &[f32]| -> f64 {
                qh.iter().zip(&k[kv.clone()]).map(|(a, b)| f64::from(a * b)).sum()
            };
            let scores: Vec<f64> = keys.iter().map(|k| dot(k)).collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = w.iter().sum();
            for (wj, v) in w.iter().zip(values) {
                for (o, &x) in out[h * hd..][..hd].iter_mut().zip(&v[kv.clone()]) {
                    *o += wj / total * f64::from(x);
                }
            }
        }
        out
    }

    /// Keys with a large offset in some channels, channels of unequal spread, queries too.
    fn calibrated(c: &LlamaConfig, rng: &mut Rng) -> (KvStats, Vec<f32>, Vec<f32>) {
        let (kv_dim, q_dim) = (c.kv_dim(), c.n_heads * c.head_dim);
        let offset: Vec<f32> = (0..kv_dim).map(|i| if i % 7 == 0 { 20.0 } else { 0.5 }).collect();
        let spread: Vec<f32> = (0..kv_dim).map(|i| 1.0 + (i % 5) as f32).collect();
        let mut stats = KvStats::new(c);
        for _ in 0..200 {
            let k: Vec<f32> = (0..kv_dim).map(|i| offset[i] + spread[i] * rng.unit()).collect();
            let q = vec(rng, q_dim, 3.0);
            stats.add_unrotated_key(0, &k);
            stats.add(0, &q, &k);
        }
        (stats, offset, spread)
    }

    #[test]
    fn the_transform_leaves_attention_unchanged() {
        let c = config();
        let mut rng = Rng(7);
        let (stats, offset, spread) = calibrated(&c, &mut rng);
        let layer = stats.layers[0].transform(c.head_dim, offset.clone());
        let t = KvTransform::new(&c, vec![layer]);
        let keys: Vec<Vec<f32>> = (0..9)
            .map(|_| offset.iter().zip(&spread).map(|(o, s)| o + s * rng.unit()).collect())
            .collect();
        let values: Vec<Vec<f32>> = (0..9).map(|_| vec(&mut rng, c.kv_dim(), 2.0)).collect();
        let q = vec(&mut rng, c.n_heads * c.head_dim, 1.0);
        let want = attend(&c, &q, &keys, &values);

        let (mut q2, mut keys2, mut values2) = (q.clone(), keys.clone(), values.clone());
        let mut scratch_q = vec![0.0; q.len()];
        t.apply(0, &mut q2, &mut keys2[0], &mut values2[0]);
        for (k, v) in keys2.iter_mut().zip(values2.iter_mut()).skip(1) {
            t.apply(0, &mut scratch_q, k, v);
        }
        assert_ne!(keys2[3], keys[3], "the keys move");
        let mut got: Vec<f32> =
            attend(&c, &q2, &keys2, &values2).iter().map(|&x| x as f32).collect();
        t.restore(&mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((f64::from(*g) - w).abs() < 1e-4 * (1.0 + w.abs()), "{i}: {g} vs {w}");
        }
    }

    #[test]
    fn offsets_are_the_given_mean_and_scales_follow_the_spreads() {
        let c = config();
        let (stats, offset, _) = calibrated(&c, &mut Rng(11));
        let st = &stats.layers[0];
        let t = st.transform(c.head_dim, offset.clone());
        assert_eq!(t.key_offset, offset);
        let n = st.rows as f64;
        let hd = c.head_dim;
        for (head, scales) in t.key_scale.chunks_exact(hd).enumerate() {
            let log_mean = scales.iter().map(|&s| f64::from(s).ln()).sum::<f64>() / hd as f64;
            assert!(log_mean.abs() < 1e-5, "head {head}: geometric mean {}", log_mean.exp());
            // s_i / s_j = ((σ_k,i / σ_q,i) / (σ_k,j / σ_q,j))^¼
            let ratio = |i: usize| {
                let k = head * hd + i;
                let m = st.key_sum[k] / n;
                let var = st.key_sq[k] / n - m * m;
                let qms: f64 =
                    (0..2).map(|g| st.query_sq[(head * 2 + g) * hd + i] / n).sum::<f64>() / 2.0;
                (var / qms).powf(0.125)
            };
            for i in 1..hd {
                let want = ratio(i) / ratio(0);
                let got = f64::from(scales[i] / scales[0]);
                assert!(
                    (got / want - 1.0).abs() < 1e-4,
                    "head {head} channel {i}: {got} vs {want}"
                );
            }
        }
        for (s, r) in t.key_scale.iter().zip(&t.key_inv_scale) {
            assert_eq!(*r, 1.0 / s);
        }
    }

    #[test]
    fn the_offset_is_the_mean_turned_by_rope_and_averaged() {
        let c = config();
        let (stats, ..) = calibrated(&c, &mut Rng(3));
        let st = &stats.layers[0];
        let n = st.rows as f64;
        let mean: Vec<f32> = st.unrotated_key_sum.iter().map(|&s| (s / n) as f32).collect();
        // Without rotation the average is the mean; a rule that negates odd positions
        // averages to 0.
        let same = st.key_offset(|_, _| {});
        for (a, b) in same.iter().zip(&mean) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        let flipped = st.key_offset(|k, pos| {
            if pos % 2 == 1 {
                k.iter_mut().for_each(|x| *x = -*x);
            }
        });
        assert!(flipped.iter().all(|x| x.abs() < 1e-4), "{flipped:?}");
    }
}
