//! Numerically stable softmax.

/// In place: `x[i] = e^(x[i] − max) / Σ e^(x[j] − max)`.
///
/// The sum is accumulated in `f64`. An empty slice is left alone; a slice whose
/// maximum is `-inf` (everything masked) becomes all zeros rather than NaN.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_to_one_and_orders() {
        let mut x = [1.0f32, 2.0, 3.0, 1000.0, -1000.0];
        softmax_inplace(&mut x);
        let s: f32 = x.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!(x[3] > 0.999 && x[4] == 0.0);
    }

    #[test]
    fn uniform_and_masked() {
        let mut x = [5.0f32; 4];
        softmax_inplace(&mut x);
        assert!(x.iter().all(|v| (v - 0.25).abs() < 1e-7));
        let mut m = [f32::NEG_INFINITY; 3];
        softmax_inplace(&mut m);
        assert_eq!(m, [0.0; 3]);
    }
}
