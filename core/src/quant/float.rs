//! The few C floating-point conversions ggml's reference kernels rely on, reproduced
//! exactly and without `std` (no `f32::round` in `core` at our MSRV).

use half::{bf16, f16};

/// C's `roundf`: round to nearest, ties away from zero.
#[inline]
pub(crate) fn round_half_away(x: f32) -> f32 {
    // Floats with magnitude >= 2^23 (and NaN, inf) are already integral.
    if x.is_nan() || x.abs() >= 8_388_608.0 {
        return x;
    }
    // Exact: |x| < 2^23 fits in i32, and the fractional part of a float is representable.
    let t = x as i32 as f32;
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// ggml's K-quant `nearest_int`: round to nearest, ties to *even*, via the
/// `x + 1.5 * 2^23` trick. Exact for `|x| <= 4194303`; garbage (but no panic) beyond,
/// where ggml asserts.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// C's `sqrtf`, correctly rounded, without `std`: an exact integer square root of the
/// scaled significand, rounded once.
pub(crate) fn sqrt(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let biased = ((bits >> 23) & 0xff) as i32;
    let mut mant = bits & 0x007f_ffff;
    // x = mant * 2^e with mant a 24-bit integer (subnormals normalised).
    let mut e = if biased == 0 {
        let shift = mant.leading_zeros() as i32 - 8;
        mant <<= shift;
        1 - 150 - shift
    } else {
        mant |= 0x0080_0000;
        biased - 150
    };
    let mut m = u64::from(mant);
    if e & 1 != 0 {
        m <<= 1;
        e -= 1;
    }
    // sqrt(m * 2^28) has 26 or 27 bits: at least two below the 24 kept.
    let big = m << 28;
    let mut r = isqrt(big);
    let mut k = e / 2 - 14;
    if r * r != big {
        // The true root lies strictly inside (r, r + 1); r + 1/2 rounds the same way.
        r = 2 * r + 1;
        k -= 1;
    }
    // `as f32` rounds to nearest even; the power-of-two scaling is exact (normal range).
    r as f32 * f32::from_bits(((k + 127) as u32) << 23)
}

/// `floor(sqrt(n))`, digit by digit.
fn isqrt(n: u64) -> u64 {
    let mut rem = n;
    let mut root = 0u64;
    let mut bit = 1u64 << 62;
    while bit > n {
        bit >>= 2;
    }
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// `GGML_FP16_TO_FP32`.
#[inline]
pub(crate) fn f16_to_f32(h: f16) -> f32 {
    h.to_f32()
}

/// `GGML_FP32_TO_FP16` (`ggml_compute_fp32_to_fp16`): round to nearest even, overflow
/// to infinity, and every NaN to the quiet NaN `0x7E00` with the input's sign (its
/// payload dropped; `half` would keep the payload's top bits, which llama.cpp does not).
#[inline]
pub(crate) fn f32_to_f16(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        return f16::from_bits(sign | 0x7E00);
    }
    f16::from_f32(x)
}

/// `GGML_BF16_TO_FP32`: the bf16 bits are the high half of the f32.
#[inline]
pub(crate) fn bf16_to_f32(h: bf16) -> f32 {
    f32::from_bits(u32::from(h.to_bits()) << 16)
}

/// `GGML_FP32_TO_BF16` (`ggml_compute_fp32_to_bf16`): round to nearest even; NaN is
/// truncated and forced quiet. Written out because ggml's NaN rule is its own.
#[inline]
pub(crate) fn f32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    let rounded = (u64::from(u) + 0x7fff + u64::from((u >> 16) & 1)) >> 16;
    bf16::from_bits(rounded as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_matches_c_roundf() {
        let cases = [
            (0.5, 1.0),
            (-0.5, -1.0),
            (1.5, 2.0),
            (2.5, 3.0),
            (-2.5, -3.0),
            (0.49999997, 0.0),
            (-0.49999997, -0.0),
            (126.5, 127.0),
            (8_388_607.5, 8_388_608.0),
            (1e30, 1e30),
            (-0.0, -0.0),
        ];
        for (x, want) in cases {
            assert_eq!(round_half_away(x), want, "roundf({x})");
        }
        assert!(round_half_away(f32::NAN).is_nan());
        assert_eq!(round_half_away(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn nearest_int_ties_to_even() {
        for (x, want) in [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (3.2, 3)]
        {
            assert_eq!(nearest_int(x), want, "nearest_int({x})");
        }
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }

    #[test]
    fn sqrt_is_correctly_rounded() {
        let n = if cfg!(miri) { 200 } else { 200_000 };
        let mut s = 0x2545_f491u32;
        for i in 0..n {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            // Every positive finite bit pattern class: subnormal, normal, huge.
            let x = f32::from_bits(s & 0x7f7f_ffff);
            assert_eq!(sqrt(x).to_bits(), x.sqrt().to_bits(), "sqrt({x:e}) (case {i})");
        }
        for x in [f32::MIN_POSITIVE, f32::MAX, 1.0, 2.0, 4.0, 1e-45, 0.0, -0.0, f32::INFINITY] {
            assert_eq!(sqrt(x).to_bits(), x.sqrt().to_bits(), "sqrt({x:e})");
        }
        assert!(sqrt(-1.0).is_nan() && sqrt(f32::NAN).is_nan());
    }

    #[test]
    fn f16_nan_is_ggml_canonical() {
        for (bits, want) in [
            (0x7fc0_0000u32, 0x7e00u16),
            (0xffa1_2345, 0xfe00),
            (0x7f80_0001, 0x7e00),
            (0x7fff_ffff, 0x7e00),
        ] {
            assert_eq!(f32_to_f16(f32::from_bits(bits)).to_bits(), want, "{bits:#x}");
        }
        assert_eq!(f32_to_f16(65520.0).to_bits(), 0x7c00, "overflow to infinity");
        assert_eq!(f32_to_f16(65519.996).to_bits(), 0x7bff);
        assert_eq!(f32_to_f16(-f32::INFINITY).to_bits(), 0xfc00);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1.0) wins.
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0).to_bits(), 0x3f80);
        // 1 + 3 * 2^-8 ties between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0).to_bits(), 0x3f82);
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.0)), -2.0);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
