//! aarch64 NEON kernels: the integer part of the block dot products.
//!
//! Stable Rust has no `sdot` wrapper in pulp, so the integer sums use the widening
//! multiply path (`vmull_s8` + `vpadalq_s16`), available on every aarch64 CPU. The float
//! combination per block is the scalar reference's, in the same order, so results equal
//! the scalar level exactly. Activation quantization at this level is the scalar code.

use core::arch::aarch64::*;

use pagoda_core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// `Σ a[j]·b[j]` over 32 signed bytes given as two halves each.
///
/// # Safety
/// NEON must be available (always on aarch64).
#[inline(always)]
unsafe fn dot32(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    // SAFETY: register-only NEON operations, NEON enabled by the caller.
    unsafe {
        let mut acc = vdupq_n_s32(0);
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a0), vget_low_s8(b0)));
        acc = vpadalq_s16(acc, vmull_high_s8(a0, b0));
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a1), vget_low_s8(b1)));
        acc = vpadalq_s16(acc, vmull_high_s8(a1, b1));
        vaddvq_s32(acc)
    }
}

/// Q4_0 · Q8_0 over whole rows (`w.len() == a.len()`).
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        // SAFETY: loads of 16 bytes from 16-byte arrays and 32-byte arrays.
        let sumi = unsafe {
            let q = vld1q_u8(x.qs.as_ptr());
            let eight = vdupq_n_s8(8);
            let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
            dot32(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)))
        };
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}

/// Q4_1 · Q8_1 over whole rows (`w.len() == a.len()`).
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        // SAFETY: loads of 16 bytes from 16-byte arrays and 32-byte arrays.
        let sumi = unsafe {
            let q = vld1q_u8(x.qs.as_ptr());
            let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
            dot32(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)))
        };
        sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

/// Q8_0 · Q8_0 over whole rows (`w.len() == a.len()`).
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        // SAFETY: loads of 16 bytes at offsets 0 and 16 of 32-byte arrays.
        let sumi = unsafe {
            dot32(
                vld1q_s8(x.qs.as_ptr()),
                vld1q_s8(x.qs.as_ptr().add(16)),
                vld1q_s8(y.qs.as_ptr()),
                vld1q_s8(y.qs.as_ptr().add(16)),
            )
        };
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}
