//! Shared helpers for the per-format unit tests: deterministic data and generic checks.

use super::{BlockFormat, Quantize, VecDot};

/// Blocks per test vector: small under miri.
pub(crate) const TEST_BLOCKS: usize = if cfg!(miri) { 2 } else { 16 };

/// A deterministic pseudo-random vector in `[-scale, scale)` (xorshift32).
pub(crate) fn pseudo_random(n: usize, seed: u32, scale: f32) -> std::vec::Vec<f32> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Root-mean-square error of quantize→dequantize, relative to nothing (ggml's
/// `test-quantize-fns` compares the mean squared-difference against its budget).
pub(crate) fn round_trip_rmse<B: Quantize>(x: &[f32]) -> f32 {
    let mut blocks = std::vec![B::zeroed(); x.len() / B::BLOCK];
    B::quantize(x, &mut blocks);
    let mut y = std::vec![0.0f32; x.len()];
    B::dequantize(&blocks, &mut y);
    let se: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    (se / x.len() as f32).sqrt()
}

/// `vec_dot(w, a)` against the f32 dot product of the dequantized operands.
pub(crate) fn vec_dot_vs_dequantized<W: VecDot + Quantize>(xw: &[f32], xa: &[f32]) -> (f32, f32) {
    let n = xw.len();
    let mut w = std::vec![W::zeroed(); n / W::BLOCK];
    let mut a = std::vec![<W::Activation as bytemuck::Zeroable>::zeroed(); n / W::BLOCK];
    W::quantize(xw, &mut w);
    W::Activation::quantize(xa, &mut a);
    let mut dw = std::vec![0.0f32; n];
    let mut da = std::vec![0.0f32; n];
    W::dequantize(&w, &mut dw);
    W::Activation::dequantize(&a, &mut da);
    let reference: f64 = dw.iter().zip(&da).map(|(&p, &q)| p as f64 * q as f64).sum();
    (W::vec_dot(&w, &a), reference as f32)
}

/// Generic per-format checks: round-trip error within `budget` and a vec_dot that agrees
/// with the dequantized dot product.
pub(crate) fn check_format<W: VecDot + Quantize>(budget: f32) {
    let n = TEST_BLOCKS * W::BLOCK;
    let x = pseudo_random(n, 0x1234_5678, 1.0);
    let e = round_trip_rmse::<W>(&x);
    assert!(e < budget, "{}: round-trip rmse {e} exceeds {budget}", W::TYPE);
    let xa = pseudo_random(n, 0x9abc_def1, 2.0);
    let (got, want) = vec_dot_vs_dequantized::<W>(&x, &xa);
    let tol = 1e-4 * (n as f32).sqrt() + 1e-3 * want.abs();
    assert!((got - want).abs() <= tol, "{}: vec_dot {got} vs {want}", W::TYPE);
}
