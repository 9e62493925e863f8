//! Float kernels (`dot_f32`, `rmsnorm`, `silu_mul`) at every SIMD level against f64
//! evaluations of their definitions and against pagoda-core's scalar `ops`, over any
//! length (ragged against vector widths).

mod kernels_support;

use kernels_support::{all_kernels, floats, Rng};
use pagoda::cpu::kernels::KernelError;
use proptest::prelude::*;

fn check_dot(n: usize, seed: u64, scale: f32) {
    let mut rng = Rng::new(seed);
    let a = floats(&mut rng, n, scale);
    let b = floats(&mut rng, n, 1.0);
    let (mut want, mut mag) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(&b) {
        want += f64::from(*x) * f64::from(*y);
        mag += (f64::from(*x) * f64::from(*y)).abs();
    }
    for k in all_kernels() {
        let got = f64::from(k.dot_f32(&a, &b).unwrap());
        assert!((got - want).abs() <= 1e-5 * mag + 1e-35, "{} n={n}: {got} vs {want}", k.level());
    }
}

fn check_rmsnorm(n: usize, seed: u64, scale: f32) {
    let mut rng = Rng::new(seed);
    let x = floats(&mut rng, n, scale);
    let w = floats(&mut rng, n, 2.0);
    let eps = 1e-5f64;
    let ms = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / n as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    let mut core_out = vec![f32::NAN; n];
    pagoda::core::ops::rmsnorm(&x, &w, eps as f32, &mut core_out);
    for k in all_kernels() {
        let mut out = vec![f32::NAN; n];
        k.rmsnorm(&x, &w, eps as f32, &mut out).unwrap();
        for (i, (o, c)) in out.iter().zip(&core_out).enumerate() {
            assert!(
                (o - c).abs() <= 2e-6 * c.abs() + 1e-30,
                "{} n={n} i={i}: {o} vs core {c}",
                k.level()
            );
        }
        for i in 0..n {
            let want = f64::from(x[i]) * inv * f64::from(w[i]);
            let got = f64::from(out[i]);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs() + 1e-30,
                "{} n={n} i={i}: {got} vs {want}",
                k.level()
            );
        }
    }
}

fn check_silu_mul(n: usize, seed: u64, scale: f32) {
    let mut rng = Rng::new(seed);
    let g = floats(&mut rng, n, scale);
    let u = floats(&mut rng, n, 1.0);
    let mut core_out = g.clone();
    pagoda::core::ops::silu_mul_inplace(&mut core_out, &u);
    for k in all_kernels() {
        let mut out = g.clone();
        k.silu_mul(&mut out, &u).unwrap();
        for (i, (o, c)) in out.iter().zip(&core_out).enumerate() {
            assert!(
                (o - c).abs() <= 2e-6 * c.abs() + 1e-30,
                "{} n={n} i={i}: {o} vs core {c}",
                k.level()
            );
        }
        for i in 0..n {
            let gv = f64::from(g[i]);
            let want = gv / (1.0 + (-gv).exp()) * f64::from(u[i]);
            let got = f64::from(out[i]);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs() + 1e-30,
                "{} n={n} i={i}: {got} vs {want}",
                k.level()
            );
        }
    }
}

#[test]
fn model_lengths() {
    for n in [576, 1536, 64, 0, 1, 15, 17, 33] {
        check_dot(n, n as u64, 1.0);
        if n > 0 {
            check_rmsnorm(n, n as u64, 1.0);
        }
        check_silu_mul(n, n as u64, 8.0);
    }
}

#[test]
fn length_mismatches_are_errors() {
    for k in all_kernels() {
        assert_eq!(
            k.dot_f32(&[1.0; 3], &[1.0; 4]).unwrap_err(),
            KernelError::Length { what: "b", expected: 3, got: 4 }
        );
        let mut out = [0.0; 3];
        assert!(k.rmsnorm(&[1.0; 3], &[1.0; 2], 1e-5, &mut out).is_err());
        assert!(k.rmsnorm(&[1.0; 3], &[1.0; 3], 1e-5, &mut out[..2]).is_err());
        assert!(k.silu_mul(&mut out, &[1.0; 4]).is_err());
    }
}

#[test]
fn rmsnorm_of_zeros_is_zero() {
    for k in all_kernels() {
        let mut out = [f32::NAN; 37];
        k.rmsnorm(&[0.0; 37], &[1.0; 37], 1e-5, &mut out).unwrap();
        assert!(out.iter().all(|v| *v == 0.0));
    }
}

proptest! {
    #[test]
    fn random_lengths(
        n in 1usize..300,
        seed in any::<u64>(),
        scale in prop::sample::select(vec![1e-20f32, 1e-3, 1.0, 30.0, 1e10]),
    ) {
        check_dot(n, seed, scale);
        check_rmsnorm(n, seed, scale);
        check_silu_mul(n, seed, scale.min(80.0));
    }
}
