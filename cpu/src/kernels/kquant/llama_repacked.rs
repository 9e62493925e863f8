//! The order of llama.cpp's repacked Q4_K and Q2_K matmuls (`repack.cpp`, x86:
//! `ggml_gemm/gemv_q4_K_8x8_q8_K` with AVX2, `ggml_gemm/gemv_q2_K_8x8_q8_K` with AVX-512),
//! which llama.cpp runs for every matrix of those types whose row count is a multiple of 8
//! (not the token embedding, which stays in its plain buffer), at every batch size. Exact
//! numerics follow it for such matrices ([`crate::kernels::Kernels::matmul_multi_exact`]
//! with `repacked_by_llamacpp`).
//!
//! llama.cpp runs the GEMM on the batch's first `n - n % 4` tokens and the GEMV on the last
//! `n % 4`; they differ in how often the integer sums become floats. Per (row, token) cell:
//!
//! ```text
//! acc = 0, acc_min = 0
//! for each super-block, for each chunk c of it (GEMM: 64 values for Q4_K, 128 for Q2_K;
//!                                                GEMV: the whole 256):
//!     s1 = Σ_{sub ∈ c} sc[sub] · Σ_{e ∈ sub} q[e] · y[e]        exact i32
//!     s2 = Σ_{sub ∈ c} mn[sub] · Σ_{e ∈ sub} y[e]               exact i32 (the block sums)
//!     acc     = fma(f32(s1), f16(x.d) · y.d, acc)
//!     acc_min = fma(f32(s2), f16(x.dmin) · y.d, acc_min)
//! out = acc - acc_min
//! ```

use pagoda_core::quant::{BlockQ2K, BlockQ4K, BlockQ8K, QK_K};

use super::super::activations::Inputs;
use super::scalar::{q2k_quants, q4k_quants, scales_mins_k4};

/// A K-quant format as llama.cpp's repacked kernels see it.
pub(crate) trait Format: bytemuck::Pod {
    /// Values per GEMM chunk.
    const GEMM_CHUNK: usize;
    /// Values per sub-block.
    const SUB: usize;
    /// `(d, dmin)`.
    fn scales(&self) -> (f32, f32);
    /// Quants in value order, and each sub-block's scale and min.
    fn decode(&self) -> ([i8; QK_K], [i32; 16], [i32; 16]);
}

impl Format for BlockQ4K {
    const GEMM_CHUNK: usize = 64;
    const SUB: usize = 32;
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), self.dmin.to_f32())
    }
    fn decode(&self) -> ([i8; QK_K], [i32; 16], [i32; 16]) {
        let (sc, mn) = scales_mins_k4(&self.scales);
        let widen = |v: [i32; 8]| core::array::from_fn(|j| if j < 8 { v[j] } else { 0 });
        (q4k_quants(self), widen(sc), widen(mn))
    }
}

impl Format for BlockQ2K {
    const GEMM_CHUNK: usize = 128;
    const SUB: usize = 16;
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), self.dmin.to_f32())
    }
    fn decode(&self) -> ([i8; QK_K], [i32; 16], [i32; 16]) {
        let sc = core::array::from_fn(|j| i32::from(self.scales[j] & 0xF));
        let mn = core::array::from_fn(|j| i32::from(self.scales[j] >> 4));
        (q2k_quants(self), sc, mn)
    }
}

/// One super-block of weights, decoded once for every token it meets.
struct Decoded {
    q: [i8; QK_K],
    sc: [i32; 16],
    mn: [i32; 16],
    d: f32,
    dmin: f32,
}

impl Decoded {
    fn new<F: Format>(x: &F) -> Self {
        let (q, sc, mn) = x.decode();
        let (d, dmin) = x.scales();
        Decoded { q, sc, mn, d, dmin }
    }
}

/// One cell: `w · a` with integer sums turned into floats every `chunk` values (module docs).
///
/// The integer sums wrap instead of checking: they cannot overflow (at most 32 · 15 · 127 per
/// sub-block, times a 6-bit scale, 8 times: < 2^31), and wrapping arithmetic lets the loops
/// vectorize in test builds too.
#[inline(always)]
fn dot<F: Format>(w: &[Decoded], a: &[BlockQ8K], chunk: usize) -> f32 {
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for (x, y) in w.iter().zip(a) {
        let (dy, dminy) = (x.d * y.d, x.dmin * y.d);
        for c in 0..QK_K / chunk {
            let (mut s1, mut s2) = (0i32, 0i32);
            for sub in c * chunk / F::SUB..(c + 1) * chunk / F::SUB {
                let r = sub * F::SUB..(sub + 1) * F::SUB;
                let isum = x.q[r.clone()]
                    .iter()
                    .zip(&y.qs[r])
                    .fold(0i32, |s, (&a, &b)| s.wrapping_add(i32::from(a) * i32::from(b)));
                let bsum = y.bsums[sub * F::SUB / 16..(sub + 1) * F::SUB / 16]
                    .iter()
                    .fold(0i32, |s, &b| s.wrapping_add(i32::from(b)));
                s1 = s1.wrapping_add(x.sc[sub].wrapping_mul(isum));
                s2 = s2.wrapping_add(x.mn[sub].wrapping_mul(bsum));
            }
            acc = (s1 as f32).mul_add(dy, acc);
            acc_min = (s2 as f32).mul_add(dminy, acc_min);
        }
    }
    acc - acc_min
}

/// Every row of `w` against every token, the first `n - n % 4` tokens in the GEMM's chunks
/// and the rest in the GEMV's.
#[inline(always)]
pub(crate) fn rows<F: Format>(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let nb = row_bytes / size_of::<F>();
    let n = outs.len();
    let gemm_tokens = n - n % 4;
    let mut decoded = Vec::with_capacity(nb);
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        // Cannot fail: rows are whole blocks, aligned for the block type (the contract).
        let row: &[F] = bytemuck::cast_slice(row);
        decoded.clear();
        decoded.extend(row.iter().map(Decoded::new));
        for (t, o) in outs.iter_mut().enumerate() {
            let chunk = if t < gemm_tokens { F::GEMM_CHUNK } else { QK_K };
            o[r] = dot::<F>(&decoded, &inputs.q8k[t * nb..(t + 1) * nb], chunk);
        }
    }
}

per_level_chunks!(Format);
