//! Shared helpers for the `kernels_*` tests: deterministic data, ggml blocks, and the
//! list of SIMD levels this CPU runs (every test body runs at each of them).
#![allow(dead_code)]

use half::f16;
use pagoda::core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use pagoda::cpu::kernels::{Kernels, SimdLevel};

/// Kernels for every level this CPU can run, scalar first. Fails if none but scalar is
/// available on an x86-64 CPU with AVX2 (a detection bug would otherwise silently test
/// only the scalar path).
pub fn all_kernels() -> Vec<Kernels> {
    let levels = SimdLevel::available();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(levels.contains(&SimdLevel::Avx2), "AVX2 CPU but the Avx2 level is not available");
    }
    levels.into_iter().map(|l| Kernels::new(l).expect("available level")).collect()
}

/// xorshift64*: a small deterministic generator for bulk test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
}

/// `n` values uniform in `[-scale, scale)`; with `scale == 0` all zeros.
pub fn floats(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * scale).collect()
}

/// A random f16 scale of magnitude about `scale` (0 stays 0).
pub fn f16_scale(rng: &mut Rng, scale: f32) -> f16 {
    f16::from_f32(rng.f32() * scale)
}

pub fn q4_0_blocks(rng: &mut Rng, n: usize, scale: f32) -> Vec<BlockQ4_0> {
    (0..n)
        .map(|_| BlockQ4_0 { d: f16_scale(rng, scale), qs: std::array::from_fn(|_| rng.byte()) })
        .collect()
}

pub fn q4_1_blocks(rng: &mut Rng, n: usize, scale: f32) -> Vec<BlockQ4_1> {
    (0..n)
        .map(|_| BlockQ4_1 {
            d: f16_scale(rng, scale),
            m: f16_scale(rng, (scale * 8.0).min(6e4)),
            qs: std::array::from_fn(|_| rng.byte()),
        })
        .collect()
}

/// Q8_0 weights; quants in ggml's range -127..=127 unless `full_range` (then -128 too).
pub fn q8_0_blocks(rng: &mut Rng, n: usize, scale: f32, full_range: bool) -> Vec<BlockQ8_0> {
    (0..n)
        .map(|_| BlockQ8_0 {
            d: f16_scale(rng, scale),
            qs: std::array::from_fn(|_| {
                let b = rng.byte() as i8;
                if full_range || b != i8::MIN {
                    b
                } else {
                    -127
                }
            }),
        })
        .collect()
}

/// Dequantized values of a Q8_0 / Q8_1 activation block, in f64.
pub fn deq_q8_0(b: &BlockQ8_0) -> [f64; 32] {
    std::array::from_fn(|j| b.d.to_f64() * f64::from(b.qs[j]))
}

pub fn deq_q8_1(b: &BlockQ8_1) -> [f64; 32] {
    std::array::from_fn(|j| b.d.to_f64() * f64::from(b.qs[j]))
}
