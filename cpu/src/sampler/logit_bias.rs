//! llama.cpp's logit-bias sampler: fixed amounts added to chosen tokens' logits.

/// Adds each `(token, bias)` to `logits[token]` (a token listed twice gets both; `-inf`
/// bans it); tokens outside `logits` are skipped, as llama.cpp skips ids it does not find.
pub(super) fn apply(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(token, b) in bias {
        if let Some(l) = logits.get_mut(token as usize) {
            *l += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Each listed token's logit grows by exactly the sum of its biases; the rest stay.
        #[test]
        fn adds_exactly_the_bias(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..16),
            bias in proptest::collection::vec((0u32..20, -5.0f32..5.0), 0..6),
        ) {
            let mut got = logits.clone();
            apply(&mut got, &bias);
            for (t, (&g, &l)) in got.iter().zip(&logits).enumerate() {
                let mut want = l;
                for &(_, b) in bias.iter().filter(|(id, _)| *id as usize == t) {
                    want += b;
                }
                prop_assert_eq!(g.to_bits(), want.to_bits(), "token {}", t);
            }
        }
    }
}
