//! RMSNorm (Zhang & Sennrich 2019), as Llama uses it.

/// `out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i]`.
///
/// The sum of squares is accumulated in `f64`, as ggml does, so long rows do not lose
/// precision. All three slices must have the same length; extra elements of the
/// longer ones are ignored (the shortest length wins).
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().min(weight.len()).min(out.len());
    if n == 0 {
        return;
    }
    let sum: f64 = x[..n].iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / n as f64) as f32;
    let scale = 1.0 / libm::sqrtf(mean + eps);
    for ((o, &v), &w) in out[..n].iter_mut().zip(&x[..n]).zip(&weight[..n]) {
        *o = v * scale * w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_weights_give_unit_rms() {
        let x = [1.0f32, -2.0, 3.0, -4.0, 5.0];
        let w = [1.0f32; 5];
        let mut out = [0.0f32; 5];
        rmsnorm(&x, &w, 0.0, &mut out);
        let rms: f32 = (out.iter().map(|v| v * v).sum::<f32>() / 5.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6, "rms {rms}");
        let expect = 1.0 / (55.0f32 / 5.0).sqrt();
        assert!((out[0] - expect).abs() < 1e-6);
    }

    #[test]
    fn weight_scales_each_lane() {
        let x = [2.0f32, 2.0];
        let w = [1.0f32, 3.0];
        let mut out = [0.0f32; 2];
        rmsnorm(&x, &w, 0.0, &mut out);
        assert!((out[0] - 1.0).abs() < 1e-6 && (out[1] - 3.0).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn zeros_stay_finite_with_eps() {
        let x = [0.0f32; 8];
        let mut out = [1.0f32; 8];
        rmsnorm(&x, &[1.0; 8], 1e-5, &mut out);
        assert!(out.iter().all(|v| *v == 0.0));
    }
}
