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
//! Only these float steps round, so any way of forming the integer sums gives the same bits:
//! every level runs this file's functions with its own [`Lanes`] (x86 levels compile the
//! portable loops with their features; `tests/kernels_kquant.rs` checks every level against
//! the scalar one).

use pagoda_core::quant::{BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

use super::scalar::{
    iq4xs_scales, iq4xs_values, min_prod4, q2k_min_prod, q2k_quants, q3k_quants, q3k_scales,
    q4k_quants, q5k_quants, q6k_quants, q6k_sclsub, scales_mins_k4, Lanes,
};

/// Activation rows (tokens) in one matmul from which llama.cpp takes its tiled K-quant
/// kernel (`ggml_tiled_min_batch`).
pub const TILED_MIN_TOKENS: usize = 8;

/// One super-block's float steps (module docs).
#[inline(always)]
fn step(acc: f32, s1: i32, s2: Option<(i32, f32)>, d: f32, yd: f32) -> f32 {
    let mut r = s1 as f32 * d;
    if let Some((s2, dmin)) = s2 {
        r = (-dmin).mul_add(s2 as f32, r);
    }
    r.mul_add(yd, acc)
}

fn sum(l: impl IntoIterator<Item = i32>) -> i32 {
    l.into_iter().fold(0i32, i32::wrapping_add)
}

/// Q4_K · Q8_K in the tiled order.
#[inline(always)]
pub(crate) fn dot_q4_k<L: Lanes>(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |acc, (x, y)| {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let s1 = sum(L::lanes::<32>(&q4k_quants(x), &y.qs, &sc));
        let s2 = sum(min_prod4(&mn, &y.bsums));
        step(acc, s1, Some((s2, x.dmin.to_f32())), x.d.to_f32(), y.d)
    })
}

/// Q5_K · Q8_K in the tiled order.
#[inline(always)]
pub(crate) fn dot_q5_k<L: Lanes>(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |acc, (x, y)| {
        let (sc, mn) = scales_mins_k4(&x.scales);
        let s1 = sum(L::lanes::<32>(&q5k_quants(x), &y.qs, &sc));
        let s2 = sum(min_prod4(&mn, &y.bsums));
        step(acc, s1, Some((s2, x.dmin.to_f32())), x.d.to_f32(), y.d)
    })
}

/// Q6_K · Q8_K in the tiled order (quants `0..64`, the `-32` through the block sums).
#[inline(always)]
pub(crate) fn dot_q6_k<L: Lanes>(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |acc, (x, y)| {
        let sc: [i32; 16] = core::array::from_fn(|j| i32::from(x.scales[j]));
        let l = L::lanes::<16>(&q6k_quants(x), &y.qs, &sc);
        let s1 = sum(l).wrapping_sub(sum(q6k_sclsub(&sc, &y.bsums)));
        step(acc, s1, None, x.d.to_f32(), y.d)
    })
}

/// Q2_K · Q8_K in the tiled order.
#[inline(always)]
pub(crate) fn dot_q2_k<L: Lanes>(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |acc, (x, y)| {
        let sc: [i32; 16] = core::array::from_fn(|j| i32::from(x.scales[j] & 0xF));
        let s1 = sum(L::lanes::<16>(&q2k_quants(x), &y.qs, &sc));
        let s2 = sum(q2k_min_prod(x, &y.bsums));
        step(acc, s1, Some((s2, x.dmin.to_f32())), x.d.to_f32(), y.d)
    })
}

/// Q3_K · Q8_K in the tiled order.
#[inline(always)]
pub(crate) fn dot_q3_k<L: Lanes>(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |acc, (x, y)| {
        let s1 = sum(L::lanes::<16>(&q3k_quants(x), &y.qs, &q3k_scales(x)));
        step(acc, s1, None, x.d.to_f32(), y.d)
    })
}

/// IQ4_XS · Q8_K in the tiled order.
#[inline(always)]
pub(crate) fn dot_iq4_xs<L: Lanes>(w: &[BlockIq4Xs], a: &[BlockQ8K]) -> f32 {
    w.iter().zip(a).fold(0.0, |acc, (x, y)| {
        let s1 = sum(L::lanes::<32>(&iq4xs_values(x), &y.qs, &iq4xs_scales(x)));
        step(acc, s1, None, x.d.to_f32(), y.d)
    })
}
