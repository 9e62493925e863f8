//! Activation quantization (f32 → Q8_0 / Q8_1): every SIMD level produces the same bytes
//! as the scalar level, and the scalar level follows llama.cpp's x86 rule
//! (`d = amax/127`, `q = round_half_even(x · 127/amax)`, `s = f16(d · Σq)`), checked here
//! against an independent transcription of that rule.

mod kernels_support;

use half::f16;
use kernels_support::{all_kernels, floats, Rng};
use pagoda::core::quant::{BlockQ8_0, BlockQ8_1, Quantize};
use pagoda::cpu::kernels::{KernelError, Kernels, SimdLevel};
use proptest::prelude::*;

/// llama.cpp's AVX2 `quantize_row_q8_1`, transcribed independently of the kernels.
fn expected_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    x.chunks(32)
        .map(|c| {
            let mut amax = 0.0f32;
            for v in c {
                if v.abs() > amax {
                    amax = v.abs();
                }
            }
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let qs: [i8; 32] = std::array::from_fn(|j| (c[j] * id).round_ties_even() as i8);
            let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
            BlockQ8_1 { d: f16::from_f32(d), s: f16::from_f32(d * sum as f32), qs }
        })
        .collect()
}

fn quantize_all(k: &Kernels, x: &[f32]) -> (Vec<BlockQ8_0>, Vec<BlockQ8_1>) {
    let n = x.len() / 32;
    let mut a = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; n];
    let mut b = vec![BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }; n];
    k.quantize_q8_0(x, &mut a).unwrap();
    k.quantize_q8_1(x, &mut b).unwrap();
    (a, b)
}

fn check(x: &[f32]) {
    let want = expected_q8_1(x);
    for k in all_kernels() {
        let (q0, q1) = quantize_all(&k, x);
        for (i, (got, want)) in q1.iter().zip(&want).enumerate() {
            assert_eq!(got, want, "Q8_1 block {i} at level {}", k.level());
        }
        for (i, (got, want)) in q0.iter().zip(&want).enumerate() {
            assert_eq!((got.d, got.qs), (want.d, want.qs), "Q8_0 block {i} at level {}", k.level());
        }
    }
}

#[test]
fn ties_round_half_to_even_like_llama_cpp_on_x86() {
    // amax = 127 makes id exactly 1, so x · id keeps the .5 ties.
    let mut x = vec![0.0f32; 32];
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = 1.5;
    x[3] = -2.5;
    x[4] = 2.5;
    x[5] = -0.5;
    x[6] = 126.5;
    for k in all_kernels() {
        let (_, q1) = quantize_all(&k, &x);
        assert_eq!(&q1[0].qs[..7], &[127, 0, 2, -2, 2, 0, 126], "level {}", k.level());
        assert_eq!(q1[0].d, f16::from_f32(1.0));
        assert_eq!(q1[0].s, f16::from_f32(255.0));
    }
    check(&x);
}

#[test]
fn zero_block_has_zero_scale_and_quants() {
    let x = vec![0.0f32; 64];
    check(&x);
    let (_, q1) = quantize_all(&Kernels::new(SimdLevel::Scalar).unwrap(), &x);
    assert!(q1.iter().all(|b| b.d == f16::ZERO && b.s == f16::ZERO && b.qs == [0; 32]));
}

#[test]
fn negative_zero_and_single_spike() {
    let mut x = vec![-0.0f32; 96];
    x[40] = -3.0e-3;
    x[95] = 7.0e5;
    check(&x);
}

#[test]
fn length_not_whole_blocks_is_an_error() {
    for k in all_kernels() {
        let mut out = vec![BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }; 2];
        let e = k.quantize_q8_1(&[0.0; 63], &mut out).unwrap_err();
        assert_eq!(e, KernelError::Length { what: "x", expected: 64, got: 63 });
        let mut out0 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; 1];
        assert!(k.quantize_q8_0(&[0.0; 64], &mut out0).is_err());
    }
}

proptest! {
    #[test]
    fn every_level_matches_the_rule(
        nb in 1usize..24,
        seed in any::<u64>(),
        scale in prop::sample::select(vec![0.0f32, 1e-30, 1e-6, 1e-2, 1.0, 37.0, 1e4, 8e6]),
    ) {
        let mut rng = Rng::new(seed);
        let x = floats(&mut rng, nb * 32, scale);
        check(&x);
    }

    #[test]
    fn integer_valued_inputs_hit_ties(nb in 1usize..8, seed in any::<u64>()) {
        // Small multiples of 0.5 with amax a power of two times 127: many exact ties.
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = (0..nb * 32)
            .map(|i| if i % 32 == 0 { 127.0 } else { ((rng.byte() as i32 - 128) as f32) * 0.5 })
            .collect();
        check(&x);
    }
}

/// pagoda-core's quantizer is ggml's portable `_ref` (`roundf`, `id = 1/d`); the kernels
/// follow llama.cpp's x86 path. They agree on `d` and differ by at most one in a quant,
/// rarely (ties and last-bit differences of `id`).
#[test]
fn differs_from_pagoda_core_ref_by_at_most_one_rarely() {
    let mut rng = Rng::new(42);
    let x = floats(&mut rng, 32 * 4096, 3.0);
    let mut core = vec![BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }; 4096];
    BlockQ8_1::quantize(&x, &mut core);
    let mut core0 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; 4096];
    BlockQ8_0::quantize(&x, &mut core0);
    let (_, ours) = quantize_all(&Kernels::new(SimdLevel::Scalar).unwrap(), &x);
    let mut differing = 0usize;
    for ((c, c0), o) in core.iter().zip(&core0).zip(&ours) {
        assert_eq!(c.d, o.d);
        assert_eq!((c0.d, c0.qs), (c.d, c.qs), "core Q8_0 and Q8_1 quants agree");
        for (a, b) in c.qs.iter().zip(&o.qs) {
            assert!((i32::from(*a) - i32::from(*b)).abs() <= 1);
            differing += usize::from(a != b);
        }
    }
    assert!(differing * 1000 < x.len(), "{differing} of {} quants differ", x.len());
    // An exact tie: core rounds half away from zero, llama.cpp's x86 path to even.
    let mut t = vec![0.0f32; 32];
    t[0] = 127.0;
    t[1] = 0.5;
    BlockQ8_1::quantize(&t, &mut core[..1]);
    let (_, ours) = quantize_all(&Kernels::new(SimdLevel::Scalar).unwrap(), &t);
    assert_eq!((core[0].qs[1], ours[0].qs[1]), (1, 0));
}
