//! NEON K-quant dots: the scalar functions ([`super::scalar`]) with their integer lanes
//! formed by NEON's widening multiplies (`vmull_s8` + pairwise adds, on every aarch64
//! CPU). The lanes are the same exact integers and the float steps are the scalar code
//! (`f32::mul_add` is one `fmadd`), so results equal the scalar level bit for bit.

use core::arch::aarch64::*;

use pagoda_core::quant::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};

use super::super::activations::Inputs;
use super::super::table::RowDot;
use super::scalar::{self, Lanes};

/// The NEON [`Lanes`].
pub(super) struct Neon;

impl Lanes for Neon {
    #[inline(always)]
    fn lanes<const SUB: usize>(q: &[i8; QK_K], y: &[i8; QK_K], sc: &[i32]) -> [i32; 8] {
        let mut out = [0i32; 8];
        // SAFETY: NEON is part of the aarch64 baseline (enabled for every aarch64
        // target); the loads read 16 bytes at 32c and 32c + 16 < 256 of the 256-byte
        // arrays, the store 8 i32 into `out`.
        unsafe {
            // Lane sums of 16 values: [v0..4, v4..8, v8..12, v12..16].
            let quad = |a: int8x16_t, b: int8x16_t| {
                let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
                let hi = vpaddlq_s16(vmull_high_s8(a, b));
                vpaddq_s32(lo, hi)
            };
            let mut l0 = vdupq_n_s32(0);
            let mut l1 = vdupq_n_s32(0);
            for c in 0..QK_K / 32 {
                let (qp, yp) = (q.as_ptr().add(32 * c), y.as_ptr().add(32 * c));
                let p0 = quad(vld1q_s8(qp), vld1q_s8(yp));
                let p1 = quad(vld1q_s8(qp.add(16)), vld1q_s8(yp.add(16)));
                l0 = vmlaq_n_s32(l0, p0, sc[32 * c / SUB]);
                l1 = vmlaq_n_s32(l1, p1, sc[(32 * c + 16) / SUB]);
            }
            vst1q_s32(out.as_mut_ptr(), l0);
            vst1q_s32(out.as_mut_ptr().add(4), l1);
        }
        out
    }
}

/// A scalar K-quant dot with NEON lanes as a [`RowDot`].
macro_rules! neon_dot {
    ($name:ident, $w:ty, $f:path) => {
        pub(super) struct $name;
        impl RowDot for $name {
            type W = $w;
            type A = BlockQ8K;
            fn acts<'a>(inputs: &Inputs<'a>) -> &'a [BlockQ8K] {
                inputs.q8k
            }
            unsafe fn dot(w: &[$w], a: &[BlockQ8K]) -> f32 {
                $f(w, a)
            }
        }
    };
}

neon_dot!(NeonQ2K, BlockQ2K, scalar::dot_q2_k_in::<Neon>);
neon_dot!(NeonQ3K, BlockQ3K, scalar::dot_q3_k_in::<Neon>);
neon_dot!(NeonQ4K, BlockQ4K, scalar::dot_q4_k_in::<Neon>);
neon_dot!(NeonQ5K, BlockQ5K, scalar::dot_q5_k_in::<Neon>);
neon_dot!(NeonQ6K, BlockQ6K, scalar::dot_q6_k_in::<Neon>);
neon_dot!(NeonIq4Xs, BlockIq4Xs, scalar::dot_iq4_xs_in::<Neon>);
