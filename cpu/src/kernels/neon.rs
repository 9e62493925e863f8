//! aarch64 NEON kernels: the integer part of the block dot products.
//!
//! Stable Rust has no `sdot` wrapper in pulp, so the integer lane sums use the widening
//! multiply path (`vmull_s8` + pairwise adds), available on every aarch64 CPU. The float
//! operations are the scalar level's, in the same order (8 lanes as two `float32x4_t`),
//! so results equal the scalar level (and the x86 levels) bit for bit. Activation
//! quantization at this level is the scalar code.

use core::arch::aarch64::*;

use pagoda_core::ggml_type::GgmlType;
use pagoda_core::quant::{
    BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, IQ4NL_VALUES,
};

use super::activations::Inputs;
use super::table::{by_rows, f32_rows, row, ActBlock, Activation, RowDot, WeightKernels};
use super::SimdLevel;

/// The 8 exact lane sums of one block (lane j = Σ of elements 4j..4j+4), as two
/// vectors of 4 (lanes 0..4 from the first 16 bytes, 4..8 from the second), widened to f32.
///
/// # Safety
/// NEON must be available (always on aarch64).
#[inline(always)]
unsafe fn lanes(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> [float32x4_t; 2] {
    // SAFETY: register-only NEON operations, NEON enabled by the caller.
    unsafe {
        let half = |a: int8x16_t, b: int8x16_t| {
            // Products of elements 0..8 and 8..16 (i16), pairwise-summed to i32 twice:
            // [e0+e1, e2+e3, …] then [(e0+e1)+(e2+e3), …] = 4-element lane sums.
            let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
            let hi = vpaddlq_s16(vmull_high_s8(a, b));
            vcvtq_f32_s32(vpaddq_s32(lo, hi))
        };
        [half(a0, b0), half(a1, b1)]
    }
}

/// `acc = fma(lanes, d, acc)` on both halves.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
unsafe fn lane_fma(acc: &mut [float32x4_t; 2], l: [float32x4_t; 2], d: f32) {
    // SAFETY: register-only NEON operations, NEON enabled by the caller.
    unsafe {
        let dv = vdupq_n_f32(d);
        acc[0] = vfmaq_f32(acc[0], l[0], dv);
        acc[1] = vfmaq_f32(acc[1], l[1], dv);
    }
}

/// llama.cpp's `hsum_float_8` over the two halves: `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
unsafe fn hsum8(acc: [float32x4_t; 2]) -> f32 {
    // SAFETY: register-only NEON operations, NEON enabled by the caller.
    unsafe {
        let r = vaddq_f32(acc[0], acc[1]);
        let t = vaddq_f32(r, vextq_f32::<2>(r, r));
        vgetq_lane_f32::<0>(t) + vgetq_lane_f32::<1>(t)
    }
}

/// Q4_0 · Q8_0 over whole rows (`w.len() == a.len()`), in
/// [`super::scalar::dot_q4_0`]'s float order.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: loads of 16 bytes from 16-byte arrays and at offsets 0 and 16 of 32-byte
    // arrays; NEON per this fn's contract.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        for (x, y) in w.iter().zip(a) {
            let q = vld1q_u8(x.qs.as_ptr());
            let eight = vdupq_n_s8(8);
            let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
            let l = lanes(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)));
            lane_fma(&mut acc, l, x.d.to_f32() * y.d.to_f32());
        }
        hsum8(acc)
    }
}

/// Q4_1 · Q8_1 over whole rows (`w.len() == a.len()`), in
/// [`super::scalar::dot_q4_1`]'s float order.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    // SAFETY: as in `vec_dot_q4_0_q8_0`.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        let mut summs = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            summs += x.m.to_f32() * y.s.to_f32();
            let q = vld1q_u8(x.qs.as_ptr());
            let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
            let l = lanes(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)));
            lane_fma(&mut acc, l, x.d.to_f32() * y.d.to_f32());
        }
        hsum8(acc) + summs
    }
}

/// Q8_0 · Q8_0 over whole rows (`w.len() == a.len()`), in
/// [`super::scalar::dot_q8_0`]'s float order.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: as in `vec_dot_q4_0_q8_0`.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        for (x, y) in w.iter().zip(a) {
            let l = lanes(
                vld1q_s8(x.qs.as_ptr()),
                vld1q_s8(x.qs.as_ptr().add(16)),
                vld1q_s8(y.qs.as_ptr()),
                vld1q_s8(y.qs.as_ptr().add(16)),
            );
            lane_fma(&mut acc, l, x.d.to_f32() * y.d.to_f32());
        }
        hsum8(acc)
    }
}

/// A Q5 block's quants `nibble | fifth bit << 4` as two vectors (elements 0..16, 16..32).
///
/// # Safety
/// NEON must be available.
#[inline(always)]
unsafe fn quints(qs: &[u8; 16], qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: a 16-byte load from a 16-byte array and 8-byte loads from an 8-byte array;
    // register-only NEON otherwise, enabled by the caller.
    unsafe {
        let q = vld1q_u8(qs.as_ptr());
        const BITS: [u8; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
        let bits = vld1_u8(BITS.as_ptr());
        let fifth = vdupq_n_u8(0x10);
        let spread = |a: u8, b: u8| {
            vandq_u8(vcombine_u8(vtst_u8(vdup_n_u8(a), bits), vtst_u8(vdup_n_u8(b), bits)), fifth)
        };
        let lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), spread(qh[0], qh[1]));
        let hi = vorrq_u8(vshrq_n_u8::<4>(q), spread(qh[2], qh[3]));
        (lo, hi)
    }
}

/// Q5_0 · Q8_0 over whole rows, in [`super::scalar::dot_q5_0`]'s float order.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: loads within the blocks' arrays (as in `vec_dot_q4_0_q8_0`); NEON per contract.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        let sixteen = vdupq_n_s8(16);
        for (x, y) in w.iter().zip(a) {
            let (lo, hi) = quints(&x.qs, x.qh);
            let lo = vsubq_s8(vreinterpretq_s8_u8(lo), sixteen);
            let hi = vsubq_s8(vreinterpretq_s8_u8(hi), sixteen);
            let l = lanes(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)));
            lane_fma(&mut acc, l, x.d.to_f32() * y.d.to_f32());
        }
        hsum8(acc)
    }
}

/// Q5_1 · Q8_1 over whole rows, in [`super::scalar::dot_q5_1`]'s float order.
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    // SAFETY: as in `vec_dot_q5_0_q8_0`.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        let mut summs = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            summs += x.m.to_f32() * y.s.to_f32();
            let (lo, hi) = quints(&x.qs, x.qh);
            let (lo, hi) = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
            let l = lanes(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)));
            lane_fma(&mut acc, l, x.d.to_f32() * y.d.to_f32());
        }
        hsum8(acc) + summs
    }
}

/// IQ4_NL · Q8_0 over whole rows, in [`super::scalar::dot_iq4_nl`]'s float order (block
/// pairs into two accumulators, an odd last block fma'd after the sum).
///
/// # Safety
/// NEON must be available.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0]) -> f32 {
    // SAFETY: loads within the blocks' arrays and the 16-entry codebook; NEON per contract.
    unsafe {
        let kv = vld1q_s8(IQ4NL_VALUES.as_ptr());
        let n = w.len().min(a.len());
        let levels = |x: &BlockIq4Nl| {
            let q = vld1q_u8(x.qs.as_ptr());
            (vqtbl1q_s8(kv, vandq_u8(q, vdupq_n_u8(0x0F))), vqtbl1q_s8(kv, vshrq_n_u8::<4>(q)))
        };
        let mut acc = [[vdupq_n_f32(0.0); 2]; 2];
        let pairs = n / 2 * 2;
        for i in 0..pairs {
            let (x, y) = (&w[i], &a[i]);
            let (lo, hi) = levels(x);
            let l = lanes(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)));
            lane_fma(&mut acc[i % 2], l, y.d.to_f32() * x.d.to_f32());
        }
        let mut sum = hsum8([vaddq_f32(acc[0][0], acc[1][0]), vaddq_f32(acc[0][1], acc[1][1])]);
        if pairs < n {
            let (x, y) = (&w[pairs], &a[pairs]);
            let (lo, hi) = levels(x);
            let l = lanes(lo, hi, vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)));
            // Exact: the lanes are small integers.
            let sumi = vaddvq_f32(vaddq_f32(l[0], l[1]));
            sum = (y.d.to_f32() * x.d.to_f32()).mul_add(sumi, sum);
        }
        sum
    }
}

/// NEON rows of the block dot products, for the table.
macro_rules! neon_dot {
    ($name:ident, $w:ty, $a:ty, $f:ident) => {
        struct $name;
        impl RowDot for $name {
            type W = $w;
            type A = $a;
            fn acts<'a>(inputs: &Inputs<'a>) -> &'a [$a] {
                <$a as ActBlock>::acts(inputs)
            }
            unsafe fn dot(w: &[$w], a: &[$a]) -> f32 {
                // SAFETY: NEON is available (RowDot::dot's contract at this level).
                unsafe { $f(w, a) }
            }
        }
    };
}

neon_dot!(NeonQ4_0, BlockQ4_0, BlockQ8_0, vec_dot_q4_0_q8_0);
neon_dot!(NeonQ4_1, BlockQ4_1, BlockQ8_1, vec_dot_q4_1_q8_1);
neon_dot!(NeonQ8_0, BlockQ8_0, BlockQ8_0, vec_dot_q8_0_q8_0);
neon_dot!(NeonQ5_0, BlockQ5_0, BlockQ8_0, vec_dot_q5_0_q8_0);
neon_dot!(NeonQ5_1, BlockQ5_1, BlockQ8_1, vec_dot_q5_1_q8_1);
neon_dot!(NeonIq4Nl, BlockIq4Nl, BlockQ8_0, vec_dot_iq4_nl_q8_0);

/// F32 weights with pulp at this level.
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract at this level.
unsafe fn f32_chunk(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]) {
    f32_rows(SimdLevel::Neon, w, row_bytes, inputs, outs)
}

/// This level's rows of the weight-format table (formats not listed run the scalar row).
pub(crate) static TABLE: [WeightKernels; 7] = [
    row(GgmlType::F32, Activation::F32, 4, f32_chunk),
    row(GgmlType::Q4_0, Activation::Q8_0, 2, by_rows::<NeonQ4_0>),
    row(GgmlType::Q4_1, Activation::Q8_1, 2, by_rows::<NeonQ4_1>),
    row(GgmlType::Q5_0, Activation::Q8_0, 2, by_rows::<NeonQ5_0>),
    row(GgmlType::Q5_1, Activation::Q8_1, 2, by_rows::<NeonQ5_1>),
    row(GgmlType::Q8_0, Activation::Q8_0, 2, by_rows::<NeonQ8_0>),
    row(GgmlType::IQ4_NL, Activation::Q8_0, 2, by_rows::<NeonIq4Nl>),
];
