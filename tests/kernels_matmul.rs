//! The quantized matmul at every SIMD level: equal to the scalar level bit for bit (one
//! float order everywhere, llama.cpp's x86 one), and within float-rounding budgets of
//! pagoda-core's reference dot products (`VecDot`, ggml's generic kernels) and against an f64 evaluation of the
//! same formulas (Q4_1·Q8_1, Q4_0·Q8_0, Q8_0·Q8_0); F32 weights against an f64 dot. Shapes are random: any number
//! of rows and tokens (ragged against the 16-block groups, 4-token tiles and rayon
//! chunks), columns a multiple of 32; scales include zero and extremes.

mod kernels_support;

use half::f16;
use kernels_support::{all_kernels, floats, q4_0_blocks, q4_1_blocks, q8_0_blocks, Rng};
use pagoda::core::ggml_type::GgmlType;
use pagoda::core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, VecDot};
use pagoda::cpu::kernels::{KernelError, Kernels, MatmulScratch, QuantMatrix, SimdLevel};
use proptest::prelude::*;

/// Weights as bytes plus, per row and block, `(c0, c1, u)` with the dot product of the
/// block with activation quants `y` (scale `dy`, sum-term `s`) being
/// `c0·dy·Σ u_j·y_j + c1·s` (Q4_1) or `c0·dy·Σ u_j·y_j` (Q4_0, Q8_0; c1 = 0).
struct Weights {
    bytes: Vec<u8>,
    /// Per row, per block: (d, m, signed quant values as used in the product).
    blocks: Vec<Vec<(f64, f64, [f64; 32])>>,
}

fn weights(ty: GgmlType, rows: usize, nb: usize, rng: &mut Rng, scale: f32) -> Weights {
    let mut bytes = Vec::new();
    let mut blocks = Vec::new();
    for _ in 0..rows {
        let row: Vec<(f64, f64, [f64; 32])> = match ty {
            GgmlType::Q4_1 => {
                let b = q4_1_blocks(rng, nb, scale);
                bytes.extend_from_slice(bytemuck::cast_slice(&b));
                b.iter()
                    .map(|b| {
                        let q = std::array::from_fn(|j| {
                            f64::from(if j < 16 { b.qs[j] & 15 } else { b.qs[j - 16] >> 4 })
                        });
                        (b.d.to_f64(), b.m.to_f64(), q)
                    })
                    .collect()
            }
            GgmlType::Q4_0 => {
                let b = q4_0_blocks(rng, nb, scale);
                bytes.extend_from_slice(bytemuck::cast_slice(&b));
                b.iter()
                    .map(|b| {
                        let q = std::array::from_fn(|j| {
                            f64::from(if j < 16 { b.qs[j] & 15 } else { b.qs[j - 16] >> 4 }) - 8.0
                        });
                        (b.d.to_f64(), 0.0, q)
                    })
                    .collect()
            }
            GgmlType::Q8_0 => {
                let b = q8_0_blocks(rng, nb, scale, false);
                bytes.extend_from_slice(bytemuck::cast_slice(&b));
                b.iter()
                    .map(|b| (b.d.to_f64(), 0.0, std::array::from_fn(|j| f64::from(b.qs[j]))))
                    .collect()
            }
            _ => unreachable!("test weights are Q4_0, Q4_1 or Q8_0"),
        };
        blocks.push(row);
    }
    Weights { bytes, blocks }
}

/// Activation blocks as `(dy, s, y)` per token and block, quantized by the scalar level
/// (every level quantizes to the same bytes: kernels_quantize.rs).
fn activations(
    ty: GgmlType,
    x: &[f32],
    n_tokens: usize,
    nb: usize,
) -> Vec<Vec<(f64, f64, [i8; 32])>> {
    let k = Kernels::new(SimdLevel::Scalar).unwrap();
    let mut out = Vec::new();
    for t in 0..n_tokens {
        let xt = &x[t * nb * 32..(t + 1) * nb * 32];
        if ty == GgmlType::Q4_1 {
            let mut b = vec![BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }; nb];
            k.quantize_q8_1(xt, &mut b).unwrap();
            out.push(b.iter().map(|b| (b.d.to_f64(), b.s.to_f64(), b.qs)).collect());
        } else {
            let mut b = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; nb];
            k.quantize_q8_0(xt, &mut b).unwrap();
            out.push(b.iter().map(|b| (b.d.to_f64(), 0.0, b.qs)).collect());
        }
    }
    out
}

/// pagoda-core's reference: scalar-level activations, then `VecDot::vec_dot` per output.
fn core_reference(
    ty: GgmlType,
    bytes: &[u8],
    rows: usize,
    nb: usize,
    x: &[f32],
    n_tokens: usize,
) -> Vec<f32> {
    let k = Kernels::new(SimdLevel::Scalar).unwrap();
    let row_bytes = bytes.len() / rows;
    let mut out = vec![0.0; rows * n_tokens];
    for t in 0..n_tokens {
        let xt = &x[t * nb * 32..(t + 1) * nb * 32];
        let mut a0 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; nb];
        let mut a1 = vec![BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }; nb];
        k.quantize_q8_0(xt, &mut a0).unwrap();
        k.quantize_q8_1(xt, &mut a1).unwrap();
        for r in 0..rows {
            let wr = &bytes[r * row_bytes..(r + 1) * row_bytes];
            out[t * rows + r] = match ty {
                GgmlType::Q4_1 => BlockQ4_1::vec_dot(bytemuck::cast_slice(wr), &a1),
                GgmlType::Q4_0 => BlockQ4_0::vec_dot(bytemuck::cast_slice(wr), &a0),
                _ => BlockQ8_0::vec_dot(bytemuck::cast_slice(wr), &a0),
            };
        }
    }
    out
}

/// `(value, error budget)` of one output in f64.
fn reference(w: &[(f64, f64, [f64; 32])], a: &[(f64, f64, [i8; 32])]) -> (f64, f64) {
    let (mut v, mut mag) = (0.0f64, 0.0f64);
    for ((dx, m, q), (dy, s, y)) in w.iter().zip(a) {
        let mut sumi = 0.0;
        let mut abs = 0.0;
        for j in 0..32 {
            sumi += q[j] * f64::from(y[j]);
            abs += q[j].abs() * f64::from(y[j]).abs();
        }
        v += dx * dy * sumi + m * s;
        mag += (dx * dy).abs() * abs + (m * s).abs();
    }
    (v, mag)
}

fn check_matmul(
    ty: GgmlType,
    rows: usize,
    nb: usize,
    n_tokens: usize,
    seed: u64,
    ws: f32,
    xs: f32,
) {
    // Q8_1's s = d·Σq must fit f16 (ggml's format limit): |x| below ~2000.
    let xs = if ty == GgmlType::Q4_1 { xs.min(2000.0) } else { xs };
    let mut rng = Rng::new(seed);
    let w = weights(ty, rows, nb, &mut rng, ws);
    let x = floats(&mut rng, n_tokens * nb * 32, xs);
    let a = activations(ty, &x, n_tokens, nb);
    let m = QuantMatrix::new(ty, rows, nb * 32, &w.bytes).unwrap();
    let mut scratch = MatmulScratch::new();
    let core_ref = core_reference(ty, &w.bytes, rows, nb, &x, n_tokens);
    let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
    let mut want_bits = vec![f32::NAN; rows * n_tokens];
    scalar.matmul(&m, &x, n_tokens, &mut want_bits, &mut scratch).unwrap();
    for k in all_kernels() {
        let mut out = vec![f32::NAN; rows * n_tokens];
        k.matmul(&m, &x, n_tokens, &mut out, &mut scratch).unwrap();
        // Every level runs the same float operations in the same order (llama.cpp's).
        for (i, (g, c)) in out.iter().zip(&want_bits).enumerate() {
            assert_eq!(
                g.to_bits(),
                c.to_bits(),
                "{} {ty} rows={rows} nb={nb} tokens={n_tokens}: output {i} = {g}, scalar level {c}",
                k.level()
            );
        }
        for t in 0..n_tokens {
            for r in 0..rows {
                let (want, mag) = reference(&w.blocks[r], &a[t]);
                let got = out[t * rows + r];
                let tol = 1e-5 * mag + 1e-30;
                let c = f64::from(core_ref[t * rows + r]);
                assert!(
                    (f64::from(got) - c).abs() <= 2.0 * tol,
                    "{} {ty} rows={rows} nb={nb} tokens={n_tokens} [t={t}, r={r}]: got {got}, pagoda-core {c} (tol {tol})",
                    k.level()
                );
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "{} {ty} rows={rows} nb={nb} tokens={n_tokens} [t={t}, r={r}]: got {got}, want {want} (tol {tol})",
                    k.level()
                );
            }
        }
    }
}

fn check_f32(rows: usize, cols: usize, n_tokens: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let wv = floats(&mut rng, rows * cols, 1.0);
    let x = floats(&mut rng, n_tokens * cols, 3.0);
    let m = QuantMatrix::new(GgmlType::F32, rows, cols, bytemuck::cast_slice(&wv)).unwrap();
    let mut scratch = MatmulScratch::new();
    for k in all_kernels() {
        let mut out = vec![f32::NAN; rows * n_tokens];
        k.matmul(&m, &x, n_tokens, &mut out, &mut scratch).unwrap();
        for t in 0..n_tokens {
            for r in 0..rows {
                let (mut want, mut mag) = (0.0f64, 0.0f64);
                for c in 0..cols {
                    let p = f64::from(wv[r * cols + c]) * f64::from(x[t * cols + c]);
                    want += p;
                    mag += p.abs();
                }
                let got = f64::from(out[t * rows + r]);
                assert!(
                    (got - want).abs() <= 1e-5 * mag + 1e-30,
                    "{} F32 [t={t}, r={r}]",
                    k.level()
                );
            }
        }
    }
}

const TYPES: [GgmlType; 3] = [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0];

#[test]
fn model_shapes_one_and_five_tokens() {
    // SmolLM2-135M: 576 → 1536 (gate/up), 1536 → 576 (down), 576 → 192 (k/v).
    for ty in TYPES {
        check_matmul(ty, 1536, 18, 1, 1, 0.05, 2.0);
        check_matmul(ty, 576, 48, 5, 2, 0.05, 2.0);
        check_matmul(ty, 192, 18, 3, 3, 0.05, 2.0);
    }
}

#[test]
fn large_enough_to_run_in_parallel() {
    for ty in TYPES {
        check_matmul(ty, 1000, 18, 7, 4, 0.02, 1.0);
    }
}

#[test]
fn zero_weights_and_zero_activations_give_zero() {
    for ty in TYPES {
        for (ws, xs) in [(0.0, 1.0), (1.0, 0.0), (0.0, 0.0)] {
            check_matmul(ty, 9, 3, 2, 5, ws, xs);
        }
    }
}

#[test]
fn q8_0_weights_with_minus_128_quants() {
    // ggml never writes -128, but a file may hold it; every level must still agree.
    let mut rng = Rng::new(9);
    let (rows, nb, n_tokens) = (7, 5, 3);
    let b = q8_0_blocks(&mut rng, rows * nb, 0.1, true);
    let mut b = b;
    b[0].qs = [-128; 32];
    let bytes: &[u8] = bytemuck::cast_slice(&b);
    let x = floats(&mut rng, n_tokens * nb * 32, 1.0);
    let m = QuantMatrix::new(GgmlType::Q8_0, rows, nb * 32, bytes).unwrap();
    let mut scratch = MatmulScratch::new();
    let mut want = vec![0.0; rows * n_tokens];
    Kernels::new(SimdLevel::Scalar)
        .unwrap()
        .matmul(&m, &x, n_tokens, &mut want, &mut scratch)
        .unwrap();
    for k in all_kernels() {
        let mut out = vec![0.0; rows * n_tokens];
        k.matmul(&m, &x, n_tokens, &mut out, &mut scratch).unwrap();
        for (g, w) in out.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{}: {g} vs {w}", k.level());
        }
    }
}

#[test]
fn f32_weights() {
    check_f32(33, 17, 3, 1);
    check_f32(300, 64, 1, 2);
    check_f32(5, 1, 6, 3);
}

#[test]
fn shape_errors_are_values_not_panics() {
    // u16 storage: 2-aligned, so `data` is aligned and `data[1..]` is not.
    let storage = vec![0u16; 41];
    let all: &[u8] = bytemuck::cast_slice(&storage);
    let data = &all[..80];
    let k = Kernels::detect();
    let mut s = MatmulScratch::new();
    assert_eq!(
        QuantMatrix::new(GgmlType::Q4_1, 2, 33, data).unwrap_err(),
        KernelError::ColsNotWholeBlocks { ty: GgmlType::Q4_1, cols: 33 }
    );
    assert_eq!(
        QuantMatrix::new(GgmlType::Q4_1, 3, 64, data).unwrap_err(),
        KernelError::Length { what: "weights", expected: 120, got: 80 }
    );
    assert_eq!(
        QuantMatrix::new(GgmlType::IQ2_XXS, 1, 256, data).unwrap_err(),
        KernelError::UnsupportedType(GgmlType::IQ2_XXS)
    );
    assert!(matches!(
        QuantMatrix::new(GgmlType::Q4_1, 2, 64, &all[1..81]),
        Err(KernelError::Misaligned { .. })
    ));
    let m = QuantMatrix::new(GgmlType::Q4_1, 2, 64, data).unwrap();
    let mut out = vec![0.0; 4];
    assert_eq!(
        k.matmul(&m, &[0.0; 100], 2, &mut out, &mut s).unwrap_err(),
        KernelError::Length { what: "x", expected: 128, got: 100 }
    );
    assert_eq!(
        k.matmul(&m, &[0.0; 128], 2, &mut out[..3], &mut s).unwrap_err(),
        KernelError::Length { what: "out", expected: 4, got: 3 }
    );
    assert!(k.matmul(&m, &[0.0; 128], 2, &mut out, &mut s).is_ok());
    assert!(!KernelError::UnsupportedType(GgmlType::Q6_K).to_string().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_shapes_every_level(
        ty in prop::sample::select(TYPES.to_vec()),
        rows in 1usize..70,
        nb in 1usize..40,
        n_tokens in 1usize..10,
        seed in any::<u64>(),
        ws in prop::sample::select(vec![0.0f32, 1e-7, 1e-3, 0.1, 10.0, 6e4]),
        xs in prop::sample::select(vec![0.0f32, 1e-30, 1e-5, 1.0, 1e3, 8e6]),
    ) {
        check_matmul(ty, rows, nb, n_tokens, seed, ws, xs);
    }
}

/// `matmul_multi` gives each matrix exactly what `matmul` gives it alone (same kernels,
/// same quantized activations), serial and parallel, one and several tokens.
#[test]
fn matmul_multi_equals_separate_matmuls() {
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F32] {
        for (rows, n_tokens) in
            [([3usize, 5, 2], 1usize), ([576, 192, 192], 1), ([576, 192, 40], 5)]
        {
            let mut rng = Rng::new(rows[0] as u64 + n_tokens as u64);
            let nb = 18;
            let datas: Vec<Vec<u8>> = rows
                .iter()
                .map(|&r| {
                    if ty == GgmlType::F32 {
                        bytemuck::cast_slice(&floats(&mut rng, r * nb * 32, 0.1)).to_vec()
                    } else {
                        weights(ty, r, nb, &mut rng, 0.05).bytes
                    }
                })
                .collect();
            // Copies into u32 storage keep F32 data 4-aligned.
            let stores: Vec<Vec<u32>> = datas
                .iter()
                .map(|d| d.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
                .collect();
            let ms: Vec<QuantMatrix<'_>> = rows
                .iter()
                .zip(&stores)
                .map(|(&r, d)| QuantMatrix::new(ty, r, nb * 32, bytemuck::cast_slice(d)).unwrap())
                .collect();
            let x = floats(&mut rng, n_tokens * nb * 32, 1.0);
            let mut scratch = MatmulScratch::new();
            for k in all_kernels() {
                let mut multi: Vec<Vec<f32>> =
                    rows.iter().map(|&r| vec![f32::NAN; r * n_tokens]).collect();
                let mut outs: Vec<&mut [f32]> =
                    multi.iter_mut().map(|v| v.as_mut_slice()).collect();
                k.matmul_multi(&ms, &x, n_tokens, &mut outs, &mut scratch).unwrap();
                for (m, w) in ms.iter().enumerate() {
                    let mut one = vec![f32::NAN; w.rows() * n_tokens];
                    k.matmul(w, &x, n_tokens, &mut one, &mut scratch).unwrap();
                    assert_eq!(one, multi[m], "{} {ty} matrix {m}", k.level());
                }
            }
        }
    }
}

#[test]
fn matmul_multi_rejects_mixed_matrices() {
    let a = vec![0u16; 10 * 2];
    let b = vec![0u16; 17 * 2];
    let qa = QuantMatrix::new(GgmlType::Q4_1, 2, 32, bytemuck::cast_slice(&a)).unwrap();
    let qb = QuantMatrix::new(GgmlType::Q8_0, 2, 32, bytemuck::cast_slice(&b)).unwrap();
    let qc = QuantMatrix::new(GgmlType::Q4_1, 1, 64, bytemuck::cast_slice(&a)).unwrap();
    let k = Kernels::detect();
    let mut s = MatmulScratch::new();
    let (mut o1, mut o2) = (vec![0.0; 2], vec![0.0; 2]);
    let e = k.matmul_multi(&[qa, qb], &[0.0; 32], 1, &mut [&mut o1, &mut o2], &mut s);
    assert_eq!(e.unwrap_err(), KernelError::Incompatible { what: "weight type" });
    let e = k.matmul_multi(&[qa, qc], &[0.0; 32], 1, &mut [&mut o1, &mut o2[..1]], &mut s);
    assert_eq!(e.unwrap_err(), KernelError::Incompatible { what: "cols" });
    let e = k.matmul_multi(&[qa], &[0.0; 32], 1, &mut [&mut o1, &mut o2], &mut s);
    assert!(matches!(e, Err(KernelError::Length { what: "outs", .. })));
    assert!(k.matmul_multi(&[qa, qa], &[0.0; 32], 1, &mut [&mut o1, &mut o2], &mut s).is_ok());
}
