//! Locally typical sampling (Meister et al. 2022), as llama.cpp's `typical` sampler.

/// Keeps the locally typical candidates: with `p` the softmax of the candidates' logits and
/// `H = −Σ p ln p` its entropy, the candidates are ordered by `|−ln p − H|` (ties keep their
/// order) and the shortest prefix of that order whose probability sum exceeds `typical_p`
/// is kept (all of them if none does; at least one). `typical_p >= 1` keeps everything.
///
/// The survivors are left in the typicality order. Tokens of probability 0 add nothing to
/// the entropy (the limit of `p ln p`; llama.cpp would compute NaN) and come last.
pub(super) fn filter(cands: &mut Vec<(u32, f32)>, typical_p: f32) {
    if typical_p >= 1.0 || cands.is_empty() {
        return;
    }
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f32> = cands.iter().map(|c| (c.1 - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    let mut entropy = 0.0f32;
    for &p in &probs {
        if p > 0.0 {
            entropy += -p * p.ln();
        }
    }
    let scores: Vec<f32> = probs.iter().map(|&p| (-p.ln() - entropy).abs()).collect();
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut keep = order.len();
    let mut cum = 0.0f32;
    for (i, &idx) in order.iter().enumerate() {
        cum += probs[idx];
        if cum > typical_p {
            keep = i + 1;
            break;
        }
    }
    let kept: Vec<(u32, f32)> = order[..keep].iter().map(|&i| cands[i]).collect();
    *cands = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition written out (f32 sums in token order, as llama.cpp): softmax,
    /// entropy, every token ranked by `|−ln p − H|` (ties by position), then tokens taken in
    /// rank order until their mass exceeds `p`.
    fn reference(logits: &[f32], p: f32) -> Vec<u32> {
        let probs: Vec<f32> = {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        };
        let h: f32 = probs.iter().filter(|&&q| q > 0.0).fold(0.0, |acc, &q| acc + -q * q.ln());
        let mut ranked: Vec<(f32, usize)> =
            probs.iter().enumerate().map(|(i, &q)| ((-q.ln() - h).abs(), i)).collect();
        // Stable on ties: by score, then by position.
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut kept = Vec::new();
        let mut mass = 0.0f32;
        for &(_, i) in &ranked {
            kept.push(i as u32);
            mass += probs[i];
            if mass > p {
                break;
            }
        }
        kept
    }

    proptest! {
        /// The kept tokens are exactly the definition's, in typicality order.
        #[test]
        fn keeps_exactly_the_typical_set(
            logits in proptest::collection::vec(-8.0f32..8.0, 1..40),
            p in 0.0f32..1.0,
        ) {
            let mut cands: Vec<(u32, f32)> =
                logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
            filter(&mut cands, p);
            let got: Vec<u32> = cands.iter().map(|c| c.0).collect();
            prop_assert_eq!(got, reference(&logits, p));
            prop_assert!(!cands.is_empty());
        }

        /// The kept mass exceeds p, and without its last token it does not (f64 sums: the
        /// property holds up to rounding).
        #[test]
        fn kept_mass_is_the_least_above_p(
            logits in proptest::collection::vec(-8.0f32..8.0, 2..40),
            p in 0.05f32..0.95,
        ) {
            let mut cands: Vec<(u32, f32)> =
                logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
            filter(&mut cands, p);
            let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
            let prob = |t: u32| f64::from(logits[t as usize]).exp() / z;
            let mass: f64 = cands.iter().map(|c| prob(c.0)).sum();
            let without_last = mass - prob(cands[cands.len() - 1].0);
            prop_assert!(mass > f64::from(p) - 1e-5 || cands.len() == logits.len());
            prop_assert!(without_last <= f64::from(p) + 1e-5);
        }
    }

    #[test]
    fn one_keeps_all_and_the_most_typical_token_is_not_always_the_most_likely() {
        let mut all = vec![(0, 3.0), (1, 1.0), (2, 0.5)];
        filter(&mut all, 1.0);
        assert_eq!(all.len(), 3);
        // One dominant token (p ≈ 0.9) and a flat tail: the entropy is low, the dominant
        // token's surprise is closest to it; a tiny p keeps it alone.
        let mut c: Vec<(u32, f32)> = vec![(0, 5.0)];
        c.extend((1..20).map(|i| (i, 0.0)));
        filter(&mut c, 0.01);
        assert_eq!(c, vec![(0, 5.0)]);
        // Two equal tokens and a rare one: the rare one is atypical and goes last.
        let mut c = vec![(0, -3.0), (1, 2.0), (2, 2.0)];
        filter(&mut c, 0.9);
        assert_eq!(c.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
