//! Q4_1: 32 values per block, 4-bit unsigned quants with scale and minimum.

use half::f16;

/// ggml's `block_q4_1` (20 bytes): `x[i] = d * q[i] + m`.
///
/// `qs[j]` holds value `j` in its low nibble and value `j + 16` in its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of quant 0).
    pub m: f16,
    /// Nibbles: low = values 0..16, high = values 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);
