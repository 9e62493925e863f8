//! Portable page kernels: the semantics every SIMD path reproduces.
//!
//! Shapes (all row-major f32): `q` is `rows × hd`, `keys`/`values` are `n × hd` (one page's
//! run for one kv head, first `n` slots), `scores`/`p` are `rows × n`, `acc` is `rows × hd`.

/// `scores[r][j] = scale · (q[r] · keys[j])`.
pub(super) fn scores(q: &[f32], keys: &[f32], hd: usize, n: usize, scale: f32, scores: &mut [f32]) {
    for (q_r, s_r) in q.chunks_exact(hd).zip(scores.chunks_exact_mut(n)) {
        for (s, k) in s_r.iter_mut().zip(keys.chunks_exact(hd)) {
            *s = scale * q_r.iter().zip(k).map(|(&a, &b)| a * b).sum::<f32>();
        }
    }
}

/// `acc[r] += Σ_j p[r][j] · values[j]`.
pub(super) fn accumulate(acc: &mut [f32], p: &[f32], values: &[f32], hd: usize, n: usize) {
    for (a_r, p_r) in acc.chunks_exact_mut(hd).zip(p.chunks_exact(n)) {
        for (&w, v) in p_r.iter().zip(values.chunks_exact(hd)) {
            if w != 0.0 {
                a_r.iter_mut().zip(v).for_each(|(a, &x)| *a += w * x);
            }
        }
    }
}

/// `p[j] = exp(p[j] - max)`; returns `Σ p[j]`.
pub(super) fn exp_sum(p: &mut [f32], max: f32) -> f32 {
    let mut sum = 0.0;
    for x in p {
        *x = (*x - max).exp();
        sum += *x;
    }
    sum
}
