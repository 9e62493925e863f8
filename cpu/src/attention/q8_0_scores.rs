//! q8_0 pages scored in integers: the query rows quantized to q8_0 as the keys are, each
//! block's dot product an exact `i32` (AVX-512 VNNI `vpdpbusd`), as llama.cpp scores a q8_0
//! cache (`ggml_vec_dot_q8_0_q8_0` after converting Q to K's `vec_dot_type`).
//!
//! The formula (the bits every path at a level that uses it gives, [`scores_scalar`]):
//!
//! ```text
//! qq[r]     = q8_0(q[r])          (Kernels::quantize_q8_0: llama.cpp's activation quantizer)
//! isum_b    = Σ_{i<32} qq[r][b].qs[i] · key[j][b].qs[i]          exact i32, any order
//! acc       = 0;  acc = fma((f32) isum_b, f32(qq[r][b].d) · f32(key[j][b].d), acc)   b = 0, 1, …
//! score[r][j] = scale · acc
//! ```
//!
//! Both conversions and the scale product are exact (|isum| < 2²⁴; an f16 × f16 product
//! fits an f32), so only the `fma`s and the final multiply round, in block order. The
//! integer sums do not depend on the order of their terms, so the AVX-512 kernel is free to
//! lay keys in vector lanes and any row count, chunking or page placement gives a row the same
//! bits (batch invariance, `Numerics::Fast`).
//!
//! Why: at depth 4096 decode reads a q8_0 cache half as many bytes as an f16 one, but with
//! f32 scores each 16 keys' values cost a sign extension, a conversion and a scale multiply
//! before the FMAs; in integers a `vpdpbusd` does 64 multiply-adds of a key row against one
//! query row. The values (`accumulate`) stay f32, dequantized as before.
//!
//! Which levels: AVX-512 (which includes VNNI in this crate's detection) for q8_0 pages
//! ([`super::PageOps::quantizes_queries`]). The other levels score q8_0 pages in f32 against
//! the unquantized query, as every other page format. q4_0 pages keep f32 scores at every
//! level: through this formula (their nibbles with a bias of 8) their perplexity rose from
//! +2.8% to +3.7% over f32 pages, past the 3% they are held to (docs/numerics.md).

use pagoda_core::quant::BlockQ8_0;

/// The specification: `out[r·n + j] = score(qq row r, key j)` by the module's formula, for
/// `rows = out.len() / n` rows of `nb` blocks (`qq.len() ≥ rows·nb`) and `n` keys of `nb`
/// blocks (`keys.len() ≥ n·nb`).
pub(super) fn scores_scalar(
    qq: &[BlockQ8_0],
    keys: &[BlockQ8_0],
    nb: usize,
    n: usize,
    scale: f32,
    out: &mut [f32],
) {
    for (q_r, out_r) in qq.chunks_exact(nb).zip(out.chunks_exact_mut(n)) {
        for (o, k) in out_r.iter_mut().zip(keys.chunks_exact(nb)) {
            let mut acc = 0.0f32;
            for (a, b) in q_r.iter().zip(k) {
                let isum: i32 =
                    a.qs.iter().zip(&b.qs).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
                acc = (isum as f32).mul_add(a.d.to_f32() * b.d.to_f32(), acc);
            }
            *o = scale * acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::scores_avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use pagoda_core::quant::BlockQ8_0;

    use crate::kernels::Q8Rows;

    /// Key `A[i]` goes to the low half of transposition input `i`, key `A[i] + 4` to its high
    /// half: with this pairing the three shuffle stages of [`transpose16`] leave the keys in
    /// lane order 0..16.
    const A: [usize; 8] = [0, 1, 2, 3, 8, 9, 10, 11];

    /// The 32 quants of one block of 16 keys (`k[i]`: key `i`'s, zeros past the run) plus
    /// 128 (unsigned bytes, as `vpdpbusd` takes them; each sum then starts at `-128 · Σ` of
    /// the query block's quants, which takes the 128s back out exactly), transposed: `out[c]`
    /// lane `i` = quants `4c .. 4c + 4` of key `i`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    fn transpose16(k: &[__m256i; 16]) -> [__m512i; 8] {
        let bias = _mm512_set1_epi8(-128);
        let z: [__m512i; 8] = core::array::from_fn(|i| {
            let pair = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(k[A[i]]), k[A[i] + 4]);
            _mm512_xor_si512(pair, bias)
        });
        // Per 128-bit lane (4 dwords of one key), two groups of four inputs: lane L of
        // `u[c]` holds dword c (L even) or c + 4 (L odd) of the group's four keys.
        let group = |z: &[__m512i]| -> [__m512i; 4] {
            let t0 = _mm512_unpacklo_epi32(z[0], z[1]);
            let t1 = _mm512_unpackhi_epi32(z[0], z[1]);
            let t2 = _mm512_unpacklo_epi32(z[2], z[3]);
            let t3 = _mm512_unpackhi_epi32(z[2], z[3]);
            [
                _mm512_unpacklo_epi64(t0, t2),
                _mm512_unpackhi_epi64(t0, t2),
                _mm512_unpacklo_epi64(t1, t3),
                _mm512_unpackhi_epi64(t1, t3),
            ]
        };
        let (u, v) = (group(&z[..4]), group(&z[4..]));
        core::array::from_fn(|c| {
            if c < 4 {
                _mm512_shuffle_i32x4::<0x88>(u[c], v[c])
            } else {
                _mm512_shuffle_i32x4::<0xDD>(u[c - 4], v[c - 4])
            }
        })
    }

    /// [`super::scores_scalar`] with keys in vector lanes, 16 at a time: per block, the 16
    /// keys' quants transposed once ([`transpose16`]) and their scales gathered once serve
    /// every row; eight `vpdpbusd` with the row's quants broadcast give the 16 block sums,
    /// and one FMA folds them into the row's running scores (kept in `out`).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL and VNNI; `out.len()` is a multiple of `n ≥ 1`, `q` holds
    /// `out.len() / n` rows of `nb ≥ 1` blocks, `keys.len() ≥ n·nb`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")]
    pub(in super::super) unsafe fn scores_avx512(
        q: &Q8Rows,
        keys: &[BlockQ8_0],
        nb: usize,
        n: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let rows = out.len() / n;
        debug_assert!(q.blocks.len() >= rows * nb);
        debug_assert!(q.sums.len() >= rows * nb && q.scales.len() >= rows * nb);
        debug_assert!(keys.len() >= n * nb);
        let mut j0 = 0;
        while j0 < n {
            let kn = (n - j0).min(16);
            // SAFETY: keys j0 .. j0 + kn of `keys` exist; rows and outputs per the contract.
            unsafe {
                if kn == 16 {
                    group16::<true>(q, keys.as_ptr().add(j0 * nb), nb, 16, scale, out, n, j0);
                } else {
                    group16::<false>(q, keys.as_ptr().add(j0 * nb), nb, kn, scale, out, n, j0);
                }
            }
            j0 += 16;
        }
    }

    /// [`scores_avx512`] for keys `j0 .. j0 + kn` (`kn ≤ 16`, all 16 if `FULL`), whose first
    /// block is at `k`.
    ///
    /// # Safety
    /// As [`scores_avx512`]; `k` points at `kn·nb` readable blocks.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")]
    unsafe fn group16<const FULL: bool>(
        q: &Q8Rows,
        k: *const BlockQ8_0,
        nb: usize,
        kn: usize,
        scale: f32,
        out: &mut [f32],
        n: usize,
        j0: usize,
    ) {
        let rows = out.len() / n;
        let lanes: __mmask16 = if FULL { 0xFFFF } else { (1u16 << kn) - 1 };
        let stride = nb * core::mem::size_of::<BlockQ8_0>();
        // Byte offsets of the 16 keys' blocks (a key row is `nb` blocks).
        let offsets = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(stride as i32),
        );
        let vscale = _mm512_set1_ps(scale);
        for b in 0..nb {
            // Block b of key 0; keys past `kn` are never read (masked loads and gathers).
            let base = k.wrapping_add(b).cast::<u8>();
            let quants: [__m256i; 16] = core::array::from_fn(|i| {
                let p = base.wrapping_add(i * stride + 2).cast::<i32>();
                // SAFETY: key i < kn: its block b is readable (the quants at byte 2); a
                // masked-off load reads nothing.
                unsafe {
                    if FULL {
                        _mm256_loadu_si256(p.cast())
                    } else {
                        _mm256_maskz_loadu_epi32(if i < kn { 0xFF } else { 0 }, p)
                    }
                }
            });
            let kt = transpose16(&quants);
            // The scales: the first two bytes of each block, gathered as 32-bit words.
            // SAFETY: each block's first four bytes are readable (keys < kn only).
            let words = unsafe {
                if FULL {
                    _mm512_i32gather_epi32::<1>(offsets, base.cast())
                } else {
                    _mm512_mask_i32gather_epi32::<1>(
                        _mm512_setzero_si512(),
                        lanes,
                        offsets,
                        base.cast(),
                    )
                }
            };
            let dk = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words));
            for r in 0..rows {
                let qb = &q.blocks[r * nb + b];
                let qd = qb.qs.as_ptr().cast::<i32>();
                let mut isum = _mm512_set1_epi32(-128 * q.sums[r * nb + b]);
                for (c, kc) in kt.iter().enumerate() {
                    // SAFETY: dword c < 8 of the block's 32 quants.
                    let qc = _mm512_set1_epi32(unsafe { qd.add(c).read_unaligned() });
                    isum = _mm512_dpbusd_epi32(isum, *kc, qc);
                }
                let dd = _mm512_mul_ps(_mm512_set1_ps(q.scales[r * nb + b]), dk);
                let o = out[r * n + j0..].as_mut_ptr();
                // SAFETY: row r has `kn` outputs from key j0 (masked to them).
                unsafe {
                    let acc =
                        if b == 0 { _mm512_setzero_ps() } else { _mm512_maskz_loadu_ps(lanes, o) };
                    let mut acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), dd, acc);
                    if b + 1 == nb {
                        acc = _mm512_mul_ps(vscale, acc);
                    }
                    _mm512_mask_storeu_ps(o, lanes, acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_rng::Rng;
    use crate::kernels::{Kernels, Q8Rows, SimdLevel};
    use pagoda_core::kv::KvFormat;

    /// Rows and keys of `nb` blocks from `rng`, scaled by `gain` (zero, tiny and large rows
    /// among them).
    fn rows(rng: &mut Rng, count: usize, nb: usize, gain: f32) -> Vec<f32> {
        (0..count * nb * 32).map(|_| gain * rng.unit()).collect()
    }

    fn quantize(q: &[f32]) -> Q8Rows {
        let mut qq = Q8Rows::default();
        qq.quantize(&Kernels::new(SimdLevel::Scalar).unwrap(), q).unwrap();
        qq
    }

    #[test]
    fn query_sums_take_the_bias_back_out() {
        let mut rng = Rng(7);
        let qq = quantize(&rows(&mut rng, 3, 2, 1.0));
        assert_eq!(qq.blocks.len(), 6);
        for (b, &s) in qq.blocks.iter().zip(&qq.sums) {
            // Σ (k + 128) q - 128 Σ q = Σ k q for every k.
            let k: Vec<i32> = (0..32).map(|i| (i * 37 % 256) - 128).collect();
            let biased: i32 = b.qs.iter().zip(&k).map(|(&q, &k)| i32::from(q) * (k + 128)).sum();
            let plain: i32 = b.qs.iter().zip(&k).map(|(&q, &k)| i32::from(q) * k).sum();
            assert_eq!(biased - 128 * s, plain);
        }
    }

    /// The AVX-512 kernel equals the specification bit for bit: every key count (ragged
    /// groups of 16), row count, block count, and zero, tiny and large rows.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_equals_the_specification_bit_for_bit() {
        if !SimdLevel::Avx512.is_available() {
            eprintln!("skipped: this CPU has no AVX-512 (the scalar specification is all it runs)");
            return;
        }
        let mut rng = Rng(11);
        for nb in [1usize, 2, 3, 8] {
            for n in [1usize, 5, 15, 16, 17, 33] {
                for n_rows in [1usize, 2, 3, 7, 48] {
                    for gain in [0.0f32, 1e-6, 1.0, 300.0] {
                        let q = rows(&mut rng, n_rows, nb, gain);
                        let kf = rows(&mut rng, n, nb, if gain == 0.0 { 1.0 } else { gain });
                        let qq = quantize(&q);
                        let mut keys = vec![BlockQ8_0::zero(); n * nb];
                        BlockQ8_0::encode(&kf, &mut keys);
                        let mut want = vec![0.0f32; n_rows * n];
                        scores_scalar(&qq.blocks, &keys, nb, n, 0.125, &mut want);
                        let mut got = vec![f32::NAN; n_rows * n];
                        // SAFETY: AVX-512 checked above; shapes as documented.
                        unsafe { scores_avx512(&qq, &keys, nb, n, 0.125, &mut got) };
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "nb {nb} n {n} rows {n_rows} gain {gain}: score {i}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The formula is attention's dot product on the dequantized rows, to f32 rounding.
    #[test]
    fn specification_is_the_dot_product_of_the_dequantized_rows() {
        let mut rng = Rng(5);
        let (nb, n) = (4, 9);
        let q = rows(&mut rng, 2, nb, 2.0);
        let kf = rows(&mut rng, n, nb, 1.0);
        let qq = quantize(&q);
        let mut keys = vec![BlockQ8_0::zero(); n * nb];
        BlockQ8_0::encode(&kf, &mut keys);
        let mut got = vec![0.0f32; 2 * n];
        scores_scalar(&qq.blocks, &keys, nb, n, 1.0, &mut got);
        let (mut qd, mut kd) = (vec![0.0f32; q.len()], vec![0.0f32; kf.len()]);
        BlockQ8_0::decode(&qq.blocks, &mut qd);
        BlockQ8_0::decode(&keys, &mut kd);
        for r in 0..2 {
            for j in 0..n {
                let want: f64 = (0..nb * 32)
                    .map(|i| f64::from(qd[r * nb * 32 + i]) * f64::from(kd[j * nb * 32 + i]))
                    .sum();
                let g = f64::from(got[r * n + j]);
                assert!((g - want).abs() <= 1e-5 * want.abs().max(1.0), "{r} {j}: {g} vs {want}");
            }
        }
        // And it is not the unquantized query's: the query's rounding shows.
        let mut f32_scores = vec![0.0f32; 2 * n];
        super::super::scalar::scores(&q, &kd, nb * 32, n, 1.0, &mut f32_scores);
        assert!(got.iter().zip(&f32_scores).any(|(a, b)| a != b));
    }
}
