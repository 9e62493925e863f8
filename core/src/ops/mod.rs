//! The small ops of a Llama layer, scalar reference versions.
//!
//! These are the specification: `pagoda-cpu`'s vectorized twins are tested against them.
//! Each follows ggml's CPU reference closely (order of operations, accumulator widths),
//! so that pagoda's logits track llama.cpp's.

mod hadamard;
mod rmsnorm;
mod rope;
mod silu;
mod softmax;

pub use hadamard::Hadamard;
pub use rmsnorm::rmsnorm;
pub use rope::{rope_inplace, rope_neox_inplace, rotate_pair, RopeTable};
pub use silu::{silu, silu_mul_inplace};
pub use softmax::softmax_inplace;
