//! Attention over f16 pages in llama.cpp's rounding for batches of at least
//! [`TILED_MIN_ROWS`] query rows: its tiled flash-attention kernel.
//!
//! llama.cpp's CPU flash attention takes another kernel when a batch (a `ubatch`) has at
//! least `GGML_FA_TILE_Q = 64` query rows and the cache is f16 or f32
//! (`ggml_compute_forward_flash_attn_ext_tiled`, ggml-cpu/ops.cpp, build b11312): f32
//! queries, keys widened to f32, scores and outputs as small f32 GEMMs over tiles of
//! `GGML_FA_TILE_KV = 64` cache cells, and a softmax per tile with ggml's vectorized
//! exponential. A prompt of 512 tokens (`llama-perplexity`'s batches, `llama-cli`'s prompt)
//! runs this kernel; a decode, or a prompt chunk of fewer than 64 tokens, runs the
//! one-key-at-a-time kernel of `f16_pages.rs`. Per query row:
//!
//! ```text
//! M = -inf, S = 0, acc = 0 (hd × f32)
//! for each tile of 64 keys (table indices 64t .. 64t + 64) holding a key the row sees:
//!     s_j  = fma-chain over d of q[d] · f32(k_j[d]), from 0        (simd_gemm, per cell)
//!     s_j  = s_j · scale;   s_j = -inf where the row does not see key j
//!     Mnew = max(M, max_j s_j)
//!     if Mnew > M:  ms = expf(M - Mnew);  acc = acc · ms;  S = S · ms
//!     M    = Mnew
//!     p_j  = v_expf(s_j - M)                                  (ggml_v_expf, AVX-512 form)
//!     S    = f32(f64(S) + Σ_{g<4} f64(reduce16(p_16g .. p_16g+15)))   (ggml_vec_soft_max_f32)
//!     acc[d] = fma-chain over j of p_j · f32(v_j[d]), from acc[d]     (simd_gemm, per cell)
//! out = acc · (S == 0 ? 0 : 1 / S)
//! ```
//!
//! `expf` is glibc's ([`super::expf::expf`]), `v_expf` ggml's polynomial
//! ([`crate::kernels::silu::exp`]), `reduce16` `_mm512_reduce_add_ps`'s tree
//! (`((l0+l8)+(l4+l12))+((l2+l10)+(l6+l14))` plus the same over the odd lanes). These are
//! the operations of llama.cpp's AVX-512 build; every pagoda level computes them in this
//! order, so the result is the same bits at every level. A tile a row does not see at all
//! changes nothing in llama.cpp (it is skipped, or its row of probabilities is zeroed), so
//! each row is independent of the others in its batch: only the batch's size picks this
//! kernel. The tiles are aligned at table index 0, as llama.cpp's are at cache cell 0 (a
//! fresh cache holds position `p` in cell `p`).

use core::ops::Range;

use half::f16;
use pagoda_core::attention::{check_prefill, AttnConfig, AttnError};
use pagoda_core::kv::{KvHalf, KvPages};
use pagoda_core::pool::PageId;
use rayon::prelude::*;

use super::expf::expf;
use super::TOKENS_PER_TASK;
use crate::kernels::silu;
use crate::kernels::SimdLevel;

/// Query rows in one batch from which llama.cpp (and pagoda's exact numerics) take the
/// tiled kernel (`GGML_FA_TILE_Q`).
pub const TILED_MIN_ROWS: usize = 64;

/// Keys per tile (`GGML_FA_TILE_KV`).
const TILE: usize = 64;

/// Causal paged attention over f16 pages, same contract and errors as
/// [`super::paged_attention`], in llama.cpp's tiled rounding (module docs). The caller
/// decides when: llama.cpp runs it for batches of at least [`TILED_MIN_ROWS`] rows.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_f16_tiled<S: AsRef<[f16]> + Sync>(
    level: SimdLevel,
    kv: &KvPages<f16, S>,
    layer: usize,
    pages: &[PageId],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) -> Result<(), AttnError> {
    let (pages, n_new) = check_prefill(kv, layer, pages, n_ctx, q, out, cfg)?;
    let (hd, n_heads) = (cfg.head_dim, cfg.n_heads);
    let tasks: Vec<(Range<usize>, usize)> = (0..n_new.div_ceil(TOKENS_PER_TASK))
        .flat_map(|c| {
            let tokens = c * TOKENS_PER_TASK..((c + 1) * TOKENS_PER_TASK).min(n_new);
            (0..cfg.n_kv_heads).map(move |g| (tokens.clone(), g))
        })
        .collect();
    let job = Job { kv, layer, pages, first_pos: n_ctx - n_new, q, cfg };
    let results: Vec<Vec<(usize, Vec<f32>)>> = tasks
        .par_iter()
        .map(|(tokens, g)| job.run(level, tokens.clone(), *g))
        .collect::<Result<_, AttnError>>()?;
    for (row, o) in results.into_iter().flatten() {
        out[row * hd..(row + 1) * hd].copy_from_slice(&o);
    }
    debug_assert_eq!(out.len(), n_new * n_heads * hd);
    Ok(())
}

struct Job<'a, S> {
    kv: &'a KvPages<f16, S>,
    layer: usize,
    pages: &'a [PageId],
    first_pos: usize,
    q: &'a [f32],
    cfg: &'a AttnConfig,
}

/// One query row's running state.
struct Row {
    /// Output row (`token · n_heads + head`), whose query is `q[row · hd ..]`.
    row: usize,
    /// Table indices the row sees: `lo .. hi`.
    lo: usize,
    hi: usize,
    max: f32,
    sum: f32,
    acc: Vec<f32>,
}

impl<S: AsRef<[f16]>> Job<'_, S> {
    /// The rows of `tokens` × (query heads of kv head `g`): `(output row, output)`.
    fn run(
        &self,
        level: SimdLevel,
        tokens: Range<usize>,
        g: usize,
    ) -> Result<Vec<(usize, Vec<f32>)>, AttnError> {
        let cfg = self.cfg;
        let (hd, group) = (cfg.head_dim, cfg.group_size());
        let bs = self.kv.config().block_size;
        let mut rows: Vec<Row> = Vec::with_capacity(tokens.len() * group);
        for t in tokens.clone() {
            let p = self.first_pos + t;
            for h in g * group..(g + 1) * group {
                rows.push(Row {
                    row: t * cfg.n_heads + h,
                    lo: cfg.first_visible(p),
                    hi: p + 1,
                    max: f32::NEG_INFINITY,
                    sum: 0.0,
                    acc: vec![0.0; hd],
                });
            }
        }
        let lo = rows.iter().map(|r| r.lo).min().unwrap_or(0);
        let hi = rows.iter().map(|r| r.hi).max().unwrap_or(0);
        // One tile's keys transposed (`[d][j]`) and values (`[j][d]`), widened; keys the
        // table does not hold stay 0 (llama.cpp's zero padding: a probability of 0).
        let mut kt = vec![0.0f32; hd * TILE];
        let mut vt = vec![0.0f32; TILE * hd];
        for t0 in (lo / TILE * TILE..hi).step_by(TILE) {
            let end = (t0 + TILE).min(hi);
            kt.fill(0.0);
            vt.fill(0.0);
            // The tile's keys page by page: each page's run of this kv head, `[slot][d]`.
            let mut i = t0;
            while i < end {
                let (page, slot) = (self.pages[i / bs], i % bs);
                let n = (bs - slot).min(end - i);
                let run = |half| self.kv.head_run(self.layer, page, half, g).map_err(AttnError::Kv);
                let (kr, vr) = (run(KvHalf::Key)?, run(KvHalf::Value)?);
                for s in 0..n {
                    let j = i - t0 + s;
                    let k = &kr[(slot + s) * hd..(slot + s + 1) * hd];
                    for (d, &x) in k.iter().enumerate() {
                        kt[d * TILE + j] = x.to_f32();
                    }
                    let v = &vr[(slot + s) * hd..(slot + s + 1) * hd];
                    for (o, &x) in vt[j * hd..(j + 1) * hd].iter_mut().zip(v) {
                        *o = x.to_f32();
                    }
                }
                i += n;
            }
            for r in rows.iter_mut().filter(|r| r.lo < t0 + TILE && t0 < r.hi) {
                let q = &self.q[r.row * hd..(r.row + 1) * hd];
                tile_step(level, r, q, &kt, &vt, t0, cfg.scale);
            }
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let inv = if r.sum == 0.0 { 0.0 } else { 1.0 / r.sum };
                (r.row, r.acc.iter().map(|&a| a * inv).collect())
            })
            .collect())
    }
}

/// One tile of one row at `level` (the same bits at every level).
fn tile_step(
    level: SimdLevel,
    r: &mut Row,
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    t0: usize,
    scale: f32,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => {
            // SAFETY: the level is only chosen when the CPU has AVX-512 F and FMA.
            unsafe { x86::tile_step_avx512(r, q, kt, vt, t0, scale) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            // SAFETY: the level is only chosen when the CPU has AVX2 and FMA.
            unsafe { x86::tile_step_avx2(r, q, kt, vt, t0, scale) }
        }
        _ => tile_step_scalar(r, q, kt, vt, t0, scale),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{tile_step_scalar, Row};

    /// [`tile_step_scalar`] compiled with AVX-512 (its lane loops vectorize, `mul_add`
    /// becomes `vfmadd`).
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn tile_step_avx512(
        r: &mut Row,
        q: &[f32],
        kt: &[f32],
        vt: &[f32],
        t0: usize,
        scale: f32,
    ) {
        tile_step_scalar(r, q, kt, vt, t0, scale)
    }

    /// [`tile_step_scalar`] compiled with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_step_avx2(
        r: &mut Row,
        q: &[f32],
        kt: &[f32],
        vt: &[f32],
        t0: usize,
        scale: f32,
    ) {
        tile_step_scalar(r, q, kt, vt, t0, scale)
    }
}

/// The specification of one tile step (module docs), written as lane loops that vectorize.
#[inline(always)]
fn tile_step_scalar(r: &mut Row, q: &[f32], kt: &[f32], vt: &[f32], t0: usize, scale: f32) {
    let hd = q.len();
    let mut s = [0.0f32; TILE];
    for (d, &qd) in q.iter().enumerate() {
        let k = &kt[d * TILE..(d + 1) * TILE];
        for (s, &k) in s.iter_mut().zip(k) {
            *s = qd.mul_add(k, *s);
        }
    }
    let (lo, hi) = (r.lo.saturating_sub(t0), (r.hi - t0).min(TILE));
    for (j, s) in s.iter_mut().enumerate() {
        *s = if (lo..hi).contains(&j) { *s * scale } else { f32::NEG_INFINITY };
    }
    let tile_max = s.iter().fold(f32::NEG_INFINITY, |m, &x| if m > x { m } else { x });
    if tile_max == f32::NEG_INFINITY {
        return;
    }
    let max = r.max.max(tile_max);
    if max > r.max {
        let ms = expf(r.max - max);
        r.acc.iter_mut().for_each(|a| *a *= ms);
        r.sum *= ms;
    }
    r.max = max;
    let mut p = [0.0f32; TILE];
    for (p, &s) in p.iter_mut().zip(&s) {
        *p = silu::exp(s - max);
    }
    let sum: f64 = p.chunks_exact(16).map(|c| f64::from(reduce16(c))).sum();
    r.sum = (f64::from(r.sum) + sum) as f32;
    // Each output's chain runs over the tile's keys in order; 16 outputs at a time stay in
    // one register through the whole tile.
    let mut c = 0;
    while c + 16 <= hd {
        let mut a: [f32; 16] = r.acc[c..c + 16].try_into().expect("16 lanes");
        for (&p, v) in p.iter().zip(vt.chunks_exact(hd)) {
            for (a, &v) in a.iter_mut().zip(&v[c..c + 16]) {
                *a = p.mul_add(v, *a);
            }
        }
        r.acc[c..c + 16].copy_from_slice(&a);
        c += 16;
    }
    for (i, a) in r.acc.iter_mut().enumerate().skip(c) {
        for (&p, v) in p.iter().zip(vt.chunks_exact(hd)) {
            *a = p.mul_add(v[i], *a);
        }
    }
}

/// `_mm512_reduce_add_ps` of 16 lanes: halves, quarters, pairs, then the two singles.
#[inline(always)]
fn reduce16(l: &[f32]) -> f32 {
    let h: [f32; 8] = core::array::from_fn(|i| l[i] + l[i + 8]);
    let q: [f32; 4] = core::array::from_fn(|i| h[i] + h[i + 4]);
    let p: [f32; 2] = core::array::from_fn(|i| q[i] + q[i + 2]);
    p[0] + p[1]
}
