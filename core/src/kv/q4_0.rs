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

use crate::quant::{BlockFormat, BlockQ4_0, Quantize};

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
        <BlockQ4_0 as Quantize>::quantize(src, dst);
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

#[cfg(test)]
mod tests {
    use super::*;

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
