//! The scalar level: portable kernels on ggml's block layouts.
//!
//! Activation quantization here follows what llama.cpp executes on x86 (its AVX/AVX2
//! `quantize_row_q8_0` / `quantize_row_q8_1`), which every SIMD level reproduces byte for
//! byte:
//!
//! ```text
//! amax = max |x|;  d = amax / 127;  id = amax != 0 ? 127 / amax : 0
//! q[i] = round_half_to_even(x[i] * id)          (`_mm256_round_ps(_, _MM_ROUND_NEAREST)`)
//! Q8_1 only: s = f16(d * (float) sum(q))
//! ```
//!
//! This differs from ggml's portable `quantize_row_q8_1_ref` (`id = 1/d`, `roundf`, half
//! away from zero) on exact ties and on the last bit of `id`; llama.cpp parity on x86
//! needs the former.

use half::f16;
use pagoda_core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};

/// `(d, id)` for a block whose largest magnitude is `amax`.
#[inline]
pub(crate) fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// Quantize one block of 32 values to `(d, qs, sum(qs))`.
#[inline]
fn quantize_block(x: &[f32]) -> (f32, [i8; QK], i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (d, id) = scales(amax);
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        // In range: |v * id| <= 127 (plus rounding), and the cast saturates otherwise.
        let r = (v * id).round_ties_even() as i8;
        *q = r;
        sum += i32::from(r);
    }
    (d, qs, sum)
}

/// `x` (a multiple of 32 long, `out.len() == x.len() / 32`) to Q8_0 blocks.
pub(crate) fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs, _) = quantize_block(xs);
        *b = BlockQ8_0 { d: f16::from_f32(d), qs };
    }
}

/// `x` (a multiple of 32 long, `out.len() == x.len() / 32`) to Q8_1 blocks.
pub(crate) fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs, sum) = quantize_block(xs);
        *b = BlockQ8_1 { d: f16::from_f32(d), s: f16::from_f32(d * sum as f32), qs };
    }
}

/// Q4_0 · Q8_0 over whole rows (ggml's `ggml_vec_dot_q4_0_q8_0_generic`).
pub(crate) fn vec_dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let v0 = i32::from(x.qs[j] & 0x0F) - 8;
            let v1 = i32::from(x.qs[j] >> 4) - 8;
            sumi += v0 * i32::from(y.qs[j]) + v1 * i32::from(y.qs[j + QK / 2]);
        }
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}

/// Q4_1 · Q8_1 over whole rows (ggml's `ggml_vec_dot_q4_1_q8_1_generic`).
pub(crate) fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let v0 = i32::from(x.qs[j] & 0x0F);
            let v1 = i32::from(x.qs[j] >> 4);
            sumi += v0 * i32::from(y.qs[j]) + v1 * i32::from(y.qs[j + QK / 2]);
        }
        sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

/// Q8_0 · Q8_0 over whole rows (ggml's `ggml_vec_dot_q8_0_q8_0_generic`).
pub(crate) fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 = x.qs.iter().zip(&y.qs).map(|(&p, &q)| i32::from(p) * i32::from(q)).sum();
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}
