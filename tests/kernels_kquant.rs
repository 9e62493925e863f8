//! The K-quant matmul (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS × Q8_K):
//!
//! - `*_equals_llamacpp_bit_for_bit`: the scalar level (and so every level) returns the
//!   bits llama.cpp's own `ggml_vec_dot_<fmt>_q8_K` returned for the same weight bytes and
//!   activations (tests/data/kquant/llamacpp_dots.json, made by scripts/gen-kquant-dots.sh
//!   from llama.cpp b11312's libggml-cpu.so; activations quantized by its Q8_K quantizer
//!   there and by pagoda's here, so the quantizer is checked too);
//! - `every_level_equals_scalar_*`: property tests over random rows, tokens, super-block
//!   counts and extreme headers (zero, subnormal, 6e4 scales, all 63 sub-block scales and
//!   mins, zero rows) that each SIMD level returns the scalar level's bits;
//! - the same for `matmul_exact` (llama.cpp's tiled order from 8 tokens; for the Q4_K and Q2_K
//!   matrices llama.cpp repacks, its repacked GEMM/GEMV order: both pinned end to end by
//!   tests/model_presets.rs, where the presets' perplexity equals llama.cpp's), and
//!   `exact_matmul_switches_to_the_tiled_order_at_eight_tokens`,
//!   `exact_matmul_of_repacked_matrices_follows_llamacpps_gemm_and_gemv`;
//! - `scalar_is_close_to_core_vec_dot`: the x86-order scalar dot is within a rounding
//!   budget of pagoda-core's generic `VecDot` (ggml's `_generic` C order) on the same blocks.

mod kernels_support;

use kernels_support::{all_kernels, Rng};
use pagoda::core::ggml_type::GgmlType;
use pagoda::core::quant::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, Quantize, VecDot, QK_K,
};
use pagoda::cpu::kernels::{Kernels, MatmulScratch, QuantMatrix, SimdLevel};
use proptest::prelude::*;

/// The formats this file covers (each must have a kernel at every level).
const FORMATS: [GgmlType; 6] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
];

fn block_bytes(ty: GgmlType) -> usize {
    ty.type_size().expect("block bytes")
}

/// `bytes` in 8-aligned storage (the matrix needs the block alignment).
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut w = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..bytes.len()].copy_from_slice(bytes);
    w
}

/// `W (rows × cols) · x (tokens × cols)` at `k`, as `out[t * rows + r]`.
fn matmul(k: &Kernels, ty: GgmlType, rows: usize, cols: usize, w: &[u8], x: &[f32]) -> Vec<f32> {
    matmul_in(k, ty, rows, cols, w, x, Path::Matmul)
}

/// Which entry point [`matmul_in`] calls.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// [`Kernels::matmul`] (the per-row order).
    Matmul,
    /// [`Kernels::matmul_exact`] of a matrix llama.cpp does not repack (its tiled order from
    /// `TILED_MIN_TOKENS` tokens).
    Exact,
    /// [`Kernels::matmul_exact`] of a matrix llama.cpp repacks (Q4_K, Q2_K: its repacked
    /// kernels' order; the other formats as `Exact`).
    ExactRepacked,
}

/// [`matmul`] by `path`.
fn matmul_in(
    k: &Kernels,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    w: &[u8],
    x: &[f32],
    path: Path,
) -> Vec<f32> {
    let store = aligned(w);
    let data = &bytemuck::cast_slice::<u64, u8>(&store)[..w.len()];
    let m = QuantMatrix::new(ty, rows, cols, data).expect("matrix");
    let tokens = x.len() / cols;
    let mut out = vec![0.0f32; tokens * rows];
    let scratch = &mut MatmulScratch::new();
    match path {
        Path::Matmul => k.matmul(&m, x, tokens, &mut out, scratch),
        Path::Exact => k.matmul_exact(&m, x, tokens, &mut out, scratch, false),
        Path::ExactRepacked => k.matmul_exact(&m, x, tokens, &mut out, scratch, true),
    }
    .expect("matmul");
    out
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn llamacpp_data() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kquant/llamacpp_dots.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("llamacpp_dots.json")).expect("json")
}

/// Every case of `name` in the llama.cpp data, at every level: the same f32 bits.
fn check_llamacpp(ty: GgmlType, name: &str) {
    let data = llamacpp_data();
    let acts: Vec<Vec<f32>> = data["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = a["x"].as_str().unwrap();
            (0..s.len() / 8)
                .map(|i| f32::from_bits(u32::from_str_radix(&s[8 * i..8 * i + 8], 16).unwrap()))
                .collect()
        })
        .collect();
    let cases = data["cases"][name].as_array().unwrap_or_else(|| panic!("no {name} cases"));
    assert!(cases.len() >= 16);
    let levels = all_kernels();
    let mut nonzero = 0;
    for (i, c) in cases.iter().enumerate() {
        let x = &acts[c["act"].as_u64().unwrap() as usize];
        let w = hex_bytes(c["w"].as_str().unwrap());
        let want = u32::from_str_radix(c["dot"].as_str().unwrap(), 16).unwrap();
        assert_eq!(w.len() / block_bytes(ty) * QK_K, x.len());
        nonzero += usize::from(want & 0x7FFF_FFFF != 0);
        for k in &levels {
            let got = matmul(k, ty, 1, x.len(), &w, x)[0];
            assert_eq!(
                got.to_bits(),
                want,
                "{name} case {i} at {:?}: pagoda {got:e} ({:08x}), llama.cpp {:e} ({want:08x})",
                k.level(),
                got.to_bits(),
                f32::from_bits(want)
            );
        }
    }
    assert!(nonzero >= 8, "{name}: too few informative cases");
}

#[test]
fn q2_k_equals_llamacpp_bit_for_bit() {
    check_llamacpp(GgmlType::Q2_K, "Q2_K");
}

#[test]
fn q3_k_equals_llamacpp_bit_for_bit() {
    check_llamacpp(GgmlType::Q3_K, "Q3_K");
}

#[test]
fn iq4_xs_equals_llamacpp_bit_for_bit() {
    check_llamacpp(GgmlType::IQ4_XS, "IQ4_XS");
}

#[test]
fn q4_k_equals_llamacpp_bit_for_bit() {
    check_llamacpp(GgmlType::Q4_K, "Q4_K");
}

#[test]
fn q5_k_equals_llamacpp_bit_for_bit() {
    check_llamacpp(GgmlType::Q5_K, "Q5_K");
}

#[test]
fn q6_k_equals_llamacpp_bit_for_bit() {
    check_llamacpp(GgmlType::Q6_K, "Q6_K");
}

// ---------------------------------------------------------------------------------------
// Random blocks with extreme headers.

/// An f16 header value by kind: zero, subnormal, tiny, ordinary, large (to 6e4), random.
fn f16_kind(rng: &mut Rng, kind: u64) -> u16 {
    let mant = (rng.next_u64() & 0x3FF) as u16;
    let sign = if rng.next_u64() & 1 == 1 { 0x8000 } else { 0 };
    match kind % 6 {
        0 => 0,
        1 => mant | 1,
        2 => (3 << 10) | mant,
        3 => (((12 + rng.next_u64() % 4) as u16) << 10) | mant,
        4 => (29 << 10) | mant,
        _ => sign | (((1 + rng.next_u64() % 30) as u16) << 10) | mant,
    }
}

/// Where a format keeps its f16 headers and its sub-block scale bytes.
struct Layout {
    d: usize,
    dmin: Option<usize>,
    scales: core::ops::Range<usize>,
}

fn layout(ty: GgmlType) -> Layout {
    match ty {
        GgmlType::Q2_K => Layout { d: 80, dmin: Some(82), scales: 0..16 },
        GgmlType::Q3_K => Layout { d: 108, dmin: None, scales: 96..108 },
        GgmlType::Q4_K | GgmlType::Q5_K => Layout { d: 0, dmin: Some(2), scales: 4..16 },
        GgmlType::Q6_K => Layout { d: 208, dmin: None, scales: 192..208 },
        GgmlType::IQ4_XS => Layout { d: 0, dmin: None, scales: 2..8 },
        _ => unreachable!("not a K-quant"),
    }
}

/// `rows` rows of `nb` random blocks; `kind` picks the headers (see [`f16_kind`]) and
/// sometimes sets every sub-block scale/min byte to 0xFF (all 63, or 15 for Q2_K) or 0.
fn random_rows(ty: GgmlType, rows: usize, nb: usize, rng: &mut Rng, kind: u64) -> Vec<u8> {
    let bb = block_bytes(ty);
    let l = layout(ty);
    let mut w: Vec<u8> = (0..rows * nb * bb).map(|_| rng.byte()).collect();
    for blk in w.chunks_exact_mut(bb) {
        let k = if kind >= 6 { rng.next_u64() } else { kind };
        blk[l.d..l.d + 2].copy_from_slice(&f16_kind(rng, k).to_le_bytes());
        if let Some(m) = l.dmin {
            let km = if kind >= 6 { rng.next_u64() } else { kind };
            blk[m..m + 2].copy_from_slice(&f16_kind(rng, km).to_le_bytes());
        }
        match rng.next_u64() % 8 {
            0 => blk[l.scales.clone()].fill(0xFF),
            1 => blk[l.scales.clone()].fill(0),
            _ => {}
        }
    }
    w
}

/// Activations: ordinary, tiny, large, zero, constant, or one outlier.
fn activations(rng: &mut Rng, n: usize, kind: u64) -> Vec<f32> {
    let scale = match kind % 6 {
        1 => 1e-3,
        2 => 1e3,
        3 => 0.0,
        _ => 1.0,
    };
    let mut v: Vec<f32> = (0..n).map(|_| rng.f32() * scale).collect();
    if kind % 6 == 4 {
        v.iter_mut().enumerate().for_each(|(i, x)| *x = if i % 2 == 1 { 2.5 } else { -2.5 });
    }
    if kind % 6 == 5 && n > 0 {
        let i = (rng.next_u64() % n as u64) as usize;
        v[i] *= 40.0;
    }
    v
}

fn check_levels(ty: GgmlType, rows: usize, nb: usize, tokens: usize, seed: u64, kind: u64) {
    let mut rng = Rng::new(seed);
    let cols = nb * QK_K;
    let w = random_rows(ty, rows, nb, &mut rng, kind);
    let x: Vec<f32> = (0..tokens)
        .flat_map(|t| activations(&mut rng, cols, kind.wrapping_add(t as u64)))
        .collect();
    let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
    for path in [Path::Matmul, Path::Exact, Path::ExactRepacked] {
        let want = matmul_in(&scalar, ty, rows, cols, &w, &x, path);
        for k in all_kernels() {
            let got = matmul_in(&k, ty, rows, cols, &w, &x, path);
            for (i, (g, s)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    s.to_bits(),
                    "{ty} at {:?} ({path:?}): {rows} rows × {nb} super-blocks × {tokens} \
                     tokens, output {i} (token {}, row {}): {g:e} vs scalar {s:e}",
                    k.level(),
                    i / rows,
                    i % rows
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_level_equals_scalar_q2_k(rows in 1usize..19, nb in 1usize..5, tokens in 1usize..10,
                                      seed in any::<u64>(), kind in 0u64..8) {
        check_levels(GgmlType::Q2_K, rows, nb, tokens, seed, kind);
    }

    #[test]
    fn every_level_equals_scalar_q3_k(rows in 1usize..19, nb in 1usize..5, tokens in 1usize..10,
                                      seed in any::<u64>(), kind in 0u64..8) {
        check_levels(GgmlType::Q3_K, rows, nb, tokens, seed, kind);
    }

    #[test]
    fn every_level_equals_scalar_iq4_xs(rows in 1usize..19, nb in 1usize..5, tokens in 1usize..10,
                                        seed in any::<u64>(), kind in 0u64..8) {
        check_levels(GgmlType::IQ4_XS, rows, nb, tokens, seed, kind);
    }

    #[test]
    fn every_level_equals_scalar_q4_k(rows in 1usize..19, nb in 1usize..5, tokens in 1usize..10,
                                      seed in any::<u64>(), kind in 0u64..8) {
        check_levels(GgmlType::Q4_K, rows, nb, tokens, seed, kind);
    }

    #[test]
    fn every_level_equals_scalar_q5_k(rows in 1usize..19, nb in 1usize..5, tokens in 1usize..10,
                                      seed in any::<u64>(), kind in 0u64..8) {
        check_levels(GgmlType::Q5_K, rows, nb, tokens, seed, kind);
    }

    #[test]
    fn every_level_equals_scalar_q6_k(rows in 1usize..19, nb in 1usize..5, tokens in 1usize..10,
                                      seed in any::<u64>(), kind in 0u64..8) {
        check_levels(GgmlType::Q6_K, rows, nb, tokens, seed, kind);
    }
}

/// A larger shape: many tokens (the prompt path's tiles and rayon chunks) and rows not a
/// multiple of any tile.
#[test]
fn every_level_equals_scalar_on_a_prompt_shape() {
    for (i, &ty) in FORMATS.iter().enumerate() {
        check_levels(ty, 37, 3, 67, 0xC0FFEE + i as u64, 6);
    }
}

// ---------------------------------------------------------------------------------------
// Against pagoda-core's generic order.

/// `|x86 order - generic order| ≤ 2^-20 · Σ_blocks |terms|`: both sum the same exact
/// integer lane products, scaled by the same f32 factors; only the float rounding order
/// differs (a few ulps of the magnitudes summed), so a wrong lane or scale is far outside.
fn close_to_core<W: VecDot<Activation = BlockQ8K> + bytemuck::Pod>(ty: GgmlType, seed: u64) {
    let mut rng = Rng::new(seed);
    let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
    for trial in 0..200u64 {
        let nb = 1 + (rng.next_u64() % 6) as usize;
        let cols = nb * QK_K;
        let w = random_rows(ty, 1, nb, &mut rng, 3 + trial % 2 * 3);
        let x = activations(&mut rng, cols, trial % 3 * 5);
        let got = matmul(&scalar, ty, 1, cols, &w, &x)[0];
        let store = aligned(&w);
        let blocks: &[W] =
            bytemuck::cast_slice(&bytemuck::cast_slice::<u64, u8>(&store)[..w.len()]);
        let mut y = vec![<BlockQ8K as bytemuck::Zeroable>::zeroed(); nb];
        BlockQ8K::quantize(&x, &mut y);
        let core = W::vec_dot(blocks, &y);
        // Magnitude budget: the dot with every term made positive, in f64.
        let mut wf = vec![0.0f32; cols];
        pagoda::core::quant::dequantize_row(ty, &w, &mut wf).unwrap();
        let mut yf = vec![0.0f32; cols];
        BlockQ8K::dequantize_blocks(&y, &mut yf);
        let mut mag: f64 =
            wf.iter().zip(&yf).map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs()).sum();
        if let Some(m) = layout(ty).dmin {
            // The min terms are summed apart from the scaled quants: their size counts too.
            let bb = block_bytes(ty);
            for (blk, ys) in w.chunks_exact(bb).zip(yf.chunks_exact(QK_K)) {
                let dmin = half::f16::from_le_bytes([blk[m], blk[m + 1]]).to_f64().abs();
                mag += dmin * 63.0 * ys.iter().map(|&v| f64::from(v).abs()).sum::<f64>();
            }
        }
        let tol = mag * 2f64.powi(-20) + 1e-30;
        assert!(
            (f64::from(got) - f64::from(core)).abs() <= tol,
            "{ty} trial {trial}: x86 order {got:e}, core {core:e}, tolerance {tol:e}"
        );
    }
}

trait DequantizeBlocks {
    fn dequantize_blocks(b: &[Self], out: &mut [f32])
    where
        Self: Sized;
}

impl DequantizeBlocks for BlockQ8K {
    fn dequantize_blocks(b: &[Self], out: &mut [f32]) {
        for (b, o) in b.iter().zip(out.chunks_exact_mut(QK_K)) {
            for (&q, o) in b.qs.iter().zip(o) {
                *o = b.d * f32::from(q);
            }
        }
    }
}

/// `matmul_exact` takes llama.cpp's tiled order from `TILED_MIN_TOKENS` tokens on: below
/// that it is `matmul` bit for bit; from there on it is another rounding (some output
/// differs), within the same budget of core's `VecDot` as the per-row order.
#[test]
fn exact_matmul_switches_to_the_tiled_order_at_eight_tokens() {
    assert_eq!(pagoda::cpu::kernels::TILED_MIN_TOKENS, 8);
    let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
    for (i, &ty) in FORMATS.iter().enumerate() {
        let mut rng = Rng::new(0x711ED + i as u64);
        let (rows, nb) = (24, 4);
        let cols = nb * QK_K;
        let w = random_rows(ty, rows, nb, &mut rng, 6);
        for tokens in [1usize, 7, 8, 20] {
            let x: Vec<f32> =
                (0..tokens).flat_map(|t| activations(&mut rng, cols, 6 + t as u64)).collect();
            let per_row = matmul_in(&scalar, ty, rows, cols, &w, &x, Path::Matmul);
            let exact = matmul_in(&scalar, ty, rows, cols, &w, &x, Path::Exact);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            if tokens < 8 {
                assert_eq!(bits(&exact), bits(&per_row), "{ty}, {tokens} tokens");
            } else {
                assert_ne!(bits(&exact), bits(&per_row), "{ty}, {tokens} tokens: no switch");
                // Both round the same exact integer sums; mins cancel against the quants,
                // so the budget is relative to the largest output.
                let scale = per_row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (e, p) in exact.iter().zip(&per_row) {
                    let tol = 1e-5 * scale;
                    assert!((e - p).abs() <= tol, "{ty}, {tokens} tokens: {e:e} vs {p:e}");
                }
            }
        }
    }
}

/// Matrices llama.cpp repacks (Q4_K, Q2_K) take its repacked kernels' order at every batch
/// size: its GEMM for the batch's first `n - n % 4` tokens, its GEMV for the last `n % 4`.
/// A token's result depends only on which of the two it falls in (not on the batch size or
/// its neighbours); the two round differently (some output differs), each within the
/// per-row order's budget; and formats llama.cpp does not repack ignore the flag.
#[test]
fn exact_matmul_of_repacked_matrices_follows_llamacpps_gemm_and_gemv() {
    let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (i, &ty) in FORMATS.iter().enumerate() {
        let mut rng = Rng::new(0x4E9AC + i as u64);
        let (rows, nb) = (16, 3);
        let cols = nb * QK_K;
        let w = random_rows(ty, rows, nb, &mut rng, 6);
        let x: Vec<f32> = (0..11).flat_map(|t| activations(&mut rng, cols, 6 + t as u64)).collect();
        let token = |t: usize| &x[t * cols..(t + 1) * cols];
        let run = |x: &[f32], path| matmul_in(&scalar, ty, rows, cols, &w, x, path);
        if !matches!(ty, GgmlType::Q4_K | GgmlType::Q2_K) {
            for tokens in [1, 8, 11] {
                let x = &x[..tokens * cols];
                assert_eq!(bits(&run(x, Path::ExactRepacked)), bits(&run(x, Path::Exact)), "{ty}");
            }
            continue;
        }
        // Each token alone (the GEMV), and in a batch of four (the GEMM).
        let gemv: Vec<Vec<f32>> = (0..11).map(|t| run(token(t), Path::ExactRepacked)).collect();
        let gemm: Vec<Vec<f32>> = (0..11)
            .map(|t| {
                let mut four: Vec<f32> = token(t).to_vec();
                for _ in 0..3 {
                    four.extend_from_slice(token((t + 1) % 11));
                }
                run(&four, Path::ExactRepacked)[..rows].to_vec()
            })
            .collect();
        for tokens in 1..=11 {
            let got = run(&x[..tokens * cols], Path::ExactRepacked);
            for t in 0..tokens {
                let want = if t < tokens - tokens % 4 { &gemm[t] } else { &gemv[t] };
                let got = &got[t * rows..(t + 1) * rows];
                assert_eq!(bits(got), bits(want), "{ty}: token {t} of {tokens}");
            }
        }
        let (gemm, gemv) = (gemm.concat(), gemv.concat());
        assert_ne!(bits(&gemm), bits(&gemv), "{ty}: the GEMM and GEMV orders are the same");
        let per_row = run(&x, Path::Matmul);
        let scale = per_row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for ((a, b), p) in gemm.iter().zip(&gemv).zip(&per_row) {
            assert!(
                (a - p).abs() <= 1e-5 * scale && (b - p).abs() <= 1e-5 * scale,
                "{ty}: {a:e} {b:e} vs {p:e}"
            );
        }
    }
}

#[test]
fn scalar_is_close_to_core_vec_dot() {
    close_to_core::<BlockQ4K>(GgmlType::Q4_K, 41);
    close_to_core::<BlockQ5K>(GgmlType::Q5_K, 51);
    close_to_core::<BlockQ6K>(GgmlType::Q6_K, 61);
    close_to_core::<BlockQ2K>(GgmlType::Q2_K, 21);
    close_to_core::<BlockQ3K>(GgmlType::Q3_K, 31);
    close_to_core::<BlockIq4Xs>(GgmlType::IQ4_XS, 71);
}
