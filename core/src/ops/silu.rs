//! SiLU (swish) and the SwiGLU gate product.

/// `silu(x) = x · σ(x) = x / (1 + e^(−x))`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// SwiGLU's gate: `gate[i] = silu(gate[i]) * up[i]` (the shortest length wins).
pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((silu(-1.0) + 0.268_941_4).abs() < 1e-6);
        assert_eq!(silu(-100.0), -0.0);
        assert!((silu(100.0) - 100.0).abs() < 1e-4);
    }

    #[test]
    fn gate_times_up() {
        let mut g = [1.0f32, 0.0, -1.0];
        silu_mul_inplace(&mut g, &[2.0, 5.0, 1.0]);
        assert!((g[0] - 2.0 * 0.731_058_6).abs() < 1e-6);
        assert_eq!(g[1], 0.0);
        assert!((g[2] + 0.268_941_4).abs() < 1e-6);
    }
}
