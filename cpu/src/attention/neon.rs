//! NEON page kernels (aarch64): the same contracts as [`super::scalar`].
//!
//! Four keys per step in `scores` and 16 output floats per step in `accumulate`, so four
//! independent FMA chains run; the `head_dim % 4` tail is scalar. f16 pages are widened by
//! `half` (which uses the `fcvtl` instructions where the target allows).

use core::arch::aarch64::*;

/// See [`super::scalar::scores`].
///
/// # Safety
/// NEON is present; `q.len() ≥ rows·hd` for `rows = out.len() / n`, `keys.len() ≥ n·hd`,
/// `n ≥ 1`, `hd ≥ 1`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn scores_neon(
    q: &[f32],
    keys: &[f32],
    hd: usize,
    n: usize,
    scale: f32,
    out: &mut [f32],
) {
    let rows = out.len() / n;
    debug_assert!(q.len() >= rows * hd && keys.len() >= n * hd);
    let full = hd / 4 * 4;
    // SAFETY: every offset stays below `rows·hd` (q), `n·hd` (keys) and `rows·n` (out) per
    // the caller's contract; vector loads cover `d + 4 ≤ full ≤ hd`.
    unsafe {
        let kp = keys.as_ptr();
        for r in 0..rows {
            let qp = q.as_ptr().add(r * hd);
            let q_r = &q[r * hd..(r + 1) * hd];
            let mut j = 0;
            while j + 4 <= n {
                let k0 = kp.add(j * hd);
                let (k1, k2, k3) = (k0.add(hd), k0.add(2 * hd), k0.add(3 * hd));
                let (mut a0, mut a1, mut a2, mut a3) =
                    (vdupq_n_f32(0.0), vdupq_n_f32(0.0), vdupq_n_f32(0.0), vdupq_n_f32(0.0));
                let mut d = 0;
                while d < full {
                    let qv = vld1q_f32(qp.add(d));
                    a0 = vfmaq_f32(a0, qv, vld1q_f32(k0.add(d)));
                    a1 = vfmaq_f32(a1, qv, vld1q_f32(k1.add(d)));
                    a2 = vfmaq_f32(a2, qv, vld1q_f32(k2.add(d)));
                    a3 = vfmaq_f32(a3, qv, vld1q_f32(k3.add(d)));
                    d += 4;
                }
                let mut s = [vaddvq_f32(a0), vaddvq_f32(a1), vaddvq_f32(a2), vaddvq_f32(a3)];
                for (i, s_i) in s.iter_mut().enumerate() {
                    let k = &keys[(j + i) * hd..(j + i + 1) * hd];
                    *s_i += q_r[full..].iter().zip(&k[full..]).map(|(&a, &b)| a * b).sum::<f32>();
                    out[r * n + j + i] = scale * *s_i;
                }
                j += 4;
            }
            while j < n {
                let k0 = kp.add(j * hd);
                let mut a0 = vdupq_n_f32(0.0);
                let mut d = 0;
                while d < full {
                    a0 = vfmaq_f32(a0, vld1q_f32(qp.add(d)), vld1q_f32(k0.add(d)));
                    d += 4;
                }
                let k = &keys[j * hd..(j + 1) * hd];
                let tail: f32 = q_r[full..].iter().zip(&k[full..]).map(|(&a, &b)| a * b).sum();
                out[r * n + j] = scale * (vaddvq_f32(a0) + tail);
                j += 1;
            }
        }
    }
}

/// See [`super::scalar::accumulate`].
///
/// # Safety
/// NEON is present; `acc.len()` a multiple of `hd`, `p.len() ≥ rows·n`, `values.len() ≥ n·hd`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn accumulate_neon(
    acc: &mut [f32],
    p: &[f32],
    values: &[f32],
    hd: usize,
    n: usize,
) {
    let rows = acc.len() / hd;
    debug_assert!(p.len() >= rows * n && values.len() >= n * hd);
    // SAFETY: offsets stay below `rows·hd` (acc), `rows·n` (p) and `n·hd` (values) per the
    // caller's contract; vector accesses cover `d + 16 ≤ hd` or `d + 4 ≤ hd`.
    unsafe {
        let vp = values.as_ptr();
        for r in 0..rows {
            let ap = acc.as_mut_ptr().add(r * hd);
            let pr = &p[r * n..(r + 1) * n];
            let mut d = 0;
            while d + 16 <= hd {
                let mut a0 = vld1q_f32(ap.add(d));
                let mut a1 = vld1q_f32(ap.add(d + 4));
                let mut a2 = vld1q_f32(ap.add(d + 8));
                let mut a3 = vld1q_f32(ap.add(d + 12));
                for (j, &w) in pr.iter().enumerate() {
                    let v = vp.add(j * hd + d);
                    a0 = vfmaq_n_f32(a0, vld1q_f32(v), w);
                    a1 = vfmaq_n_f32(a1, vld1q_f32(v.add(4)), w);
                    a2 = vfmaq_n_f32(a2, vld1q_f32(v.add(8)), w);
                    a3 = vfmaq_n_f32(a3, vld1q_f32(v.add(12)), w);
                }
                vst1q_f32(ap.add(d), a0);
                vst1q_f32(ap.add(d + 4), a1);
                vst1q_f32(ap.add(d + 8), a2);
                vst1q_f32(ap.add(d + 12), a3);
                d += 16;
            }
            while d + 4 <= hd {
                let mut a0 = vld1q_f32(ap.add(d));
                for (j, &w) in pr.iter().enumerate() {
                    a0 = vfmaq_n_f32(a0, vld1q_f32(vp.add(j * hd + d)), w);
                }
                vst1q_f32(ap.add(d), a0);
                d += 4;
            }
            for dd in d..hd {
                let mut a = *ap.add(dd);
                for (j, &w) in pr.iter().enumerate() {
                    a += w * *vp.add(j * hd + dd);
                }
                *ap.add(dd) = a;
            }
        }
    }
}
