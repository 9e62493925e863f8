//! How KV pages store values: the [`KvFormat`] trait, and [`KvElement`] for one-value-per-unit
//! float types (`f32`, `half::f16`, `half::bf16`).
//!
//! A slab is a `[F]` of *units*. A float element is a unit of one value; a q8_0 block is a unit
//! of 32 values sharing one scale. A slot's `head_dim` values are `head_dim / VALUES_PER_UNIT`
//! units, so every format fits the same page layout (see [the module docs](super)):
//!
//! ```text
//! slot, f32 / f16 / bf16:  [ x0 | x1 | x2 | ... | x63 ]           64 units of 1 value
//! slot, q8_0:              [ d,q0..q31 | d,q32..q63 ]             2 units of 32 values
//! ```
//!
//! Attention never widens a whole page, let alone the cache: it asks the format for the two
//! row operations it needs, [`KvFormat::dot`] (a score) and [`KvFormat::add_scaled`] (a value
//! accumulation), on one slot's units at a time.

use core::fmt;

/// A storage format of KV pages: the slab's unit type and the row operations attention needs.
///
/// # Lengths
///
/// A *row* is one slot of one kv head: `n` units holding `n × VALUES_PER_UNIT` values. Every
/// method takes the value side (`src`, `dst`, `q`, `acc`) with exactly
/// `row.len() × VALUES_PER_UNIT` f32s. [`KvPages`](super::KvPages) guarantees it; other callers
/// get the whole units that fit both sides (a `zip`) and a debug assertion.
pub trait KvFormat: Copy + fmt::Debug + Send + Sync + 'static {
    /// Values one unit stores: 1 for float elements, 32 for q8_0 and q4_0 blocks. `head_dim`
    /// must be a multiple of it.
    const VALUES_PER_UNIT: usize;

    /// A unit that reads back as zeros (the initial fill of a fresh slab).
    fn zero() -> Self;

    /// Stores the f32 values `src` into `dst` (rounding or quantizing).
    fn encode(src: &[f32], dst: &mut [Self]);

    /// Reads `row` back as f32 values into `dst`.
    fn decode(row: &[Self], dst: &mut [f32]);

    /// `Σ_i q[i] · x[i]` over the values `x` stored in `row`, without materialising `x`.
    fn dot(q: &[f32], row: &[Self]) -> f32;

    /// `acc[i] += w · x[i]` over the values `x` stored in `row`.
    fn add_scaled(w: f32, row: &[Self], acc: &mut [f32]);
}

/// A float type storing one value per unit: converts to and from `f32`. Every `KvElement` is a
/// [`KvFormat`] with `VALUES_PER_UNIT = 1`.
pub trait KvElement: Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Widens to `f32` (exact for `f32`, `f16` and `bf16`).
    fn to_f32(self) -> f32;
    /// Narrows from `f32` (round to nearest even for `f16` and `bf16`).
    fn from_f32(x: f32) -> Self;
}

impl KvElement for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl KvElement for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

/// bfloat16: the top half of an f32 (8 exponent bits, 7 mantissa bits). Same range as f32,
/// about 2–3 significant digits; widening is a shift.
impl KvElement for half::bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

impl<T: KvElement> KvFormat for T {
    const VALUES_PER_UNIT: usize = 1;

    #[inline]
    fn zero() -> Self {
        T::from_f32(0.0)
    }

    #[inline]
    fn encode(src: &[f32], dst: &mut [Self]) {
        debug_assert_eq!(src.len(), dst.len());
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = T::from_f32(x);
        }
    }

    #[inline]
    fn decode(row: &[Self], dst: &mut [f32]) {
        debug_assert_eq!(row.len(), dst.len());
        for (d, &x) in dst.iter_mut().zip(row) {
            *d = x.to_f32();
        }
    }

    #[inline]
    fn dot(q: &[f32], row: &[Self]) -> f32 {
        debug_assert_eq!(q.len(), row.len());
        q.iter().zip(row).map(|(&a, &b)| a * b.to_f32()).sum()
    }

    #[inline]
    fn add_scaled(w: f32, row: &[Self], acc: &mut [f32]) {
        debug_assert_eq!(row.len(), acc.len());
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += w * x.to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn round_trip<T: KvFormat>(values: &[f32], out: &mut [f32], units: &mut [T]) {
        T::encode(values, units);
        T::decode(units, out);
    }

    #[test]
    fn float_elements_round_as_their_type() {
        let x = [1.0f32, -0.1, 65504.0, 1.0e-3, 3.0e38];
        let mut out = [0.0; 5];
        round_trip(&x, &mut out, &mut [0.0f32; 5]);
        assert_eq!(out, x);
        round_trip(&x, &mut out, &mut [f16::ZERO; 5]);
        assert_eq!(out[..4], x.map(|v| f16::from_f32(v).to_f32())[..4]);
        assert_eq!(out[4], f32::INFINITY);
        round_trip(&x, &mut out, &mut [bf16::ZERO; 5]);
        assert_eq!(out, x.map(|v| bf16::from_f32(v).to_f32()));
        // bf16 keeps f32's range: 3e38 survives, with 8 significant bits.
        assert!((out[4] - 3.0e38).abs() / 3.0e38 < 1.0 / 256.0);
    }

    #[test]
    fn dot_and_add_scaled_read_the_stored_values() {
        let row = [bf16::from_f32(0.5), bf16::from_f32(-2.0), bf16::from_f32(3.0)];
        assert_eq!(<bf16 as KvFormat>::dot(&[2.0, 1.0, 1.0], &row), 2.0);
        let mut acc = [1.0f32; 3];
        <bf16 as KvFormat>::add_scaled(2.0, &row, &mut acc);
        assert_eq!(acc, [2.0, -3.0, 7.0]);
        assert_eq!(<f16 as KvFormat>::zero(), f16::ZERO);
    }
}
