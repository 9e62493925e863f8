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

#[allow(dead_code)] // used by the K-quants (next commit)
/// C's `(int)roundf(x)` for values the kernels keep in range (saturating otherwise).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    round_half_away(x) as i32
}

/// `GGML_FP16_TO_FP32`.
#[inline]
pub(crate) fn f16_to_f32(h: f16) -> f32 {
    h.to_f32()
}

/// `GGML_FP32_TO_FP16`: round to nearest even, overflow to infinity.
#[inline]
pub(crate) fn f32_to_f16(x: f32) -> f16 {
    f16::from_f32(x)
}

#[allow(dead_code)] // used by the bf16 format (next commit)
/// `GGML_BF16_TO_FP32`: the bf16 bits are the high half of the f32.
#[inline]
pub(crate) fn bf16_to_f32(h: bf16) -> f32 {
    f32::from_bits(u32::from(h.to_bits()) << 16)
}

#[allow(dead_code)] // used by the bf16 format (next commit)
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
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1.0) wins.
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0).to_bits(), 0x3f80);
        // 1 + 3 * 2^-8 ties between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0).to_bits(), 0x3f82);
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.0)), -2.0);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
