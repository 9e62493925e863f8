//! The order of llama.cpp's tinyBLAS (llamafile's `sgemm.cpp`, b11312) for F16 and BF16
//! weights, which llama.cpp's x86 AVX-512 build runs for every such matmul of **2 tokens or
//! more** whose row count is a multiple of 4 and whose row length is a multiple of the
//! kernel's step (`llamafile_sgemm`; a single token, or another shape, takes `ggml_vec_dot`,
//! the table's `chunk`). Exact numerics follow it there
//! ([`crate::kernels::Kernels::matmul_multi_exact`]).
//!
//! Per (row, token) cell tinyBLAS keeps **one** 16-lane accumulator over the whole row (its
//! `gemm_bloc`: `Cv = madd(A, B, Cv)` per step), then `hsum` = GCC's `_mm512_reduce_add_ps`
//! ([`reduce16`]); the tiling over rows and tokens does not change a cell's order:
//!
//! ```text
//! F16  (tinyBLAS<16, __m512, __m512, fp16, fp16, float>), step 16:
//!      acc[l] = fma(f32(w[16s + l]), f32(x[16s + l]), acc[l])      (the product is exact)
//! BF16 (tinyBLAS<32, __m512, __m512bh, bf16, bf16, float>, AVX-512 BF16), step 32:
//!      acc[l] += w[32s + 2l + 1]·x[32s + 2l + 1];  acc[l] += w[32s + 2l]·x[32s + 2l]
//!      (`vdpbf16ps`: odd product first, each add rounded, subnormals flushed)
//! out = reduce16(acc)
//! ```
//!
//! The activations are those of `vec_dot` (f16 / bf16, rounded to nearest even).

use half::{bf16, f16};

use super::activations::Inputs;
use super::scalar::{flush, reduce16};

/// F16 columns per tinyBLAS step (`KN`).
pub(crate) const F16_STEP: usize = 16;
/// BF16 columns per tinyBLAS step (`KN`).
pub(crate) const BF16_STEP: usize = 32;
/// tinyBLAS takes a matmul only if its row count is a multiple of this.
pub(crate) const ROW_MULTIPLE: usize = 4;

/// One F16 cell (`w.len() == x.len()`, a multiple of [`F16_STEP`]); `x` holds f16 values.
#[inline(always)]
pub(crate) fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for (ws, xs) in w.chunks_exact(F16_STEP).zip(x.chunks_exact(F16_STEP)) {
        for (a, (w, x)) in acc.iter_mut().zip(ws.iter().zip(xs)) {
            // Products of two f16 values are exact in f32: one rounding, as the fma.
            *a += w.to_f32() * x;
        }
    }
    reduce16(&acc)
}

/// One BF16 cell (`w.len() == x.len()`, a multiple of [`BF16_STEP`]).
#[inline(always)]
pub(crate) fn dot_bf16(w: &[bf16], x: &[bf16]) -> f32 {
    let f = |v: bf16| flush(v.to_f32());
    let mut acc = [0.0f32; 16];
    for (ws, xs) in w.chunks_exact(BF16_STEP).zip(x.chunks_exact(BF16_STEP)) {
        for (l, a) in acc.iter_mut().enumerate() {
            let (o, e) = (2 * l + 1, 2 * l);
            *a = flush(flush(*a) + flush(f(ws[o]) * f(xs[o])));
            *a = flush(*a + flush(f(ws[e]) * f(xs[e])));
        }
    }
    reduce16(&acc)
}

/// Every F16 row of `w` against every token in the cell order above.
#[inline(always)]
fn f16_rows(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]) {
    let cols = row_bytes / 2;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[f16] = bytemuck::cast_slice(row);
        for (t, o) in outs.iter_mut().enumerate() {
            o[r] = dot_f16(row, &inputs.f16[t * cols..(t + 1) * cols]);
        }
    }
}

/// Every BF16 row of `w` against every token in the cell order above.
#[inline(always)]
fn bf16_rows(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]) {
    let cols = row_bytes / 2;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[bf16] = bytemuck::cast_slice(row);
        for (t, o) in outs.iter_mut().enumerate() {
            o[r] = dot_bf16(row, &inputs.bf16[t * cols..(t + 1) * cols]);
        }
    }
}

/// F16 weights in tinyBLAS's order, the scalar level (the specification).
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the row length is a multiple of
/// [`F16_STEP`].
pub(crate) unsafe fn f16_chunk(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    f16_rows(w, row_bytes, inputs, outs)
}

/// BF16 weights in tinyBLAS's order, the scalar level (the specification).
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the row length is a multiple of
/// [`BF16_STEP`].
pub(crate) unsafe fn bf16_chunk(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    bf16_rows(w, row_bytes, inputs, outs)
}

/// [`f16_chunk`] compiled for AVX2 (the 16 lanes are independent: the compiler vectorizes
/// them without reordering a lane's adds).
///
/// # Safety
/// [`f16_chunk`]'s contract; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_chunk_avx2(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    f16_rows(w, row_bytes, inputs, outs)
}

/// [`bf16_chunk`] at AVX2: the emulated `vdpbf16ps` adds on 16 lanes as two ymm.
///
/// # Safety
/// [`bf16_chunk`]'s contract; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bf16_chunk_avx2(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    use super::half_x86::{dpbf16_emulated16, lanes16};
    use core::arch::x86_64::_mm256_setzero_ps;
    let cols = row_bytes / 2;
    debug_assert_eq!(cols % BF16_STEP, 0);
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[bf16] = bytemuck::cast_slice(row);
        for (t, out) in outs.iter_mut().enumerate() {
            let xr = &inputs.bf16[t * cols..(t + 1) * cols];
            let mut a = [_mm256_setzero_ps(); 2];
            for i in (0..cols / BF16_STEP * BF16_STEP).step_by(BF16_STEP) {
                // SAFETY: i + 32 <= cols: 32 bf16 at i are in bounds of the row and of x;
                // AVX2 per this fn's contract.
                unsafe { dpbf16_emulated16(&mut a, row.as_ptr().add(i), xr.as_ptr().add(i)) };
            }
            // SAFETY: AVX per this fn's contract.
            out[r] = reduce16(&unsafe { lanes16(a) });
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use half::{bf16, f16};

    use super::super::activations::Inputs;
    use super::super::half_x86::{dpbf16_emulated, has_avx512_bf16};
    use super::{BF16_STEP, F16_STEP};

    /// Tokens per pass over a weight row.
    const TILE: usize = 4;

    /// A 16-lane accumulator's cell result.
    ///
    /// # Safety
    /// AVX-512 F enabled by the caller.
    #[inline(always)]
    unsafe fn cell(a: __m512) -> f32 {
        // SAFETY: register-only AVX-512 F / AVX operations, enabled per the contract.
        // [`reduce16`]'s tree in registers: halves, quarters, then (t0 + t2) + (t1 + t3).
        unsafe {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
            let t8 = _mm256_add_ps(_mm512_castps512_ps256(a), hi);
            let t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps::<1>(t8));
            let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
            _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps::<1>(t2, t2)))
        }
    }

    /// [`super::f16_chunk`] at AVX-512: one `vfmadd` accumulator per token.
    ///
    /// # Safety
    /// [`super::f16_chunk`]'s contract; the CPU has AVX-512 F and F16C.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(crate) unsafe fn f16_chunk_avx512(
        w: &[u8],
        row_bytes: usize,
        inputs: &Inputs<'_>,
        outs: &mut [&mut [f32]],
    ) {
        let cols = row_bytes / 2;
        debug_assert_eq!(cols % F16_STEP, 0);
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            let row: &[f16] = bytemuck::cast_slice(row);
            let mut t0 = 0;
            while t0 < outs.len() {
                let tn = (outs.len() - t0).min(TILE);
                let mut acc = [_mm512_setzero_ps(); TILE];
                for i in (0..cols / F16_STEP * F16_STEP).step_by(F16_STEP) {
                    // SAFETY: i + 16 <= cols: 16 f16 of the row and 16 floats of each
                    // token's x are in bounds; AVX-512 F/F16C per this fn's contract.
                    unsafe {
                        let wv = _mm512_cvtph_ps(_mm256_loadu_si256(row.as_ptr().add(i).cast()));
                        for (t, a) in acc.iter_mut().enumerate().take(tn) {
                            let xp = inputs.f16.as_ptr().add((t0 + t) * cols + i);
                            *a = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xp), *a);
                        }
                    }
                }
                for (t, &a) in acc.iter().enumerate().take(tn) {
                    // SAFETY: AVX-512 F per this fn's contract.
                    outs[t0 + t][r] = unsafe { cell(a) };
                }
                t0 += tn;
            }
        }
    }

    /// [`super::bf16_chunk`] at AVX-512: `vdpbf16ps` where the CPU has it, else the same
    /// rounded adds with subnormals flushed.
    ///
    /// # Safety
    /// [`super::bf16_chunk`]'s contract; the CPU has AVX-512 F/BW.
    pub(crate) unsafe fn bf16_chunk_avx512(
        w: &[u8],
        row_bytes: usize,
        inputs: &Inputs<'_>,
        outs: &mut [&mut [f32]],
    ) {
        if has_avx512_bf16() {
            // SAFETY: AVX-512 BF16 was just detected; the rest is this fn's contract.
            unsafe { bf16_dpbf16(w, row_bytes, inputs, outs) }
        } else {
            // SAFETY: this fn's contract.
            unsafe { bf16_emulated(w, row_bytes, inputs, outs) }
        }
    }

    /// # Safety
    /// [`super::bf16_chunk`]'s contract; the CPU has AVX-512 F/BW and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2")]
    unsafe fn bf16_dpbf16(
        w: &[u8],
        row_bytes: usize,
        inputs: &Inputs<'_>,
        outs: &mut [&mut [f32]],
    ) {
        let cols = row_bytes / 2;
        debug_assert_eq!(cols % BF16_STEP, 0);
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            let row: &[bf16] = bytemuck::cast_slice(row);
            let mut t0 = 0;
            while t0 < outs.len() {
                let tn = (outs.len() - t0).min(TILE);
                let mut acc = [_mm512_setzero_ps(); TILE];
                for i in (0..cols / BF16_STEP * BF16_STEP).step_by(BF16_STEP) {
                    // SAFETY: i + 32 <= cols: 32 bf16 (64 bytes) of the row and of each
                    // token's x are in bounds; AVX-512 F/BF16 per this fn's contract.
                    // `__m512bh` is 32 bf16 in a 512-bit register, the bits loaded.
                    unsafe {
                        let wv: __m512bh =
                            core::mem::transmute(_mm512_loadu_si512(row.as_ptr().add(i).cast()));
                        for (t, a) in acc.iter_mut().enumerate().take(tn) {
                            let xp = inputs.bf16.as_ptr().add((t0 + t) * cols + i);
                            let xv: __m512bh = core::mem::transmute(_mm512_loadu_si512(xp.cast()));
                            *a = _mm512_dpbf16_ps(*a, wv, xv);
                        }
                    }
                }
                for (t, &a) in acc.iter().enumerate().take(tn) {
                    // SAFETY: AVX-512 F per this fn's contract.
                    outs[t0 + t][r] = unsafe { cell(a) };
                }
                t0 += tn;
            }
        }
    }

    /// # Safety
    /// [`super::bf16_chunk`]'s contract; the CPU has AVX-512 F/BW.
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    unsafe fn bf16_emulated(
        w: &[u8],
        row_bytes: usize,
        inputs: &Inputs<'_>,
        outs: &mut [&mut [f32]],
    ) {
        let cols = row_bytes / 2;
        debug_assert_eq!(cols % BF16_STEP, 0);
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            let row: &[bf16] = bytemuck::cast_slice(row);
            for (t, out) in outs.iter_mut().enumerate() {
                let xr = &inputs.bf16[t * cols..(t + 1) * cols];
                let mut a = _mm512_setzero_ps();
                for i in (0..cols / BF16_STEP * BF16_STEP).step_by(BF16_STEP) {
                    // SAFETY: i + 32 <= cols: 32 bf16 (64 bytes) at i are in bounds of the
                    // row and of x; AVX-512 F/BW per this fn's contract.
                    unsafe {
                        let wv = _mm512_loadu_si512(row.as_ptr().add(i).cast());
                        let xv = _mm512_loadu_si512(xr.as_ptr().add(i).cast());
                        a = dpbf16_emulated(a, wv, xv);
                    }
                }
                // SAFETY: AVX-512 F per this fn's contract.
                out[r] = unsafe { cell(a) };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The emulation and `vdpbf16ps` (where the CPU has it) give the scalar rule's bits,
        /// with subnormal, underflowing and zero entries.
        #[test]
        fn bf16_kernels_equal_the_scalar_rule() {
            if !std::arch::is_x86_feature_detected!("avx512bw") {
                eprintln!("no AVX-512 BW: nothing to check");
                return;
            }
            let cols = 96;
            let mut s = 0x9E37_79B9_7F4A_7C15u64;
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let sign = (s >> 63) as u16 * 0x8000;
                let exp: u16 = match s % 5 {
                    0 => 0,
                    1 => 1 + (s >> 8) as u16 % 40,
                    _ => 100 + (s >> 8) as u16 % 50,
                };
                bf16::from_bits(sign | (exp << 7) | ((s >> 20) as u16 & 0x7F))
            };
            let w: Vec<bf16> = (0..8 * cols).map(|_| next()).collect();
            let x: Vec<bf16> = (0..5 * cols).map(|_| next()).collect();
            let inputs = Inputs {
                f32: &[],
                f16: &[],
                bf16: &x,
                q8_0: &[],
                q8_1: &[],
                q8k: &[],
                soa: super::super::super::activations::Acts {
                    nb: 0,
                    qs: &[],
                    d: &[],
                    k: &[],
                    kq: &[],
                },
            };
            let run = |f: unsafe fn(&[u8], usize, &Inputs<'_>, &mut [&mut [f32]])| {
                let mut out = [0.0f32; 5 * 8];
                let mut outs: Vec<&mut [f32]> = out.chunks_mut(8).collect();
                // SAFETY: whole rows of `cols` bf16, 5 tokens of `cols`; the features were
                // checked by the caller.
                unsafe { f(bytemuck::cast_slice(&w), 2 * cols, &inputs, &mut outs) };
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let want = run(super::super::bf16_chunk);
            assert_eq!(run(bf16_emulated), want, "emulated");
            assert_eq!(run(super::super::bf16_chunk_avx2), want, "AVX2 emulation");
            if has_avx512_bf16() {
                assert_eq!(run(bf16_dpbf16), want, "vdpbf16ps");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{bf16_chunk_avx512, f16_chunk_avx512};
