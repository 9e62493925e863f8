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

use bytemuck::Zeroable;
use half::{bf16, f16};
use pagoda_core::quant::{BlockQ8K, BlockQ8_0, BlockQ8_1, Quantize, QK, QK_K};

use super::error::KernelError;
use super::table::{Activation, WeightKernels};
use super::Kernels;

/// Reusable buffers for [`Kernels::matmul`](super::Kernels::matmul): pass the same one to
/// every call so that steady-state matmuls allocate nothing.
#[derive(Debug, Default)]
pub struct MatmulScratch {
    pub(crate) repacked: super::repacked::RepackedScratch,
    pub(crate) q8_0: Vec<BlockQ8_0>,
    pub(crate) q8_1: Vec<BlockQ8_1>,
    pub(crate) q8k: Vec<BlockQ8K>,
    pub(crate) f16: Vec<f32>,
    pub(crate) bf16: Vec<bf16>,
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

/// The activations of one matmul call, every token, in the form the weight format's kernel
/// reads ([`Activation`]); the other fields are empty.
///
/// ```text
/// token t's row: f32/f16/bf16[t·cols .. (t+1)·cols]    q8_0/q8_1/q8k[t·nb .. (t+1)·nb]
/// ```
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inputs<'a> {
    /// The f32 activations as given (`n_tokens · cols`).
    pub f32: &'a [f32],
    /// Rounded to f16 and widened back (F16 weights): each value is exactly an f16.
    pub f16: &'a [f32],
    /// Rounded to bf16 (BF16 weights).
    pub bf16: &'a [bf16],
    /// Q8_0 blocks (`n_tokens · nb`).
    pub q8_0: &'a [BlockQ8_0],
    /// Q8_1 blocks.
    pub q8_1: &'a [BlockQ8_1],
    /// Q8_K blocks.
    pub q8k: &'a [BlockQ8K],
    /// The x86 structure-of-arrays copy of the Q8_0/Q8_1 blocks (`soa` rows only).
    pub soa: Acts<'a>,
}

/// Converts `x` (`n_tokens` rows of `cols`) to what `wk`'s kernel reads, in `s`.
pub(crate) fn prepare<'a>(
    k: &Kernels,
    wk: &WeightKernels,
    x: &'a [f32],
    cols: usize,
    s: &'a mut MatmulScratch,
) -> Result<Inputs<'a>, KernelError> {
    let n = x.len();
    match wk.act {
        Activation::F32 => {}
        Activation::F16 => {
            resize(&mut s.f16, n);
            for (d, &v) in s.f16.iter_mut().zip(x) {
                *d = f16::from_f32(v).to_f32();
            }
        }
        Activation::Bf16 => {
            resize(&mut s.bf16, n);
            for (d, &v) in s.bf16.iter_mut().zip(x) {
                *d = bf16::from_f32(v);
            }
        }
        Activation::Q8_0 => {
            s.q8_0.clear();
            s.q8_0.resize(n / QK, BlockQ8_0::zeroed());
            k.quantize_q8_0(x, &mut s.q8_0)?;
            if wk.soa {
                fill_soa_from_q8_0(s);
            }
        }
        Activation::Q8_1 => {
            s.q8_1.clear();
            s.q8_1.resize(n / QK, BlockQ8_1::zeroed());
            k.quantize_q8_1(x, &mut s.q8_1)?;
            if wk.soa {
                fill_soa_from_q8_1(s, cols / QK);
            }
        }
        Activation::Q8K => {
            s.q8k.clear();
            s.q8k.resize(n / QK_K, BlockQ8K::zeroed());
            BlockQ8K::quantize(x, &mut s.q8k);
        }
    }
    let empty = |a: Activation| a != wk.act;
    Ok(Inputs {
        f32: x,
        f16: if empty(Activation::F16) { &[] } else { &s.f16 },
        bf16: if empty(Activation::Bf16) { &[] } else { &s.bf16 },
        q8_0: if empty(Activation::Q8_0) { &[] } else { &s.q8_0 },
        q8_1: if empty(Activation::Q8_1) { &[] } else { &s.q8_1 },
        q8k: if empty(Activation::Q8K) { &[] } else { &s.q8k },
        soa: Acts {
            nb: cols / QK,
            qs: if wk.soa { &s.qs } else { &[] },
            d: if wk.soa { &s.d } else { &[] },
            k: if wk.soa { &s.k } else { &[] },
            kq: if wk.soa { &s.kq } else { &[] },
        },
    })
}

/// Fill the SoA buffers from Q8_0 blocks (`k` unused: zero).
fn fill_soa_from_q8_0(s: &mut MatmulScratch) {
    let n = s.q8_0.len();
    resize(&mut s.qs, n * QK);
    resize(&mut s.d, n);
    resize(&mut s.k, n);
    for (i, b) in s.q8_0.iter().enumerate() {
        s.qs[i * QK..(i + 1) * QK].copy_from_slice(&b.qs);
        s.d[i] = b.d.to_f32();
    }
}

/// Fill the SoA buffers from Q8_1 blocks (`k = s`).
fn fill_soa_from_q8_1(s: &mut MatmulScratch, nb: usize) {
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
}
