//! Mirostat 2.0 (Basu et al. 2021), as llama.cpp's `mirostat-v2` sampler: truncate to the
//! tokens whose surprise is at most μ, draw, and move μ toward the target surprise τ.

/// One Mirostat 2.0 step over `cands` (token, tempered logit), with `u` uniform in [0, 1).
///
/// With `p` the softmax of the candidates, the tokens with surprise `−log2 p <= mu` are kept
/// (the most likely one if none is); their softmax is drawn from by inverse CDF in order of
/// decreasing logit (ties by lower id): the first token whose cumulative weight exceeds
/// `u × total`. Then `mu ← mu − eta × (−log2 p' − tau)`, `p'` the drawn token's probability
/// among the kept ones. `cands` is left holding the kept tokens in draw order.
/// Returns the drawn token.
pub(super) fn step(cands: &mut Vec<(u32, f32)>, mu: &mut f32, tau: f32, eta: f32, u: f32) -> u32 {
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = cands.iter().map(|c| (c.1 - max).exp()).sum();
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let best = cands.iter().copied().min_by(by_logit);
    cands.retain(|c| -((c.1 - max).exp() / sum).log2() <= *mu);
    if cands.is_empty() {
        cands.extend(best);
    }
    cands.sort_by(by_logit);
    let top = cands[0].1;
    let weights: Vec<f32> = cands.iter().map(|c| (c.1 - top).exp()).collect();
    let total: f32 = weights.iter().sum();
    let mut r = u * total;
    // Rounding can leave `r` past the last weight: then the last token of non-zero weight.
    let mut chosen = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            chosen = i;
            break;
        }
        r -= w;
    }
    let surprise = -(weights[chosen] / total).log2();
    *mu -= eta * (surprise - tau);
    cands[chosen].0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The kept set is `{t : −log2 p_t <= mu}` (or the argmax alone), the token is the one
        /// the uniform draw lands on in the kept distribution, and μ moves by
        /// `−eta × (surprise − tau)`, checked against a direct f64 computation.
        #[test]
        fn truncation_draw_and_mu_follow_the_formula(
            logits in proptest::collection::vec(-6.0f32..6.0, 1..30),
            mu in 0.0f32..12.0,
            tau in 0.0f32..8.0,
            eta in 0.0f32..1.0,
            u in 0.0f32..1.0,
        ) {
            let mut cands: Vec<(u32, f32)> =
                logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
            let mut got_mu = mu;
            let token = step(&mut cands, &mut got_mu, tau, eta, u);

            let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
            let p: Vec<f64> = logits.iter().map(|&l| f64::from(l).exp() / z).collect();
            let surprise = |q: f64| -q.log2();
            let margin = 1e-4;
            // Tokens clearly inside or outside the threshold are classified as the formula says.
            let kept: Vec<u32> = cands.iter().map(|c| c.0).collect();
            let argmax = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
                .unwrap() as u32;
            let any_in = p.iter().any(|&q| surprise(q) <= f64::from(mu) - margin);
            for (t, &q) in p.iter().enumerate() {
                let s = surprise(q);
                if s <= f64::from(mu) - margin {
                    prop_assert!(kept.contains(&(t as u32)), "token {} ({} bits) dropped", t, s);
                } else if s > f64::from(mu) + margin && (any_in || t as u32 != argmax) {
                    prop_assert!(!kept.contains(&(t as u32)), "token {} (surprise {}) kept", t, s);
                }
            }
            if kept.len() == 1 && !any_in {
                prop_assert_eq!(kept[0], argmax);
            }
            // The draw: inverse CDF over the kept tokens by decreasing probability.
            let mass: f64 = kept.iter().map(|&t| p[t as usize]).sum();
            let mut order = kept.clone();
            order.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
            prop_assert_eq!(&order, &kept);
            let target = f64::from(u) * mass;
            let mut cum = 0.0;
            let mut want = *order.last().unwrap();
            for &t in &order {
                cum += p[t as usize];
                if target < cum {
                    want = t;
                    break;
                }
            }
            // A draw that lands within rounding of a boundary may go either way.
            let near_boundary = order.iter().scan(0.0, |c, &t| { *c += p[t as usize]; Some(*c) })
                .any(|c| (c - target).abs() < 1e-5 * mass.max(1.0));
            if !near_boundary {
                prop_assert_eq!(token, want);
            }
            let p_drawn = p[token as usize] / mass;
            let want_mu = f64::from(mu) - f64::from(eta) * (surprise(p_drawn) - f64::from(tau));
            let mu_error = (f64::from(got_mu) - want_mu).abs();
            prop_assert!(mu_error < 1e-3, "mu {} vs {}", got_mu, want_mu);
        }
    }

    #[test]
    fn a_low_mu_keeps_only_the_most_likely_token() {
        let mut cands = vec![(0, 1.0), (1, 3.0), (2, 2.0)];
        let mut mu = 0.0;
        assert_eq!(step(&mut cands, &mut mu, 5.0, 0.1, 0.99), 1);
        assert_eq!(cands, vec![(1, 3.0)]);
        // Surprise 0 (p = 1 among the kept): mu = 0 − 0.1 × (0 − 5) = 0.5.
        assert!((mu - 0.5).abs() < 1e-6);
    }
}
