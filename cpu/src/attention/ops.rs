//! Run-time dispatch of the page kernels, and reading a page run as f32.
//!
//! [`PageOps`] is made once per attention call from a [`SimdLevel`] the CPU was checked to
//! have; each method matches on it and calls that level's kernel. The match is per page
//! (hundreds of FMAs), so it costs nothing measurable.

use core::any::TypeId;

use pagoda_core::kv::KvElement;

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

    /// `run` as f32s: borrowed as-is for f32 pages; widened into `buf` (resized to
    /// `run.len()`) for f16 (F16C / AVX-512 where available) and any other element type.
    pub(super) fn as_f32<'a, T: KvElement>(self, run: &'a [T], buf: &'a mut Vec<f32>) -> &'a [f32] {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            // SAFETY: `T` is `f32` (same `TypeId`), so this is the identity reinterpretation
            // of the same slice with the same length and lifetime.
            return unsafe { core::slice::from_raw_parts(run.as_ptr().cast::<f32>(), run.len()) };
        }
        // Every element is overwritten below: keep the old contents instead of zeroing.
        buf.resize(run.len(), 0.0);
        if TypeId::of::<T>() == TypeId::of::<half::f16>() {
            // SAFETY: `T` is `half::f16` (same `TypeId`): same pointer, length and lifetime.
            let src =
                unsafe { core::slice::from_raw_parts(run.as_ptr().cast::<half::f16>(), run.len()) };
            self.widen_f16(src, buf);
        } else if TypeId::of::<T>() == TypeId::of::<half::bf16>() {
            // SAFETY: `T` is `half::bf16` (same `TypeId`): same pointer, length and lifetime.
            let src = unsafe {
                core::slice::from_raw_parts(run.as_ptr().cast::<half::bf16>(), run.len())
            };
            #[cfg(target_arch = "x86_64")]
            if self.level == SimdLevel::Avx512 {
                // SAFETY: `new` checked AVX-512F at run time.
                unsafe { super::x86::widen_bf16_avx512(src, buf) };
                return buf;
            }
            buf.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
        } else {
            buf.iter_mut().zip(run).for_each(|(d, s)| *d = s.to_f32());
        }
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
