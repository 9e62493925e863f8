//! The K-quant matmul of llama.cpp's tiled kernel (`ggml-cpu/tiled/`, new in b11312), which
//! llama.cpp runs instead of `ggml_vec_dot_<fmt>_q8_K` for a matmul of **at least
//! [`TILED_MIN_TOKENS`] activation rows** (a prompt batch) over weights it has not repacked
//! (Q3_K, Q5_K, Q6_K and IQ4_XS always on x86; Q4_K and Q2_K under `--no-repack`, or rows
//! not a multiple of 8). Exact numerics follow it for those batches
//! ([`crate::kernels::Kernels::matmul_exact`]).
//!
//! Per (row, token) cell, super-block by super-block in order (its AVX-512 VNNI microkernel,
//! `tiled_run_micro_vnni_8x16`, as GCC compiled it: the last step is one `vfmadd213ps`):
//!
//! ```text
//! s1  = Σ_sub sc[sub] · Σ_{e ∈ sub} v[e] · y[e]      exact i32 (v the signed quant value)
//! s2  = Σ_sub mn[sub] · Σ_{e ∈ sub} y[e]             exact i32 (Q4_K, Q5_K, Q2_K: the mins)
//! r   = f32(s1) · f16(x.d)
//! r   = fma(-f16(x.dmin), f32(s2), r)                 (formats with mins)
//! acc = fma(r, y.d, acc)                              from acc = 0
//! ```
//!
//! Only these float steps round, so any way of forming the integer sums gives the same bits.
//! Here each row's super-blocks are decoded once ([`Decoded`]: signed values, a scale and a
//! min per 16 values) and met by every token of the batch; the integer loops are portable
//! code that each level compiles with its own features ([`chunk`], [`chunk_avx2`],
//! [`chunk_avx512`]; `tests/kernels_kquant.rs` checks every level against the scalar one).

use pagoda_core::quant::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};

use super::super::activations::Inputs;
use super::scalar::{
    iq4xs_scales, iq4xs_values, q2k_quants, q3k_quants, q3k_scales, q4k_quants, q5k_quants,
    q6k_quants, scales_mins_k4,
};

/// Activation rows (tokens) in one matmul from which llama.cpp takes its tiled K-quant
/// kernel (`ggml_tiled_min_batch`).
pub const TILED_MIN_TOKENS: usize = 8;

/// One super-block of weights as the tiled order sees it, decoded once per row.
///
/// `q` holds the 256 signed values (Q6_K's `0..64` minus 32, Q3_K's `-4..4`, IQ4_XS's
/// codebook values), `sc[j]` and `mn[j]` the scale and min of values `16j..16j + 16` (a
/// 32-value sub-block's appear twice). With them `s1 = Σ_j sc[j] · Σ_e q[16j+e] · y[16j+e]`
/// and `s2 = Σ_j mn[j] · bsums[j]` are the module's integers exactly (Q6_K's `-32` enters
/// through `q` instead of the block sums: the same integer).
pub(crate) struct Decoded {
    q: [i8; QK_K],
    sc: [i32; 16],
    mn: [i32; 16],
    d: f32,
    /// `f16(x.dmin)` for the formats with mins.
    dmin: Option<f32>,
}

/// A K-quant format of the tiled kernel.
pub(crate) trait Format: bytemuck::Pod {
    /// The super-block decoded ([`Decoded`]).
    fn decode(&self) -> Decoded;
}

/// 8 per-32 values as 16 per-16 ones.
fn per16(v: [i32; 8]) -> [i32; 16] {
    core::array::from_fn(|j| v[j / 2])
}

impl Format for BlockQ2K {
    fn decode(&self) -> Decoded {
        Decoded {
            q: q2k_quants(self),
            sc: core::array::from_fn(|j| i32::from(self.scales[j] & 0xF)),
            mn: core::array::from_fn(|j| i32::from(self.scales[j] >> 4)),
            d: self.d.to_f32(),
            dmin: Some(self.dmin.to_f32()),
        }
    }
}

impl Format for BlockQ3K {
    fn decode(&self) -> Decoded {
        Decoded {
            q: q3k_quants(self),
            sc: q3k_scales(self),
            mn: [0; 16],
            d: self.d.to_f32(),
            dmin: None,
        }
    }
}

impl Format for BlockQ4K {
    fn decode(&self) -> Decoded {
        let (sc, mn) = scales_mins_k4(&self.scales);
        Decoded {
            q: q4k_quants(self),
            sc: per16(sc),
            mn: per16(mn),
            d: self.d.to_f32(),
            dmin: Some(self.dmin.to_f32()),
        }
    }
}

impl Format for BlockQ5K {
    fn decode(&self) -> Decoded {
        let (sc, mn) = scales_mins_k4(&self.scales);
        Decoded {
            q: q5k_quants(self),
            sc: per16(sc),
            mn: per16(mn),
            d: self.d.to_f32(),
            dmin: Some(self.dmin.to_f32()),
        }
    }
}

impl Format for BlockQ6K {
    fn decode(&self) -> Decoded {
        Decoded {
            q: q6k_quants(self).map(|v| v - 32),
            sc: core::array::from_fn(|j| i32::from(self.scales[j])),
            mn: [0; 16],
            d: self.d.to_f32(),
            dmin: None,
        }
    }
}

impl Format for BlockIq4Xs {
    fn decode(&self) -> Decoded {
        Decoded {
            q: iq4xs_values(self),
            sc: per16(iq4xs_scales(self)),
            mn: [0; 16],
            d: self.d.to_f32(),
            dmin: None,
        }
    }
}

/// One cell: decoded weights `w` against one token's blocks `a` (module docs).
///
/// The integer sums wrap instead of checking: they cannot overflow (at most 16 · 127 · 127
/// per 16 values, times a scale below 128, 16 times: < 2^31), and wrapping arithmetic lets
/// the loops vectorize in test builds too.
#[inline(always)]
fn dot(w: &[Decoded], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut s1 = 0i32;
        for ((q, ys), &sc) in x.q.chunks_exact(16).zip(y.qs.chunks_exact(16)).zip(&x.sc) {
            let isum = q
                .iter()
                .zip(ys)
                .fold(0i32, |s, (&a, &b)| s.wrapping_add(i32::from(a) * i32::from(b)));
            s1 = s1.wrapping_add(sc.wrapping_mul(isum));
        }
        let mut r = s1 as f32 * x.d;
        if let Some(dmin) = x.dmin {
            let s2 =
                x.mn.iter()
                    .zip(&y.bsums)
                    .fold(0i32, |s, (&m, &b)| s.wrapping_add(m * i32::from(b)));
            r = (-dmin).mul_add(s2 as f32, r);
        }
        acc = r.mul_add(y.d, acc);
    }
    acc
}

/// Every row of `w` against every token of `inputs` in the tiled order.
#[inline(always)]
fn rows<F: Format>(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]) {
    let nb = row_bytes / size_of::<F>();
    let mut decoded = Vec::with_capacity(nb);
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        // Cannot fail: rows are whole blocks, aligned for the block type (the contract).
        let row: &[F] = bytemuck::cast_slice(row);
        decoded.clear();
        decoded.extend(row.iter().map(F::decode));
        for (t, o) in outs.iter_mut().enumerate() {
            o[r] = dot(&decoded, &inputs.q8k[t * nb..(t + 1) * nb]);
        }
    }
}

per_level_chunks!(Format);
