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
//! # Sliding window
//!
//! With [`AttnConfig::window`] `= Some(W)` a query sees only the last `W` keys, itself
//! included (llama.cpp's `LLAMA_SWA_TYPE_STANDARD`: the key at `p0` is masked for the query
//! at `p1` when `p1 - p0 ≥ W`). Masked keys are skipped, not weighted by zero: they take no
//! part in the max, the sum or the output, as in llama.cpp's flash attention, where a `-inf`
//! mask entry contributes nothing. Everything is in block-table indices:
//!
//! ```text
//! table index:   0    …    p+1-W   …    p    …   n_ctx-1
//! query at p:    [ masked  ][ visible: W keys ]  (causal: later keys masked)
//! ```
//!
//! A model may drop whole pages from the front of a windowed layer's table once no query can
//! see them; `n_ctx` then counts from the table's first slot, and since only whole pages go,
//! index distance is still position distance.
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
    /// Score scale, `1 / sqrt(head_dim)` from [`AttnConfig::new`] (see
    /// [`AttnConfig::with_scale`]).
    pub scale: f32,
    /// Sliding window `W` (`None`: full causal attention).
    ///
    /// Query token `i` of a chunk of `n_new` sits at index `p = n_ctx - n_new + i` of the
    /// block table and sees the indices `max(0, p + 1 - W) ..= p`: itself and the `W - 1`
    /// before it. `Some(0)` would see nothing and is refused by every entry point
    /// ([`AttnError::ZeroWindow`]).
    pub window: Option<usize>,
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
        Ok(AttnConfig { n_heads, n_kv_heads, head_dim, scale, window: None })
    }

    /// This config with sliding window `window` ([`AttnConfig::window`]; `None`: full
    /// causal attention).
    ///
    /// `Some(0)` is accepted here but every attention call then returns
    /// [`AttnError::ZeroWindow`] (the field is public, so the calls check it in any case).
    #[must_use]
    pub fn with_window(self, window: Option<usize>) -> Self {
        AttnConfig { window, ..self }
    }

    /// This config with score scale `scale` (for a model that scales its queries itself, as
    /// Gemma does: then `1.0`).
    #[must_use]
    pub fn with_scale(self, scale: f32) -> Self {
        AttnConfig { scale, ..self }
    }

    /// The first block-table index the query at index `pos` sees: `pos + 1 - W` (0 when
    /// that is negative, or without a window). It sees `first_visible(pos) ..= pos`, and
    /// `first_visible` never decreases as `pos` grows.
    #[inline]
    pub fn first_visible(&self, pos: usize) -> usize {
        match self.window {
            // pos + 1 - W without overflow (and without panicking on a refused W = 0).
            Some(w) => pos.saturating_sub(w.saturating_sub(1)),
            None => 0,
        }
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
        if self.window == Some(0) {
            return Err(AttnError::ZeroWindow);
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
    /// The sliding window is `Some(0)`: a query would see no key, not even itself.
    ZeroWindow,
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
            AttnError::ZeroWindow => write!(f, "attention: the sliding window must be ≥ 1"),
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
/// sequence in `layer` (the token's own K/V must already be written), or under a window `W`
/// to the last `min(W, n_ctx)` of them.
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
/// position `p = n_ctx - n_new + i` and attends to positions `0..=p` (under a window `W`:
/// `max(0, p + 1 - W) ..= p`, see [`AttnConfig::window`]).
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

/// One query token at index `n_ctx - 1` over the indices it sees
/// (`cfg.first_visible(n_ctx - 1) .. n_ctx`); arguments already validated.
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
    let lo = cfg.first_visible(n_ctx.saturating_sub(1));
    for (h, (q_h, acc)) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
        let kv_head = cfg.kv_head_of(h);
        acc.fill(0.0);
        let mut state = OnlineSoftmax::new();
        // Pages wholly before the window are never read.
        for (i, &page) in pages.iter().enumerate().skip(lo / block_size) {
            let first = i * block_size;
            if first >= n_ctx {
                break;
            }
            let n = (n_ctx - first).min(block_size);
            // Slots before the window's first index (only in its first page) are skipped.
            let skip = lo.saturating_sub(first);
            let keys = kv.head_run(layer, page, KvHalf::Key, kv_head)?;
            let values = kv.head_run(layer, page, KvHalf::Value, kv_head)?;
            let rows = keys.chunks_exact(row_units).zip(values.chunks_exact(row_units));
            for (k, v) in rows.take(n).skip(skip) {
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
    use std::vec;
    use std::vec::Vec;

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

    #[test]
    fn window_config_is_checked_and_first_visible_follows_the_rule() {
        let cfg = AttnConfig::new(2, 1, 2).unwrap();
        assert_eq!(cfg.window, None);
        assert_eq!(cfg.with_scale(1.0).scale, 1.0);
        assert_eq!(cfg.first_visible(1000), 0);
        let w = cfg.with_window(Some(4));
        assert_eq!(w.window, Some(4));
        // Query at p sees p + 1 - W ..= p: exactly W keys once p ≥ W - 1.
        let firsts: [usize; 7] = core::array::from_fn(|p| w.first_visible(p));
        assert_eq!(firsts, [0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(cfg.with_window(Some(1)).first_visible(9), 9);

        let kc = KvConfig { n_layers: 1, n_kv_heads: 1, head_dim: 2, block_size: 4, n_pages: 2 };
        let kv = KvPages::new(kc, [0.0f32; 32]).unwrap();
        let zero = cfg.with_window(Some(0));
        let p = [PageId(0)];
        let mut out = [0.0; 4];
        assert_eq!(
            paged_decode(&kv, 0, &p, 1, &[0.0; 4], &mut out, &zero),
            Err(AttnError::ZeroWindow)
        );
        assert_eq!(
            paged_prefill(&kv, 0, &p, 1, &[0.0; 4], &mut out, &zero),
            Err(AttnError::ZeroWindow)
        );
        let mut scores = [0.0f64; 1];
        assert_eq!(
            naive::naive_attention(
                &[0.0; 4],
                &[0.0; 2],
                &[0.0; 2],
                0,
                &zero,
                &mut scores,
                &mut out
            ),
            Err(AttnError::ZeroWindow)
        );
    }

    /// Pseudo-random values in [-1, 1) (xorshift64*).
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// A cache, its block table, and the same keys and values contiguous.
    type Cache = (KvPages<f32, Vec<f32>>, Vec<PageId>, Vec<f32>, Vec<f32>);

    /// A cache of `n_ctx` tokens in pages of `bs` (page `i` of the table is slab page
    /// `n_pages - 1 - i`), unwritten slots NaN.
    fn windowed_cache(n_ctx: usize, bs: usize, seed: u64) -> Cache {
        let n_pages = n_ctx.div_ceil(bs);
        let kc = KvConfig { n_layers: 1, n_kv_heads: 2, head_dim: 3, block_size: bs, n_pages };
        let mut kv = KvPages::new(kc, vec![f32::NAN; kc.slab_len().unwrap()]).unwrap();
        let pages: Vec<PageId> = (0..n_pages).map(|i| PageId((n_pages - 1 - i) as u32)).collect();
        let (k, v) = (noise(seed, n_ctx * 6), noise(seed + 2, n_ctx * 6));
        for t in 0..n_ctx {
            let (kr, vr) = (&k[t * 6..][..6], &v[t * 6..][..6]);
            kv.write(0, pages[t / bs], t % bs, kr, vr).unwrap();
        }
        (kv, pages, k, v)
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// Windows below, at and above the page size, chunks longer than the window: the paged
    /// reference equals the naive one, decode equals the chunk's last row bit for bit, and a
    /// window covering the whole context is no window at all, bit for bit.
    #[test]
    fn windowed_prefill_and_decode_match_naive() {
        for bs in [1, 3, 4, 8] {
            for n_ctx in [1, 5, 17, 30] {
                let (kv, pages, k, v) = windowed_cache(n_ctx, bs, (bs * 100 + n_ctx) as u64);
                for n_new in [1, 6, n_ctx].into_iter().filter(|&n| n <= n_ctx) {
                    let q = noise(n_ctx as u64 * 7 + n_new as u64, n_new * 12);
                    let full = AttnConfig::new(4, 2, 3).unwrap();
                    let mut none = vec![0.0; q.len()];
                    paged_prefill(&kv, 0, &pages, n_ctx, &q, &mut none, &full).unwrap();
                    for w in [1, 2, 3, 4, 5, 7, 8, 9, 16, 29, 30, 31, 100] {
                        let cfg = full.with_window(Some(w));
                        let mut got = vec![f32::NAN; q.len()];
                        paged_prefill(&kv, 0, &pages, n_ctx, &q, &mut got, &cfg).unwrap();
                        let mut want = vec![0.0; q.len()];
                        let mut scores = vec![0.0f64; n_ctx];
                        let first = n_ctx - n_new;
                        naive::naive_attention(&q, &k, &v, first, &cfg, &mut scores, &mut want)
                            .unwrap();
                        for (g, e) in got.iter().zip(&want) {
                            assert!((g - e).abs() <= 1e-5, "bs {bs} ctx {n_ctx} w {w}: {g} vs {e}");
                        }
                        let last = &q[(n_new - 1) * 12..];
                        let mut dec = vec![f32::NAN; 12];
                        paged_decode(&kv, 0, &pages, n_ctx, last, &mut dec, &cfg).unwrap();
                        assert_eq!(bits(&dec), bits(&got[(n_new - 1) * 12..]));
                        if w >= n_ctx {
                            assert_eq!(bits(&got), bits(&none), "bs {bs} ctx {n_ctx} w {w}");
                        }
                    }
                }
            }
        }
    }

    /// Masked keys are skipped, not weighted by zero: NaN in every key and value a decode
    /// query's window excludes changes nothing.
    #[test]
    fn masked_keys_are_never_read_into_the_result() {
        let (n_ctx, bs, w) = (23, 4, 6);
        let (mut kv, pages, _, _) = windowed_cache(n_ctx, bs, 11);
        let cfg = AttnConfig::new(4, 2, 3).unwrap().with_window(Some(w));
        let q = noise(5, 12);
        let mut want = vec![0.0; 12];
        paged_decode(&kv, 0, &pages, n_ctx, &q, &mut want, &cfg).unwrap();
        for t in 0..n_ctx - w {
            let nan = [f32::NAN; 6];
            kv.write(0, pages[t / bs], t % bs, &nan, &nan).unwrap();
        }
        let mut got = vec![0.0; 12];
        paged_decode(&kv, 0, &pages, n_ctx, &q, &mut got, &cfg).unwrap();
        assert_eq!(bits(&got), bits(&want));
        assert!(got.iter().all(|x| x.is_finite()));
    }

    /// A table whose first pages were dropped (none visible to any query of the chunk), with
    /// `n_ctx` counted from its first slot, gives the full table's result bit for bit.
    #[test]
    fn dropping_invisible_front_pages_changes_nothing() {
        for (bs, w, n_ctx, n_new) in [(4, 5, 30, 3), (4, 4, 30, 1), (3, 2, 17, 1), (8, 9, 40, 7)] {
            let (kv, pages, _, _) = windowed_cache(n_ctx, bs, 3);
            let cfg = AttnConfig::new(4, 2, 3).unwrap().with_window(Some(w));
            let q = noise(9, n_new * 12);
            let mut want = vec![0.0; q.len()];
            paged_prefill(&kv, 0, &pages, n_ctx, &q, &mut want, &cfg).unwrap();
            let dropped = cfg.first_visible(n_ctx - n_new) / bs;
            assert!(dropped > 0);
            for d in 1..=dropped {
                let mut got = vec![0.0; q.len()];
                paged_prefill(&kv, 0, &pages[d..], n_ctx - d * bs, &q, &mut got, &cfg).unwrap();
                assert_eq!(bits(&got), bits(&want), "bs {bs} w {w} dropped {d}");
            }
        }
    }
}
