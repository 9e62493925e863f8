//! Run-time dispatch of the page kernels, and reading a page run as f32.
//!
//! [`PageOps`] is made once per attention call from a [`SimdLevel`] the CPU was checked to
//! have; each method matches on it and calls that level's kernel. The match is per page
//! (hundreds of FMAs), so it costs nothing measurable.

use core::any::TypeId;

use pagoda_core::kv::KvFormat;
#[cfg(target_arch = "x86_64")]
use pagoda_core::quant::{BlockQ4_0, BlockQ8_0};

use super::scalar;
use crate::kernels::SimdLevel;

/// A level this CPU runs, for the page kernels.
#[derive(Clone, Copy, Debug)]
pub(super) struct PageOps {
    level: SimdLevel,
}

impl PageOps {
    /// `level` if this CPU has it, else [`SimdLevel::Scalar`] (never an instruction the CPU
    /// lacks).
    pub(super) fn new(level: SimdLevel) -> Self {
        let level = if level.is_available() { level } else { SimdLevel::Scalar };
        PageOps { level }
    }

    /// `scores[r][j] = scale · (q[r] · keys[j])` for `rows = scores.len() / n` rows.
    /// Shapes: `q` ≥ `rows × hd`, `keys` ≥ `n × hd`, `n ≥ 1`.
    pub(super) fn scores(
        self,
        q: &[f32],
        keys: &[f32],
        hd: usize,
        n: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let rows = scores.len() / n;
        assert!(n >= 1 && hd >= 1 && q.len() >= rows * hd && keys.len() >= n * hd);
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX-512F (and more) at run time; shapes asserted above.
            SimdLevel::Avx512 => unsafe {
                super::x86::scores_avx512(q, keys, hd, n, scale, scores)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX2 + FMA at run time; shapes asserted above.
            SimdLevel::Avx2 => unsafe { super::x86::scores_avx2(q, keys, hd, n, scale, scores) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `new` checked NEON at run time; shapes asserted above.
            SimdLevel::Neon => unsafe { super::neon::scores_neon(q, keys, hd, n, scale, scores) },
            _ => scalar::scores(q, keys, hd, n, scale, scores),
        }
    }

    /// `acc[r] += Σ_j p[r][j] · values[j]` for `rows = acc.len() / hd` rows.
    /// Shapes: `p` ≥ `rows × n`, `values` ≥ `n × hd`.
    pub(super) fn accumulate(
        self,
        acc: &mut [f32],
        p: &[f32],
        values: &[f32],
        hd: usize,
        n: usize,
    ) {
        let rows = acc.len() / hd;
        assert!(hd >= 1 && acc.len() % hd == 0 && p.len() >= rows * n && values.len() >= n * hd);
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX-512F at run time; shapes asserted above.
            SimdLevel::Avx512 => unsafe { super::x86::accumulate_avx512(acc, p, values, hd, n) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX2 + FMA at run time; shapes asserted above.
            SimdLevel::Avx2 => unsafe { super::x86::accumulate_avx2(acc, p, values, hd, n) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `new` checked NEON at run time; shapes asserted above.
            SimdLevel::Neon => unsafe { super::neon::accumulate_neon(acc, p, values, hd, n) },
            _ => scalar::accumulate(acc, p, values, hd, n),
        }
    }

    /// `p[j] = exp(p[j] - max)` for every `j`; returns `Σ p[j]` (`max ≥` every `p[j]`).
    pub(super) fn exp_sum(self, p: &mut [f32], max: f32) -> f32 {
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX-512F at run time.
            SimdLevel::Avx512 => unsafe { super::x86::exp_sum_avx512(p, max) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX2 + FMA at run time.
            SimdLevel::Avx2 => unsafe { super::x86::exp_sum_avx2(p, max) },
            _ => scalar::exp_sum(p, max),
        }
    }

    /// Asks the CPU to start loading `run` into cache (a hint: no effect on results).
    ///
    /// Pages sit anywhere in the slab, so the hardware stream prefetcher, which does not
    /// cross 4 KiB boundaries, starts every page run cold; prefetching the next page's runs
    /// while this page is computed hides that latency. The lines go to L2 (`prefetcht1`),
    /// not L1: a few pages of runs ahead are more lines than L1 can have in flight, and
    /// `prefetcht0` then stalls on its fill buffers (tg64 at depth 4096, 2 threads, medians
    /// of 9 alternating runs: 56.1 → 63.5 and 42.5 → 57.5 t/s on two loads of the host).
    pub(super) fn prefetch<T>(self, run: &[T]) {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            let bytes = core::mem::size_of_val(run);
            let base = run.as_ptr().cast::<i8>();
            for off in (0..bytes).step_by(64) {
                // SAFETY: SSE is part of x86-64; `base + off` lies inside `run` (and a
                // prefetch never faults or changes memory in any case).
                unsafe { _mm_prefetch::<_MM_HINT_T1>(base.add(off)) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = run;
    }

    /// `run` as f32s: borrowed as-is for f32 pages; widened (f16: F16C / AVX-512, bf16:
    /// AVX-512) or dequantized (q8_0, q4_0: AVX2 / AVX-512) into `buf`, resized to
    /// `run.len() × T::VALUES_PER_UNIT`, for every other format. Every path gives the
    /// format's own `decode` values bit for bit.
    pub(super) fn as_f32<'a, T: KvFormat>(self, run: &'a [T], buf: &'a mut Vec<f32>) -> &'a [f32] {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            // SAFETY: `T` is `f32` (same `TypeId`), so this is the identity reinterpretation
            // of the same slice with the same length and lifetime.
            return unsafe { core::slice::from_raw_parts(run.as_ptr().cast::<f32>(), run.len()) };
        }
        // Every element is overwritten below: keep the old contents instead of zeroing.
        buf.resize(run.len() * T::VALUES_PER_UNIT, 0.0);
        if let Some(src) = cast::<T, half::f16>(run) {
            self.widen_f16(src, buf);
            return buf;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (avx512, avx2) = (self.level == SimdLevel::Avx512, self.level == SimdLevel::Avx2);
            if let (true, Some(src)) = (avx512, cast::<T, half::bf16>(run)) {
                // SAFETY: `new` checked AVX-512F at run time; `buf.len() == src.len()`.
                unsafe { super::x86::widen_bf16_avx512(src, buf) };
                return buf;
            }
            if let Some(src) = cast::<T, BlockQ8_0>(run) {
                if avx512 || avx2 {
                    // SAFETY: `new` checked the level at run time; `buf` holds 32 per block.
                    unsafe {
                        if avx512 {
                            super::x86::dequant_q8_0_avx512(src, buf)
                        } else {
                            super::x86::dequant_q8_0_avx2(src, buf)
                        }
                    };
                    return buf;
                }
            }
            if let Some(src) = cast::<T, BlockQ4_0>(run) {
                if avx512 || avx2 {
                    // SAFETY: `new` checked the level at run time; `buf` holds 32 per block.
                    unsafe {
                        if avx512 {
                            super::x86::dequant_q4_0_avx512(src, buf)
                        } else {
                            super::x86::dequant_q4_0_avx2(src, buf)
                        }
                    };
                    return buf;
                }
            }
        }
        T::decode(run, buf);
        buf
    }

    fn widen_f16(self, src: &[half::f16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX-512F at run time.
            SimdLevel::Avx512 => unsafe { super::x86::widen_f16_avx512(src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX2 + F16C at run time.
            SimdLevel::Avx2 => unsafe { super::x86::widen_f16_avx2(src, dst) },
            _ => {
                use half::slice::HalfFloatSliceExt;
                src.convert_to_f32_slice(dst);
            }
        }
    }
}

/// `run` as a slice of `U` when `T` is `U` (same `TypeId`), else `None`.
fn cast<T: 'static, U: 'static>(run: &[T]) -> Option<&[U]> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: `T` and `U` are the same type (same `TypeId`): same pointer, length and
        // lifetime.
        Some(unsafe { core::slice::from_raw_parts(run.as_ptr().cast::<U>(), run.len()) })
    } else {
        None
    }
}
