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
//! k:  | k(0)  | k(1)  | …                    f32, Q4_1 only: ggml's f16 `s = dy * sum(qs)`
//! ```
//!
//! The kernels form exact integer lane sums (Q4_0's `nibble - 8` and Q8_0's signed quants
//! included), so no float correction term is needed except Q4_1's `Σ_b m_b · s_b`.
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
    pub(crate) kq: Vec<f32>,
}

impl MatmulScratch {
    /// Empty scratch; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }
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
    /// `n_tokens * nb` Q4_1 sums `s` (zero for Q8_0 blocks).
    pub k: &'a [f32],
    /// Q4_1 only: `k` regrouped by quads of tokens, `[t / 4][b][t % 4]` (zero-padded to a
    /// whole quad), so one 4-float load holds block b's `s` of four consecutive tokens.
    pub kq: &'a [f32],
}

fn resize<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    v.clear();
    v.resize(n, T::default());
}

/// Fill the SoA buffers from Q8_0 blocks (`k` unused: zero).
pub(crate) fn soa_from_q8_0(s: &mut MatmulScratch, nb: usize) -> Acts<'_> {
    let n = s.q8_0.len();
    resize(&mut s.qs, n * QK);
    resize(&mut s.d, n);
    resize(&mut s.k, n);
    for (i, b) in s.q8_0.iter().enumerate() {
        s.qs[i * QK..(i + 1) * QK].copy_from_slice(&b.qs);
        s.d[i] = b.d.to_f32();
    }
    Acts { nb, qs: &s.qs, d: &s.d, k: &s.k, kq: &s.kq }
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
    let n_tokens = n.checked_div(nb).unwrap_or(0);
    resize(&mut s.kq, n_tokens.div_ceil(4) * 4 * nb);
    for t in 0..n_tokens {
        for b in 0..nb {
            s.kq[((t / 4) * nb + b) * 4 + t % 4] = s.k[t * nb + b];
        }
    }
    Acts { nb, qs: &s.qs, d: &s.d, k: &s.k, kq: &s.kq }
}
