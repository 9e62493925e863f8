//! Reference paged attention: the scalar specification the fast kernels are tested against.
//!
//! Both entry points read keys and values through a sequence's block table
//! (`pages[i]` holds positions `i × block_size .. (i + 1) × block_size`) and need no heap and
//! no score buffer: softmax is computed online (Milakov & Gimelshein 2018), keeping per query
//! head a running max `m`, a running sum `l` and an unnormalised output `acc`:
//!
//! ```text
//! for each cached token t (page by page, slot by slot):
//!     s   = scale · (q_h · k_t)                 scale = 1 / sqrt(head_dim)
//!     if s > m:  acc *= exp(m - s);  l *= exp(m - s);  m = s
//!     p   = exp(s - m);  l += p;  acc += p · v_t
//! out_h = acc / l
//! ```
//!
//! Grouped-query attention: query head `h` reads kv head `h / (n_heads / n_kv_heads)`
//! (MQA is `n_kv_heads = 1`, plain multi-head is `n_kv_heads = n_heads`).
//!
//! Vectors: `q` and `out` are `[head][head_dim]`, `n_heads × head_dim` f32s per token.
//! Accumulation is in f32; [`naive`] is the materialised-scores, f64 reference they are
//! tested against.
//!
//! # Page formats
//!
//! One implementation serves every [`KvFormat`] (f32, f16, bf16, q8_0, q4_0): keys and values
//! are read in place, one slot row at a time, through the format's two row operations,
//! `q_h · k_t` = [`KvFormat::dot`] and `acc += p · v_t` = [`KvFormat::add_scaled`]. A q8_0 row
//! is dotted block by block (`Σ_b d_b · Σ_i q_i · qs_i`); nothing is widened into a copy of
//! the page, let alone of the cache.

use core::fmt;

use crate::kv::{KvError, KvFormat, KvHalf, KvPages};
use crate::pool::PageId;

pub mod naive;

/// The attention shape of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnConfig {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; divides `n_heads`.
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Score scale, `1 / sqrt(head_dim)` from [`AttnConfig::new`].
    pub scale: f32,
}

impl AttnConfig {
    /// A config with the standard scale `1 / sqrt(head_dim)`; checks the heads divide.
    pub fn new(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Result<Self, AttnError> {
        if n_heads == 0 || n_kv_heads == 0 || head_dim == 0 {
            return Err(AttnError::ZeroDimension);
        }
        if n_heads % n_kv_heads != 0 {
            return Err(AttnError::HeadsNotDivisible { n_heads, n_kv_heads });
        }
        let scale = 1.0 / libm::sqrtf(head_dim as f32);
        Ok(AttnConfig { n_heads, n_kv_heads, head_dim, scale })
    }

    /// Query heads per kv head.
    #[inline]
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// The kv head query head `h` reads.
    #[inline]
    pub fn kv_head_of(&self, h: usize) -> usize {
        h / self.group_size()
    }

    /// f32s of one token's `q` or `out`: `n_heads × head_dim`.
    #[inline]
    pub fn q_len(&self) -> usize {
        self.n_heads * self.head_dim
    }

    fn validate(&self) -> Result<(), AttnError> {
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.head_dim == 0 {
            return Err(AttnError::ZeroDimension);
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return Err(AttnError::HeadsNotDivisible {
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
            });
        }
        Ok(())
    }
}

/// What is wrong with an attention call's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttnError {
    /// A head count or `head_dim` is 0.
    ZeroDimension,
    /// `n_heads` is not a multiple of `n_kv_heads`.
    HeadsNotDivisible {
        /// Query heads.
        n_heads: usize,
        /// Key/value heads.
        n_kv_heads: usize,
    },
    /// The attention config and the KV storage disagree.
    ConfigMismatch {
        /// Which field (`"n_kv_heads"` or `"head_dim"`).
        what: &'static str,
        /// The attention config's value.
        attn: usize,
        /// The KV config's value.
        kv: usize,
    },
    /// A buffer has the wrong length.
    Length {
        /// Which buffer.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// There is nothing to attend to (0 context tokens), or the query chunk is empty.
    EmptyContext,
    /// More query tokens than context tokens in prefill (the chunk must already be appended).
    ChunkLongerThanContext {
        /// Query tokens.
        n_new: usize,
        /// Context tokens including the chunk.
        n_ctx: usize,
    },
    /// The block table has fewer pages than the context needs.
    TooFewPages {
        /// `n_ctx.div_ceil(block_size)`.
        needed: usize,
        /// Pages given.
        got: usize,
    },
    /// A page or layer index is out of range for the KV storage.
    Kv(KvError),
}

impl fmt::Display for AttnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AttnError::ZeroDimension => {
                write!(f, "attention: head counts and head_dim must be ≥ 1")
            }
            AttnError::HeadsNotDivisible { n_heads, n_kv_heads } => {
                write!(
                    f,
                    "attention: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}"
                )
            }
            AttnError::ConfigMismatch { what, attn, kv } => {
                write!(f, "attention: {what} is {attn} but the KV cache has {kv}")
            }
            AttnError::Length { what, expected, got } => {
                write!(f, "attention: {what} has {got} elements, expected {expected}")
            }
            AttnError::EmptyContext => write!(f, "attention: no tokens to attend to"),
            AttnError::ChunkLongerThanContext { n_new, n_ctx } => write!(
                f,
                "attention: prefill chunk of {n_new} tokens exceeds the context of {n_ctx} \
                 (append the chunk's K/V before attending)"
            ),
            AttnError::TooFewPages { needed, got } => {
                write!(f, "attention: context needs {needed} pages, block table has {got}")
            }
            AttnError::Kv(e) => write!(f, "attention: {e}"),
        }
    }
}

impl core::error::Error for AttnError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            AttnError::Kv(e) => Some(e),
            _ => None,
        }
    }
}

impl From<KvError> for AttnError {
    fn from(e: KvError) -> Self {
        AttnError::Kv(e)
    }
}

/// Checks everything both entry points share; returns the pages actually read.
fn validate<'p, T: KvFormat, S: AsRef<[T]>>(
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &'p [PageId],
    n_ctx: usize,
    cfg: &AttnConfig,
) -> Result<&'p [PageId], AttnError> {
    cfg.validate()?;
    let kc = kv.config();
    if cfg.n_kv_heads != kc.n_kv_heads {
        let (attn, kv) = (cfg.n_kv_heads, kc.n_kv_heads);
        return Err(AttnError::ConfigMismatch { what: "n_kv_heads", attn, kv });
    }
    if cfg.head_dim != kc.head_dim {
        let (attn, kv) = (cfg.head_dim, kc.head_dim);
        return Err(AttnError::ConfigMismatch { what: "head_dim", attn, kv });
    }
    if n_ctx == 0 {
        return Err(AttnError::EmptyContext);
    }
    let needed = n_ctx.div_ceil(kc.block_size);
    let Some(used) = pages.get(..needed) else {
        return Err(AttnError::TooFewPages { needed, got: pages.len() });
    };
    for &page in used {
        kv.check_page(layer, page)?;
    }
    Ok(used)
}

/// Decode attention: one new query token attends to all `n_ctx` cached tokens of one
/// sequence in `layer` (the token's own K/V must already be written).
///
/// `pages` is the sequence's block table (`BlockTable::pages()`; extra trailing pages are
/// ignored); `q` and `out` are `n_heads × head_dim` f32s, `[head][head_dim]`.
pub fn paged_decode<T: KvFormat, S: AsRef<[T]>>(
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &[PageId],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) -> Result<(), AttnError> {
    let pages = validate(kv, layer, pages, n_ctx, cfg)?;
    let expected = cfg.q_len();
    if q.len() != expected {
        return Err(AttnError::Length { what: "q", expected, got: q.len() });
    }
    if out.len() != expected {
        return Err(AttnError::Length { what: "out", expected, got: out.len() });
    }
    attend_token(kv, layer, pages, n_ctx, q, out, cfg)
}

/// Causal prefill attention for a chunk of `n_new` query tokens that were just appended to a
/// sequence of `n_ctx` tokens (the chunk included; its K/V already written): query `i` sits at
/// position `p = n_ctx - n_new + i` and attends to positions `0..=p`.
///
/// `q` and `out` are `[token][head][head_dim]`, `n_new × n_heads × head_dim` f32s; `n_new` is
/// `q.len() / (n_heads × head_dim)`.
pub fn paged_prefill<T: KvFormat, S: AsRef<[T]>>(
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &[PageId],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) -> Result<(), AttnError> {
    let (pages, n_new) = check_prefill(kv, layer, pages, n_ctx, q, out, cfg)?;
    let per_token = cfg.q_len();
    let first_pos = n_ctx - n_new;
    for (i, (q_tok, out_tok)) in
        q.chunks_exact(per_token).zip(out.chunks_exact_mut(per_token)).enumerate()
    {
        attend_token(kv, layer, pages, first_pos + i + 1, q_tok, out_tok, cfg)?;
    }
    Ok(())
}

/// The argument checks of [`paged_prefill`], in its order, for fast implementations that
/// must accept and reject exactly the same calls with the same errors. Returns the pages
/// the context reads (`⌈n_ctx / block_size⌉` of them) and the number of query tokens.
pub fn check_prefill<'p, T: KvFormat, S: AsRef<[T]>>(
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &'p [PageId],
    n_ctx: usize,
    q: &[f32],
    out: &[f32],
    cfg: &AttnConfig,
) -> Result<(&'p [PageId], usize), AttnError> {
    let pages = validate(kv, layer, pages, n_ctx, cfg)?;
    let per_token = cfg.q_len();
    if q.len() % per_token != 0 {
        let expected = q.len() / per_token * per_token;
        return Err(AttnError::Length { what: "q (whole tokens)", expected, got: q.len() });
    }
    let n_new = q.len() / per_token;
    if n_new == 0 {
        return Err(AttnError::EmptyContext);
    }
    if out.len() != q.len() {
        return Err(AttnError::Length { what: "out", expected: q.len(), got: out.len() });
    }
    if n_new > n_ctx {
        return Err(AttnError::ChunkLongerThanContext { n_new, n_ctx });
    }
    Ok((pages, n_new))
}

/// One query token over the first `n_ctx` positions; arguments already validated.
fn attend_token<T: KvFormat, S: AsRef<[T]>>(
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &[PageId],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) -> Result<(), AttnError> {
    let hd = cfg.head_dim;
    let (block_size, row_units) = (kv.config().block_size, kv.row_units());
    for (h, (q_h, acc)) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
        let kv_head = cfg.kv_head_of(h);
        acc.fill(0.0);
        let mut state = OnlineSoftmax::new();
        for (i, &page) in pages.iter().enumerate() {
            let first = i * block_size;
            if first >= n_ctx {
                break;
            }
            let n = (n_ctx - first).min(block_size);
            let keys = kv.head_run(layer, page, KvHalf::Key, kv_head)?;
            let values = kv.head_run(layer, page, KvHalf::Value, kv_head)?;
            for (k, v) in keys.chunks_exact(row_units).zip(values.chunks_exact(row_units)).take(n) {
                let score = cfg.scale * T::dot(q_h, k);
                state.push(score, v, acc);
            }
        }
        state.finish(acc);
    }
    Ok(())
}

/// Running max and sum of the online softmax for one query head.
struct OnlineSoftmax {
    max: f32,
    sum: f32,
}

impl OnlineSoftmax {
    fn new() -> Self {
        OnlineSoftmax { max: f32::NEG_INFINITY, sum: 0.0 }
    }

    /// Adds one token with `score` and value `v` to the unnormalised output `acc`.
    #[inline]
    fn push<T: KvFormat>(&mut self, score: f32, v: &[T], acc: &mut [f32]) {
        if score > self.max {
            // Rescale what was summed under the old max (exp(-inf) = 0 on the first token).
            let correction = libm::expf(self.max - score);
            self.sum *= correction;
            for a in acc.iter_mut() {
                *a *= correction;
            }
            self.max = score;
        }
        let p = libm::expf(score - self.max);
        self.sum += p;
        T::add_scaled(p, v, acc);
    }

    fn finish(self, acc: &mut [f32]) {
        let inv = 1.0 / self.sum;
        for a in acc.iter_mut() {
            *a *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvConfig;

    #[test]
    fn scale_is_inverse_sqrt_head_dim_and_gqa_maps_groups() {
        let cfg = AttnConfig::new(9, 3, 64).unwrap();
        assert_eq!(cfg.scale, 0.125);
        assert_eq!(AttnConfig::new(1, 1, 2).unwrap().scale, core::f32::consts::FRAC_1_SQRT_2);
        let heads: [usize; 9] = core::array::from_fn(|h| cfg.kv_head_of(h));
        assert_eq!(heads, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn single_token_returns_its_value() {
        let kc = KvConfig { n_layers: 1, n_kv_heads: 1, head_dim: 2, block_size: 4, n_pages: 2 };
        let mut kv = KvPages::new(kc, [0.0f32; 32]).unwrap();
        kv.write(0, PageId(1), 0, &[1.0, 2.0], &[3.0, -4.0]).unwrap();
        let cfg = AttnConfig::new(2, 1, 2).unwrap();
        let mut out = [0.0; 4];
        paged_decode(&kv, 0, &[PageId(1)], 1, &[0.5, 0.1, -9.0, 3.0], &mut out, &cfg).unwrap();
        assert_eq!(out, [3.0, -4.0, 3.0, -4.0]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let kc = KvConfig { n_layers: 1, n_kv_heads: 1, head_dim: 2, block_size: 4, n_pages: 2 };
        let kv = KvPages::new(kc, [0.0f32; 32]).unwrap();
        let cfg = AttnConfig::new(2, 1, 2).unwrap();
        let q = [0.0; 4];
        let mut out = [0.0; 4];
        let p = [PageId(0), PageId(1)];
        assert_eq!(paged_decode(&kv, 0, &p, 0, &q, &mut out, &cfg), Err(AttnError::EmptyContext));
        assert_eq!(
            paged_decode(&kv, 0, &p, 9, &q, &mut out, &cfg),
            Err(AttnError::TooFewPages { needed: 3, got: 2 })
        );
        assert!(matches!(
            paged_decode(&kv, 1, &p, 1, &q, &mut out, &cfg),
            Err(AttnError::Kv(KvError::LayerOutOfRange { .. }))
        ));
        assert!(matches!(
            paged_decode(&kv, 0, &[PageId(2)], 1, &q, &mut out, &cfg),
            Err(AttnError::Kv(KvError::PageOutOfRange { .. }))
        ));
        assert!(matches!(
            paged_decode(&kv, 0, &p, 1, &q[..3], &mut out, &cfg),
            Err(AttnError::Length { what: "q", .. })
        ));
        assert_eq!(
            paged_prefill(&kv, 0, &p, 1, &[0.0; 8], &mut [0.0; 8], &cfg),
            Err(AttnError::ChunkLongerThanContext { n_new: 2, n_ctx: 1 })
        );
        let other = AttnConfig::new(2, 2, 2).unwrap();
        assert!(matches!(
            paged_decode(&kv, 0, &p, 1, &q, &mut out, &other),
            Err(AttnError::ConfigMismatch { what: "n_kv_heads", .. })
        ));
        assert_eq!(
            AttnConfig::new(3, 2, 2),
            Err(AttnError::HeadsNotDivisible { n_heads: 3, n_kv_heads: 2 })
        );
    }
}
