//! Properties of pagoda's block formats: ggml's own error budgets
//! (`tests/test-quantize-fns.cpp`), per-value error bounds over random data with
//! extreme block scales, `vec_dot` against the dot product of the dequantized
//! operands, and no panics on arbitrary bytes.

use half::{bf16, f16};
use pagoda::core::quant::{
    dequantize_row, quantize_row, BlockFormat, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K,
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1, GgmlType, Quantize, VecDot,
};
use proptest::prelude::*;

fn quantize<B: Quantize>(x: &[f32]) -> Vec<B> {
    let mut b = vec![B::zeroed(); x.len() / B::BLOCK];
    B::quantize(x, &mut b);
    b
}

fn dequantize<B: BlockFormat>(b: &[B]) -> Vec<f32> {
    let mut y = vec![0.0; b.len() * B::BLOCK];
    B::dequantize(b, &mut y);
    y
}

fn round_trip<B: Quantize>(x: &[f32]) -> Vec<f32> {
    dequantize(&quantize::<B>(x))
}

// ------------------------------------------------------------- ggml's budgets

/// `0.1 + 2 cos(i + offset)`, ggml's `generate_data`.
fn ggml_test_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.1 + 2.0 * (i as f32 + offset).cos()).collect()
}

/// ggml's `array_rmse`: `sqrt(sum of squared differences) / n`.
fn ggml_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    (sum.sqrt() / a.len() as f64) as f32
}

/// `MAX_QUANTIZATION_TOTAL_ERROR` and `MAX_DOT_PRODUCT_ERROR` of test-quantize-fns,
/// with its looser budgets for Q2_K (`_2BITS`, `_LOWBIT`) and Q3_K (`_3BITS`).
const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
const MAX_QUANTIZATION_TOTAL_ERROR_2BITS: f32 = 0.0075;
const MAX_QUANTIZATION_TOTAL_ERROR_3BITS: f32 = 0.0040;
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;
const MAX_DOT_PRODUCT_ERROR_LOWBIT: f32 = 0.04;
const GGML_TEST_SIZE: usize = 32 * 128;

fn ggml_budgets<W: VecDot + Quantize>() {
    let (max_q, max_dot) = match W::TYPE {
        GgmlType::Q2_K => (MAX_QUANTIZATION_TOTAL_ERROR_2BITS, MAX_DOT_PRODUCT_ERROR_LOWBIT),
        GgmlType::Q3_K => (MAX_QUANTIZATION_TOTAL_ERROR_3BITS, MAX_DOT_PRODUCT_ERROR),
        _ => (MAX_QUANTIZATION_TOTAL_ERROR, MAX_DOT_PRODUCT_ERROR),
    };
    let x = ggml_test_data(0.0, GGML_TEST_SIZE);
    let err = ggml_rmse(&x, &round_trip::<W>(&x));
    assert!(err < max_q, "{}: quantization error {err}", W::TYPE);

    let y = ggml_test_data(1.0, GGML_TEST_SIZE);
    let exact: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
    let got = W::vec_dot(&quantize::<W>(&x), &quantize::<W::Activation>(&y));
    let err = ((got as f64 - exact).abs() / GGML_TEST_SIZE as f64) as f32;
    assert!(err < max_dot, "{}: dot product error {err}", W::TYPE);
}

#[test]
fn ggml_error_budgets_hold_for_every_weight_format() {
    ggml_budgets::<f32>();
    ggml_budgets::<f16>();
    ggml_budgets::<bf16>();
    ggml_budgets::<BlockQ4_0>();
    ggml_budgets::<BlockQ4_1>();
    ggml_budgets::<BlockQ5_0>();
    ggml_budgets::<BlockQ5_1>();
    ggml_budgets::<BlockQ8_0>();
    ggml_budgets::<BlockQ4K>();
    ggml_budgets::<BlockQ5K>();
    ggml_budgets::<BlockQ6K>();
    ggml_budgets::<BlockQ2K>();
    ggml_budgets::<BlockQ3K>();
    ggml_budgets::<BlockIq4Nl>();
    ggml_budgets::<BlockIq4Xs>();
}

#[test]
fn activation_formats_meet_the_8_bit_budget() {
    let x = ggml_test_data(0.0, GGML_TEST_SIZE);
    for (name, y) in [("Q8_1", round_trip::<BlockQ8_1>(&x)), ("Q8_K", round_trip::<BlockQ8K>(&x))] {
        let err = ggml_rmse(&x, &y);
        assert!(err < MAX_QUANTIZATION_TOTAL_ERROR, "{name}: quantization error {err}");
    }
}

// ------------------------------------------------------------- random data

/// Block scales: zero, f16-subnormal territory, ordinary, the f16 maximum, and
/// far beyond what an f16 scale can hold.
const SCALES: [f32; 8] = [0.0, 1e-30, 1e-6, 1e-3, 1.0, 1e3, 65504.0, 1e30];
/// Scales whose quantized blocks stay finite in every format.
const FINITE_SCALES: [f32; 6] = [0.0, 1e-30, 1e-6, 1e-3, 1.0, 1e3];

/// `blocks` blocks of `block` values, each `u * scale` with `u` in `[-1, 1]` and a
/// per-block scale drawn from `scales`.
fn blocks_of(
    block: usize,
    blocks: std::ops::RangeInclusive<usize>,
    scales: &'static [f32],
) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        (prop::sample::select(scales), prop::collection::vec(-1.0f32..=1.0, block)),
        blocks,
    )
    .prop_map(|bs| bs.into_iter().flat_map(|(s, u)| u.into_iter().map(move |v| v * s)).collect())
}

/// Half a unit in the last place of the smallest f16 subnormal: the absolute error
/// of rounding a tiny scale to f16.
const F16_TINY: f32 = 2.98e-8; // 2^-25

/// Checks `|x - y| <= bound(block of x)` for every value of every block.
fn check_bound<B: Quantize>(x: &[f32], bound: impl Fn(&[f32]) -> f32) -> Result<(), TestCaseError> {
    let y = round_trip::<B>(x);
    for (xb, yb) in x.chunks(B::BLOCK).zip(y.chunks(B::BLOCK)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if amax > 6e4 {
            // The block scale overflows f16 (or nearly): only "no panic" is promised.
            continue;
        }
        let b = bound(xb);
        for (&a, &r) in xb.iter().zip(yb) {
            prop_assert!(r.is_finite(), "{}: {a} -> {r}", B::TYPE);
            prop_assert!((a - r).abs() <= b, "{}: {a} -> {r}, bound {b}", B::TYPE);
        }
        if amax == 0.0 {
            prop_assert!(yb.iter().all(|&v| v == 0.0), "{}: zero block", B::TYPE);
        }
    }
    Ok(())
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn range(x: &[f32]) -> (f32, f32) {
    let lo = x.iter().fold(f32::MAX, |m, &v| m.min(v));
    let hi = x.iter().fold(-f32::MAX, |m, &v| m.max(v));
    (lo, hi)
}

const F16_REL: f32 = 1.0 / 2048.0; // f16 rounding, relative

proptest! {
    #[test]
    fn q4_0_error_bound(x in blocks_of(32, 1..=6, &SCALES)) {
        // Quant 16 clamps to 15: the value opposite the largest can be off by d = amax/8.
        check_bound::<BlockQ4_0>(&x, |b| amax(b) * (0.125 + 2.0 * F16_REL) + 8.0 * F16_TINY)?;
    }

    #[test]
    fn q4_1_error_bound(x in blocks_of(32, 1..=6, &SCALES)) {
        check_bound::<BlockQ4_1>(&x, |b| {
            let (lo, hi) = range(b);
            (hi - lo) * (1.0 / 30.0 + 2.0 * F16_REL) + lo.abs() * F16_REL + 16.0 * F16_TINY
        })?;
    }

    #[test]
    fn q5_0_error_bound(x in blocks_of(32, 1..=6, &SCALES)) {
        check_bound::<BlockQ5_0>(&x, |b| amax(b) * (0.0625 + 2.0 * F16_REL) + 16.0 * F16_TINY)?;
    }

    #[test]
    fn q5_1_error_bound(x in blocks_of(32, 1..=6, &SCALES)) {
        check_bound::<BlockQ5_1>(&x, |b| {
            let (lo, hi) = range(b);
            (hi - lo) * (1.0 / 62.0 + 2.0 * F16_REL) + lo.abs() * F16_REL + 32.0 * F16_TINY
        })?;
    }

    #[test]
    fn q8_0_and_q8_1_error_bound(x in blocks_of(32, 1..=6, &SCALES)) {
        let bound = |b: &[f32]| amax(b) * (1.0 / 254.0 + 2.0 * F16_REL) + 128.0 * F16_TINY;
        check_bound::<BlockQ8_0>(&x, bound)?;
        check_bound::<BlockQ8_1>(&x, bound)?;
    }

    #[test]
    fn q8_k_error_bound(x in blocks_of(256, 1..=2, &SCALES)) {
        // f32 scale: no f16 rounding, and no overflow even at 1e30.
        let y = round_trip::<BlockQ8K>(&x);
        for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
            let b = amax(xb) * (1.0 / 254.0) * 1.0001;
            for (&a, &r) in xb.iter().zip(yb) {
                prop_assert!((a - r).abs() <= b, "Q8_K: {a} -> {r}, bound {b}");
            }
        }
    }

    #[test]
    fn f16_and_bf16_error_bound(x in blocks_of(8, 1..=8, &SCALES)) {
        check_bound::<f16>(&x, |b| amax(b) * F16_REL + F16_TINY)?;
        let y = round_trip::<bf16>(&x);
        for (&a, &r) in x.iter().zip(&y) {
            prop_assert!((a - r).abs() <= a.abs() / 256.0 + 1e-38, "BF16: {a} -> {r}");
        }
    }

    #[test]
    fn iq4_nl_error_bound(x in blocks_of(32, 1..=6, &SCALES)) {
        // Least-squares scale: the extreme value may land a codebook step (at most 24 of
        // 127 levels) away; everything else is within half a step.
        check_bound::<BlockIq4Nl>(&x, |b| amax(b) * (0.2 + 4.0 * F16_REL) + 128.0 * F16_TINY)?;
    }

    #[test]
    fn k_quants_stay_finite_and_zero_blocks_stay_zero(x in blocks_of(256, 1..=2, &SCALES)) {
        let all = [
            round_trip::<BlockQ2K>(&x),
            round_trip::<BlockQ3K>(&x),
            round_trip::<BlockQ4K>(&x),
            round_trip::<BlockQ5K>(&x),
            round_trip::<BlockQ6K>(&x),
            round_trip::<BlockIq4Xs>(&x),
        ];
        for y in all {
            for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
                let a = amax(xb);
                if a == 0.0 {
                    prop_assert!(yb.iter().all(|&v| v == 0.0));
                } else if a < 6e4 {
                    prop_assert!(yb.iter().all(|v| v.is_finite()));
                    // Coarse: a 4-bit affine fit is never off by more than the block range.
                    let e = xb.iter().zip(yb).fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
                    prop_assert!(e <= 2.0 * a + 1e-6, "error {e} for amax {a}");
                }
            }
        }
    }
}

// ------------------------------------------------------------- vec_dot

/// `vec_dot` against the f64 dot product of the dequantized operands. The float
/// scaling of integer block sums costs a few f32 roundings per block. Q8_1 activations
/// add ggml's own inconsistency: `s = f16(sum(qs) * d)` uses the f32 `d`, while the
/// dequantized values use the f16 `d` (which can even round to zero while `s` does not),
/// so `m * s` may differ from `m * sum(a)` by `|m| * |s - f16(d) * sum(qs)|`.
fn check_vec_dot<W: VecDot + Quantize>(
    xw: &[f32],
    xa: &[f32],
    q8_1_activation: bool,
) -> Result<(), TestCaseError> {
    let w = quantize::<W>(xw);
    let a = quantize::<W::Activation>(xa);
    let (dw, da) = (dequantize(&w), dequantize(&a));
    let exact: f64 = dw.iter().zip(&da).map(|(&p, &q)| p as f64 * q as f64).sum();
    let mag: f64 = dw.iter().zip(&da).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
    let mut tol = 1e-5 * mag + 1e-35;
    if q8_1_activation {
        let max_w = dw.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
        let slack: f64 = quantize::<BlockQ8_1>(xa)
            .iter()
            .map(|b| {
                let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
                let s = b.s.to_f64();
                (s - b.d.to_f64() * sum as f64).abs() + s.abs() * F16_REL as f64
            })
            .sum();
        tol += 2.0 * max_w * slack;
    }
    let got = W::vec_dot(&w, &a) as f64;
    prop_assert!((got - exact).abs() <= tol, "{}: vec_dot {got} vs {exact} (tol {tol})", W::TYPE);
    Ok(())
}

fn pair(block: usize, blocks: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1..=blocks).prop_flat_map(move |n| {
        (blocks_of(block, n..=n, &FINITE_SCALES), blocks_of(block, n..=n, &FINITE_SCALES))
    })
}

proptest! {
    #[test]
    fn vec_dot_32_value_formats((w, a) in pair(32, 6)) {
        check_vec_dot::<BlockQ4_0>(&w, &a, false)?;
        check_vec_dot::<BlockQ4_1>(&w, &a, true)?;
        check_vec_dot::<BlockQ5_0>(&w, &a, false)?;
        check_vec_dot::<BlockQ5_1>(&w, &a, true)?;
        check_vec_dot::<BlockQ8_0>(&w, &a, false)?;
    }

    #[test]
    fn vec_dot_iq4_nl((w, a) in pair(32, 6)) {
        check_vec_dot::<BlockIq4Nl>(&w, &a, false)?;
    }

    #[test]
    fn vec_dot_low_bit_k_quants((w, a) in pair(256, 2)) {
        check_vec_dot::<BlockQ2K>(&w, &a, false)?;
        check_vec_dot::<BlockQ3K>(&w, &a, false)?;
        check_vec_dot::<BlockIq4Xs>(&w, &a, false)?;
    }

    #[test]
    fn vec_dot_k_quants((w, a) in pair(256, 2)) {
        check_vec_dot::<BlockQ4K>(&w, &a, false)?;
        check_vec_dot::<BlockQ5K>(&w, &a, false)?;
        check_vec_dot::<BlockQ6K>(&w, &a, false)?;
    }

    #[test]
    fn vec_dot_floats((w, a) in pair(8, 8)) {
        check_vec_dot::<f32>(&w, &a, false)?;
        check_vec_dot::<f16>(&w, &a, false)?;
        check_vec_dot::<bf16>(&w, &a, false)?;
    }

    /// Any bytes are a valid block of every format: dequantizing them never panics,
    /// and a wrong type, length or alignment is an error value.
    #[test]
    fn dequantize_row_never_panics(id in 0u32..40, bytes in prop::collection::vec(any::<u8>(), 0..700), n in 0usize..800) {
        let mut words = vec![0u32; bytes.len().div_ceil(4) + 1];
        let buf = bytemuck::cast_slice_mut::<u32, u8>(&mut words);
        let offset = n % 2; // sometimes misaligned
        buf[offset..offset + bytes.len()].copy_from_slice(&bytes);
        let mut out = vec![0.0f32; n];
        if let Some(ty) = GgmlType::from_id(id) {
            let r = dequantize_row(ty, &buf[offset..offset + bytes.len()], &mut out);
            if let Some((bs, ts)) = ty.geometry() {
                if ty.is_supported() && bytes.len() % ts == 0 && bytes.len() / ts * bs == n && offset == 0 {
                    prop_assert!(r.is_ok(), "{ty}: {r:?}");
                }
            }
            if !ty.is_supported() {
                prop_assert!(r.is_err());
            }
        }
    }

    /// Quantizing any floats (NaN, infinities, subnormals included) never panics, and
    /// `quantize_row` accepts exactly whole blocks into an output of the exact size,
    /// at any alignment; aligned or not, the bytes are the same.
    #[test]
    fn quantize_row_never_panics(
        id in 0u32..40,
        bits in prop::collection::vec(any::<u32>(), 0..600),
        extra in 0usize..3,
        offset in 0usize..4,
        whole in any::<bool>(),
    ) {
        let mut x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let Some(ty) = GgmlType::from_id(id) else { return Ok(()) };
        let Some((bs, ts)) = ty.geometry() else { return Ok(()) };
        if whole {
            x.truncate(x.len() / bs * bs); // exercise the quantizers themselves
        }
        let n = x.len() / bs * ts + extra;
        let mut words = vec![0u64; n.div_ceil(8) + 1];
        let buf = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[offset..offset + n];
        let r = quantize_row(ty, &x, buf);
        let ok = x.len() % bs == 0 && extra == 0;
        // Every supported type has a quantizer (Q8_1 and Q8_K included).
        if ty.is_supported() {
            prop_assert_eq!(r.is_ok(), ok, "{}: {:?}", ty, r);
        }
        if !ty.is_supported() {
            prop_assert!(r.is_err());
        }
        if r.is_ok() && offset != 0 {
            let mut aligned = vec![0u64; n.div_ceil(8)];
            let abuf = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..n];
            prop_assert!(quantize_row(ty, &x, abuf).is_ok());
            prop_assert_eq!(&*abuf, &*buf);
        }
    }
}
