//! Q8_0: 32 values per block, signed 8-bit quants with one scale.

use half::f16;

/// ggml's `block_q8_0` (34 bytes): `x[i] = d * qs[i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale (`amax / 127`).
    pub d: f16,
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);
