//! The scalar level: activation quantizers and block dot products, written out in the
//! exact float order every SIMD level (and llama.cpp on x86) follows.
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
use pagoda_core::quant::iq4_nl::IQ4NL_VALUES;
use pagoda_core::quant::{
    BlockIq4Nl, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK,
};

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

// ---------------------------------------------------------------------------------------
// Block dot products in the float order every level reproduces.
//
// llama.cpp's x86 `ggml_vec_dot_{q4_0_q8_0,q4_1_q8_1,q8_0_q8_0}` (its AVX2 code, which an
// AVX-512 build also runs) keep 8 float lanes. Lane j of block b is the exact integer sum
// of the block's quants 4j..4j+3 (weight quants signed: Q4_0 `nibble - 8`, Q4_1 `nibble`,
// Q8_0 as stored), and
//
//     acc[j] = fma(dw_b · dy_b, (float) lane_j(b), acc[j])      block after block
//     result = hsum8(acc)             (+ Σ_b m_b · s_b, summed in block order, for Q4_1)
//     hsum8  = ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))          (hsum_float_8)
//
// `dw·dy` and `m·s` are products of two f16 values, exact in f32. Every SIMD level
// computes the same operations in the same order, so all levels (and llama.cpp) agree
// bit for bit.

/// llama.cpp's `hsum_float_8`.
#[inline]
pub(crate) fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The 8 lane sums of one block: `lane[j] = Σ_{e in 4j..4j+4} w[e] · y[e]`.
#[inline]
fn lanes(w: &[i32; QK], y: &[i8; QK]) -> [i32; 8] {
    core::array::from_fn(|j| (4 * j..4 * j + 4).map(|e| w[e] * i32::from(y[e])).sum())
}

/// Q4 nibbles in element order (low nibbles are elements 0..16) minus `offset`.
#[inline]
fn nibbles(qs: &[u8; QK / 2], offset: i32) -> [i32; QK] {
    core::array::from_fn(|e| {
        let b = qs[e % 16];
        i32::from(if e < 16 { b & 0x0F } else { b >> 4 }) - offset
    })
}

#[inline]
fn lane_fma(acc: &mut [f32; 8], d: f32, l: [i32; 8]) {
    for (a, l) in acc.iter_mut().zip(l) {
        *a = d.mul_add(l as f32, *a);
    }
}

/// Q4_0 · Q8_0 over whole rows (`w.len() == a.len()`).
pub(crate) fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        lane_fma(&mut acc, x.d.to_f32() * y.d.to_f32(), lanes(&nibbles(&x.qs, 8), &y.qs));
    }
    hsum8(acc)
}

/// Q4_1 · Q8_1 over whole rows (`w.len() == a.len()`).
pub(crate) fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        summs += x.m.to_f32() * y.s.to_f32();
        lane_fma(&mut acc, x.d.to_f32() * y.d.to_f32(), lanes(&nibbles(&x.qs, 0), &y.qs));
    }
    hsum8(acc) + summs
}

/// Q5 quants in element order: `nibble | fifth bit << 4` minus `offset` (element `e`'s
/// fifth bit is bit `e` of the little-endian `qh`).
#[inline]
fn quints(qs: &[u8; QK / 2], qh: [u8; 4], offset: i32) -> [i32; QK] {
    let h = u32::from_le_bytes(qh);
    let n = nibbles(qs, 0);
    core::array::from_fn(|e| (n[e] | (((h >> e) & 1) << 4) as i32) - offset)
}

/// Q5_0 · Q8_0 over whole rows (`w.len() == a.len()`): [`dot_q4_0`]'s order with the
/// quants `q5 - 16` (llama.cpp's AVX2 `ggml_vec_dot_q5_0_q8_0`).
pub(crate) fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        lane_fma(&mut acc, x.d.to_f32() * y.d.to_f32(), lanes(&quints(&x.qs, x.qh, 16), &y.qs));
    }
    hsum8(acc)
}

/// Q5_1 · Q8_1 over whole rows (`w.len() == a.len()`): [`dot_q4_1`]'s order with 5-bit
/// quants (llama.cpp's AVX2 `ggml_vec_dot_q5_1_q8_1`).
pub(crate) fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        summs += x.m.to_f32() * y.s.to_f32();
        lane_fma(&mut acc, x.d.to_f32() * y.d.to_f32(), lanes(&quints(&x.qs, x.qh, 0), &y.qs));
    }
    hsum8(acc) + summs
}

/// IQ4_NL codebook levels in element order.
#[inline]
fn iq4nl_levels(qs: &[u8; QK / 2]) -> [i32; QK] {
    nibbles(qs, 0).map(|q| i32::from(IQ4NL_VALUES[q as usize]))
}

/// IQ4_NL · Q8_0 over whole rows (`w.len() == a.len()`), as llama.cpp's AVX2
/// `ggml_vec_dot_iq4_nl_q8_0`: blocks in pairs, the even block into one 8-lane
/// accumulator and the odd one into another (same lanes and fma as [`dot_q4_0`]);
/// `hsum8(acc_even + acc_odd)`; an odd last block then adds `fma(dx·dy, Σ quants·y, sum)`.
pub(crate) fn dot_iq4_nl(w: &[BlockIq4Nl], a: &[BlockQ8_0]) -> f32 {
    let n = w.len().min(a.len());
    let mut acc = [[0.0f32; 8]; 2];
    let pairs = n / 2 * 2;
    for (i, (x, y)) in w[..pairs].iter().zip(&a[..pairs]).enumerate() {
        let d = y.d.to_f32() * x.d.to_f32();
        lane_fma(&mut acc[i % 2], d, lanes(&iq4nl_levels(&x.qs), &y.qs));
    }
    let mut sum = hsum8(core::array::from_fn(|j| acc[0][j] + acc[1][j]));
    if pairs < n {
        let (x, y) = (&w[pairs], &a[pairs]);
        let d = y.d.to_f32() * x.d.to_f32();
        let sumi: i32 = lanes(&iq4nl_levels(&x.qs), &y.qs).iter().sum();
        sum = d.mul_add(sumi as f32, sum);
    }
    sum
}

/// Q8_0 · Q8_0 over whole rows (`w.len() == a.len()`).
pub(crate) fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let xq: [i32; QK] = core::array::from_fn(|e| i32::from(x.qs[e]));
        lane_fma(&mut acc, x.d.to_f32() * y.d.to_f32(), lanes(&xq, &y.qs));
    }
    hsum8(acc)
}

/// `x`, or a zero of its sign if it is subnormal (the DAZ/FTZ rule of `vdpbf16ps`).
#[inline]
pub(crate) fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// BF16 · BF16 over whole rows (`w.len() == a.len()`), as llama.cpp's `ggml_vec_dot_bf16` of
/// an AVX-512 BF16 build computes it:
///
/// ```text
/// per 64-element step s, lane l in 0..16, for c = c1 (elements 0..32 of the step), c2 (32..64):
///     c[l] = c[l] + w[2l+1]·a[2l+1];  c[l] = c[l] + w[2l]·a[2l]      (`vdpbf16ps`: odd first,
///                                     each add rounded to nearest even, subnormals flushed)
/// sum = f64(reduce16(c1)) + f64(reduce16(c2))  then  + f64(w[i]·a[i]) for the tail
/// ```
///
/// (A product of two bf16 values is exact in f32 unless it underflows.)
pub(crate) fn dot_bf16(w: &[half::bf16], a: &[half::bf16]) -> f32 {
    let n = w.len().min(a.len());
    let np = n / 64 * 64;
    let mut c = [[0.0f32; 16]; 2];
    let f = |x: half::bf16| flush(x.to_f32());
    for s in (0..np).step_by(64) {
        for (h, c) in c.iter_mut().enumerate() {
            for (l, acc) in c.iter_mut().enumerate() {
                let e = s + 32 * h + 2 * l;
                *acc = flush(flush(*acc) + flush(f(w[e + 1]) * f(a[e + 1])));
                *acc = flush(*acc + flush(f(w[e]) * f(a[e])));
            }
        }
    }
    let mut sum = f64::from(reduce16(&c[0])) + f64::from(reduce16(&c[1]));
    for e in np..n {
        sum += f64::from(w[e].to_f32() * a[e].to_f32());
    }
    sum as f32
}

/// GCC's `_mm512_reduce_add_ps`: halves, then quarters, then `(t0 + t2) + (t1 + t3)`.
#[inline]
pub(crate) fn reduce16(x: &[f32; 16]) -> f32 {
    let t8: [f32; 8] = core::array::from_fn(|i| x[i] + x[i + 8]);
    let t4: [f32; 4] = core::array::from_fn(|i| t8[i] + t8[i + 4]);
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}
