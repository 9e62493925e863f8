//! The scalar level's activation quantizers. (Its dot products are pagoda-core's
//! reference `VecDot` implementations, used directly.)
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
//! This differs from ggml's portable `quantize_row_q8_1_ref` (pagoda-core's `Quantize`
//! for `BlockQ8_0`/`BlockQ8_1`: `id = 1/d`, `roundf`, half away from zero) on exact ties
//! and where `1/(amax/127)` and `127/amax` differ in the last bit: a quant then differs
//! by one. llama.cpp built for x86 (AVX or wider, as on the reference machine) never runs
//! the `_ref` quantizer for activations, so parity with it needs this rule.

use half::f16;
use pagoda_core::quant::{BlockQ8_0, BlockQ8_1, QK};

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
