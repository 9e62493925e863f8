//! Q4_0: 32 values per block, 4-bit unsigned quants with an implicit offset of 8.

use half::f16;

/// ggml's `block_q4_0` (18 bytes): `x[i] = d * (q[i] - 8)`.
///
/// `qs[j]` holds value `j` in its low nibble and value `j + 16` in its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: low = values 0..16, high = values 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);
