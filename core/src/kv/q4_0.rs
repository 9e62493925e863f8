//! q4_0 KV pages: ggml's [`BlockQ4_0`] as a [`KvFormat`] unit.
//!
//! Each slot of each kv head stores its `head_dim` values as `head_dim / 32` blocks of 18 bytes
//! (an f16 scale and 32 four-bit quants, `x ≈ d · (q − 8)`): 4.5 bits per value, 7.1× less
//! than f32. Measurably lossy (see `docs/kv-memory.md`); offered for the memory/quality table.
//!
//! ```text
//! slot (head_dim 64) = [ d₀ nibbles(q₀…q₃₁) | d₁ nibbles(q₃₂…q₆₃) ]     2 × 18 B = 36 B
//!                        byte j of a block: low nibble = value j, high nibble = value j + 16
//! ```
//!
//! Attention reads the nibbles in place, one multiply by the scale per block half.
//!
//! The encoder is not ggml's reference quantizer (`d = max / −8`, used for weights): it
//! tries 21 grids around that one (`iscale = (−8 + c/10) / max`, `c = −10 ..= 10`), gives
//! each its least-squares scale `d = Σ x·l / Σ l²` (rounded to f16), and keeps the grid with
//! the smallest squared error, as llama.cpp's `make_qx_quants` does for K-quant weights. Same
//! layout and decoder; on the KV rows of the default model it takes perplexity at `-c 512`
//! from +6.2% to +5.3% over f32 pages (docs/kv-memory.md).

use crate::quant::{BlockFormat, BlockQ4_0};
use half::f16;

use super::KvFormat;

/// Values per q4_0 block.
const QK: usize = 32;

impl KvFormat for BlockQ4_0 {
    const VALUES_PER_UNIT: usize = QK;

    #[inline]
    fn zero() -> Self {
        // d = 0: every nibble reads back as 0 whatever its value.
        bytemuck::Zeroable::zeroed()
    }

    #[inline]
    fn encode(src: &[f32], dst: &mut [Self]) {
        for (x, b) in src.chunks_exact(QK).zip(dst.iter_mut()) {
            *b = encode_block(x.try_into().expect("chunks of QK"));
        }
    }

    #[inline]
    fn decode(row: &[Self], dst: &mut [f32]) {
        <BlockQ4_0 as BlockFormat>::dequantize(row, dst);
    }

    #[inline]
    fn dot(q: &[f32], row: &[Self]) -> f32 {
        debug_assert_eq!(q.len(), row.len() * QK);
        let mut sum = 0.0f32;
        for (b, q) in row.iter().zip(q.chunks_exact(QK)) {
            let (lo, hi) = q.split_at(QK / 2);
            let block: f32 =
                b.qs.iter()
                    .zip(lo.iter().zip(hi))
                    .map(|(&n, (&l, &h))| l * nibble(n & 0x0F) + h * nibble(n >> 4))
                    .sum();
            sum += b.d.to_f32() * block;
        }
        sum
    }

    #[inline]
    fn add_scaled(w: f32, row: &[Self], acc: &mut [f32]) {
        debug_assert_eq!(acc.len(), row.len() * QK);
        for (b, acc) in row.iter().zip(acc.chunks_exact_mut(QK)) {
            let s = w * b.d.to_f32();
            let (lo, hi) = acc.split_at_mut(QK / 2);
            for ((&n, l), h) in b.qs.iter().zip(lo).zip(hi) {
                *l += s * nibble(n & 0x0F);
                *h += s * nibble(n >> 4);
            }
        }
    }
}

/// A 4-bit quant with its offset of 8 removed: `0..=15 → -8..=7`.
#[inline(always)]
fn nibble(n: u8) -> f32 {
    f32::from(n as i8 - 8)
}

/// One block by the least-squares grid search of the module docs. A block of zeros (or one
/// whose values are all non-finite) encodes as zeros.
fn encode_block(x: &[f32; QK]) -> BlockQ4_0 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    // (squared error, scale, levels in −8..=7)
    let mut best = (f32::INFINITY, 0.0f32, [0i8; QK]);
    if amax > 0.0 {
        for c in -10..=10 {
            let iscale = (-8.0 + 0.1 * c as f32) / max;
            let mut l = [0i8; QK];
            let (mut sxl, mut sll) = (0.0f32, 0.0f32);
            for (li, &xi) in l.iter_mut().zip(x) {
                let q = libm::roundf(xi * iscale).clamp(-8.0, 7.0);
                *li = q as i8;
                sxl += xi * q;
                sll += q * q;
            }
            if sll == 0.0 {
                continue;
            }
            let d = f16::from_f32(sxl / sll).to_f32();
            let err: f32 = x
                .iter()
                .zip(&l)
                .map(|(&xi, &li)| (xi - d * f32::from(li)) * (xi - d * f32::from(li)))
                .sum();
            if err < best.0 {
                best = (err, d, l);
            }
        }
    }
    let (_, d, l) = best;
    let mut b = BlockQ4_0 { d: f16::from_f32(d), qs: [0; QK / 2] };
    for (q, (&lo, &hi)) in b.qs.iter_mut().zip(l[..QK / 2].iter().zip(&l[QK / 2..])) {
        *q = (lo + 8) as u8 | (((hi + 8) as u8) << 4);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Squared error of `x` stored as `blocks`.
    fn sq_err(x: &[f32], blocks: &[BlockQ4_0]) -> f64 {
        let mut deq = [0.0f32; 256];
        let deq = &mut deq[..x.len()];
        <BlockQ4_0 as BlockFormat>::dequantize(blocks, deq);
        x.iter().zip(deq.iter()).map(|(&a, &b)| f64::from(a - b) * f64::from(a - b)).sum()
    }

    #[test]
    fn the_encoder_beats_ggmls_reference_quantizer() {
        use crate::quant::Quantize;
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut unit = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let (mut ours, mut reference) = (0.0f64, 0.0f64);
        // Fewer cases under miri (each is 8 blocks × 21 grids).
        for case in 0..if cfg!(miri) { 16 } else { 400 } {
            let mut x = [0.0f32; 256];
            x.iter_mut().for_each(|v| *v = unit());
            if case % 2 == 0 {
                x[case % 256] *= 12.0; // an outlier
            }
            let (mut a, mut b) = ([BlockQ4_0::zero(); 8], [BlockQ4_0::zero(); 8]);
            BlockQ4_0::encode(&x, &mut a);
            <BlockQ4_0 as Quantize>::quantize(&x, &mut b);
            let (e_ours, e_ref) = (sq_err(&x, &a), sq_err(&x, &b));
            // Per block set: never worse than the reference beyond f16 rounding of the scale.
            assert!(e_ours <= e_ref * 1.002 + 1e-9, "case {case}: {e_ours} vs {e_ref}");
            ours += e_ours;
            reference += e_ref;
        }
        // About 9% less squared error on these blocks.
        assert!(ours < 0.95 * reference, "{ours} vs {reference}");
    }

    #[test]
    fn zeros_and_non_finite_blocks_encode_as_zeros() {
        let mut b = [BlockQ4_0::zero(); 1];
        for fill in [0.0f32, f32::NAN] {
            BlockQ4_0::encode(&[fill; 32], &mut b);
            let mut back = [1.0f32; 32];
            BlockQ4_0::decode(&b, &mut back);
            assert_eq!(back, [0.0; 32], "{fill}");
        }
    }

    #[test]
    fn dot_and_add_scaled_equal_the_dequantized_math() {
        let x: [f32; 64] = core::array::from_fn(|i| ((i * 29 % 64) as f32 - 30.0) / 9.0);
        let mut blocks = [BlockQ4_0::zero(); 2];
        BlockQ4_0::encode(&x, &mut blocks);
        let mut deq = [0.0; 64];
        BlockQ4_0::decode(&blocks, &mut deq);
        // 4 bits: within one step (amax / 8) of the input.
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(x.iter().zip(&deq).all(|(a, b)| (a - b).abs() <= amax / 8.0 + 1e-3));
        let q: [f32; 64] = core::array::from_fn(|i| (i as f32 * 0.61).cos());
        let want: f64 = q.iter().zip(&deq).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let got = BlockQ4_0::dot(&q, &blocks);
        assert!((f64::from(got) - want).abs() < 1e-4, "{got} vs {want}");
        let mut acc = [0.5f32; 64];
        BlockQ4_0::add_scaled(2.0, &blocks, &mut acc);
        for (a, d) in acc.iter().zip(&deq) {
            assert!((a - (0.5 + 2.0 * d)).abs() < 1e-5);
        }
    }
}
