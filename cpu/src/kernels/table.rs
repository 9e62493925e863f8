//! The weight-format table: for each SIMD level, one row per weight format naming its
//! activation format and its matmul kernel. [`Kernels`](super::Kernels) picks its level's
//! table once; a matmul looks its weight type up there and never matches on the type again.
//!
//! ```text
//!   level    ty      activation   chunk kernel (rows × all tokens)
//!   scalar   Q4_K    Q8_K         by_rows::<scalar Q4_K · Q8_K>
//!   avx512   Q4_1    Q8_1         avx512::matmul_chunk::<Q4_1>   (SoA activations)
//!   …
//! ```
//!
//! A level's table lists the formats it has its own kernels for; every other format falls
//! back to the scalar row, which is the specification every level's kernels reproduce bit
//! for bit. Adding a format is its kernel file(s) plus one row here per level that has one.
//!
//! Kernels are `unsafe fn`s with one contract ([`ChunkFn`]); a table's rows are reachable
//! only through a `Kernels` value, which exists at a level only after run-time detection.

use bytemuck::Pod;
use half::{bf16, f16};

use pagoda_core::ggml_type::GgmlType;
use pagoda_core::quant::{BlockQ5_0, BlockQ5_1, BlockQ8K, BlockQ8_0, BlockQ8_1};

use super::activations::Inputs;
use super::{float, scalar, tinyblas, SimdLevel};

/// The activation format a weight format's dot product reads (ggml's `vec_dot_type`);
/// [`Inputs`] holds the call's activations converted to it, once per matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// The f32 activations as given.
    F32,
    /// Rounded to f16 (round to nearest even).
    F16,
    /// Rounded to bf16 (round to nearest even).
    Bf16,
    /// Q8_0 blocks, llama.cpp's x86 rounding ([`super::Kernels::quantize_q8_0`]).
    Q8_0,
    /// Q8_1 blocks, llama.cpp's x86 rounding ([`super::Kernels::quantize_q8_1`]).
    Q8_1,
    /// Q8_K blocks (`quantize_row_q8_K_ref`, what llama.cpp's x86 build runs).
    Q8K,
}

/// A matmul kernel over a chunk of weight rows and every token:
/// `outs[t][r] = row r of w · token t of inputs`.
///
/// # Safety
/// The CPU supports the kernel's level; `w` is whole rows of `row_bytes` bytes each, aligned
/// for the format's block type; `row_bytes` is `inputs.nb` blocks; every `outs[t]` has
/// `w.len() / row_bytes` elements; `inputs` holds at least `outs.len()` tokens in the
/// format's [`Activation`].
pub(crate) type ChunkFn =
    unsafe fn(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]);

/// One weight format's kernels at one level.
#[derive(Clone, Copy)]
pub(crate) struct WeightKernels {
    /// The weight format.
    pub ty: GgmlType,
    /// What activations its kernel reads.
    pub act: Activation,
    /// Alignment its block type needs (bytes).
    pub align: usize,
    /// Whether the kernel reads the x86 structure-of-arrays copy of Q8_0/Q8_1 activations
    /// ([`Inputs::soa`]) rather than the blocks.
    pub soa: bool,
    /// The matmul kernel.
    pub chunk: ChunkFn,
    /// llama.cpp's kernel for matmuls of at least `kquant::TILED_MIN_TOKENS` tokens, where
    /// its order differs from `chunk`'s (the K-quants' tiled kernel); exact numerics take it
    /// for such batches.
    pub tiled: Option<ChunkFn>,
    /// llama.cpp's kernel for the matrices of this type it repacks at load (Q4_K, Q2_K:
    /// `kquant/llama_repacked.rs`), where its order differs from `chunk`'s and `tiled`'s.
    pub llama_repacked: Option<ChunkFn>,
    /// llama.cpp's tinyBLAS kernel (F16, BF16: `tinyblas.rs`) and its step in columns: what
    /// llama.cpp runs for matmuls of at least 2 tokens whose matrices have a multiple of 4
    /// rows and of the step columns.
    pub tinyblas: Option<(ChunkFn, usize)>,
}

impl core::fmt::Debug for WeightKernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WeightKernels({}, {:?})", self.ty, self.act)
    }
}

/// The kernels for weights of type `ty` at `level`: the level's own row, else the scalar
/// row; `None` if pagoda has no kernel for the type.
pub(crate) fn lookup(level: SimdLevel, ty: GgmlType) -> Option<&'static WeightKernels> {
    use super::kquant;
    let (own, own_k): (&'static [WeightKernels], &'static [WeightKernels]) = match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => (&super::avx512::TABLE, &kquant::AVX512),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => (&super::avx2::TABLE, &kquant::AVX2),
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => (&super::neon::TABLE, &kquant::NEON),
        _ => (&[], &[]),
    };
    own.iter().chain(own_k).chain(&kquant::SCALAR).chain(SCALAR.iter()).find(|k| k.ty == ty)
}

/// Every weight type some level has a kernel for (all of them have a scalar one).
pub(crate) fn supported() -> impl Iterator<Item = GgmlType> {
    // Each type has one scalar row, here or in the K-quant table.
    SCALAR.iter().chain(&super::kquant::SCALAR).map(|k| k.ty)
}

/// A block dot product over whole rows, for [`by_rows`].
pub(crate) trait RowDot {
    /// Weight block.
    type W: Pod;
    /// Activation block.
    type A: Pod;
    /// The activations this dot reads, all tokens (`n_tokens · nb` blocks).
    fn acts<'a>(inputs: &Inputs<'a>) -> &'a [Self::A];
    /// `w · a` (`w.len() == a.len()`).
    ///
    /// # Safety
    /// The CPU supports the level the implementation is written for.
    unsafe fn dot(w: &[Self::W], a: &[Self::A]) -> f32;
}

/// The [`ChunkFn`] of a row-at-a-time dot product: each row against each token.
///
/// # Safety
/// [`ChunkFn`]'s contract, with `D`'s level.
pub(crate) unsafe fn by_rows<D: RowDot>(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let nb = row_bytes / size_of::<D::W>();
    let acts = D::acts(inputs);
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        // Cannot fail: rows are whole blocks, aligned for the block type (the contract).
        let row: &[D::W] = bytemuck::cast_slice(row);
        for (t, o) in outs.iter_mut().enumerate() {
            // SAFETY: the CPU supports D's level (this fn's contract).
            o[r] = unsafe { D::dot(row, &acts[t * nb..(t + 1) * nb]) };
        }
    }
}

/// An activation block type and where [`Inputs`] keeps it.
pub(crate) trait ActBlock: Pod {
    /// The call's activations in this format.
    fn acts<'a>(inputs: &Inputs<'a>) -> &'a [Self];
}

impl ActBlock for BlockQ8_0 {
    fn acts<'a>(inputs: &Inputs<'a>) -> &'a [Self] {
        inputs.q8_0
    }
}

impl ActBlock for BlockQ8_1 {
    fn acts<'a>(inputs: &Inputs<'a>) -> &'a [Self] {
        inputs.q8_1
    }
}

impl ActBlock for BlockQ8K {
    fn acts<'a>(inputs: &Inputs<'a>) -> &'a [Self] {
        inputs.q8k
    }
}

/// The scalar level's dot products written out in llama.cpp's x86 float order.
macro_rules! scalar_dot {
    ($name:ident, $w:ty, $a:ty, $f:path) => {
        pub(crate) struct $name;
        impl RowDot for $name {
            type W = $w;
            type A = $a;
            fn acts<'a>(inputs: &Inputs<'a>) -> &'a [$a] {
                <$a as ActBlock>::acts(inputs)
            }
            unsafe fn dot(w: &[$w], a: &[$a]) -> f32 {
                $f(w, a)
            }
        }
    };
}

scalar_dot!(ScalarQ4_0, pagoda_core::quant::BlockQ4_0, BlockQ8_0, scalar::dot_q4_0);
scalar_dot!(ScalarQ4_1, pagoda_core::quant::BlockQ4_1, BlockQ8_1, scalar::dot_q4_1);
scalar_dot!(ScalarQ5_0, BlockQ5_0, BlockQ8_0, scalar::dot_q5_0);
scalar_dot!(ScalarQ5_1, BlockQ5_1, BlockQ8_1, scalar::dot_q5_1);
scalar_dot!(ScalarQ8_0, BlockQ8_0, BlockQ8_0, scalar::dot_q8_0);
scalar_dot!(ScalarIq4Nl, pagoda_core::quant::BlockIq4Nl, BlockQ8_0, scalar::dot_iq4_nl);

/// F32 weights at `level`: pulp's dot product of the level's width (the one kernel whose
/// float order follows the vector width). Each level's table wraps this in its own
/// [`ChunkFn`].
pub(crate) fn f32_rows(
    level: SimdLevel,
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 4;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        // Cannot fail: F32 rows are 4-aligned whole floats (the ChunkFn contract).
        let row: &[f32] = bytemuck::cast_slice(row);
        for (t, o) in outs.iter_mut().enumerate() {
            let x = &inputs.f32[t * cols..(t + 1) * cols];
            o[r] = float::run(level, float::Dot { a: row, b: x });
        }
    }
}

/// # Safety
/// [`ChunkFn`]'s contract.
unsafe fn f32_chunk(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]) {
    f32_rows(SimdLevel::Scalar, w, row_bytes, inputs, outs)
}

/// F16 weights: llama.cpp's `ggml_vec_dot_f16` of an AVX-512 build on f16 activations.
///
/// # Safety
/// [`ChunkFn`]'s contract.
pub(crate) unsafe fn f16_chunk(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 2;
    let mut wf = vec![0.0f32; cols];
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[f16] = bytemuck::cast_slice(row);
        for (d, s) in wf.iter_mut().zip(row) {
            *d = s.to_f32();
        }
        for (t, o) in outs.iter_mut().enumerate() {
            o[r] = crate::attention::dot_f16_widened(&wf, &inputs.f16[t * cols..(t + 1) * cols]);
        }
    }
}

/// BF16 weights: llama.cpp's `ggml_vec_dot_bf16` of an AVX-512 BF16 build
/// ([`scalar::dot_bf16`]) on bf16 activations.
///
/// # Safety
/// [`ChunkFn`]'s contract.
pub(crate) unsafe fn bf16_chunk(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 2;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[bf16] = bytemuck::cast_slice(row);
        for (t, o) in outs.iter_mut().enumerate() {
            o[r] = scalar::dot_bf16(row, &inputs.bf16[t * cols..(t + 1) * cols]);
        }
    }
}

/// A table row whose kernel reads the activation blocks.
pub(crate) const fn row(
    ty: GgmlType,
    act: Activation,
    align: usize,
    chunk: ChunkFn,
) -> WeightKernels {
    WeightKernels {
        ty,
        act,
        align,
        soa: false,
        chunk,
        tiled: None,
        llama_repacked: None,
        tinyblas: None,
    }
}

impl WeightKernels {
    /// This row with `tiled` as its kernel for large batches.
    pub(crate) const fn with_tiled(self, tiled: ChunkFn) -> Self {
        WeightKernels { tiled: Some(tiled), ..self }
    }

    /// This row with `f` as llama.cpp's kernel for the matrices it repacks.
    pub(crate) const fn with_llama_repacked(self, f: ChunkFn) -> Self {
        WeightKernels { llama_repacked: Some(f), ..self }
    }

    /// This row with `f` as llama.cpp's tinyBLAS kernel, `step` columns per step.
    pub(crate) const fn with_tinyblas(self, f: ChunkFn, step: usize) -> Self {
        WeightKernels { tinyblas: Some((f, step)), ..self }
    }
}

/// A table row whose kernel reads the x86 structure-of-arrays activations.
#[cfg(target_arch = "x86_64")]
pub(crate) const fn soa_row(ty: GgmlType, act: Activation, chunk: ChunkFn) -> WeightKernels {
    WeightKernels {
        ty,
        act,
        align: 2,
        soa: true,
        chunk,
        tiled: None,
        llama_repacked: None,
        tinyblas: None,
    }
}

/// The scalar level: every format pagoda runs but the K-quants (`kquant::SCALAR`).
static SCALAR: [WeightKernels; 9] = [
    row(GgmlType::F32, Activation::F32, 4, f32_chunk),
    row(GgmlType::F16, Activation::F16, 2, f16_chunk)
        .with_tinyblas(tinyblas::f16_chunk, tinyblas::F16_STEP),
    row(GgmlType::BF16, Activation::Bf16, 2, bf16_chunk)
        .with_tinyblas(tinyblas::bf16_chunk, tinyblas::BF16_STEP),
    row(GgmlType::Q4_0, Activation::Q8_0, 2, by_rows::<ScalarQ4_0>),
    row(GgmlType::Q4_1, Activation::Q8_1, 2, by_rows::<ScalarQ4_1>),
    row(GgmlType::Q5_0, Activation::Q8_0, 2, by_rows::<ScalarQ5_0>),
    row(GgmlType::Q5_1, Activation::Q8_1, 2, by_rows::<ScalarQ5_1>),
    row(GgmlType::Q8_0, Activation::Q8_0, 2, by_rows::<ScalarQ8_0>),
    row(GgmlType::IQ4_NL, Activation::Q8_0, 2, by_rows::<ScalarIq4Nl>),
];
