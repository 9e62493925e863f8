//! AVX2 (+FMA, F16C) and AVX-512 page kernels: the same contracts as [`super::scalar`].
//!
//! Ragged `head_dim` tails (not a multiple of 8 or 16) use masked loads and stores
//! (`vmaskmovps` / AVX-512 `k` masks), so there is no scalar tail loop and no read past a
//! slice. Scores are computed four keys at a time so each query chunk is loaded once per
//! four keys and four FMA chains run in parallel; values are accumulated 32 (AVX2) or 64
//! (AVX-512) output floats at a time for the same reason.
//!
//! Every function is an `unsafe fn` with `#[target_feature]`; callers must have checked the
//! features at run time (done once in `super::ops`) and pass slices of the documented shapes.

use core::arch::x86_64::*;

use pagoda_core::quant::{BlockQ4_0, BlockQ8_0};

use super::f16_pages::Lanes;

/// A page run the AVX-512 kernels read in place: sixteen of its values as f32s, the same
/// values the format's `decode` (or the per-page widening and dequantization) gives.
pub(super) trait Run: Copy {
    /// Values per unit of the run (1 for float elements, 32 for blocks).
    const VALUES: usize;

    /// Values `e .. e + 16` of the run starting at `base` (value `e` of the run is value
    /// `e mod 32` of block `e / 32` for block formats), lanes outside `m` zero.
    ///
    /// # Safety
    /// AVX-512F; the lanes of `m` readable; `m` all lanes unless `Self` is `f32`; `e` a
    /// multiple of 16.
    unsafe fn chunk16(base: *const Self, e: usize, m: __mmask16) -> __m512;

    /// Values `e .. e + 32` (one block of a block format, its scale converted once): the
    /// two [`Self::chunk16`]s. Block formats implement this one and take a half of it for
    /// [`Self::chunk16`].
    ///
    /// # Safety
    /// AVX-512F; the 32 values readable; `e` a multiple of 32.
    #[inline(always)]
    unsafe fn chunk32(base: *const Self, e: usize) -> [__m512; 2] {
        // SAFETY: per the contract.
        unsafe { [Self::chunk16(base, e, 0xFFFF), Self::chunk16(base, e + 16, 0xFFFF)] }
    }
}

impl Run for f32 {
    const VALUES: usize = 1;

    #[inline(always)]
    unsafe fn chunk16(base: *const f32, e: usize, m: __mmask16) -> __m512 {
        // SAFETY: per the contract.
        unsafe { _mm512_maskz_loadu_ps(m, base.add(e)) }
    }
}

impl Run for half::f16 {
    const VALUES: usize = 1;

    #[inline(always)]
    unsafe fn chunk16(base: *const half::f16, e: usize, m: __mmask16) -> __m512 {
        debug_assert_eq!(m, 0xFFFF);
        // SAFETY: per the contract (a full chunk).
        unsafe { <half::f16 as Lanes>::load16(base.add(e)) }
    }
}

/// A block's scale in every lane (`vcvtph2ps`: exact, as `f16::to_f32`).
#[inline(always)]
unsafe fn scale16(d: half::f16) -> __m512 {
    // SAFETY: AVX-512F per the caller's contract.
    unsafe { _mm512_cvtph_ps(_mm256_set1_epi16(d.to_bits() as i16)) }
}

impl Run for BlockQ8_0 {
    const VALUES: usize = 32;

    #[inline(always)]
    unsafe fn chunk16(base: *const BlockQ8_0, e: usize, m: __mmask16) -> __m512 {
        debug_assert!(m == 0xFFFF && e % 16 == 0);
        // SAFETY: per the contract: the block holding value e is in the run.
        unsafe { Self::chunk32(base, e - e % 32)[(e % 32) / 16] }
    }

    /// `(quant as f32) · d`, one f32 multiply as in the block's `dequantize`.
    #[inline(always)]
    unsafe fn chunk32(base: *const BlockQ8_0, e: usize) -> [__m512; 2] {
        debug_assert!(e % 32 == 0);
        // SAFETY: per the contract: block e / 32 is in the run.
        unsafe {
            let b = base.add(e / 32);
            let qs = core::ptr::addr_of!((*b).qs).cast::<__m128i>();
            let d = scale16((*b).d);
            core::array::from_fn(|h| {
                let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(qs.add(h)));
                _mm512_mul_ps(_mm512_cvtepi32_ps(q), d)
            })
        }
    }
}

impl Run for BlockQ4_0 {
    const VALUES: usize = 32;

    #[inline(always)]
    unsafe fn chunk16(base: *const BlockQ4_0, e: usize, m: __mmask16) -> __m512 {
        debug_assert!(m == 0xFFFF && e % 16 == 0);
        // SAFETY: per the contract: the block holding value e is in the run.
        unsafe { Self::chunk32(base, e - e % 32)[(e % 32) / 16] }
    }

    /// `(nibble − 8) as f32 · d`, one f32 multiply as in the block's `dequantize` (low
    /// nibbles are values 0..16, high ones 16..32).
    #[inline(always)]
    unsafe fn chunk32(base: *const BlockQ4_0, e: usize) -> [__m512; 2] {
        debug_assert!(e % 32 == 0);
        // SAFETY: per the contract: block e / 32 is in the run, its 16 bytes inside it.
        unsafe {
            let b = base.add(e / 32);
            let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(core::ptr::addr_of!((*b).qs).cast()));
            let (d, eight) = (scale16((*b).d), _mm512_set1_epi32(8));
            let lo = _mm512_sub_epi32(_mm512_and_si512(q, _mm512_set1_epi32(0x0F)), eight);
            let hi = _mm512_sub_epi32(_mm512_srli_epi32::<4>(q), eight);
            [_mm512_mul_ps(_mm512_cvtepi32_ps(lo), d), _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d)]
        }
    }
}

// ------------------------------------------------------------------------------------------
// AVX2

/// A lane mask of the first `len` (< 8) lanes for `_mm256_maskload_ps`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tail_mask8(len: usize) -> __m256i {
    // SAFETY: the caller guarantees AVX2; no memory is touched.
    // Intrinsics are safe here on newer compilers, unsafe on older (rust-version).
    #[allow(unused_unsafe)]
    unsafe {
        debug_assert!(len < 8);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), lanes)
    }
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum8(v: __m256) -> f32 {
    // SAFETY: the caller guarantees AVX2; no memory is touched.
    // Intrinsics are safe here on newer compilers, unsafe on older (rust-version).
    #[allow(unused_unsafe)]
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// See [`super::scalar::scores`].
///
/// # Safety
/// The CPU has AVX2 and FMA; `q.len() ≥ rows·hd` for the rows implied by `out.len() / n`,
/// `keys.len() ≥ n·hd`, `out.len()` a multiple of `n`, `n ≥ 1`, `hd ≥ 1`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn scores_avx2(
    q: &[f32],
    keys: &[f32],
    hd: usize,
    n: usize,
    scale: f32,
    out: &mut [f32],
) {
    // SAFETY: the caller guarantees the target features and the slice shapes
    // documented above; individual pointer offsets are justified inline.
    unsafe {
        let rows = out.len() / n;
        debug_assert!(q.len() >= rows * hd && keys.len() >= n * hd);
        let full = hd / 8 * 8;
        let mask = tail_mask8(hd - full);
        let kp = keys.as_ptr();
        for r in 0..rows {
            let qp = q.as_ptr().add(r * hd);
            let op = out.as_mut_ptr().add(r * n);
            let mut j = 0;
            // SAFETY (whole loop): every pointer offset stays below `rows·hd` (q), `n·hd` (keys)
            // and `rows·n` (out), which the caller guarantees; the tail uses masked loads.
            while j + 4 <= n {
                let k0 = kp.add(j * hd);
                let (k1, k2, k3) = (k0.add(hd), k0.add(2 * hd), k0.add(3 * hd));
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                let mut d = 0;
                while d < full {
                    let qv = _mm256_loadu_ps(qp.add(d));
                    a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0.add(d)), a0);
                    a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1.add(d)), a1);
                    a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2.add(d)), a2);
                    a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3.add(d)), a3);
                    d += 8;
                }
                if full < hd {
                    let qv = _mm256_maskload_ps(qp.add(d), mask);
                    a0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k0.add(d), mask), a0);
                    a1 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k1.add(d), mask), a1);
                    a2 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k2.add(d), mask), a2);
                    a3 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k3.add(d), mask), a3);
                }
                // Four horizontal sums at once: lanes of the result are (Σa0, Σa1, Σa2, Σa3).
                let h01 = _mm256_hadd_ps(a0, a1);
                let h23 = _mm256_hadd_ps(a2, a3);
                let h = _mm256_hadd_ps(h01, h23);
                let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                _mm_storeu_ps(op.add(j), _mm_mul_ps(s, _mm_set1_ps(scale)));
                j += 4;
            }
            while j < n {
                let k0 = kp.add(j * hd);
                let mut a0 = _mm256_setzero_ps();
                let mut d = 0;
                while d < full {
                    a0 =
                        _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(d)), _mm256_loadu_ps(k0.add(d)), a0);
                    d += 8;
                }
                if full < hd {
                    let qv = _mm256_maskload_ps(qp.add(d), mask);
                    a0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k0.add(d), mask), a0);
                }
                // The four-key path's order (pairs, then quads, then the halves), so that a
                // score does not depend on the path that computed it (batch invariance).
                let h = _mm256_hadd_ps(a0, a0);
                let h = _mm256_hadd_ps(h, h);
                let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                *op.add(j) = scale * _mm_cvtss_f32(s);
                j += 1;
            }
        }
    }
}

/// See [`super::scalar::accumulate`].
///
/// # Safety
/// The CPU has AVX2 and FMA; `acc.len()` a multiple of `hd`, `p.len() ≥ rows·n` for
/// `rows = acc.len() / hd`, `values.len() ≥ n·hd`, `hd ≥ 1`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn accumulate_avx2(
    acc: &mut [f32],
    p: &[f32],
    values: &[f32],
    hd: usize,
    n: usize,
) {
    // SAFETY: the caller guarantees the target features and the slice shapes
    // documented above; individual pointer offsets are justified inline.
    unsafe {
        let rows = acc.len() / hd;
        debug_assert!(p.len() >= rows * n && values.len() >= n * hd);
        let vp = values.as_ptr();
        for r in 0..rows {
            let ap = acc.as_mut_ptr().add(r * hd);
            let pr = p.as_ptr().add(r * n);
            // SAFETY (whole loop): offsets stay below `rows·hd` (acc), `rows·n` (p) and `n·hd`
            // (values) per the caller's contract; the `hd % 8` tail is masked.
            let mut d = 0;
            while d + 32 <= hd {
                let mut a0 = _mm256_loadu_ps(ap.add(d));
                let mut a1 = _mm256_loadu_ps(ap.add(d + 8));
                let mut a2 = _mm256_loadu_ps(ap.add(d + 16));
                let mut a3 = _mm256_loadu_ps(ap.add(d + 24));
                for j in 0..n {
                    let w = _mm256_set1_ps(*pr.add(j));
                    let v = vp.add(j * hd + d);
                    a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), a0);
                    a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(8)), a1);
                    a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(16)), a2);
                    a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(24)), a3);
                }
                _mm256_storeu_ps(ap.add(d), a0);
                _mm256_storeu_ps(ap.add(d + 8), a1);
                _mm256_storeu_ps(ap.add(d + 16), a2);
                _mm256_storeu_ps(ap.add(d + 24), a3);
                d += 32;
            }
            while d < hd {
                let len = (hd - d).min(8);
                let mask = if len == 8 { _mm256_set1_epi32(-1) } else { tail_mask8(len) };
                let mut a0 = _mm256_maskload_ps(ap.add(d), mask);
                for j in 0..n {
                    let w = _mm256_set1_ps(*pr.add(j));
                    a0 = _mm256_fmadd_ps(w, _mm256_maskload_ps(vp.add(j * hd + d), mask), a0);
                }
                _mm256_maskstore_ps(ap.add(d), mask, a0);
                d += len;
            }
        }
    }
}

/// Widens `src` (IEEE binary16 bits) into `dst`, `dst.len() == src.len()`.
///
/// # Safety
/// The CPU has AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn widen_f16_avx2(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: the caller guarantees the target features and the slice shapes
    // documented above; individual pointer offsets are justified inline.
    unsafe {
        let len = src.len().min(dst.len());
        let sp = src.as_ptr().cast::<u16>();
        let dp = dst.as_mut_ptr();
        let mut i = 0;
        // SAFETY: `i + 8 ≤ len` bounds every 8-element load and store; `f16` is
        // `repr(transparent)` over `u16`.
        while i + 8 <= len {
            let h = _mm_loadu_si128(sp.add(i).cast());
            _mm256_storeu_ps(dp.add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for (d, s) in dst[i..len].iter_mut().zip(&src[i..len]) {
            *d = s.to_f32();
        }
    }
}

// ------------------------------------------------------------------------------------------
// AVX-512

/// The first `len` (≤ 16) lanes.
#[inline]
fn mask16(len: usize) -> __mmask16 {
    debug_assert!(len <= 16);
    ((1u32 << len) - 1) as __mmask16
}

/// See [`super::scalar::scores`].
///
/// Every key's score is the same bits whichever path computes it: sixteen lanes of partial
/// products over `d mod 16` (one FMA chain per lane, in `d` order), summed by the tree of
/// `_mm512_reduce_add_ps` (halves, quarters, pairs, singles), then times `scale`. Keys go
/// eight at a time for up to three rows at once ([`scores_rows_x8`]: each key chunk loaded
/// once for three rows, four keys' 12 chains at a time), the last `n mod 8` keys four or one
/// at a time per row.
///
/// # Safety
/// The CPU has AVX-512F; shapes as for [`scores_avx2`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn scores_avx512<T: Run>(
    q: &[f32],
    keys: &[T],
    hd: usize,
    n: usize,
    scale: f32,
    out: &mut [f32],
) {
    // SAFETY: the caller guarantees the target features and the slice shapes
    // documented above; individual pointer offsets are justified inline.
    unsafe {
        let rows = out.len() / n;
        debug_assert!(q.len() >= rows * hd && keys.len() * T::VALUES >= n * hd);
        let kp = keys.as_ptr();
        let (qp, op) = (q.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole function): row r < rows, keys j..j + 8 ≤ n; offsets stay below
        // `rows·hd` (q), `n·hd` (keys) and `rows·n` (out).
        let full = n / 8 * 8;
        let mut j = 0;
        while j < full {
            let mut r = 0;
            while r + 3 <= rows {
                scores_rows_x8::<3, T>(qp.add(r * hd), kp, j * hd, hd, op.add(r * n + j), n, scale);
                r += 3;
            }
            match rows - r {
                2 => scores_rows_x8::<2, T>(
                    qp.add(r * hd),
                    kp,
                    j * hd,
                    hd,
                    op.add(r * n + j),
                    n,
                    scale,
                ),
                1 => scores_rows_x8::<1, T>(
                    qp.add(r * hd),
                    kp,
                    j * hd,
                    hd,
                    op.add(r * n + j),
                    n,
                    scale,
                ),
                _ => {}
            }
            j += 8;
        }
        if full == n {
            return;
        }
        for r in 0..rows {
            let qp = qp.add(r * hd);
            let op = op.add(r * n);
            let mut j = full;
            while j + 4 <= n {
                let k0 = j * hd;
                let (k1, k2, k3) = (k0 + hd, k0 + 2 * hd, k0 + 3 * hd);
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                );
                let mut d = 0;
                while d < hd {
                    let m = mask16((hd - d).min(16));
                    let qv = _mm512_maskz_loadu_ps(m, qp.add(d));
                    a0 = _mm512_fmadd_ps(qv, T::chunk16(kp, k0 + d, m), a0);
                    a1 = _mm512_fmadd_ps(qv, T::chunk16(kp, k1 + d, m), a1);
                    a2 = _mm512_fmadd_ps(qv, T::chunk16(kp, k2 + d, m), a2);
                    a3 = _mm512_fmadd_ps(qv, T::chunk16(kp, k3 + d, m), a3);
                    d += 16;
                }
                *op.add(j) = scale * _mm512_reduce_add_ps(a0);
                *op.add(j + 1) = scale * _mm512_reduce_add_ps(a1);
                *op.add(j + 2) = scale * _mm512_reduce_add_ps(a2);
                *op.add(j + 3) = scale * _mm512_reduce_add_ps(a3);
                j += 4;
            }
            while j < n {
                let k0 = j * hd;
                let mut a0 = _mm512_setzero_ps();
                let mut d = 0;
                while d < hd {
                    let m = mask16((hd - d).min(16));
                    let qv = _mm512_maskz_loadu_ps(m, qp.add(d));
                    a0 = _mm512_fmadd_ps(qv, T::chunk16(kp, k0 + d, m), a0);
                    d += 16;
                }
                *op.add(j) = scale * _mm512_reduce_add_ps(a0);
                j += 1;
            }
        }
    }
}

/// The scores of `R` (1..=3) rows against eight keys: `out[r·stride + k] = scale · (q[r] ·
/// key k)` for rows `q + r·hd` and keys at values `k0 + k·hd` of the run `k`. Each key chunk is loaded once for the `R`
/// rows, four keys at a time: `4·R` accumulators (12 at most), `R` query chunks and four key
/// chunks stay in the 32 registers. (Eight keys' 24 accumulators at once spilled to the
/// stack in every step: decode at depth 4096 took 7.5 ms instead of 6.3 per 30 layers.)
///
/// # Safety
/// AVX-512F; `q` holds `R·hd` floats, the run `k` values `k0 .. k0 + 8·hd` (`hd` a
/// multiple of 16 unless `T` is f32), `out` row `r` has 8 writable floats at
/// `out + r·stride`.
#[inline]
#[allow(clippy::needless_range_loop)] // register tiles, indexed as in the docs
#[target_feature(enable = "avx512f")]
unsafe fn scores_rows_x8<const R: usize, T: Run>(
    q: *const f32,
    k: *const T,
    k0: usize,
    hd: usize,
    out: *mut f32,
    stride: usize,
    scale: f32,
) {
    // SAFETY: per the contract; partial chunks are masked loads.
    unsafe {
        // Four keys at a time, each half reduced as soon as its chains end.
        let mut sums = [[_mm512_setzero_ps(); 2]; R];
        for half in 0..2 {
            let mut a = [[_mm512_setzero_ps(); 4]; R];
            let k0 = k0 + 4 * half * hd;
            let mut d = 0;
            // Block formats a block at a time (its scale converted once per key); the same
            // FMAs in the same order.
            while T::VALUES == 32 && d < hd {
                let qv: [[__m512; 2]; R] = core::array::from_fn(|r| {
                    core::array::from_fn(|h| _mm512_loadu_ps(q.add(r * hd + d + 16 * h)))
                });
                for key in 0..4 {
                    let kv = T::chunk32(k, k0 + key * hd + d);
                    for h in 0..2 {
                        for r in 0..R {
                            a[r][key] = _mm512_fmadd_ps(qv[r][h], kv[h], a[r][key]);
                        }
                    }
                }
                d += 32;
            }
            while d < hd {
                let m = mask16((hd - d).min(16));
                let qv: [__m512; R] =
                    core::array::from_fn(|r| _mm512_maskz_loadu_ps(m, q.add(r * hd + d)));
                for key in 0..4 {
                    let kv = T::chunk16(k, k0 + key * hd + d, m);
                    for r in 0..R {
                        a[r][key] = _mm512_fmadd_ps(qv[r], kv, a[r][key]);
                    }
                }
                d += 16;
            }
            for r in 0..R {
                sums[r][half] = reduce4(&a[r]);
            }
        }
        let vscale = _mm512_set1_ps(scale);
        for (r, s) in sums.iter().enumerate() {
            // Keys 0..4 from the first half's lanes 0..4, keys 4..8 from the second's.
            let idx = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 0, 0, 0, 0, 0, 0, 0, 0);
            let both = _mm512_permutex2var_ps(s[0], idx, s[1]);
            _mm512_mask_storeu_ps(out.add(r * stride), 0xFF, _mm512_mul_ps(vscale, both));
        }
    }
}

/// Lanes `0..4` of the result are `Σ_lanes a[k]` for the four vectors `a`, each in
/// `_mm512_reduce_add_ps`'s order: one tree for all four that halves the lanes per vector
/// while merging vectors (256-bit halves, 128-bit lanes, pairs, single floats), then one
/// permutation into key order. Lanes `4..16` are unspecified.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn reduce4(a: &[__m512; 4]) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F; no memory is touched.
    #[allow(unused_unsafe)]
    unsafe {
        // c[k]: lanes 0..8 = key 2k's partials l + (l + 8), lanes 8..16 = key 2k+1's.
        let c: [__m512; 2] = core::array::from_fn(|k| {
            let (x, y) = (a[2 * k], a[2 * k + 1]);
            _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(x, y), _mm512_shuffle_f32x4::<0xEE>(x, y))
        });
        // d: 128-bit lane i = key i's four partials.
        let (x, y) = (c[0], c[1]);
        let d =
            _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(x, y), _mm512_shuffle_f32x4::<0xDD>(x, y));
        // e: in 128-bit lane i, floats 0,1 = key i's pairs.
        let e = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(d, d), _mm512_shuffle_ps::<0xEE>(d, d));
        // f: in 128-bit lane i, float 0 = key i.
        let f = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(e, e), _mm512_shuffle_ps::<0xDD>(e, e));
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_permutexvar_ps(idx, f)
    }
}

/// See [`super::scalar::accumulate`].
///
/// Each output float is one FMA chain over the keys in order, `acc = fma(p[r][j], v[j][d],
/// acc)` (zero weights included), whatever the blocking: columns go 64 at a time (then one
/// masked chunk of 16 at a time), rows six at a time ([`accumulate_rows`]), so each value
/// chunk loaded serves six rows.
///
/// # Safety
/// The CPU has AVX-512F; shapes as for [`accumulate_avx2`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn accumulate_avx512(
    acc: &mut [f32],
    p: &[f32],
    values: &[f32],
    hd: usize,
    n: usize,
) {
    // SAFETY: the caller's contract is this one's with `p[r][j]` at `r·n + j`.
    unsafe { accumulate_strided_avx512(acc, p, n, 1, values, hd, n) }
}

/// [`accumulate_avx512`] with the weight of row `r` and key `j` at `p[r·rs + j·ks]`.
///
/// # Safety
/// The CPU has AVX-512F; `acc.len()` a multiple of `hd`, every `r·rs + j·ks` (r < rows,
/// j < n) inside `p`, `values.len() ≥ n·hd`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn accumulate_strided_avx512<T: Run>(
    acc: &mut [f32],
    p: &[f32],
    rs: usize,
    ks: usize,
    values: &[T],
    hd: usize,
    n: usize,
) {
    // SAFETY: the caller guarantees the target features and the slice shapes
    // documented above: rows r < acc.len() / hd, columns d < hd, keys j < n.
    unsafe {
        let rows = acc.len() / hd;
        debug_assert!(rows == 0 || n == 0 || p.len() > (rows - 1) * rs + (n - 1) * ks);
        debug_assert!(values.len() * T::VALUES >= n * hd);
        let (ap, pp, vp) = (acc.as_mut_ptr(), p.as_ptr(), values.as_ptr());
        let mut d = 0;
        while d < hd {
            let chunks = if hd - d >= 64 { 4 } else { 1 };
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(6);
                let (a, pr) = (ap.add(r * hd + d), pp.add(r * rs));
                let m = mask16((hd - d).min(16));
                match (chunks, take) {
                    (4, 6) => accumulate_rows::<6, 4, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (4, 5) => accumulate_rows::<5, 4, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (4, 4) => accumulate_rows::<4, 4, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (4, 3) => accumulate_rows::<3, 4, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (4, 2) => accumulate_rows::<2, 4, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (4, _) => accumulate_rows::<1, 4, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (_, 6) => accumulate_rows::<6, 1, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (_, 5) => accumulate_rows::<5, 1, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (_, 4) => accumulate_rows::<4, 1, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (_, 3) => accumulate_rows::<3, 1, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    (_, 2) => accumulate_rows::<2, 1, T>(a, pr, rs, ks, vp, d, hd, n, m),
                    _ => accumulate_rows::<1, 1, T>(a, pr, rs, ks, vp, d, hd, n, m),
                }
                r += take;
            }
            d += 16 * chunks;
        }
    }
}

/// `acc[r][c] += Σ_j p[r][j] · v[j][c]` for `R` rows and `C` chunks of 16 columns from
/// column `d`: row `r`'s outputs at `acc + r·hd`, its weights at `p + r·rs + j·ks`, key `j`'s
/// values at values `j·hd + d ..` of the run `v`. With
/// `C = 1` the chunk is `mask`'s lanes; with `C = 4` all 64 columns.
///
/// # Safety
/// AVX-512F; the pointers hold those rows, weights and values.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // register tiles
unsafe fn accumulate_rows<const R: usize, const C: usize, T: Run>(
    acc: *mut f32,
    p: *const f32,
    rs: usize,
    ks: usize,
    v: *const T,
    d: usize,
    hd: usize,
    n: usize,
    mask: __mmask16,
) {
    // SAFETY: per the contract; with C = 1 every access is masked to the chunk.
    unsafe {
        let m = if C == 1 { mask } else { 0xFFFF };
        let mut a: [[__m512; C]; R] = core::array::from_fn(|r| {
            core::array::from_fn(|c| _mm512_maskz_loadu_ps(m, acc.add(r * hd + 16 * c)))
        });
        for j in 0..n {
            let vj: [__m512; C] = if T::VALUES == 32 && C == 4 {
                // Two blocks, each scale converted once; the same values.
                let (b0, b1) = (T::chunk32(v, j * hd + d), T::chunk32(v, j * hd + d + 32));
                core::array::from_fn(|c| if c < 2 { b0[c] } else { b1[c - 2] })
            } else {
                core::array::from_fn(|c| T::chunk16(v, j * hd + d + 16 * c, m))
            };
            for r in 0..R {
                let w = _mm512_set1_ps(*p.add(r * rs + j * ks));
                for c in 0..C {
                    a[r][c] = _mm512_fmadd_ps(w, vj[c], a[r][c]);
                }
            }
        }
        for (r, a) in a.iter().enumerate() {
            for (c, a) in a.iter().enumerate() {
                _mm512_mask_storeu_ps(acc.add(r * hd + 16 * c), m, *a);
            }
        }
    }
}

/// Widens `src` (IEEE binary16) into `dst`, `dst.len() == src.len()`.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn widen_f16_avx512(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: the caller guarantees the target features and the slice shapes
    // documented above; individual pointer offsets are justified inline.
    unsafe {
        let len = src.len().min(dst.len());
        let sp = src.as_ptr().cast::<u16>();
        let dp = dst.as_mut_ptr();
        let mut i = 0;
        // SAFETY: `i + 16 ≤ len` bounds every load and store; `f16` is `repr(transparent)`
        // over `u16`.
        while i + 16 <= len {
            let h = _mm256_loadu_si256(sp.add(i).cast());
            _mm512_storeu_ps(dp.add(i), _mm512_cvtph_ps(h));
            i += 16;
        }
        for (d, s) in dst[i..len].iter_mut().zip(&src[i..len]) {
            *d = s.to_f32();
        }
    }
}

/// Widens `src` (bfloat16: the top half of an f32) into `dst`, `dst.len() == src.len()`.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn widen_bf16_avx512(src: &[half::bf16], dst: &mut [f32]) {
    let len = src.len().min(dst.len());
    let sp = src.as_ptr().cast::<u16>();
    let dp = dst.as_mut_ptr();
    let mut i = 0;
    // SAFETY: `i + 16 ≤ len` bounds every load and store; `bf16` is `repr(transparent)`
    // over `u16`; AVX-512F per the contract.
    unsafe {
        while i + 16 <= len {
            let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(sp.add(i).cast()));
            _mm512_storeu_ps(dp.add(i), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h)));
            i += 16;
        }
    }
    for (d, s) in dst[i..len].iter_mut().zip(&src[i..len]) {
        *d = s.to_f32();
    }
}

// ------------------------------------------------------------------------------------------
// exp (Cephes `expf`: range reduction by ln 2 in two parts, degree-6 polynomial, 2^n by
// exponent bits; ≤ 2 ulp on the range softmax uses, arguments ≤ 0).

const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_55;
const LOG2E: f32 = core::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_P: [f32; 6] =
    [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// `p[j] = exp(p[j] - max)` for all `j`; returns `Σ p[j]`. Arguments below −87.3 give 0.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp_sum_avx512(p: &mut [f32], max: f32) -> f32 {
    // SAFETY: every access is a masked 16-lane load/store of `p[j..j + len]` with
    // `j + len ≤ p.len()`.
    unsafe {
        let mut sum = _mm512_setzero_ps();
        let mut j = 0;
        while j < p.len() {
            let m = mask16((p.len() - j).min(16));
            let ptr = p.as_mut_ptr().add(j);
            let e = exp16(_mm512_maskz_loadu_ps(m, ptr), max);
            _mm512_mask_storeu_ps(ptr, m, e);
            sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
            j += 16;
        }
        _mm512_reduce_add_ps(sum)
    }
}

/// `exp(x - max)` per lane (Cephes, as [`exp_sum_avx512`]); arguments below −87.3 give 0.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp16(x: __m512, max: f32) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F; no memory is touched.
    unsafe { expv(_mm512_sub_ps(x, _mm512_set1_ps(max))) }
}

/// `exp(x)` per lane: Cephes `expf` (range reduction by ln 2 in two parts, degree-6
/// polynomial, 2^n by exponent bits); arguments below −87.3 (and −inf) give 0.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn expv(x: __m512) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F; no memory is touched.
    #[allow(unused_unsafe)]
    unsafe {
        let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_LO));
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut y = _mm512_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
        }
        let y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        let e = _mm512_mul_ps(y, _mm512_castsi512_ps(bits));
        _mm512_maskz_mov_ps(!under, e)
    }
}

/// `exp(x)` of one float, [`expv`]'s bits: the AVX-512 level's online-softmax rescale
/// factor, so that a row's factor does not depend on which path ([`softmax_page_avx512`],
/// [`page_rows_in_lanes`] or the per-row loop) computed it.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp1_avx512(x: f32) -> f32 {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe { _mm512_cvtss_f32(expv(_mm512_set1_ps(x))) }
}

/// One page's online-softmax step for rows that all see every one of the page's `n ≤ 16`
/// scores (`p` is `rows × n`): per row, the page max `b = max_j p[j]`; if `b > max`, the row's
/// sum and outputs are rescaled by `exp(max − b)` ([`exp1_avx512`]) and `max = b`; then `p[j] =
/// exp(p[j] − max)` and `sum += Σ_j p[j]`. The same bits as the per-row loop in `task.rs`
/// with [`exp_sum_avx512`], rows in one loop so that their exponentials overlap.
///
/// # Safety
/// The CPU has AVX-512F; `1 ≤ n ≤ 16`, `p.len() = rows·n`, `max.len() = sum.len() = rows`,
/// `acc.len() = rows·hd`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax_page_avx512(
    p: &mut [f32],
    n: usize,
    max: &mut [f32],
    sum: &mut [f32],
    acc: &mut [f32],
    hd: usize,
) {
    // SAFETY: per the contract, row r < rows: p[r·n .. r·n + n] (masked to n lanes) and
    // acc[r·hd .. (r + 1)·hd] are in bounds.
    unsafe {
        debug_assert!((1..=16).contains(&n) && p.len() == max.len() * n);
        let m = mask16(n);
        for (r, (max, sum)) in max.iter_mut().zip(sum.iter_mut()).enumerate() {
            let ptr = p.as_mut_ptr().add(r * n);
            let x = _mm512_maskz_loadu_ps(m, ptr);
            let block_max = _mm512_mask_reduce_max_ps(m, x);
            if block_max > *max {
                // exp(-inf) = 0 on the row's first page: nothing summed yet to rescale.
                let c = exp1_avx512(*max - block_max);
                *sum *= c;
                acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= c);
                *max = block_max;
            }
            let e = exp16(x, *max);
            _mm512_mask_storeu_ps(ptr, m, e);
            *sum += _mm512_reduce_add_ps(_mm512_maskz_mov_ps(m, e));
        }
    }
}

/// One full page (16 keys) for 16 query rows held in lanes, every row seeing every key:
/// scores, the online-softmax step and the probabilities, with the bits of the per-row
/// path ([`scores_avx512`], then [`softmax_page_avx512`]).
///
/// - Score of key `k`: sixteen FMA chains over `d ≡ l (mod 16)` in `d` order, summed by
///   `_mm512_reduce_add_ps`'s tree over `l` (`((l0+l8)+(l4+l12))+((l2+l10)+(l6+l14))`, then
///   the odd half, then the two halves), times `scale`: the same adds as `scores_avx512`,
///   here between vectors whose lanes are rows.
/// - Per row: `b = max_k s[k]`; where `b > max`, `c = exp(max − b)` ([`expv`]), `sum ·= c`,
///   `max = b`; `p[k] = exp(s[k] − max)` and `sum += Σ_k p[k]` by the same tree over keys.
///
/// `qt` holds the queries transposed, `qt[d·16 + lane]`; `keys` the page's 16 keys of `hd`
/// floats. Rows are `lanes`' lanes: `max`, `sum` (16 floats, read and written in those
/// lanes), `c` (16 floats written: the factor, 1 where none) and `p[k·ks + lane]` (written).
///
/// # Safety
/// AVX-512F; `hd` a multiple of 16; `qt` holds `16·hd` floats, `keys` `16·hd`; `max`, `sum`,
/// `c` 16 floats (only `lanes`' read or written for `max`, `sum`); `p` row `k·ks` 16 floats.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn page_rows_in_lanes(
    qt: *const f32,
    keys: *const f32,
    hd: usize,
    scale: f32,
    lanes: __mmask16,
    max: *mut f32,
    sum: *mut f32,
    c: *mut f32,
    p: *mut f32,
    ks: usize,
) {
    // SAFETY: per the contract.
    unsafe {
        let vscale = _mm512_set1_ps(scale);
        let mut s = [_mm512_setzero_ps(); 16];
        for kb in 0..4 {
            let k = keys.add(4 * kb * hd);
            let lo = |l| leaf4(qt, k, hd, l);
            let e0 = add4(
                add4(add4(lo(0), lo(8)), add4(lo(4), lo(12))),
                add4(add4(lo(2), lo(10)), add4(lo(6), lo(14))),
            );
            let e1 = add4(
                add4(add4(lo(1), lo(9)), add4(lo(5), lo(13))),
                add4(add4(lo(3), lo(11)), add4(lo(7), lo(15))),
            );
            let f = add4(e0, e1);
            for i in 0..4 {
                s[4 * kb + i] = _mm512_mul_ps(vscale, f[i]);
            }
        }
        let block_max = s.iter().skip(1).fold(s[0], |m, &x| _mm512_max_ps(m, x));
        let m_old = _mm512_maskz_loadu_ps(lanes, max);
        let sum_old = _mm512_maskz_loadu_ps(lanes, sum);
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(block_max, m_old);
        let cv = _mm512_mask_mov_ps(_mm512_set1_ps(1.0), gt, expv(_mm512_sub_ps(m_old, block_max)));
        let m = _mm512_mask_mov_ps(m_old, gt, block_max);
        let sum_old = _mm512_mask_mul_ps(sum_old, gt, sum_old, cv);
        let e: [__m512; 16] = core::array::from_fn(|k| expv(_mm512_sub_ps(s[k], m)));
        let t = |a: usize, b: usize| _mm512_add_ps(e[a], e[b]);
        let even =
            _mm512_add_ps(_mm512_add_ps(t(0, 8), t(4, 12)), _mm512_add_ps(t(2, 10), t(6, 14)));
        let odd =
            _mm512_add_ps(_mm512_add_ps(t(1, 9), t(5, 13)), _mm512_add_ps(t(3, 11), t(7, 15)));
        let page_sum = _mm512_add_ps(even, odd);
        _mm512_mask_storeu_ps(max, lanes, m);
        _mm512_mask_storeu_ps(sum, lanes, _mm512_add_ps(sum_old, page_sum));
        _mm512_storeu_ps(c, cv);
        for (k, e) in e.iter().enumerate() {
            _mm512_storeu_ps(p.add(k * ks), *e);
        }
    }
}

/// Partial dot products of lane `l` for four keys, rows in lanes: `a[i] = Σ_{d ≡ l mod 16}
/// qt[d]·k_i[d]`, one FMA chain in `d` order from zero.
///
/// # Safety
/// AVX-512F; `qt` holds `16·hd` floats, `k` four keys of `hd`; `l < 16`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn leaf4(qt: *const f32, k: *const f32, hd: usize, l: usize) -> [__m512; 4] {
    // SAFETY: per the contract, d < hd.
    unsafe {
        let mut a = [_mm512_setzero_ps(); 4];
        let mut d = l;
        while d < hd {
            let qv = _mm512_loadu_ps(qt.add(d * 16));
            for (i, a) in a.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(qv, _mm512_set1_ps(*k.add(i * hd + d)), *a);
            }
            d += 16;
        }
        a
    }
}

/// Lane-wise `x + y` of four vectors.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn add4(x: [__m512; 4], y: [__m512; 4]) -> [__m512; 4] {
    core::array::from_fn(|i| _mm512_add_ps(x[i], y[i]))
}

/// `p[j] = exp(p[j] - max)` for all `j`; returns `Σ p[j]`. Arguments below −87.3 give 0.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_sum_avx2(p: &mut [f32], max: f32) -> f32 {
    // SAFETY: every access is an 8-lane load/store of `p[j..j + 8]` with `j + 8 ≤ p.len()`,
    // or a masked one of `p[j..]` for the tail.
    unsafe {
        let mut sum = _mm256_setzero_ps();
        let mut j = 0;
        while j < p.len() {
            let len = (p.len() - j).min(8);
            let mask = if len == 8 { _mm256_set1_epi32(-1) } else { tail_mask8(len) };
            let ptr = p.as_mut_ptr().add(j);
            let x = _mm256_sub_ps(_mm256_maskload_ps(ptr, mask), _mm256_set1_ps(max));
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_LO));
            let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
            );
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut y = _mm256_set1_ps(EXP_P[0]);
            for &c in &EXP_P[1..] {
                y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
            }
            let y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0)));
            let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            let e = _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(bits)), keep);
            let e = _mm256_and_ps(e, _mm256_castsi256_ps(mask));
            _mm256_maskstore_ps(ptr, mask, e);
            sum = _mm256_add_ps(sum, e);
            j += 8;
        }
        hsum8(sum)
    }
}

// ------------------------------------------------------------------------------------------
// q8_0 and q4_0 pages: dequantized per page run, value = (quant as f32) · d, one f32 multiply
// as in the blocks' `dequantize` (the same bits).

/// `dst[32·b + i] = qs_b[i] · d_b` for every block of `src`; `dst.len() ≥ 32 · src.len()`.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dequant_q8_0_avx512(src: &[BlockQ8_0], dst: &mut [f32]) {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe { dequant_blocks_avx512(src, dst) }
}

/// `dst[32·b + i] = (nibble_i − 8) · d_b` (low nibbles are values 0..16, high ones 16..32)
/// for every block of `src`; `dst.len() ≥ 32 · src.len()`.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dequant_q4_0_avx512(src: &[BlockQ4_0], dst: &mut [f32]) {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe { dequant_blocks_avx512(src, dst) }
}

/// Every block of `src` through [`Run::chunk32`] (the in-place reads' arithmetic, so the
/// copy and the in-place reads are the same values by construction); `dst.len() ≥ 32 ·
/// src.len()`.
///
/// # Safety
/// The CPU has AVX-512F; `T` a block format (`T::VALUES == 32`).
#[target_feature(enable = "avx512f")]
unsafe fn dequant_blocks_avx512<T: Run>(src: &[T], dst: &mut [f32]) {
    assert!(T::VALUES == 32 && dst.len() >= 32 * src.len());
    // SAFETY: the caller guarantees AVX-512F; block i is inside `src`, its 32 outputs inside
    // `dst` (asserted above).
    unsafe {
        let dp = dst.as_mut_ptr();
        for i in 0..src.len() {
            let [lo, hi] = T::chunk32(src.as_ptr(), 32 * i);
            _mm512_storeu_ps(dp.add(32 * i), lo);
            _mm512_storeu_ps(dp.add(32 * i + 16), hi);
        }
    }
}

/// [`dequant_q8_0_avx512`] with AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dequant_q8_0_avx2(src: &[BlockQ8_0], dst: &mut [f32]) {
    assert!(dst.len() >= 32 * src.len());
    // SAFETY: the caller guarantees AVX2; each block's 32 quants are four 8-byte loads
    // inside the block, and its 32 outputs lie inside `dst` (asserted above).
    unsafe {
        let dp = dst.as_mut_ptr();
        for (i, b) in src.iter().enumerate() {
            let d = _mm256_set1_ps(b.d.to_f32());
            let qp = b.qs.as_ptr();
            for e in 0..4 {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(qp.add(8 * e).cast()));
                _mm256_storeu_ps(dp.add(32 * i + 8 * e), _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
            }
        }
    }
}

/// [`dequant_q4_0_avx512`] with AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dequant_q4_0_avx2(src: &[BlockQ4_0], dst: &mut [f32]) {
    assert!(dst.len() >= 32 * src.len());
    // SAFETY: the caller guarantees AVX2; each block's 16 bytes are two 8-byte loads inside
    // the block, and its 32 outputs lie inside `dst` (asserted above).
    unsafe {
        let dp = dst.as_mut_ptr();
        let (low, eight) = (_mm256_set1_epi32(0x0F), _mm256_set1_epi32(8));
        for (i, b) in src.iter().enumerate() {
            let d = _mm256_set1_ps(b.d.to_f32());
            for e in 0..2 {
                let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.qs.as_ptr().add(8 * e).cast()));
                let lo = _mm256_sub_epi32(_mm256_and_si256(q, low), eight);
                let hi = _mm256_sub_epi32(_mm256_srli_epi32::<4>(q), eight);
                let (l, h) = (dp.add(32 * i + 8 * e), dp.add(32 * i + 16 + 8 * e));
                _mm256_storeu_ps(l, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
                _mm256_storeu_ps(h, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's score is the same bits whichever path computed it: all sixteen keys at once
    /// (AVX-512's tree, AVX2's four-key path) or each alone (the one-key paths).
    #[test]
    fn a_score_does_not_depend_on_how_many_keys_share_the_call() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut unit = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for hd in [19usize, 64, 80] {
            let q: Vec<f32> = (0..7 * hd).map(|_| unit()).collect();
            let keys: Vec<f32> = (0..16 * hd).map(|_| unit()).collect();
            type Scores = unsafe fn(&[f32], &[f32], usize, usize, f32, &mut [f32]);
            let mut levels: Vec<(&str, Scores)> = Vec::new();
            if std::arch::is_x86_feature_detected!("avx512f") {
                levels.push(("avx512", scores_avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                levels.push(("avx2", scores_avx2));
            }
            // Every row blocking (1..=7 rows: blocks of three, two, one) and every key path
            // (8-key blocks, then 4 and 1 for the last 5 of 13 keys).
            for (name, scores) in levels {
                for (rows, n) in (1..=7).flat_map(|r| [(r, 16usize), (r, 13)]) {
                    let mut all = vec![0.0f32; rows * n];
                    // SAFETY: the level was detected above; shapes: rows × hd, n keys of hd.
                    unsafe { scores(&q[..rows * hd], &keys, hd, n, 0.125, &mut all) };
                    for r in 0..rows {
                        for k in 0..n {
                            let mut one = [0.0f32];
                            let key = &keys[k * hd..(k + 1) * hd];
                            let q = &q[r * hd..(r + 1) * hd];
                            // SAFETY: as above, one row and one key.
                            unsafe { scores(q, key, hd, 1, 0.125, &mut one) };
                            assert_eq!(
                                all[r * n + k].to_bits(),
                                one[0].to_bits(),
                                "{name} hd {hd} rows {rows} n {n}: row {r} key {k}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The 4-key tree sums each key's lanes in the order `_mm512_reduce_add_ps` does (halves,
    /// then quarters, pairs, singles), so a score does not depend on which path of
    /// `scores_avx512` computed it (8 keys, 4 keys or one): batch invariance needs that.
    #[test]
    fn reduce4_equals_reduce_add_per_key() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return; // nothing to compare on this CPU
        }
        let mut seed = 0x853C_49E6_748F_EA9Bu64;
        for _ in 0..200 {
            let lanes: [[f32; 16]; 4] = core::array::from_fn(|_| {
                core::array::from_fn(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e3
                })
            });
            // SAFETY: AVX-512F checked above; the loads read 16 floats of each array.
            unsafe {
                let a: [__m512; 4] = core::array::from_fn(|k| _mm512_loadu_ps(lanes[k].as_ptr()));
                let mut tree = [0.0f32; 16];
                _mm512_storeu_ps(tree.as_mut_ptr(), reduce4(&a));
                for k in 0..4 {
                    assert_eq!(tree[k].to_bits(), _mm512_reduce_add_ps(a[k]).to_bits(), "key {k}");
                }
            }
        }
    }
}
