//! Activations quantized for the integer matmul, and the scratch space that holds them.
//!
//! The scalar and NEON levels read ggml blocks (`BlockQ8_0` / `BlockQ8_1`). The x86 levels
//! read a structure-of-arrays copy, so that two consecutive blocks' quants are one 64-byte
//! load and the scales are already f32:
//!
//! ```text
//! token t, block b  ->  index i = t * nb + b
//! qs: | i=0: 32 × i8 | i=1: 32 × i8 | …     (contiguous, no headers in between)
//! d:  | dy(0) | dy(1) | …                    f32, the block scale
//! k:  | k(0)  | k(1)  | …                    f32, the per-block correction term:
//!        Q4_1 weights:            k = s (ggml's f16 `d * sum(qs)`, widened)
//!        Q4_0 weights:            k = -8   * dy * sum(qs)   (weights used as unsigned 0..15)
//!        Q8_0 weights, AVX-512:   k = -128 * dy * sum(qs)   (weights used as x + 128)
//!        Q8_0 weights, AVX2:      k = 0                     (signed product, no offset)
//! ```
//!
//! A row's dot product is then `Σ_b dx·dy·Σ_j u_j·y_j + Σ_b c_b·k_b` where `c_b` is the
//! weight block's `m` (Q4_1) or `d` (Q4_0, Q8_0).
// The SoA half is read by the x86 kernels only.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use pagoda_core::quant::{BlockQ8_0, BlockQ8_1, QK};

/// Reusable buffers for [`Kernels::matmul`](super::Kernels::matmul): pass the same one to
/// every call so that steady-state matmuls allocate nothing.
#[derive(Debug, Default)]
pub struct MatmulScratch {
    pub(crate) q8_0: Vec<BlockQ8_0>,
    pub(crate) q8_1: Vec<BlockQ8_1>,
    pub(crate) qs: Vec<i8>,
    pub(crate) d: Vec<f32>,
    pub(crate) k: Vec<f32>,
}

impl MatmulScratch {
    /// Empty scratch; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// How the correction term `k` is formed from a Q8_0 block (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Correction {
    /// `k = -c * dy * sum(qs)`.
    OffsetSum(f32),
    /// `k = 0`.
    Zero,
}

/// The structure-of-arrays view the x86 kernels read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Acts<'a> {
    /// Blocks per token row.
    pub nb: usize,
    /// `n_tokens * nb * 32` quants.
    pub qs: &'a [i8],
    /// `n_tokens * nb` scales.
    pub d: &'a [f32],
    /// `n_tokens * nb` correction terms.
    pub k: &'a [f32],
}

fn resize<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    v.clear();
    v.resize(n, T::default());
}

/// Fill the SoA buffers from Q8_0 blocks.
pub(crate) fn soa_from_q8_0(s: &mut MatmulScratch, nb: usize, c: Correction) -> Acts<'_> {
    let n = s.q8_0.len();
    resize(&mut s.qs, n * QK);
    resize(&mut s.d, n);
    resize(&mut s.k, n);
    for (i, b) in s.q8_0.iter().enumerate() {
        s.qs[i * QK..(i + 1) * QK].copy_from_slice(&b.qs);
        let d = b.d.to_f32();
        s.d[i] = d;
        s.k[i] = match c {
            Correction::OffsetSum(c) => {
                let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
                -c * d * sum as f32
            }
            Correction::Zero => 0.0,
        };
    }
    Acts { nb, qs: &s.qs, d: &s.d, k: &s.k }
}

/// Fill the SoA buffers from Q8_1 blocks (`k = s`).
pub(crate) fn soa_from_q8_1(s: &mut MatmulScratch, nb: usize) -> Acts<'_> {
    let n = s.q8_1.len();
    resize(&mut s.qs, n * QK);
    resize(&mut s.d, n);
    resize(&mut s.k, n);
    for (i, b) in s.q8_1.iter().enumerate() {
        s.qs[i * QK..(i + 1) * QK].copy_from_slice(&b.qs);
        s.d[i] = b.d.to_f32();
        s.k[i] = b.s.to_f32();
    }
    Acts { nb, qs: &s.qs, d: &s.d, k: &s.k }
}
