//! The orthonormal Walsh–Hadamard rotation, applied to KV rows before they are quantized
//! (QuaRot-style): it spreads an outlier over a whole run of values, so a 32-value block
//! with one large coordinate no longer loses every other value to its scale.
//!
//! `H_n / √n` (`n` a power of two) is orthonormal and symmetric, so it is its own inverse and
//! keeps dot products: `(Hq)·(Hk) = q·k`. Attention over rotated keys and values with a
//! rotated query gives the rotated output, which one more rotation turns back:
//!
//! ```text
//! scores  s_j = (Hq)·(H k_j) = q·k_j
//! output  Σ_j p_j (H v_j) = H (Σ_j p_j v_j)   →   out = H · that
//! ```

/// The rotation of runs of `n` values (`n` a power of two, at least 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hadamard {
    n: usize,
}

impl Hadamard {
    /// The rotation for rows of `width` values: runs of the largest power of two dividing
    /// `width` (64 for a 64-wide head, 32 for a 96-wide one), so that a run never straddles
    /// two heads when `width` is a head's. `None` for an odd `width` (or 0).
    pub fn for_width(width: usize) -> Option<Self> {
        if width == 0 {
            return None;
        }
        let n = 1usize << width.trailing_zeros();
        (n >= 2).then_some(Hadamard { n })
    }

    /// The run length.
    pub fn len(self) -> usize {
        self.n
    }

    /// Never true: a rotation has at least 2 values per run.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Rotates every whole run of [`len`](Self::len) values of `x` in place by `H_n / √n`:
    /// the fast transform (`log2 n` butterfly passes of `a + b`, `a − b`), then one
    /// multiply by `1/√n` (exact when `log2 n` is even: a power of two). A tail shorter than
    /// a run is left as it is.
    pub fn rotate(self, x: &mut [f32]) {
        let n = self.n;
        let scale = 1.0 / libm::sqrtf(n as f32);
        for run in x.chunks_exact_mut(n) {
            let mut h = 1;
            while h < n {
                for pair in run.chunks_exact_mut(2 * h) {
                    let (a, b) = pair.split_at_mut(h);
                    for (a, b) in a.iter_mut().zip(b) {
                        let (s, d) = (*a + *b, *a - *b);
                        *a = s;
                        *b = d;
                    }
                }
                h *= 2;
            }
            run.iter_mut().for_each(|v| *v *= scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    #[test]
    fn run_length_is_the_largest_power_of_two_dividing_the_width() {
        assert_eq!(Hadamard::for_width(64).map(Hadamard::len), Some(64));
        assert_eq!(Hadamard::for_width(256).map(Hadamard::len), Some(256));
        assert_eq!(Hadamard::for_width(96).map(Hadamard::len), Some(32));
        assert_eq!(Hadamard::for_width(6).map(Hadamard::len), Some(2));
        assert_eq!(Hadamard::for_width(7), None);
        assert_eq!(Hadamard::for_width(0), None);
    }

    #[test]
    fn matches_the_matrix_definition() {
        // H_4 / 2 = [[1,1,1,1],[1,-1,1,-1],[1,1,-1,-1],[1,-1,-1,1]] / 2.
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        Hadamard::for_width(4).unwrap().rotate(&mut x);
        assert_eq!(x, [5.0, -1.0, -2.0, 0.0]);
    }

    #[test]
    fn is_its_own_inverse_and_keeps_dot_products() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for width in [2usize, 32, 64, 96, 128, 256] {
            let h = Hadamard::for_width(width).unwrap();
            let (mut x, mut y) = ([0.0f32; 256], [0.0f32; 256]);
            let (x, y) = (&mut x[..width], &mut y[..width]);
            x.iter_mut().chain(y.iter_mut()).for_each(|v| *v = rng(&mut seed));
            let (mut hx, mut hy) = ([0.0f32; 256], [0.0f32; 256]);
            let (hx, hy) = (&mut hx[..width], &mut hy[..width]);
            hx.copy_from_slice(x);
            hy.copy_from_slice(y);
            h.rotate(hx);
            h.rotate(hy);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
            assert!((dot(hx, hy) - dot(x, y)).abs() < 1e-4, "width {width}");
            let back = hx;
            h.rotate(back);
            for (b, x) in back.iter().zip(x.iter()) {
                assert!((b - x).abs() < 1e-5, "width {width}: {b} vs {x}");
            }
        }
    }

    #[test]
    fn spreads_an_outlier_over_the_run() {
        let mut x = [0.0f32; 64];
        x[17] = 8.0;
        Hadamard::for_width(64).unwrap().rotate(&mut x);
        assert!(x.iter().all(|&v| v.abs() == 1.0), "{x:?}");
    }

    #[test]
    fn a_tail_shorter_than_a_run_is_left_alone() {
        let mut x = [1.0f32, 1.0, 5.0];
        Hadamard { n: 2 }.rotate(&mut x);
        let s = 1.0 / libm::sqrtf(2.0);
        assert_eq!(x, [2.0 * s, 0.0, 5.0]);
    }
}
