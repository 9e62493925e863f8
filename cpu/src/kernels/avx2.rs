//! AVX2 + FMA + F16C kernels: activation quantization and the integer matmul.
//!
//! Every function here is `unsafe` because of `#[target_feature]`; callers are the safe
//! dispatchers in this module's parent, which only call them for [`SimdLevel::Avx2`] or
//! wider (a [`Kernels`](super::Kernels) at such a level exists only after run-time
//! detection).
//!
//! One block per step (32 quants, `vpmaddubsw` + `vpmaddwd`), one group of 8 blocks'
//! headers per gather, up to four tokens per decoded weight register. Q4_1 weights are used
//! as unsigned nibbles (0..15, products fit `vpmaddubsw`'s i16 lanes); Q4_0 (`nibble - 8`)
//! and Q8_0 weights use ggml's sign trick (`|x| · sign(y, x)`), so every lane sum is exact
//! and the float order is [`super::scalar::dot_q4_1`]'s: results equal the scalar level's.

use core::arch::x86_64::*;

use pagoda_core::quant::{BlockQ8_0, BlockQ8_1, QK};

use pagoda_core::ggml_type::GgmlType;

use super::activations::{Acts, Inputs};
use super::avx512::{IQ4_NL, Q4_1, Q5_0, Q5_1, Q8_0};
use super::scalar::scales;
use super::table::{f32_rows, row, soa_row, Activation, WeightKernels};
use super::SimdLevel;

/// Quantize one 32-value block like llama.cpp's AVX2 `quantize_row_q8_*`: returns
/// `(d, sum(qs))` and writes the quants.
///
/// # Safety
/// The CPU must support AVX2; `x` valid for 32 reads, `qs` for 32 writes.
#[inline(always)]
unsafe fn quantize_block(x: *const f32, qs: *mut i8) -> (f32, i32) {
    // SAFETY: pointer validity per the contract; AVX2 enabled by the calling
    // `target_feature` function this inlines into.
    unsafe {
        let v = [
            _mm256_loadu_ps(x),
            _mm256_loadu_ps(x.add(8)),
            _mm256_loadu_ps(x.add(16)),
            _mm256_loadu_ps(x.add(24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_andnot_ps(sign, v[0]);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[1]));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[2]));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[3]));
        let mut m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(m), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let (d, id) = scales(_mm_cvtss_f32(m4));
        let mul = _mm256_set1_ps(id);
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i: [__m256i; 4] = core::array::from_fn(|j| {
            _mm256_cvtps_epi32(_mm256_round_ps::<NEAREST>(_mm256_mul_ps(v[j], mul)))
        });
        let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let p01 = _mm256_packs_epi32(i[0], i[1]);
        let p23 = _mm256_packs_epi32(i[2], i[3]);
        let p = _mm256_packs_epi16(p01, p23);
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(qs as *mut __m256i, p);
        (d, hsum_i32(s))
    }
}

#[inline(always)]
unsafe fn hsum_i32(a: __m256i) -> i32 {
    // SAFETY: register-only AVX2 operations; features per the calling function.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

#[inline(always)]
unsafe fn hsum_f32(a: __m256) -> f32 {
    // SAFETY: register-only AVX operations; features per the calling function.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// `x` to Q8_0 blocks; `x.len() == 32 * out.len()`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: `xs` has 32 floats and `b.qs` 32 bytes; features per this fn's contract.
        let (d, _) = unsafe { quantize_block(xs.as_ptr(), b.qs.as_mut_ptr()) };
        b.d = half::f16::from_f32(d);
    }
}

/// `x` to Q8_1 blocks; `x.len() == 32 * out.len()`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: `xs` has 32 floats and `b.qs` 32 bytes; features per this fn's contract.
        let (d, sum) = unsafe { quantize_block(xs.as_ptr(), b.qs.as_mut_ptr()) };
        b.d = half::f16::from_f32(d);
        b.s = half::f16::from_f32(d * sum as f32);
    }
}

/// Dot products of the weight rows in `w` (format `F`) with every token of `acts`:
/// `outs[t][r] = row r · token t`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; otherwise the contract of
/// [`super::avx512::matmul_chunk`].
#[target_feature(enable = "avx2,fma,f16c")]
// Index loops: each step fills column `r` of several tile rows.
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn matmul_chunk<const F: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &Acts<'_>,
    outs: &mut [&mut [f32]],
) {
    let rows = w.len().checked_div(row_bytes).unwrap_or(0);
    // Tiles of ROWS rows × up to 4 tokens, written out per token as ROWS contiguous
    // floats: with many tokens, writing each dot straight to `outs[t][r]` would touch
    // one cache line per (row, token) of an output that may not fit in cache.
    const ROWS: usize = 16;
    let mut tile = [[0.0f32; ROWS]; 4];
    let mut r0 = 0;
    while r0 < rows {
        let rn = (rows - r0).min(ROWS);
        let mut t = 0;
        while t < outs.len() {
            let tn = (outs.len() - t).min(4);
            for r in 0..rn {
                // SAFETY: row `r0 + r` lies within `w` and tokens t..t+tn exist in `acts`
                // (this fn's contract); the callee's other requirements are this fn's.
                unsafe {
                    let row = w.as_ptr().add((r0 + r) * row_bytes);
                    match tn {
                        4 => {
                            let v = row_dot::<F, 4>(row, acts, t);
                            for i in 0..4 {
                                tile[i][r] = v[i];
                            }
                        }
                        3 => {
                            let v = row_dot::<F, 3>(row, acts, t);
                            for i in 0..3 {
                                tile[i][r] = v[i];
                            }
                        }
                        2 => {
                            let v = row_dot::<F, 2>(row, acts, t);
                            tile[0][r] = v[0];
                            tile[1][r] = v[1];
                        }
                        _ => tile[0][r] = row_dot::<F, 1>(row, acts, t)[0],
                    }
                }
            }
            for i in 0..tn {
                outs[t + i][r0..r0 + rn].copy_from_slice(&tile[i][..rn]);
            }
            t += tn;
        }
        r0 += rn;
    }
}

/// One weight row against tokens `t0..t0+T`.
///
/// # Safety
/// As [`matmul_chunk`]; `row` points at a whole row of `acts.nb` blocks.
#[inline(always)]
// Index loops over the T tokens' parallel arrays read most clearly.
#[allow(clippy::needless_range_loop)]
unsafe fn row_dot<const F: u8, const T: usize>(
    row: *const u8,
    acts: &Acts<'_>,
    t0: usize,
) -> [f32; T] {
    let (stride, qoff) = match F {
        Q4_1 => (20usize, 4usize),
        Q5_0 => (22, 6),
        Q5_1 => (24, 8),
        Q8_0 => (34, 2),
        _ => (18, 2), // Q4_0, IQ4_NL
    };
    // Unsigned weight quants (no sign trick): Q4_1 and Q5_1.
    let unsigned = F == Q4_1 || F == Q5_1;
    let nb = acts.nb;
    // SAFETY (whole body): weight reads stay inside the row's `nb` blocks (the gather reads
    // the first 4 bytes of existing blocks only, masked lanes read nothing), activation
    // reads stay inside token t's blocks (the scale loads are masked to the group), and
    // AVX2/FMA/F16C are enabled by the caller's `target_feature`.
    unsafe {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let gather_idx = _mm256_mullo_epi32(lane, _mm256_set1_epi32(stride as i32));
        let low4 = _mm256_set1_epi8(0x0F);
        let eight = _mm256_set1_epi8(8);
        let sixteen = _mm256_set1_epi8(16);
        let fifth = _mm256_set1_epi8(0x10);
        let spread_bits = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        );
        let bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); T];
        // IQ4_NL (llama.cpp's pairs of blocks): odd blocks into `acc2`; an odd last block
        // as an exact integer sum with its scale, added after the horizontal sum.
        let mut acc2 = [_mm256_setzero_ps(); T];
        let (mut tail_i, mut tail_d) = ([0i32; T], [0.0f32; T]);
        let kv = _mm256_broadcastsi128_si256(_mm_loadu_si128(
            pagoda_core::quant::IQ4NL_VALUES.as_ptr() as *const __m128i,
        ));
        let mut summs = [0.0f32; T];
        let mut g = 0;
        while g < nb {
            let n = (nb - g).min(8);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
            let base = row.add(g * stride);
            let hdr = _mm256_mask_i32gather_epi32::<1>(
                _mm256_setzero_si256(),
                base as *const i32,
                gather_idx,
                mask,
            );
            let dx = f16_lo_to_f32(hdr);
            let mut dd = [_mm256_setzero_ps(); T];
            for t in 0..T {
                let a = (t0 + t) * nb + g;
                let dy = _mm256_maskload_ps(acts.d.as_ptr().add(a), mask);
                dd[t] = _mm256_mul_ps(dx, dy);
            }
            if unsigned {
                // Σ m·s in block order, per token (each product is exact in f32).
                let mut m = [0.0f32; 8];
                _mm256_storeu_ps(m.as_mut_ptr(), f16_lo_to_f32(_mm256_srli_epi32::<16>(hdr)));
                for t in 0..T {
                    let ks = acts.k.as_ptr().add((t0 + t) * nb + g);
                    for (i, &mi) in m.iter().enumerate().take(n) {
                        summs[t] += mi * *ks.add(i);
                    }
                }
            }
            for b in 0..n {
                let blk = base.add(b * stride);
                let sel = _mm256_set1_epi32(b as i32);
                if F == Q8_0 {
                    let x = _mm256_loadu_si256(blk.add(qoff) as *const __m256i);
                    let ax = _mm256_sign_epi8(x, x);
                    for t in 0..T {
                        let y =
                            _mm256_loadu_si256(acts.qs.as_ptr().add(((t0 + t) * nb + g + b) * QK)
                                as *const __m256i);
                        let p = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x)),
                            ones,
                        );
                        let sc = _mm256_permutevar8x32_ps(dd[t], sel);
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[t]);
                    }
                } else {
                    let q = _mm_loadu_si128(blk.add(qoff) as *const __m128i);
                    let mut u = _mm256_and_si256(
                        _mm256_inserti128_si256::<1>(
                            _mm256_castsi128_si256(q),
                            _mm_srli_epi16::<4>(q),
                        ),
                        low4,
                    );
                    if F == Q5_0 || F == Q5_1 {
                        // Fifth bits (ggml's `bytes_from_bits_32`): bit e of qh → 0x10 in
                        // byte e.
                        let qh = (blk.add(qoff - 4) as *const i32).read_unaligned();
                        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread_bits);
                        let set = _mm256_cmpeq_epi8(
                            _mm256_or_si256(bytes, bit_mask),
                            _mm256_set1_epi64x(-1),
                        );
                        u = _mm256_or_si256(u, _mm256_and_si256(set, fifth));
                    }
                    // Q4_0's quants are `nibble - 8`, Q5_0's `q5 - 16`, IQ4_NL's codebook
                    // levels (signed): ggml's sign trick as for Q8_0.
                    let x = if unsigned {
                        u
                    } else if F == IQ4_NL {
                        _mm256_shuffle_epi8(kv, u)
                    } else if F == Q5_0 {
                        _mm256_sub_epi8(u, sixteen)
                    } else {
                        _mm256_sub_epi8(u, eight)
                    };
                    let ax = if unsigned { u } else { _mm256_sign_epi8(x, x) };
                    for t in 0..T {
                        let y =
                            _mm256_loadu_si256(acts.qs.as_ptr().add(((t0 + t) * nb + g + b) * QK)
                                as *const __m256i);
                        let sy = if unsigned { y } else { _mm256_sign_epi8(y, x) };
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                        let sc = _mm256_permutevar8x32_ps(dd[t], sel);
                        let gb = g + b;
                        if F == IQ4_NL && nb % 2 == 1 && gb == nb - 1 {
                            tail_i[t] = hsum_i32(p);
                            tail_d[t] = _mm256_cvtss_f32(sc);
                        } else if F == IQ4_NL && gb % 2 == 1 {
                            acc2[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc2[t]);
                        } else {
                            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc[t]);
                        }
                    }
                }
            }
            g += 8;
        }
        let mut out = [0.0f32; T];
        for t in 0..T {
            out[t] = if F == IQ4_NL {
                let s = hsum_f32(_mm256_add_ps(acc[t], acc2[t]));
                if nb % 2 == 1 {
                    tail_d[t].mul_add(tail_i[t] as f32, s)
                } else {
                    s
                }
            } else {
                hsum_f32(acc[t]) + summs[t]
            };
        }
        out
    }
}

/// The low 16 bits of each i32 lane, read as f16, widened to f32.
#[inline(always)]
unsafe fn f16_lo_to_f32(v: __m256i) -> __m256 {
    // SAFETY: register-only AVX2/SSE4.1/F16C operations; features per the caller.
    unsafe {
        let m = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
        let h = _mm_packus_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
        _mm256_cvtph_ps(h)
    }
}

/// This level's rows of the weight-format table (formats not listed run the scalar row).
pub(crate) static TABLE: [WeightKernels; 9] = [
    row(GgmlType::F32, Activation::F32, 4, f32_chunk),
    row(GgmlType::F16, Activation::F16, 2, super::half_x86::f16_chunk_avx2)
        .with_tinyblas(super::tinyblas::f16_chunk_avx2, super::tinyblas::F16_STEP),
    row(GgmlType::BF16, Activation::Bf16, 2, super::half_x86::bf16_chunk_avx2)
        .with_tinyblas(super::tinyblas::bf16_chunk_avx2, super::tinyblas::BF16_STEP),
    soa_row(GgmlType::Q4_0, Activation::Q8_0, soa_chunk::<{ super::avx512::Q4_0 }>),
    soa_row(GgmlType::Q4_1, Activation::Q8_1, soa_chunk::<{ Q4_1 }>),
    soa_row(GgmlType::Q5_0, Activation::Q8_0, soa_chunk::<{ Q5_0 }>),
    soa_row(GgmlType::Q5_1, Activation::Q8_1, soa_chunk::<{ Q5_1 }>),
    soa_row(GgmlType::Q8_0, Activation::Q8_0, soa_chunk::<{ Q8_0 }>),
    soa_row(GgmlType::IQ4_NL, Activation::Q8_0, soa_chunk::<{ IQ4_NL }>),
];

/// [`matmul_chunk`] as a table kernel.
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract at this level.
unsafe fn soa_chunk<const F: u8>(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    // SAFETY: the caller's contract is matmul_chunk's (the table row is `soa`, so
    // `inputs.soa` holds the tokens).
    unsafe { matmul_chunk::<F>(w, row_bytes, &inputs.soa, outs) }
}

/// F32 weights with pulp at this level.
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract at this level.
unsafe fn f32_chunk(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]) {
    f32_rows(SimdLevel::Avx2, w, row_bytes, inputs, outs)
}
