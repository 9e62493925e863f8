//! The K-quant weight formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS: 256-value super-blocks
//! × Q8_K activations): their rows of the weight-format table at each level.
//!
//! Each level's rows here are chained after that level's own table in
//! [`super::table::lookup`]; a format missing at a level runs the scalar row. The scalar
//! rows ([`scalar`]) are llama.cpp's x86 float order (pagoda-core's `VecDot` keeps ggml's
//! generic order: the two agree to rounding, `tests/kernels_kquant.rs`).
//!
//! | format | scalar (llama.cpp AVX2 order) | AVX2 (`avx2.rs`)              | AVX-512 + VNNI (`avx512.rs`)      |
//! |--------|-------------------------------|-------------------------------|-----------------------------------|
//! | Q2_K   | `dot_q2_k`                    | `maddubs` + `madd`            | `vpdpbusd` + `vpdpwssd`           |
//! | Q3_K   | `dot_q3_k`                    | `maddubs` (q + 4) − 4·y pairs | `vpdpbusd` from −4·Σy + `vpdpwssd`|
//! | Q4_K   | `dot_q4_k`                    | `maddubs` + `madd`            | `vpdpbusd` + `vpdpwssd`           |
//! | Q5_K   | `dot_q5_k`                    | `maddubs` + `madd`            | `vpdpbusd` + `vpdpwssd`           |
//! | Q6_K   | `dot_q6_k`                    | `maddubs` + `madd`            | `vpdpbusd` + `vpdpwssd`           |
//! | IQ4_XS | `dot_iq4_xs`                  | sign trick `maddubs` + `madd` | sign trick `maddubs` + `vpdpwssd` |
//!
//! NEON (`neon.rs`): the scalar functions with `vmull_s8` lane sums, one row at a time.
//!
//! The integer lanes are exact and the float steps are shared (`x86.rs`), so every level
//! returns the scalar bits, which are llama.cpp's (tests/kernels_kquant.rs).
//!
//! These rows are llama.cpp's `ggml_vec_dot_*_q8_K`, its order for a batch of fewer than 8
//! tokens. Each row also names llama.cpp's other orders, which exact numerics take where
//! llama.cpp does (`Kernels::matmul_exact`):
//! - `tiled`: batches of 8 tokens or more go to llama.cpp's tiled kernel ([`tiled`], every
//!   K-quant);
//! - `llama_repacked`: for weights whose row count is a multiple of 8 llama.cpp repacks Q4_K
//!   and Q2_K at load (`repack.cpp`, 8 rows interleaved) and runs
//!   `ggml_gemv/gemm_q{4,2}_K_8x8_q8_K` at every batch size, whose float order is another
//!   again ([`llama_repacked`]: one accumulator per output and a second for the mins).

/// The table kernels of a module's portable `rows::<F: $format>`: `chunk` (compiled for the
/// baseline: the scalar level, NEON's too), `chunk_avx2` and `chunk_avx512` (compiled with
/// those features). Each has the `ChunkFn` contract (whole aligned rows, `inputs` holding
/// every token's Q8_K blocks), the x86 ones also the CPU features they name.
macro_rules! per_level_chunks {
    ($format:path) => {
        /// [`rows`] compiled for the baseline.
        ///
        /// # Safety
        /// The `ChunkFn` contract.
        pub(crate) unsafe fn chunk<F: $format>(
            w: &[u8],
            row_bytes: usize,
            inputs: &Inputs<'_>,
            outs: &mut [&mut [f32]],
        ) {
            rows::<F>(w, row_bytes, inputs, outs)
        }

        /// [`rows`] compiled with AVX-512.
        ///
        /// # Safety
        /// The CPU has AVX-512 F/BW/VL and FMA; the `ChunkFn` contract.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        pub(crate) unsafe fn chunk_avx512<F: $format>(
            w: &[u8],
            row_bytes: usize,
            inputs: &Inputs<'_>,
            outs: &mut [&mut [f32]],
        ) {
            rows::<F>(w, row_bytes, inputs, outs)
        }

        /// [`rows`] compiled with AVX2.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA; the `ChunkFn` contract.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn chunk_avx2<F: $format>(
            w: &[u8],
            row_bytes: usize,
            inputs: &Inputs<'_>,
            outs: &mut [&mut [f32]],
        ) {
            rows::<F>(w, row_bytes, inputs, outs)
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod llama_repacked;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
mod tiled;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use tiled::TILED_MIN_TOKENS;

use pagoda_core::ggml_type::GgmlType;
use pagoda_core::quant::{BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

use super::activations::Inputs;
use super::table::{by_rows, row, Activation, RowDot, WeightKernels};

/// A scalar K-quant dot product as a [`RowDot`].
macro_rules! kquant_dot {
    ($name:ident, $w:ty, $f:path) => {
        pub(crate) struct $name;
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

kquant_dot!(ScalarQ2K, BlockQ2K, scalar::dot_q2_k);
kquant_dot!(ScalarQ3K, BlockQ3K, scalar::dot_q3_k);
kquant_dot!(ScalarQ4K, BlockQ4K, scalar::dot_q4_k);
kquant_dot!(ScalarQ5K, BlockQ5K, scalar::dot_q5_k);
kquant_dot!(ScalarQ6K, BlockQ6K, scalar::dot_q6_k);
kquant_dot!(ScalarIq4Xs, BlockIq4Xs, scalar::dot_iq4_xs);

/// K-quant rows of the scalar level: llama.cpp's x86 float order.
pub(crate) static SCALAR: [WeightKernels; 6] = [
    row(GgmlType::Q2_K, Activation::Q8K, 2, by_rows::<ScalarQ2K>)
        .with_tiled(tiled::chunk::<BlockQ2K>)
        .with_llama_repacked(llama_repacked::chunk::<BlockQ2K>),
    row(GgmlType::Q3_K, Activation::Q8K, 2, by_rows::<ScalarQ3K>)
        .with_tiled(tiled::chunk::<BlockQ3K>),
    row(GgmlType::IQ4_XS, Activation::Q8K, 2, by_rows::<ScalarIq4Xs>)
        .with_tiled(tiled::chunk::<BlockIq4Xs>),
    row(GgmlType::Q4_K, Activation::Q8K, 2, by_rows::<ScalarQ4K>)
        .with_tiled(tiled::chunk::<BlockQ4K>)
        .with_llama_repacked(llama_repacked::chunk::<BlockQ4K>),
    row(GgmlType::Q5_K, Activation::Q8K, 2, by_rows::<ScalarQ5K>)
        .with_tiled(tiled::chunk::<BlockQ5K>),
    row(GgmlType::Q6_K, Activation::Q8K, 2, by_rows::<ScalarQ6K>)
        .with_tiled(tiled::chunk::<BlockQ6K>),
];

/// K-quant rows of the AVX2 level.
#[cfg(target_arch = "x86_64")]
pub(crate) static AVX2: [WeightKernels; 6] = [
    row(GgmlType::Q2_K, Activation::Q8K, 2, avx2::chunk::<x86::Q2K>)
        .with_tiled(tiled::chunk_avx2::<BlockQ2K>)
        .with_llama_repacked(llama_repacked::chunk_avx2::<BlockQ2K>),
    row(GgmlType::Q3_K, Activation::Q8K, 2, avx2::chunk::<x86::Q3K>)
        .with_tiled(tiled::chunk_avx2::<BlockQ3K>),
    row(GgmlType::IQ4_XS, Activation::Q8K, 2, avx2::chunk::<x86::Iq4Xs>)
        .with_tiled(tiled::chunk_avx2::<BlockIq4Xs>),
    row(GgmlType::Q4_K, Activation::Q8K, 2, avx2::chunk::<x86::Q4K>)
        .with_tiled(tiled::chunk_avx2::<BlockQ4K>)
        .with_llama_repacked(llama_repacked::chunk_avx2::<BlockQ4K>),
    row(GgmlType::Q5_K, Activation::Q8K, 2, avx2::chunk::<x86::Q5K>)
        .with_tiled(tiled::chunk_avx2::<BlockQ5K>),
    row(GgmlType::Q6_K, Activation::Q8K, 2, avx2::chunk::<x86::Q6K>)
        .with_tiled(tiled::chunk_avx2::<BlockQ6K>),
];

/// K-quant rows of the AVX-512 level.
#[cfg(target_arch = "x86_64")]
pub(crate) static AVX512: [WeightKernels; 6] = [
    row(GgmlType::Q2_K, Activation::Q8K, 2, avx512::chunk::<x86::Q2K>)
        .with_tiled(tiled::chunk_avx512::<BlockQ2K>)
        .with_llama_repacked(llama_repacked::chunk_avx512::<BlockQ2K>),
    row(GgmlType::Q3_K, Activation::Q8K, 2, avx512::chunk::<x86::Q3K>)
        .with_tiled(tiled::chunk_avx512::<BlockQ3K>),
    row(GgmlType::IQ4_XS, Activation::Q8K, 2, avx512::chunk::<x86::Iq4Xs>)
        .with_tiled(tiled::chunk_avx512::<BlockIq4Xs>),
    row(GgmlType::Q4_K, Activation::Q8K, 2, avx512::chunk::<x86::Q4K>)
        .with_tiled(tiled::chunk_avx512::<BlockQ4K>)
        .with_llama_repacked(llama_repacked::chunk_avx512::<BlockQ4K>),
    row(GgmlType::Q5_K, Activation::Q8K, 2, avx512::chunk::<x86::Q5K>)
        .with_tiled(tiled::chunk_avx512::<BlockQ5K>),
    row(GgmlType::Q6_K, Activation::Q8K, 2, avx512::chunk::<x86::Q6K>)
        .with_tiled(tiled::chunk_avx512::<BlockQ6K>),
];

/// K-quant rows of the NEON level: the scalar order with NEON integer lanes.
#[cfg(target_arch = "aarch64")]
pub(crate) static NEON: [WeightKernels; 6] = [
    row(GgmlType::Q2_K, Activation::Q8K, 2, by_rows::<neon::NeonQ2K>)
        .with_tiled(tiled::chunk::<BlockQ2K>)
        .with_llama_repacked(llama_repacked::chunk::<BlockQ2K>),
    row(GgmlType::Q3_K, Activation::Q8K, 2, by_rows::<neon::NeonQ3K>)
        .with_tiled(tiled::chunk::<BlockQ3K>),
    row(GgmlType::Q4_K, Activation::Q8K, 2, by_rows::<neon::NeonQ4K>)
        .with_tiled(tiled::chunk::<BlockQ4K>)
        .with_llama_repacked(llama_repacked::chunk::<BlockQ4K>),
    row(GgmlType::Q5_K, Activation::Q8K, 2, by_rows::<neon::NeonQ5K>)
        .with_tiled(tiled::chunk::<BlockQ5K>),
    row(GgmlType::Q6_K, Activation::Q8K, 2, by_rows::<neon::NeonQ6K>)
        .with_tiled(tiled::chunk::<BlockQ6K>),
    row(GgmlType::IQ4_XS, Activation::Q8K, 2, by_rows::<neon::NeonIq4Xs>)
        .with_tiled(tiled::chunk::<BlockIq4Xs>),
];
