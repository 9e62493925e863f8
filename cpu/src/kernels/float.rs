//! Float kernels written once against pulp's `Simd` token: dot product, RMSNorm scale,
//! and the level → pulp token dispatch.

use pulp::{Simd, WithSimd};

use super::SimdLevel;

/// Run `op` with the pulp token of `level`, or scalar if the token cannot be made
/// (never the case for a level that passed detection).
pub(crate) fn run<Op: WithSimd>(level: SimdLevel, op: Op) -> Op::Output {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => match pulp::x86::V4::try_new() {
            Some(s) => Simd::vectorize(s, op),
            None => Simd::vectorize(pulp::Scalar::new(), op),
        },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => match pulp::x86::V3::try_new() {
            Some(s) => Simd::vectorize(s, op),
            None => Simd::vectorize(pulp::Scalar::new(), op),
        },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => match pulp::aarch64::Neon::try_new() {
            Some(s) => Simd::vectorize(s, op),
            None => Simd::vectorize(pulp::Scalar::new(), op),
        },
        _ => Simd::vectorize(pulp::Scalar::new(), op),
    }
}

/// `Σ a[i]·b[i]` over `min(a.len(), b.len())` elements (callers check lengths).
pub(crate) struct Dot<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
}

impl WithSimd for Dot<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let n = self.a.len().min(self.b.len());
        let (a, at) = S::as_simd_f32s(&self.a[..n]);
        let (b, bt) = S::as_simd_f32s(&self.b[..n]);
        let mut acc = [simd.splat_f32s(0.0); 4];
        let (a4, ar) = pulp::as_arrays::<4, _>(a);
        let (b4, br) = pulp::as_arrays::<4, _>(b);
        for (x, y) in a4.iter().zip(b4) {
            for i in 0..4 {
                acc[i] = simd.mul_add_f32s(x[i], y[i], acc[i]);
            }
        }
        for (x, y) in ar.iter().zip(br) {
            acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
        }
        let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut sum = simd.reduce_sum_f32s(s);
        for (x, y) in at.iter().zip(bt) {
            sum += x * y;
        }
        sum
    }
}

/// `out[i] = x[i] · scale · w[i]` (callers check lengths).
pub(crate) struct ScaleMul<'a> {
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub scale: f32,
    pub out: &'a mut [f32],
}

impl WithSimd for ScaleMul<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let n = self.out.len().min(self.x.len()).min(self.w.len());
        let (o, ot) = S::as_mut_simd_f32s(&mut self.out[..n]);
        let (x, xt) = S::as_simd_f32s(&self.x[..n]);
        let (w, wt) = S::as_simd_f32s(&self.w[..n]);
        let s = simd.splat_f32s(self.scale);
        for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
            *o = simd.mul_f32s(simd.mul_f32s(*x, s), *w);
        }
        for ((o, x), w) in ot.iter_mut().zip(xt).zip(wt) {
            *o = x * self.scale * w;
        }
    }
}
