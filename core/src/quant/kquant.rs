//! Helpers shared by the K-quant formats (Q4_K, Q5_K, Q6_K): the packed 6-bit
//! scale/min table and ggml's reference scale searches.

use super::float::{nearest_int, sqrt};

/// Sub-block scale and min of sub-block `j` (`0..8`) from the 12 packed bytes of a
/// Q4_K/Q5_K super-block (ggml's `get_scale_min_k4`). Returns `(scale, min)`, both 6-bit.
///
/// ```text
/// byte  0..4   : scale[0..4] (bits 0-5) | scale[4..8] bits 4-5 (bits 6-7)
/// byte  4..8   : min[0..4]   (bits 0-5) | min[4..8]   bits 4-5 (bits 6-7)
/// byte  8..12  : scale[4..8] bits 0-3 (low nibble) | min[4..8] bits 0-3 (high nibble)
/// ```
///
/// `j >= 8` is a caller bug; it returns `(0, 0)` rather than panicking.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else if j < 8 {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    } else {
        (0, 0)
    }
}

/// Packs eight 6-bit `(scale, min)` pairs into the 12-byte table read by
/// [`get_scale_min_k4`] (the packing loop of `quantize_row_q4_K_ref`).
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (l, m) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = l;
            s[j + 4] = m;
        } else {
            s[j + 4] = (l & 0xF) | ((m & 0xF) << 4);
            s[j - 4] |= (l >> 4) << 6;
            s[j] |= (m >> 4) << 6;
        }
    }
    s
}

/// Fits `x ≈ scale * L - min` with `L` in `0..=nmax` for one `N`-value sub-block
/// (ggml's `make_qkx2_quants`; `N` is 32 for Q4_K/Q5_K, 16 for Q2_K): a first guess
/// from the range, then
/// `nstep + 1` candidate scales solved by weighted least squares. Returns
/// `(scale, min)` (`min >= 0`, subtracted) and writes the quants to `l`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l: &mut [u8; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &w) in x.iter().zip(weights).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += w;
        sum_x += w * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        *l = [0; N];
        return (0.0, -min);
    }
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((li, &xi), &w) in l.iter_mut().zip(x).zip(weights) {
        *li = nearest_int(iscale * (xi - min)).clamp(0, nmax) as u8;
        best_error += w * err(scale * *li as f32 + min - xi);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; N];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((la, &xi), &w) in laux.iter_mut().zip(x).zip(weights) {
            let q = nearest_int(iscale * (xi - min)).clamp(0, nmax);
            *la = q as u8;
            let q = q as f32;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * xi;
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&la, &xi), &w) in laux.iter().zip(x).zip(weights) {
                cur_error += w * err(this_scale * la as f32 + this_min - xi);
            }
            if cur_error < best_error {
                *l = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The `quantize_row_q{4,5}_K_ref` scale search for one 32-value sub-block: weights
/// `sqrt(mean(x^2)) + |x|`, then [`make_qkx2_quants`].
pub(crate) fn sub_block_scale_min(
    x: &[f32; 32],
    l: &mut [u8; 32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let av_x = sqrt(sum_x2 / 32.0);
    let mut weights = [0.0f32; 32];
    for (w, &v) in weights.iter_mut().zip(x) {
        *w = av_x + v.abs();
    }
    make_qkx2_quants(nmax, x, &weights, l, rmin, rdelta, nstep, false)
}

/// Below this magnitude a group counts as all zero (ggml's `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` for a 16-value group with `rmse_type = 1` and no importance
/// weights (the only use in `quantize_row_q6_K_ref`): symmetric quants `L - nmax` in
/// `-nmax..nmax`, the scale refined over 18 candidates by `x^2`-weighted least squares.
/// Writes `L` (offset by `nmax`) and returns the scale.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32; 16], l: &mut [u8; 16]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        *l = [0; 16];
        return 0.0;
    }
    let quant = |iscale: f32, xi: f32| nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &xi) in l.iter_mut().zip(x) {
        let q = quant(iscale, xi);
        *li = (q + nmax) as u8;
        let w = xi * xi;
        let q = q as f32;
        sumlx += w * xi * q;
        suml2 += w * q * q;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let q = quant(iscale, xi) as f32;
            let w = xi * xi;
            sumlx += w * xi * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &xi) in l.iter_mut().zip(x) {
                *li = (quant(iscale, xi) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_table_round_trips() {
        let ls = [0, 1, 17, 63, 32, 45, 5, 62];
        let lm = [63, 2, 33, 0, 15, 16, 48, 31];
        let packed = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &packed), (ls[j], lm[j]), "sub-block {j}");
        }
        assert_eq!(get_scale_min_k4(8, &packed), (0, 0));
    }
}
