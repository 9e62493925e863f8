//! Token sampling, llama.cpp's sampler chain:
//! `logit bias → penalties (repetition, frequency, presence) → DRY → top-k → typical-p →
//! top-p → min-p → temperature → draw`, or greedy (argmax after the bias, the penalties,
//! DRY and typical-p), or llama.cpp's Mirostat chain `logit bias → temperature → Mirostat 2.0`.
//!
//! The filters see the untempered distribution and temperature is applied last, as in
//! llama.cpp's default sampler chain, so the same flags mean the same thing in both.
//! Draws come from a seeded xoshiro256** generator: the same seed, logits and history
//! give the same tokens.
//!
//! One stage per file: [`config`] (settings and their ranges), `logit_bias`, `penalties`,
//! [`dry`] (and its sequence breakers), `typical`, `mirostat`, `rng`.

pub mod config;
pub mod dry;
mod logit_bias;
mod mirostat;
mod penalties;
mod rng;
mod typical;

use std::collections::VecDeque;

pub use config::{SamplerConfig, SamplerError, DEFAULT_DRY_SEQUENCE_BREAKERS};
pub use dry::{BreakerVocabulary, SequenceBreakers};
use rng::Xoshiro256;

/// Most tokens of the history allocated up front; a larger window grows on use.
const RECENT_PREALLOC: usize = 1024;

/// A stateful sampler: settings, random generator, the recent-token history (the penalties'
/// and DRY's windows), DRY's sequence breakers and Mirostat's μ.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Xoshiro256,
    /// The last `history_len` accepted tokens, oldest first.
    recent: VecDeque<u32>,
    history_len: usize,
    breakers: SequenceBreakers,
    mirostat_mu: f32,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler with the given settings (validated). Logit-bias tokens outside the logits
    /// are ignored. DRY with sequence breakers needs the vocabulary: this refuses it with
    /// [`SamplerError::NeedsVocabulary`] (use [`Sampler::with_vocabulary`], or
    /// [`Sampler::with_breakers`], or no breakers).
    pub fn new(cfg: SamplerConfig) -> Result<Self, SamplerError> {
        if cfg.dry_enabled() && cfg.dry_sequence_breakers.iter().any(|b| !b.is_empty()) {
            cfg.validate()?;
            return Err(SamplerError::NeedsVocabulary);
        }
        Self::with_breakers(cfg, SequenceBreakers::none())
    }

    /// A sampler for a model with vocabulary `vocab`: DRY's breaker strings are matched
    /// against its tokens ([`SequenceBreakers::from_strings`], only when DRY is on), and a
    /// logit-bias token outside the vocabulary is an error naming it.
    pub fn with_vocabulary<V: BreakerVocabulary + ?Sized>(
        cfg: SamplerConfig,
        vocab: &V,
    ) -> Result<Self, SamplerError> {
        cfg.validate()?;
        let n = vocab.n_tokens();
        if let Some(&(token, _)) = cfg.logit_bias.iter().find(|(t, _)| *t as usize >= n) {
            return Err(SamplerError::InvalidSetting(format!(
                "logit bias token {token} is outside the vocabulary ({n} tokens: 0..{n})"
            )));
        }
        let breakers = if cfg.dry_enabled() {
            SequenceBreakers::from_strings(&cfg.dry_sequence_breakers, vocab)
        } else {
            SequenceBreakers::none()
        };
        Self::with_breakers(cfg, breakers)
    }

    /// A sampler whose DRY sequence breakers are `breakers` (already resolved to tokens,
    /// e.g. once for many requests; `cfg.dry_sequence_breakers` is not read). Logit-bias
    /// tokens outside the logits are ignored.
    pub fn with_breakers(
        cfg: SamplerConfig,
        breakers: SequenceBreakers,
    ) -> Result<Self, SamplerError> {
        cfg.validate()?;
        let dry_window = if cfg.dry_enabled() { cfg.dry_penalty_last_n } else { 0 };
        let history_len = cfg.repeat_last_n.max(dry_window);
        Ok(Self {
            rng: Xoshiro256::seed_from_u64(cfg.seed),
            // The history grows as tokens arrive: it never holds more than the tokens seen
            // (bounded by the context), whatever the windows say.
            recent: VecDeque::with_capacity(history_len.min(RECENT_PREALLOC)),
            history_len,
            breakers,
            mirostat_mu: 2.0 * cfg.mirostat_tau,
            candidates: Vec::new(),
            cfg,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Mirostat's current μ (the surprise cut-off, in bits; it starts at `2 × tau` and moves
    /// after every Mirostat draw), or `None` when Mirostat is off.
    pub fn mirostat_mu(&self) -> Option<f32> {
        (self.cfg.mirostat == 2).then_some(self.mirostat_mu)
    }

    /// Record a token (prompt or generated) in the history the penalties and DRY look at.
    pub fn accept(&mut self, token: u32) {
        if self.history_len == 0 {
            return;
        }
        if self.recent.len() == self.history_len {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Choose the next token from `logits` (one per vocabulary entry). `logits` is
    /// modified in place by the logit bias, the penalties and DRY.
    ///
    /// # Panics
    /// If `logits` is empty: a vocabulary has at least one token, and a model's logits
    /// have one per token (found by the sampler fuzz target: it used to return token 0,
    /// outside the logits, or index an empty candidate list).
    #[track_caller]
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        assert!(!logits.is_empty(), "Sampler::sample: empty logits (one per vocabulary entry)");
        logit_bias::apply(logits, &self.cfg.logit_bias);
        if self.cfg.mirostat == 2 {
            return self.sample_mirostat(logits);
        }
        self.apply_penalty(logits);
        self.apply_dry(logits);
        let greedy = self.cfg.temperature <= 0.0;
        if greedy && self.cfg.typical_p >= 1.0 {
            return argmax(logits);
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let cands = &mut self.candidates;
        cands.clear();
        cands.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        // top-k (k = 0 keeps all): partial selection, then sort the survivors.
        let k = if self.cfg.top_k == 0 { cands.len() } else { self.cfg.top_k.min(cands.len()) };
        if k < cands.len() {
            cands.select_nth_unstable_by(k, by_logit);
            cands.truncate(k);
        }
        typical::filter(cands, self.cfg.typical_p);
        cands.sort_by(by_logit);
        if greedy {
            return cands[0].0;
        }
        // Probabilities of the untempered distribution over the survivors.
        let max = cands[0].1;
        let mut probs: Vec<f32> = cands.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        // top-p: the smallest prefix reaching top_p (at least one).
        let mut keep = probs.len();
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.cfg.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        // min-p: relative to the most likely token.
        if self.cfg.min_p > 0.0 {
            let floor = self.cfg.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        cands.truncate(keep);
        // Temperature, then draw.
        let t = self.cfg.temperature;
        let weights: Vec<f32> = cands.iter().map(|c| ((c.1 - max) / t).exp()).collect();
        let total: f32 = weights.iter().sum();
        let mut r = self.rng.next_f32() * total;
        // Rounding can leave `r` past the last weight: then the last token of non-zero
        // weight (never a banned one while another is allowed).
        let mut last_possible = 0;
        for (i, (c, w)) in cands.iter().zip(&weights).enumerate() {
            if r < *w {
                return c.0;
            }
            if *w > 0.0 {
                last_possible = i;
            }
            r -= w;
        }
        cands[last_possible].0
    }

    /// llama.cpp's Mirostat chain after the logit bias: temperature (greedy at `<= 0`), then
    /// one Mirostat 2.0 step over the whole vocabulary.
    fn sample_mirostat(&mut self, logits: &[f32]) -> u32 {
        let t = self.cfg.temperature;
        let cands = &mut self.candidates;
        cands.clear();
        if t <= 0.0 {
            // llama.cpp's temperature 0 leaves the most likely token alone (the others at
            // -inf): Mirostat draws it, and μ still moves.
            cands.push((argmax(logits), 0.0));
        } else {
            cands.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l / t)));
        }
        let u = self.rng.next_f32();
        let (tau, eta) = (self.cfg.mirostat_tau, self.cfg.mirostat_eta);
        mirostat::step(cands, &mut self.mirostat_mu, tau, eta, u)
    }

    /// The penalties over the last `repeat_last_n` accepted tokens.
    fn apply_penalty(&self, logits: &mut [f32]) {
        let n = self.recent.len();
        let window = self.recent.iter().skip(n.saturating_sub(self.cfg.repeat_last_n));
        let c = &self.cfg;
        penalties::apply(
            logits,
            window.copied(),
            c.repeat_penalty,
            c.frequency_penalty,
            c.presence_penalty,
        );
    }

    /// DRY over the last `dry_penalty_last_n` accepted tokens.
    fn apply_dry(&mut self, logits: &mut [f32]) {
        if !self.cfg.dry_enabled() {
            return;
        }
        let n = self.recent.len();
        let from = n.saturating_sub(self.cfg.dry_penalty_last_n);
        let window = &self.recent.make_contiguous()[from..];
        let c = &self.cfg;
        let settings = dry::Dry {
            multiplier: c.dry_multiplier,
            base: c.dry_base,
            allowed_length: c.dry_allowed_length,
        };
        dry::apply(logits, window, settings, &self.breakers);
    }
}

/// `ln softmax(logits)[token]` and the `top` most likely tokens with theirs (most likely
/// first, ties by lower id): the log-probabilities OpenAI's `logprobs` report, of the
/// model's distribution before any penalty, temperature or filter.
///
/// Returns `None` for an empty `logits` or a `token` outside it.
pub fn log_probs(logits: &[f32], token: u32, top: usize) -> Option<(f32, Vec<(u32, f32)>)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_z = max + sum.ln() as f32;
    let lp = logits.get(token as usize)? - log_z;
    let mut best: Vec<(u32, f32)> = Vec::new();
    if top > 0 {
        let mut all: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        let k = top.min(all.len());
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < all.len() {
            all.select_nth_unstable_by(k, by_logit);
            all.truncate(k);
        }
        all.sort_by(by_logit);
        best = all.into_iter().map(|(t, l)| (t, l - log_z)).collect();
    }
    Some((lp, best))
}

/// Index of the largest logit (the first one on ties), as llama.cpp's greedy sampler.
/// An empty slice gives 0.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn logits() -> Vec<f32> {
        vec![0.1, 2.0, -1.0, 1.9, 0.0, 3.0, -5.0, 2.5]
    }

    proptest! {
        /// llama.cpp's penalties, by their definition: a token seen `c > 0` times in the
        /// last `n` has its logit divided (positive) or multiplied (non-positive) by the
        /// repetition penalty, then lowered by `c × frequency + presence`; others are kept.
        #[test]
        fn penalties_follow_their_definition(
            history in proptest::collection::vec(0u32..8, 0..40),
            last_n in 0usize..50,
            repeat in 0.5f32..2.0,
            freq in -2.0f32..2.0,
            pres in -2.0f32..2.0,
        ) {
            let cfg = SamplerConfig {
                repeat_penalty: repeat,
                repeat_last_n: last_n,
                frequency_penalty: freq,
                presence_penalty: pres,
                ..SamplerConfig::greedy()
            };
            let mut s = Sampler::new(cfg).unwrap();
            history.iter().for_each(|&t| s.accept(t));
            let mut got = logits();
            s.apply_penalty(&mut got);
            prop_assert_eq!(s.recent.len(), history.len().min(last_n));
            let window = &history[history.len().saturating_sub(last_n)..];
            for (t, (&g, &l)) in got.iter().zip(&logits()).enumerate() {
                let c = window.iter().filter(|&&w| w == t as u32).count();
                let want = if c == 0 {
                    l
                } else {
                    let l = if l > 0.0 { l / repeat } else { l * repeat };
                    l - (c as f32 * freq + pres)
                };
                prop_assert_eq!(g.to_bits(), want.to_bits(), "token {} seen {} times", t, c);
            }
        }

        /// A token biased by -inf is never drawn while another token is allowed, whatever
        /// the chain (greedy, filters, typical-p, Mirostat) and the history.
        #[test]
        fn banned_tokens_are_never_drawn(
            logits in proptest::collection::vec(-10.0f32..10.0, 2..24),
            banned in proptest::collection::vec(0u32..24, 1..8),
            temperature in -1.0f32..3.0,
            top_k in 0usize..6,
            typical_p in 0.0f32..=1.0,
            mirostat in prop_oneof![Just(0u8), Just(2u8)],
            history in proptest::collection::vec(0u32..24, 0..16),
            seed: u64,
        ) {
            let n = logits.len() as u32;
            prop_assume!((0..n).any(|t| !banned.contains(&t)));
            let cfg = SamplerConfig {
                temperature,
                top_k,
                typical_p,
                mirostat,
                top_p: 1.0,
                min_p: 0.0,
                repeat_penalty: 1.3,
                presence_penalty: 0.5,
                logit_bias: banned.iter().map(|&t| (t, f32::NEG_INFINITY)).collect(),
                seed,
                ..Default::default()
            };
            let mut s = Sampler::new(cfg).unwrap();
            history.iter().for_each(|&t| s.accept(t));
            for _ in 0..8 {
                let t = s.sample(&mut logits.clone());
                prop_assert!(!banned.contains(&t), "banned token {} drawn", t);
                s.accept(t);
            }
        }

        /// Any temperature <= 0 is the same greedy choice (llama.cpp clamps `--temp -1` to 0),
        /// after the bias, the penalties and typical-p.
        #[test]
        fn every_non_positive_temperature_is_the_same_greedy(
            logits in proptest::collection::vec(-10.0f32..10.0, 1..24),
            temperature in -5.0f32..=0.0,
            typical_p in 0.0f32..=1.0,
            bias in proptest::collection::vec((0u32..24, -3.0f32..3.0), 0..4),
            history in proptest::collection::vec(0u32..24, 0..16),
        ) {
            let run = |temperature| {
                let cfg = SamplerConfig {
                    temperature,
                    typical_p,
                    frequency_penalty: 0.7,
                    logit_bias: bias.clone(),
                    ..Default::default()
                };
                let mut s = Sampler::new(cfg).unwrap();
                history.iter().for_each(|&t| s.accept(t));
                (0..6)
                    .map(|_| {
                        let t = s.sample(&mut logits.clone());
                        s.accept(t);
                        t
                    })
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(run(temperature), run(0.0));
        }
    }

    #[test]
    fn log_probs_are_a_log_softmax_with_the_top_alternatives() {
        let l = logits();
        let (lp, top) = log_probs(&l, 5, 3).unwrap();
        let z: f64 = l.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((f64::from(lp) - (3.0 - z.ln())).abs() < 1e-5);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![5, 7, 1]);
        assert_eq!(top[0].1, lp);
        assert!(log_probs(&l, 8, 0).is_none());
        assert!(log_probs(&[], 0, 2).is_none());
    }

    #[test]
    #[should_panic(expected = "empty logits")]
    fn sampling_empty_logits_is_a_documented_panic_not_token_0() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        s.sample(&mut []);
    }

    #[test]
    fn greedy_is_argmax_first_on_ties() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&mut logits()), 5);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let cfg = SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed, ..cfg.clone() }).unwrap();
            (0..64).map(|_| s.sample(&mut logits())).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let cfg = SamplerConfig { temperature: 5.0, top_k: 1, ..Default::default() };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..32 {
            assert_eq!(s.sample(&mut logits()), 5);
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // With min_p = 0.5 only tokens with p >= 0.5 * p(5) survive: 5 (3.0) and 7 (2.5).
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..200 {
            let t = s.sample(&mut logits());
            assert!(t == 5 || t == 7, "token {t} should have been cut by min-p");
        }
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
            min_p: 0.0,
            ..Default::default()
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..200 {
            assert_eq!(s.sample(&mut logits()), 5, "p(5) alone exceeds 0.3");
        }
    }

    #[test]
    fn repetition_penalty_changes_greedy_choice() {
        let cfg = SamplerConfig { repeat_penalty: 2.0, ..SamplerConfig::greedy() };
        let mut s = Sampler::new(cfg).unwrap();
        s.accept(5);
        // 3.0 / 2 = 1.5 < 2.5 → token 7 wins.
        assert_eq!(s.sample(&mut logits()), 7);
    }

    #[test]
    fn invalid_settings_are_errors() {
        for cfg in [
            SamplerConfig { top_p: 0.0, ..Default::default() },
            SamplerConfig { min_p: 1.5, ..Default::default() },
            SamplerConfig { repeat_penalty: 0.0, ..Default::default() },
            SamplerConfig { temperature: f32::NAN, ..Default::default() },
            SamplerConfig { typical_p: 1.5, ..Default::default() },
            SamplerConfig { dry_multiplier: -1.0, ..Default::default() },
            SamplerConfig { dry_base: 0.5, ..Default::default() },
            SamplerConfig { mirostat: 1, ..Default::default() },
            SamplerConfig { mirostat: 3, ..Default::default() },
            SamplerConfig { mirostat_tau: f32::INFINITY, ..Default::default() },
            SamplerConfig { mirostat_eta: -0.1, ..Default::default() },
            SamplerConfig { logit_bias: vec![(3, f32::INFINITY)], ..Default::default() },
            SamplerConfig { logit_bias: vec![(3, f32::NAN)], ..Default::default() },
        ] {
            let err = Sampler::new(cfg.clone()).unwrap_err();
            assert!(matches!(err, SamplerError::InvalidSetting(_)), "{cfg:?}: {err}");
            assert_eq!(cfg.validate(), Err(err));
        }
        let ok = SamplerConfig { logit_bias: vec![(3, f32::NEG_INFINITY)], ..Default::default() };
        assert!(Sampler::new(ok).is_ok());
    }

    #[test]
    fn dry_with_breakers_needs_the_vocabulary_and_bias_ids_are_checked_against_it() {
        let dry = SamplerConfig { dry_multiplier: 0.8, ..SamplerConfig::greedy() };
        assert_eq!(Sampler::new(dry.clone()).unwrap_err(), SamplerError::NeedsVocabulary);
        let no_breakers = SamplerConfig { dry_sequence_breakers: vec![], ..dry.clone() };
        assert!(Sampler::new(no_breakers).is_ok());
        let breakers = SequenceBreakers::from_token_sequences(&[vec![1]]);
        assert!(Sampler::with_breakers(dry, breakers).is_ok());

        struct Eight;
        impl BreakerVocabulary for Eight {
            fn n_tokens(&self) -> usize {
                8
            }
            fn piece(&self, id: u32) -> Vec<u8> {
                vec![b'a' + id as u8]
            }
            fn tokenize(&self, text: &[u8]) -> Vec<u32> {
                text.iter().map(|&b| u32::from(b - b'a')).collect()
            }
        }
        let biased = |t| SamplerConfig { logit_bias: vec![(t, 1.0)], ..SamplerConfig::greedy() };
        assert!(Sampler::with_vocabulary(biased(7), &Eight).is_ok());
        let err = Sampler::with_vocabulary(biased(8), &Eight).unwrap_err();
        assert!(err.to_string().contains("logit bias token 8"), "{err}");
    }

    #[test]
    fn a_banned_token_is_never_drawn_even_greedy() {
        let ban = vec![(5, f32::NEG_INFINITY)];
        let mut greedy =
            Sampler::new(SamplerConfig { logit_bias: ban.clone(), ..SamplerConfig::greedy() })
                .unwrap();
        assert_eq!(greedy.sample(&mut logits()), 7, "5 is banned: 7 is next");
        for cfg in [
            SamplerConfig {
                temperature: 3.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            SamplerConfig { temperature: 3.0, typical_p: 0.5, ..Default::default() },
            SamplerConfig {
                temperature: 3.0,
                mirostat: 2,
                mirostat_tau: 8.0,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(SamplerConfig { logit_bias: ban.clone(), ..cfg }).unwrap();
            for _ in 0..300 {
                assert_ne!(s.sample(&mut logits()), 5);
            }
        }
    }

    #[test]
    fn negative_temperature_is_greedy_with_bias_and_penalties() {
        let run = |temperature| {
            let cfg = SamplerConfig {
                temperature,
                repeat_penalty: 1.5,
                logit_bias: vec![(1, 0.7)],
                typical_p: 0.9,
                ..Default::default()
            };
            let mut s = Sampler::new(cfg).unwrap();
            let mut out = Vec::new();
            for _ in 0..10 {
                let t = s.sample(&mut logits());
                s.accept(t);
                out.push(t);
            }
            out
        };
        assert_eq!(run(-1.0), run(0.0));
        // The bias lifts token 1 (2.0 + 0.7 = 2.7) above 7 (2.5): after 5 is penalized
        // (3.0 / 1.5 = 2.0) it is next.
        assert_eq!(run(0.0)[..2], [5, 1]);
    }

    #[test]
    fn mirostat_is_reproducible_moves_mu_and_greedy_draws_the_argmax() {
        let cfg = SamplerConfig { temperature: 1.0, mirostat: 2, seed: 7, ..Default::default() };
        let run = |cfg: SamplerConfig| {
            let mut s = Sampler::new(cfg).unwrap();
            assert_eq!(s.mirostat_mu(), Some(10.0), "mu starts at 2 tau");
            let toks: Vec<u32> = (0..50).map(|_| s.sample(&mut logits())).collect();
            (toks, s.mirostat_mu().unwrap())
        };
        let (a, mu) = run(cfg.clone());
        assert_eq!((a.clone(), mu), run(cfg.clone()));
        assert_ne!(mu, 10.0);
        assert!(a.iter().any(|&t| t != 5), "tau 5 bits keeps more than the argmax: {a:?}");
        let mut greedy = Sampler::new(SamplerConfig { temperature: 0.0, ..cfg }).unwrap();
        assert_eq!(greedy.sample(&mut logits()), 5);
        // Surprise 0: mu = 10 − 0.1 × (0 − 5).
        assert_eq!(greedy.mirostat_mu(), Some(10.5));
        assert_eq!(Sampler::new(SamplerConfig::greedy()).unwrap().mirostat_mu(), None);
    }
}
