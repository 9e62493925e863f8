//! q8_0 KV pages: ggml's [`BlockQ8_0`] as a [`KvFormat`] unit.
//!
//! Each slot of each kv head stores its `head_dim` values as `head_dim / 32` blocks of 34 bytes
//! (an f16 scale `d = amax / 127` and 32 signed bytes, `x ≈ d · q`): 8.5 bits per value, 3.76×
//! less than f32 and 1.88× less than f16.
//!
//! ```text
//! slot (head_dim 64) = [ d₀ q₀ … q₃₁ | d₁ q₃₂ … q₆₃ ]      2 × 34 B = 68 B  (f32: 256 B)
//! ```
//!
//! Attention reads the blocks in place: a score is `Σ_b d_b · Σ_i q[32b + i] · qs_b[i]`
//! and a value accumulation is `acc[32b + i] += (w · d_b) · qs_b[i]`: one multiply by the
//! scale per block, never a dequantized copy of the row.
//!
//! Writing quantizes exactly as ggml's `quantize_row_q8_0_ref` (the [`Quantize`] impl), the
//! same rounding llama.cpp's `-ctk q8_0 -ctv q8_0` cache uses.

use crate::quant::{BlockFormat, BlockQ8_0, Quantize};

use super::KvFormat;

/// Values per q8_0 block.
const QK: usize = 32;

impl KvFormat for BlockQ8_0 {
    const VALUES_PER_UNIT: usize = QK;

    #[inline]
    fn zero() -> Self {
        bytemuck::Zeroable::zeroed()
    }

    #[inline]
    fn encode(src: &[f32], dst: &mut [Self]) {
        <BlockQ8_0 as Quantize>::quantize(src, dst);
    }

    #[inline]
    fn decode(row: &[Self], dst: &mut [f32]) {
        <BlockQ8_0 as BlockFormat>::dequantize(row, dst);
    }

    #[inline]
    fn dot(q: &[f32], row: &[Self]) -> f32 {
        debug_assert_eq!(q.len(), row.len() * QK);
        let mut sum = 0.0f32;
        for (b, q) in row.iter().zip(q.chunks_exact(QK)) {
            let block: f32 = b.qs.iter().zip(q).map(|(&k, &q)| q * f32::from(k)).sum();
            sum += b.d.to_f32() * block;
        }
        sum
    }

    #[inline]
    fn add_scaled(w: f32, row: &[Self], acc: &mut [f32]) {
        debug_assert_eq!(acc.len(), row.len() * QK);
        for (b, acc) in row.iter().zip(acc.chunks_exact_mut(QK)) {
            let s = w * b.d.to_f32();
            for (a, &v) in acc.iter_mut().zip(&b.qs) {
                *a += s * f32::from(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> [f32; 64] {
        core::array::from_fn(|i| ((i * 37 % 64) as f32 - 31.5) / 7.0)
    }

    #[test]
    fn round_trip_error_is_within_half_a_step_per_block() {
        let x = row();
        let mut blocks = [BlockQ8_0::zero(); 2];
        BlockQ8_0::encode(&x, &mut blocks);
        let mut back = [0.0; 64];
        BlockQ8_0::decode(&blocks, &mut back);
        for (xb, yb) in x.chunks_exact(QK).zip(back.chunks_exact(QK)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // Step d = amax / 127, rounded to f16 (relative error 2⁻¹¹ on d, ×127 at the edge).
            let tol = amax / 127.0 * (0.5 + 127.0 / 2048.0);
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
            }
        }
    }

    #[test]
    fn dot_and_add_scaled_equal_the_dequantized_math() {
        let x = row();
        let mut blocks = [BlockQ8_0::zero(); 2];
        BlockQ8_0::encode(&x, &mut blocks);
        let mut deq = [0.0; 64];
        BlockQ8_0::decode(&blocks, &mut deq);
        let q: [f32; 64] = core::array::from_fn(|i| (i as f32 * 0.37).sin());
        let want: f64 = q.iter().zip(&deq).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let got = BlockQ8_0::dot(&q, &blocks);
        assert!((f64::from(got) - want).abs() < 1e-4, "{got} vs {want}");
        let mut acc = [1.0f32; 64];
        BlockQ8_0::add_scaled(-0.75, &blocks, &mut acc);
        for (a, d) in acc.iter().zip(&deq) {
            assert!((a - (1.0 - 0.75 * d)).abs() < 1e-5);
        }
        // The zero unit reads back as zeros.
        BlockQ8_0::decode(&[BlockQ8_0::zero(); 2], &mut deq);
        assert!(deq.iter().all(|&v| v == 0.0));
    }
}
