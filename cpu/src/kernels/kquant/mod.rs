//! The K-quant weight formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS: 256-value super-blocks
//! × Q8_K activations): their rows of the weight-format table at each level.
//!
//! Each level's rows here are chained after that level's own table in
//! [`super::table::lookup`]; a format missing at a level runs the scalar row.

use super::table::WeightKernels;

/// K-quant rows of the scalar level (empty: the scalar table's rows apply).
pub(crate) static SCALAR: [WeightKernels; 0] = [];

/// K-quant rows of the AVX2 level.
#[cfg(target_arch = "x86_64")]
pub(crate) static AVX2: [WeightKernels; 0] = [];

/// K-quant rows of the AVX-512 level.
#[cfg(target_arch = "x86_64")]
pub(crate) static AVX512: [WeightKernels; 0] = [];

/// K-quant rows of the NEON level.
#[cfg(target_arch = "aarch64")]
pub(crate) static NEON: [WeightKernels; 0] = [];
