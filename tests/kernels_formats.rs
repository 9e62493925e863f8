//! Every weight format in the kernel table, at every SIMD level this CPU has: the matmul
//! equals the scalar level bit for bit (the scalar rows are the specification; F32, whose
//! sum order follows the vector width, is only held to the f64 bound), and the
//! scalar level is within the activation-rounding budget of an f64 dot product of the
//! dequantized weights with the unrounded activations. Weights are real quantizations
//! (pagoda-core's `quantize_row`) of random rows whose scales range from 0 to 1e3 (outliers to 3e4, inside f16);
//! shapes are ragged (rows, tokens, blocks per row).

mod kernels_support;

use kernels_support::{all_kernels, Rng};
use pagoda::core::ggml_type::GgmlType;
use pagoda::core::quant::{dequantize_row, quantize_row};
use pagoda::cpu::kernels::{
    supported_weight_types, Kernels, MatmulScratch, QuantMatrix, SimdLevel,
};

/// A random value row: mostly N(0,1)-ish, sometimes all zero, sometimes with an outlier.
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    let scale = match rng.next_u64() % 6 {
        0 => 0.0,
        1 => 1e-3,
        2 => 1e3,
        _ => 1.0,
    };
    let mut v: Vec<f32> = (0..n).map(|_| rng.f32() * scale).collect();
    if rng.next_u64() % 4 == 0 && n > 0 {
        let i = (rng.next_u64() % n as u64) as usize;
        v[i] *= 30.0;
    }
    v
}

/// `bytes` in 8-aligned storage.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut w = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..bytes.len()].copy_from_slice(bytes);
    w
}

struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    tokens: usize,
    w: Vec<u64>,
    w_len: usize,
    x: Vec<f32>,
}

fn case(ty: GgmlType, rng: &mut Rng) -> Case {
    let block = ty.block_size().expect("block size").max(32); // float formats: whole 32s
    let cols = block * (1 + (rng.next_u64() % 4) as usize);
    let rows = 1 + (rng.next_u64() % 37) as usize;
    let tokens = 1 + (rng.next_u64() % 7) as usize;
    let row_bytes = ty.row_bytes(cols as u64).expect("row bytes") as usize;
    let mut bytes = vec![0u8; rows * row_bytes];
    for r in 0..rows {
        let v = values(rng, cols);
        quantize_row(ty, &v, &mut bytes[r * row_bytes..(r + 1) * row_bytes])
            .unwrap_or_else(|e| panic!("quantize {ty}: {e}"));
    }
    let x: Vec<f32> = (0..tokens).flat_map(|_| values(rng, cols)).collect();
    Case { ty, rows, cols, tokens, w_len: bytes.len(), w: aligned(&bytes), x }
}

/// [`Kernels::matmul`], or with `exact` [`Kernels::matmul_exact`] (llama.cpp's choice of
/// kernel for the batch).
fn run_in(k: &Kernels, c: &Case, exact: bool) -> Vec<f32> {
    let data = &bytemuck::cast_slice::<u64, u8>(&c.w)[..c.w_len];
    let m = QuantMatrix::new(c.ty, c.rows, c.cols, data).expect("matrix");
    let mut out = vec![0.0f32; c.tokens * c.rows];
    let scratch = &mut MatmulScratch::new();
    if exact {
        k.matmul_exact(&m, &c.x, c.tokens, &mut out, scratch, false).expect("matmul_exact");
    } else {
        k.matmul(&m, &c.x, c.tokens, &mut out, scratch).expect("matmul");
    }
    out
}

/// `|got - Σ w·x| ≤ Σ|w| · max|x| / 50 + 1e-6·Σ|w·x|` per output: the activations are
/// rounded to 8 bits (or to f16/bf16) per block, an error of at most max|x|/254 each, and
/// Q8_1's f16 block sums add up to as much again. (A wrongly decoded quant bit costs tens
/// of times this.)
fn check_against_f64(c: &Case, got: &[f32]) {
    let data = &bytemuck::cast_slice::<u64, u8>(&c.w)[..c.w_len];
    let row_bytes = c.w_len / c.rows;
    let mut wr = vec![0.0f32; c.cols];
    for r in 0..c.rows {
        dequantize_row(c.ty, &data[r * row_bytes..(r + 1) * row_bytes], &mut wr).unwrap();
        for t in 0..c.tokens {
            let x = &c.x[t * c.cols..(t + 1) * c.cols];
            let exact: f64 = wr.iter().zip(x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            let abs: f64 =
                wr.iter().zip(x).map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs()).sum();
            let amax = x.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
            let wsum: f64 = wr.iter().map(|&a| f64::from(a).abs()).sum();
            let tol = wsum * amax / 50.0 + 1e-6 * abs + 1e-30;
            let g = f64::from(got[t * c.rows + r]);
            assert!(
                (g - exact).abs() <= tol,
                "{}: row {r} token {t}: got {g}, f64 {exact}, tolerance {tol} ({} × {} × {})",
                c.ty,
                c.rows,
                c.cols,
                c.tokens
            );
        }
    }
}

#[test]
fn every_table_format_at_every_level_equals_scalar_bit_for_bit() {
    let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
    let types: Vec<GgmlType> = supported_weight_types().collect();
    for needed in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
    ] {
        assert!(types.contains(&needed), "{needed} has no kernel");
    }
    let mut rng = Rng::new(0x7AB1E);
    for &ty in &types {
        for i in 0..120 {
            let c = case(ty, &mut rng);
            // Half the cases through `matmul_exact` (llama.cpp's batch-dependent kernels).
            let exact = i % 2 == 1;
            let want = run_in(&scalar, &c, exact);
            check_against_f64(&c, &want);
            for k in all_kernels() {
                let got = run_in(&k, &c, exact);
                if ty == GgmlType::F32 {
                    // The one exception: F32's sum order follows the vector width.
                    check_against_f64(&c, &got);
                    continue;
                }
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{ty} at {:?} (exact: {exact}) differs from scalar ({} × {} × {}): {:?} vs {:?}",
                    k.level(),
                    c.rows,
                    c.cols,
                    c.tokens,
                    &got[..got.len().min(4)],
                    &want[..want.len().min(4)]
                );
            }
        }
    }
}

/// llama.cpp's tinyBLAS order for a cell, transcribed from `sgemm.cpp`'s `gemm_bloc`: one
/// 16-lane accumulator over the row (F16: `vfmadd` per 16 columns; BF16: `vdpbf16ps` per 32,
/// odd product first, subnormals flushed), then GCC's `_mm512_reduce_add_ps`.
fn tinyblas_cell(ty: GgmlType, w: &[f32], x: &[f32]) -> f32 {
    let flush = |v: f32| if v.is_subnormal() { 0.0f32.copysign(v) } else { v };
    let mut acc = [0.0f32; 16];
    if ty == GgmlType::F16 {
        for (ws, xs) in w.chunks_exact(16).zip(x.chunks_exact(16)) {
            for (a, (w, x)) in acc.iter_mut().zip(ws.iter().zip(xs)) {
                *a = w.mul_add(*x, *a);
            }
        }
    } else {
        for (ws, xs) in w.chunks_exact(32).zip(x.chunks_exact(32)) {
            for (l, a) in acc.iter_mut().enumerate() {
                for e in [2 * l + 1, 2 * l] {
                    *a = flush(flush(*a) + flush(flush(ws[e]) * flush(xs[e])));
                }
            }
        }
    }
    let h: [f32; 8] = std::array::from_fn(|i| acc[i] + acc[i + 8]);
    let q: [f32; 4] = std::array::from_fn(|i| h[i] + h[i + 4]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Exact numerics send F16 and BF16 batches where llama.cpp's `llamafile_sgemm` takes them
/// (≥ 2 tokens, rows a multiple of 4, columns of 16 / 32) to its tinyBLAS order — equal to
/// the transcription above — and everything else to `vec_dot`'s (`matmul`'s) order.
#[test]
fn exact_f16_and_bf16_batches_take_llamacpps_tinyblas_order() {
    let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
    let mut rng = Rng::new(0x71_4B1A5);
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let step = if ty == GgmlType::F16 { 16 } else { 32 };
        let mut differs = 0;
        for (rows, cols, tokens) in
            [(8, 96, 1), (8, 96, 2), (12, 64, 5), (6, 64, 3), (8, 48, 3), (4, 32, 7)]
        {
            let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut bytes = vec![0u8; rows * row_bytes];
            for r in 0..rows {
                let v = values(&mut rng, cols);
                quantize_row(ty, &v, &mut bytes[r * row_bytes..(r + 1) * row_bytes]).unwrap();
            }
            let x: Vec<f32> = (0..tokens).flat_map(|_| values(&mut rng, cols)).collect();
            let c = Case { ty, rows, cols, tokens, w_len: bytes.len(), w: aligned(&bytes), x };
            let plain = run_in(&scalar, &c, false);
            let exact = run_in(&scalar, &c, true);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            if tokens < 2 || rows % 4 != 0 || cols % step != 0 {
                assert_eq!(bits(&exact), bits(&plain), "{ty} {rows}×{cols}×{tokens}: vec_dot");
                continue;
            }
            // The transcription, on the weights and activations as llama.cpp holds them.
            let mut wr = vec![0.0f32; cols];
            for r in 0..rows {
                dequantize_row(ty, &bytes[r * row_bytes..(r + 1) * row_bytes], &mut wr).unwrap();
                for t in 0..tokens {
                    let xq: Vec<f32> = c.x[t * cols..(t + 1) * cols]
                        .iter()
                        .map(|&v| {
                            let mut b = [0u8; 2];
                            quantize_row(ty, &[v], &mut b).unwrap();
                            let mut o = [0.0f32];
                            dequantize_row(ty, &b, &mut o).unwrap();
                            o[0]
                        })
                        .collect();
                    let want = tinyblas_cell(ty, &wr, &xq);
                    let got = exact[t * rows + r];
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} {rows}×{cols}×{tokens} ({r}, {t})"
                    );
                    differs += usize::from(got.to_bits() != plain[t * rows + r].to_bits());
                }
            }
        }
        assert!(differs > 0, "{ty}: the tinyBLAS order never differs from vec_dot's here");
    }
}
