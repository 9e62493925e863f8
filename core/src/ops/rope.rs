//! Rotary position embedding (Su et al. 2021) in llama.cpp's two conventions:
//!
//! - "normal" ([`rope_inplace`], the Llama architecture): adjacent pairs `(x[2i], x[2i+1])`
//!   rotate together;
//! - "NeoX" ([`rope_neox_inplace`], Gemma): the two halves of the rotated dims pair up,
//!   `(x[i], x[i + n_rot/2])`.
//!
//! ```text
//! normal: | x0 x1 | x2 x3 | … | x(d-2) x(d-1) |     (only the first n_rot dims rotate)
//!            θ₀      θ₁          θ(d/2-1)          θᵢ = pos · base^(-2i/n_rot) / fᵢ
//! neox:   | x0 … x(d/2-1) | x(d/2) … x(d-1) |       x_i pairs with x(i + d/2), angle θᵢ
//! ```
//!
//! `fᵢ` are optional frequency divisors (`rope_freqs.weight`, Llama 3.1's scaling), 1 when
//! absent, applied as ggml applies them: `θᵢ / fᵢ` before the trigonometry.
//!
//! (GGUF converters permute Hugging Face's q/k weights so that this adjacent-pair form
//! is right for Llama files.) Angles are built as ggml builds them: `θ₀ = pos`, then
//! repeated multiplication by `base^(-2/n_rot)` in `f32`, so they round the same way.

/// The cos/sin table for one position: `n_rot / 2` angle pairs.
///
/// Built once per position and applied to every query and key head of that token.
#[derive(Clone, Copy, Debug)]
pub struct RopeTable<const MAX_PAIRS: usize> {
    cos: [f32; MAX_PAIRS],
    sin: [f32; MAX_PAIRS],
    pairs: usize,
}

impl<const MAX_PAIRS: usize> RopeTable<MAX_PAIRS> {
    /// The table for position `pos`, rotating the first `n_rot` dims (even, at most
    /// `2 * MAX_PAIRS`; larger values are clamped) with frequency base `freq_base`.
    pub fn new(pos: usize, n_rot: usize, freq_base: f32) -> Self {
        Self::with_trig(pos, n_rot, freq_base, libm::cosf, libm::sinf)
    }

    /// [`new`](Self::new) with the caller's `cosf`/`sinf`. `new` uses the `libm` crate's
    /// (this crate is `no_std`); a std caller that wants the platform's C library
    /// functions (as llama.cpp calls them) passes `f32::cos` and `f32::sin`: the two can
    /// differ in the last bit for some angles.
    pub fn with_trig(
        pos: usize,
        n_rot: usize,
        freq_base: f32,
        cosf: fn(f32) -> f32,
        sinf: fn(f32) -> f32,
    ) -> Self {
        Self::with_factors(pos, n_rot, freq_base, None, cosf, sinf)
    }

    /// [`with_trig`](Self::with_trig) with frequency divisors: pair `i` turns by
    /// `θᵢ / factors[i]` (ggml's `freq_factors`). Pairs past the end of `factors` use 1.
    pub fn with_factors(
        pos: usize,
        n_rot: usize,
        freq_base: f32,
        factors: Option<&[f32]>,
        cosf: fn(f32) -> f32,
        sinf: fn(f32) -> f32,
    ) -> Self {
        let pairs = (n_rot / 2).min(MAX_PAIRS);
        let mut cos = [0.0; MAX_PAIRS];
        let mut sin = [0.0; MAX_PAIRS];
        let theta_scale = libm::powf(freq_base, -2.0 / n_rot.max(1) as f32);
        let mut theta = pos as f32;
        for i in 0..pairs {
            let t = match factors.and_then(|f| f.get(i)) {
                Some(&f) => theta / f,
                None => theta,
            };
            cos[i] = cosf(t);
            sin[i] = sinf(t);
            theta *= theta_scale;
        }
        Self { cos, sin, pairs }
    }

    /// Number of rotated pairs.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// `(cos θᵢ, sin θᵢ)` of pair `i`.
    pub fn angle(&self, i: usize) -> (f32, f32) {
        (self.cos[i], self.sin[i])
    }

    /// The cosines of all pairs.
    pub fn cos(&self) -> &[f32] {
        &self.cos[..self.pairs]
    }

    /// The sines of all pairs.
    pub fn sin(&self) -> &[f32] {
        &self.sin[..self.pairs]
    }
}

/// One rotated pair, `(x0·c - x1·s, x0·s + x1·c)`, with the rounding llama.cpp's x86
/// build has: GCC contracts each expression into one fused multiply-add around the first
/// product, `(fma(x0, c, -(x1·s)), fma(x0, s, x1·c))`. `fma` is the caller's fused
/// multiply-add (`libm::fmaf` here; `f32::mul_add` where std and hardware FMA exist).
#[inline(always)]
pub fn rotate_pair(
    x0: f32,
    x1: f32,
    c: f32,
    s: f32,
    fma: impl Fn(f32, f32, f32) -> f32,
) -> (f32, f32) {
    (fma(x0, c, -(x1 * s)), fma(x0, s, x1 * c))
}

/// Rotate every head of `x` (`n_heads × head_dim`, heads contiguous) in place.
///
/// Dims past `2 * table.pairs()` in each head are left unchanged (partial rotary).
pub fn rope_inplace<const P: usize>(x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
    if head_dim == 0 {
        return;
    }
    let pairs = table.pairs.min(head_dim / 2);
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..pairs {
            let (c, s) = (table.cos[i], table.sin[i]);
            let x0 = head[2 * i];
            let x1 = head[2 * i + 1];
            let (y0, y1) = rotate_pair(x0, x1, c, s, libm::fmaf);
            head[2 * i] = y0;
            head[2 * i + 1] = y1;
        }
    }
}

/// [`rope_inplace`] in the NeoX pairing: in each head, `x[i]` and `x[i + pairs]` rotate
/// together by angle `i` (`pairs = table.pairs()`, at most `head_dim / 2`), with the same
/// fused rounding ([`rotate_pair`]). Dims past `2 * pairs` are left unchanged.
pub fn rope_neox_inplace<const P: usize>(x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
    if head_dim == 0 {
        return;
    }
    let pairs = table.pairs.min(head_dim / 2);
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..pairs {
            let (c, s) = (table.cos[i], table.sin[i]);
            let (y0, y1) = rotate_pair(head[i], head[i + pairs], c, s, libm::fmaf);
            head[i] = y0;
            head[i + pairs] = y1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neox_pairs_halves_and_equals_adjacent_on_permuted_dims() {
        let t = RopeTable::<16>::new(9, 32, 10000.0);
        let x: [f32; 64] = core::array::from_fn(|i| (i as f32 * 0.61).cos());
        let mut neox = x;
        rope_neox_inplace(&mut neox, 32, &t);
        // Interleave each head's halves, rotate adjacently, de-interleave: the same bits.
        let mut adj = [0.0f32; 64];
        for h in 0..2 {
            for i in 0..16 {
                adj[h * 32 + 2 * i] = x[h * 32 + i];
                adj[h * 32 + 2 * i + 1] = x[h * 32 + 16 + i];
            }
        }
        rope_inplace(&mut adj, 32, &t);
        for h in 0..2 {
            for i in 0..16 {
                assert_eq!(neox[h * 32 + i].to_bits(), adj[h * 32 + 2 * i].to_bits());
                assert_eq!(neox[h * 32 + 16 + i].to_bits(), adj[h * 32 + 2 * i + 1].to_bits());
            }
        }
    }

    #[test]
    fn factors_divide_each_angle() {
        let f = [1.0f32, 2.0, 8.0, 0.5];
        let t = RopeTable::<4>::with_factors(5, 8, 500.0, Some(&f), libm::cosf, libm::sinf);
        let plain = RopeTable::<4>::new(5, 8, 500.0);
        let mut theta = 5.0f32;
        let scale = libm::powf(500.0, -2.0 / 8.0);
        for (i, &fi) in f.iter().enumerate() {
            assert_eq!(t.angle(i), (libm::cosf(theta / fi), libm::sinf(theta / fi)));
            theta *= scale;
        }
        assert_eq!(t.angle(0), plain.angle(0));
        assert_ne!(t.angle(1), plain.angle(1));
    }

    #[test]
    fn position_zero_is_identity() {
        let t = RopeTable::<32>::new(0, 64, 10000.0);
        let mut x: [f32; 64] = core::array::from_fn(|i| i as f32);
        let orig = x;
        rope_inplace(&mut x, 64, &t);
        assert_eq!(x, orig);
    }

    #[test]
    fn rotation_preserves_pair_norms_and_matches_formula() {
        let pos = 7;
        let t = RopeTable::<32>::new(pos, 64, 100000.0);
        let mut x: [f32; 128] = core::array::from_fn(|i| (i as f32 * 0.37).sin());
        let orig = x;
        rope_inplace(&mut x, 64, &t);
        for h in 0..2 {
            for i in 0..32 {
                let theta = pos as f64 * 100000f64.powf(-2.0 * i as f64 / 64.0);
                let (a, b) = (orig[h * 64 + 2 * i] as f64, orig[h * 64 + 2 * i + 1] as f64);
                let ea = a * theta.cos() - b * theta.sin();
                let eb = a * theta.sin() + b * theta.cos();
                assert!((x[h * 64 + 2 * i] as f64 - ea).abs() < 1e-4, "head {h} pair {i}");
                assert!((x[h * 64 + 2 * i + 1] as f64 - eb).abs() < 1e-4, "head {h} pair {i}");
            }
        }
    }

    #[test]
    fn partial_rotation_leaves_tail() {
        let t = RopeTable::<32>::new(3, 4, 10000.0);
        let mut x = [1.0f32; 8];
        rope_inplace(&mut x, 8, &t);
        assert_eq!(&x[4..], &[1.0; 4]);
        assert_ne!(x[0], 1.0);
    }
}
