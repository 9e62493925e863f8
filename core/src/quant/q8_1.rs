//! Q8_1: 32 values per block, signed 8-bit quants with a scale and the scaled sum
//! (the activation format paired with Q4_1 and Q5_1 weights).

use half::f16;

/// ggml's `block_q8_1` (36 bytes): `x[i] = d * qs[i]`, `s = d * sum(qs)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale (`amax / 127`).
    pub d: f16,
    /// `d * sum(qs[i])`, used to fold the weight minimum into the dot product.
    pub s: f16,
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == 36);
