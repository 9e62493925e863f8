//! Run-time dispatch of the page kernels, and reading a page run as f32.
//!
//! [`PageOps`] is made once per attention call from a [`SimdLevel`] the CPU was checked to
//! have; each method matches on it and calls that level's kernel. The match is per page
//! (hundreds of FMAs), so it costs nothing measurable.

use core::any::TypeId;

use pagoda_core::kv::KvFormat;
#[cfg(target_arch = "x86_64")]
use pagoda_core::quant::BlockQ4_0;
use pagoda_core::quant::BlockQ8_0;

use super::q8_0_scores;
use super::scalar;
use crate::kernels::{Kernels, Q8Rows, SimdLevel};

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

    /// [`Self::scores`] on a page run of any format: f16, q8_0 and q4_0 keys read in place
    /// where `in_place` is asked and this level can (AVX-512, `hd` a multiple of 16: widened
    /// or dequantized in each load, no f32 copy), otherwise widened or dequantized into `buf`
    /// first ([`Self::as_f32`]). The same bits either way (each load computes the values
    /// the copy would hold). In place pays for few rows (decode), a copy for many (each load
    /// then serves fewer FMAs than the copy costs).
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // x86-64-only kernels
    pub(super) fn scores_run<T: KvFormat>(
        self,
        q: &[f32],
        run: &[T],
        hd: usize,
        n: usize,
        scale: f32,
        scores: &mut [f32],
        buf: &mut Vec<f32>,
        in_place: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.reads_in_place(in_place, hd) {
            let rows = scores.len() / n;
            assert!(n >= 1 && q.len() >= rows * hd && run.len() * T::VALUES_PER_UNIT >= n * hd);
            // SAFETY: `reads_in_place` checked AVX-512 (at `new`) and `hd % 16 == 0` (every
            // load a full chunk; q8_0 and q4_0 rows are whole blocks); shapes asserted above.
            let done = unsafe {
                if let Some(keys) = cast::<T, half::f16>(run) {
                    super::x86::scores_avx512(q, keys, hd, n, scale, scores);
                    true
                } else if let Some(keys) = cast::<T, BlockQ8_0>(run) {
                    super::x86::scores_avx512(q, keys, hd, n, scale, scores);
                    true
                } else if let Some(keys) = cast::<T, BlockQ4_0>(run) {
                    super::x86::scores_avx512(q, keys, hd, n, scale, scores);
                    true
                } else {
                    false
                }
            };
            if done {
                return;
            }
        }
        let keys = self.as_f32(run, buf);
        self.scores(q, keys, hd, n, scale, scores);
    }

    /// [`Self::accumulate`] on a page run of any format, f16, q8_0 and q4_0 read in place as
    /// in [`Self::scores_run`].
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // x86-64-only kernels
    pub(super) fn accumulate_run<T: KvFormat>(
        self,
        acc: &mut [f32],
        p: &[f32],
        run: &[T],
        hd: usize,
        n: usize,
        buf: &mut Vec<f32>,
        in_place: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.reads_in_place(in_place, hd) {
            let rows = acc.len() / hd;
            assert!(
                acc.len() % hd == 0
                    && p.len() >= rows * n
                    && run.len() * T::VALUES_PER_UNIT >= n * hd
            );
            // SAFETY: as in `scores_run`; shapes asserted above.
            let done = unsafe {
                if let Some(values) = cast::<T, half::f16>(run) {
                    super::x86::accumulate_strided_avx512(acc, p, n, 1, values, hd, n);
                    true
                } else if let Some(values) = cast::<T, BlockQ8_0>(run) {
                    super::x86::accumulate_strided_avx512(acc, p, n, 1, values, hd, n);
                    true
                } else if let Some(values) = cast::<T, BlockQ4_0>(run) {
                    super::x86::accumulate_strided_avx512(acc, p, n, 1, values, hd, n);
                    true
                } else {
                    false
                }
            };
            if done {
                return;
            }
        }
        let values = self.as_f32(run, buf);
        self.accumulate(acc, p, values, hd, n);
    }

    /// The matmul kernels at this level (for the query rows' q8_0 quantization).
    pub(super) fn kernels(self) -> Kernels {
        Kernels::new(self.level).expect("`new` keeps only levels this CPU runs")
    }

    /// Whether `T`'s pages are scored in integers against the query rows quantized to q8_0
    /// ([`super::q8_0_scores`]): q8_0 pages at AVX-512 (whose detection includes VNNI).
    pub(super) fn quantizes_queries<T: KvFormat>(self) -> bool {
        cfg!(target_arch = "x86_64")
            && self.level == SimdLevel::Avx512
            && TypeId::of::<T>() == TypeId::of::<BlockQ8_0>()
    }

    /// `scores[r][j] = scale · (q[r] · keys[j])` in [`super::q8_0_scores`]' integer formula,
    /// for the rows `q` (quantized from `rows = scores.len() / n` query rows of `hd` floats)
    /// and the first `n` keys of `run`. Returns `false`, doing nothing, unless `T` is
    /// q8_0 (the caller then scores in f32).
    pub(super) fn scores_quantized<T: KvFormat>(
        self,
        q: &Q8Rows,
        run: &[T],
        hd: usize,
        n: usize,
        scale: f32,
        scores: &mut [f32],
    ) -> bool {
        let Some(keys) = cast::<T, BlockQ8_0>(run) else { return false };
        let (rows, nb) = (scores.len() / n, hd / 32);
        assert!(
            n >= 1
                && hd % 32 == 0
                && hd > 0
                && scores.len() == rows * n
                && q.blocks.len() >= rows * nb
                && q.sums.len() >= rows * nb
                && q.scales.len() >= rows * nb
                && keys.len() >= n * nb
        );
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX-512 F/BW and VNNI at run time; shapes asserted above.
            SimdLevel::Avx512 => unsafe {
                q8_0_scores::scores_avx512(q, keys, nb, n, scale, scores)
            },
            _ => q8_0_scores::scores_scalar(&q.blocks, keys, nb, n, scale, scores),
        }
        true
    }

    /// Whether runs are read in place: asked for, AVX-512, whole 16-lane chunks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // x86-64 kernels and tests
    fn reads_in_place(self, asked: bool, hd: usize) -> bool {
        asked && self.level == SimdLevel::Avx512 && hd % 16 == 0 && hd > 0
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

    /// One page's online-softmax step when every row sees all `n` scores of its row of `p`
    /// (`rows × n`): what `task.rs`'s per-row loop does with [`Self::exp_sum`], the same bits.
    /// Returns `false`, doing nothing, where this level has no such kernel (the caller runs
    /// its loop).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // x86-64-only kernels
    pub(super) fn softmax_page(
        self,
        p: &mut [f32],
        n: usize,
        max: &mut [f32],
        sum: &mut [f32],
        acc: &mut [f32],
        hd: usize,
    ) -> bool {
        let rows = max.len();
        let shapes = (1..=16).contains(&n)
            && p.len() == rows * n
            && sum.len() == rows
            && acc.len() == rows * hd;
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX-512F at run time; shapes checked just above.
            SimdLevel::Avx512 if shapes => unsafe {
                super::x86::softmax_page_avx512(p, n, max, sum, acc, hd);
                true
            },
            _ => false,
        }
    }

    /// `exp(x)` as this level's online softmax rescales by it: the AVX-512 level's own
    /// `expf` (the same bits in its per-row and rows-in-lanes paths), `f32::exp` elsewhere.
    pub(super) fn exp(self, x: f32) -> f32 {
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked AVX-512F at run time.
            SimdLevel::Avx512 => unsafe { super::x86::exp1_avx512(x) },
            _ => x.exp(),
        }
    }

    /// Whether this level has [`Self::full_page_in_lanes`].
    pub(super) fn rows_in_lanes(self) -> bool {
        cfg!(target_arch = "x86_64") && self.level == SimdLevel::Avx512
    }

    /// One full page of 16 keys for all rows of a task, every row seeing every key, with
    /// query rows in vector lanes: the bits of [`Self::scores`], the per-row softmax step
    /// (rescale factor by [`Self::exp`]) and [`Self::accumulate`], without their per-row
    /// reductions.
    ///
    /// `qt` is the rows' queries transposed in blocks of 16 rows ([`queries_in_lanes`]); `keys`, `values` the page's
    /// `16 × hd` floats; `max`, `sum` (`rows`) and `acc` (`rows × hd`) the rows' state;
    /// `p` scratch of `16 × rows` rounded up to 16, `c` of `rows` rounded up to 16.
    /// Only where [`Self::rows_in_lanes`]; `hd` a multiple of 16.
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // x86-64-only kernels
    pub(super) fn full_page_in_lanes(
        self,
        qt: &[f32],
        keys: &[f32],
        values: &[f32],
        hd: usize,
        scale: f32,
        (max, sum, acc): (&mut [f32], &mut [f32], &mut [f32]),
        p: &mut [f32],
        c: &mut [f32],
    ) {
        let rows = max.len();
        let padded = rows.next_multiple_of(16);
        assert!(self.rows_in_lanes() && hd % 16 == 0 && hd > 0);
        assert!(sum.len() == rows && acc.len() == rows * hd && keys.len() >= 16 * hd);
        assert!(values.len() >= 16 * hd && qt.len() >= padded * hd);
        assert!(p.len() >= 16 * padded && c.len() >= padded);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `rows_in_lanes` means `new` checked AVX-512F; block b's queries are
        // `qt[b·16·hd ..][..16·hd]`, its rows' state `max[16b..]`, `sum[16b..]` masked to
        // the rows that exist, `c[16b..][..16]` and `p[k·padded + 16b..][..16]` for k < 16,
        // all inside the lengths asserted above.
        unsafe {
            use super::x86;
            for b in 0..padded / 16 {
                let lanes = ((1u32 << (rows - 16 * b).min(16)) - 1) as u16;
                x86::page_rows_in_lanes(
                    qt.as_ptr().add(b * 16 * hd),
                    keys.as_ptr(),
                    hd,
                    scale,
                    lanes,
                    max.as_mut_ptr().add(16 * b),
                    sum.as_mut_ptr().add(16 * b),
                    c.as_mut_ptr().add(16 * b),
                    p.as_mut_ptr().add(16 * b),
                    padded,
                );
            }
            for (a, &c) in acc.chunks_exact_mut(hd).zip(c.iter()) {
                if c != 1.0 {
                    a.iter_mut().for_each(|a| *a *= c);
                }
            }
            x86::accumulate_strided_avx512(acc, p, 1, padded, values, hd, 16);
        }
    }

    /// Asks the CPU to start loading `run` into cache (a hint: no effect on results).
    ///
    /// Pages sit anywhere in the slab, so the hardware stream prefetcher, which does not
    /// cross 4 KiB boundaries, starts every page run cold; prefetching the next page's runs
    /// while this page is computed hides that latency. The lines go to L2 (`prefetcht1`),
    /// not L1: a few pages of runs ahead are more lines than L1 can have in flight, and
    /// `prefetcht0` then stalls on its fill buffers (tg64 at depth 4096, 2 threads, medians
    /// of 9 alternating runs: 56.1 → 63.5 and 42.5 → 57.5 t/s on two loads of the host; on
    /// the AMD EPYC, fast numerics' decode over 30 × 4096 f16 keys, one head run ahead:
    /// 3.6 ms with `prefetcht1`, 6.0–6.4 ms with `prefetcht0`, 7.4–7.7 ms with
    /// `prefetchnta`, 6.0–6.1 ms without).
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

/// Query rows (`rows × hd`, row-major) in the layout [`PageOps::full_page_in_lanes`] reads:
/// blocks of 16 rows, `qt[(b·hd + d)·16 + i]` = row `16b + i`'s element `d`, zeros past the
/// last row.
pub(super) fn queries_in_lanes(q: &[f32], hd: usize) -> Vec<f32> {
    let rows = q.len() / hd.max(1);
    let mut qt = vec![0.0f32; rows.next_multiple_of(16) * hd];
    for (r, q_r) in q.chunks_exact(hd.max(1)).enumerate() {
        let (b, i) = (r / 16, r % 16);
        for (d, &x) in q_r.iter().enumerate() {
            qt[(b * hd + d) * 16 + i] = x;
        }
    }
    qt
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_rng::Rng;
    use pagoda_core::quant::{BlockQ4_0, BlockQ8_0};

    /// Reading f16, q8_0 and q4_0 runs in place (decode) gives the bits of the widened or
    /// dequantized copy (prefill's path), and the copy holds the format's `decode` values:
    /// batch invariance needs it, since a row reads in place or from the copy depending on
    /// the rows it shares a task with.
    #[test]
    fn runs_read_in_place_equal_their_f32_copies_bit_for_bit() {
        fn check<T: KvFormat>(ops: PageOps, rng: &mut Rng) {
            for (rows, hd, n) in
                [(1usize, 64usize, 16usize), (3, 64, 16), (3, 64, 11), (5, 128, 7), (2, 32, 1)]
            {
                let q: Vec<f32> = (0..rows * hd).map(|_| rng.unit() * 3.0).collect();
                // Rows of mixed amplitude: zero, tiny (subnormal f16 scales), ordinary, large.
                let mut run = vec![T::zero(); n * hd / T::VALUES_PER_UNIT];
                for (j, row) in run.chunks_exact_mut(hd / T::VALUES_PER_UNIT).enumerate() {
                    let amp = [0.0, 1e-6, 1.0, 300.0][j % 4];
                    let x: Vec<f32> = (0..hd).map(|_| rng.unit() * amp).collect();
                    T::encode(&x, row);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let what = format!("{} rows {rows} hd {hd} keys {n}", core::any::type_name::<T>());
                // The copy holds the format's own `decode` values.
                let mut decoded = vec![0.0f32; n * hd];
                for (row, out) in
                    run.chunks_exact(hd / T::VALUES_PER_UNIT).zip(decoded.chunks_exact_mut(hd))
                {
                    T::decode(row, out);
                }
                let mut copy = Vec::new();
                assert_eq!(bits(ops.as_f32(&run, &mut copy)), bits(&decoded), "{what}: copy");
                let (mut s1, mut s2) = (vec![0.0f32; rows * n], vec![0.0f32; rows * n]);
                let (mut b1, mut b2) = (Vec::new(), Vec::new());
                ops.scores_run(&q, &run, hd, n, 0.125, &mut s1, &mut b1, true);
                ops.scores_run(&q, &run, hd, n, 0.125, &mut s2, &mut b2, false);
                assert_eq!(bits(&s1), bits(&s2), "{what}: scores");
                let p: Vec<f32> = (0..rows * n).map(|_| rng.unit().abs()).collect();
                let acc0: Vec<f32> = (0..rows * hd).map(|_| rng.unit()).collect();
                let (mut a1, mut a2) = (acc0.clone(), acc0);
                ops.accumulate_run(&mut a1, &p, &run, hd, n, &mut b1, true);
                ops.accumulate_run(&mut a2, &p, &run, hd, n, &mut b2, false);
                assert_eq!(bits(&a1), bits(&a2), "{what}: accumulate");
            }
        }
        let ops = PageOps::new(SimdLevel::Avx512);
        if !ops.reads_in_place(true, 64) {
            return; // nothing to compare on this CPU
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        check::<half::f16>(ops, &mut rng);
        check::<BlockQ8_0>(ops, &mut rng);
        check::<BlockQ4_0>(ops, &mut rng);
    }

    /// The rows-in-lanes page step gives every row the bits of the per-row path (scores,
    /// the per-row softmax step as `task.rs` runs it, accumulate), whatever the row count
    /// (one block of 16, a ragged last block) and the head dim: batch invariance needs it,
    /// since a row takes one path or the other depending on the rows it shares a task with.
    #[test]
    fn rows_in_lanes_equal_the_per_row_path_bit_for_bit() {
        let ops = PageOps::new(SimdLevel::Avx512);
        if !ops.rows_in_lanes() {
            return; // nothing to compare on this CPU
        }
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for (rows, hd) in [(16usize, 64usize), (24, 64), (48, 64), (17, 256), (64, 32)] {
            let q: Vec<f32> = (0..rows * hd).map(|_| rng.unit() * 3.0).collect();
            let padded = rows.next_multiple_of(16);
            let qt = queries_in_lanes(&q, hd);
            // Three pages in a row; a state that starts empty, then grows and shrinks maxima.
            let (mut m1, mut s1, mut a1) =
                (vec![f32::NEG_INFINITY; rows], vec![0.0f32; rows], vec![0.0f32; rows * hd]);
            let (mut m2, mut s2, mut a2) = (m1.clone(), s1.clone(), a1.clone());
            let (mut pt, mut c) = (vec![0.0f32; 16 * padded], vec![0.0f32; padded]);
            for page in 0..3 {
                let amp = [1.0, 4.0, 0.5][page];
                let keys: Vec<f32> = (0..16 * hd).map(|_| rng.unit() * amp).collect();
                let values: Vec<f32> = (0..16 * hd).map(|_| rng.unit()).collect();
                let state = (&mut m1[..], &mut s1[..], &mut a1[..]);
                ops.full_page_in_lanes(&qt, &keys, &values, hd, 0.125, state, &mut pt, &mut c);

                let mut p = vec![0.0f32; rows * 16];
                ops.scores(&q, &keys, hd, 16, 0.125, &mut p);
                if !ops.softmax_page(&mut p, 16, &mut m2, &mut s2, &mut a2, hd) {
                    unreachable!("AVX-512 has the fused softmax step");
                }
                ops.accumulate(&mut a2, &p, &values, hd, 16);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let what = format!("rows {rows} hd {hd} page {page}");
                assert_eq!(bits(&m1), bits(&m2), "{what}: max");
                assert_eq!(bits(&s1), bits(&s2), "{what}: sum");
                assert_eq!(bits(&a1), bits(&a2), "{what}: acc");
            }
        }
    }
}
