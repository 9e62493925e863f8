//! Token sampling: greedy, or a llama.cpp-style chain
//! `penalties (repetition, frequency, presence) → top-k → top-p → min-p → temperature → draw`.
//!
//! The filters see the untempered distribution and temperature is applied last, as in
//! llama.cpp's default sampler chain, so the same flags mean the same thing in both.
//! Draws come from a seeded xoshiro256** generator: the same seed, logits and history
//! give the same tokens.

use std::collections::VecDeque;
use std::fmt;

/// Sampling settings. `temperature <= 0` means greedy (argmax, after the repetition penalty).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` selects greedy decoding.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (`0` = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (`1.0` = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p ×` the most likely one (`0.0` = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens (`1.0` = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (any value: the window only
    /// ever holds the tokens seen, so `usize::MAX` means the whole sequence).
    pub repeat_last_n: usize,
    /// Subtract `count × frequency_penalty` from the logit of each token seen `count`
    /// times in the window (`0.0` = off; OpenAI's `frequency_penalty`, llama.cpp's
    /// `--frequency-penalty`).
    pub frequency_penalty: f32,
    /// Subtract `presence_penalty` from the logit of each token seen in the window (`0.0` =
    /// off; OpenAI's `presence_penalty`, llama.cpp's `--presence-penalty`).
    pub presence_penalty: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05, no repetition
    /// penalty (window 64); a fixed seed, so runs are reproducible unless a seed is given.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0x5EED,
        }
    }
}

/// An invalid sampler setting.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SamplerError {
    /// A setting is out of its range; the message names it.
    InvalidSetting(String),
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerError::InvalidSetting(m) => write!(f, "invalid sampler setting: {m}"),
        }
    }
}

impl std::error::Error for SamplerError {}

impl SamplerConfig {
    /// Greedy decoding (temperature 0, no penalty).
    pub fn greedy() -> Self {
        Self { temperature: 0.0, repeat_penalty: 1.0, ..Self::default() }
    }

    /// Check every setting is in range.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |m: String| Err(SamplerError::InvalidSetting(m));
        if !self.temperature.is_finite() {
            return bad(format!("temperature must be finite, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!("repeat penalty must be > 0, got {}", self.repeat_penalty));
        }
        if !self.frequency_penalty.is_finite() {
            return bad(format!(
                "frequency penalty must be finite, got {}",
                self.frequency_penalty
            ));
        }
        if !self.presence_penalty.is_finite() {
            return bad(format!("presence penalty must be finite, got {}", self.presence_penalty));
        }
        Ok(())
    }
}

/// Most tokens of the repetition window allocated up front; a larger window grows on use.
const RECENT_PREALLOC: usize = 1024;

/// A stateful sampler: settings, random generator and the recent-token window.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Xoshiro256,
    recent: VecDeque<u32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler with the given settings (validated).
    pub fn new(cfg: SamplerConfig) -> Result<Self, SamplerError> {
        cfg.validate()?;
        Ok(Self {
            rng: Xoshiro256::seed_from_u64(cfg.seed),
            // The window grows as tokens arrive: it never holds more than the tokens seen
            // (bounded by the context), whatever `repeat_last_n` says.
            recent: VecDeque::with_capacity(cfg.repeat_last_n.min(RECENT_PREALLOC)),
            candidates: Vec::new(),
            cfg,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Record a token (prompt or generated) in the repetition window.
    pub fn accept(&mut self, token: u32) {
        if self.cfg.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.cfg.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Choose the next token from `logits` (one per vocabulary entry). `logits` is
    /// modified in place by the penalties.
    ///
    /// # Panics
    /// If `logits` is empty: a vocabulary has at least one token, and a model's logits
    /// have one per token (found by the sampler fuzz target: it used to return token 0,
    /// outside the logits, or index an empty candidate list).
    #[track_caller]
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        assert!(!logits.is_empty(), "Sampler::sample: empty logits (one per vocabulary entry)");
        self.apply_penalty(logits);
        if self.cfg.temperature <= 0.0 {
            return argmax(logits);
        }
        let cands = &mut self.candidates;
        cands.clear();
        cands.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        // top-k (k = 0 keeps all): partial selection, then sort the survivors.
        let k = if self.cfg.top_k == 0 { cands.len() } else { self.cfg.top_k.min(cands.len()) };
        if k < cands.len() {
            cands.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1));
            cands.truncate(k);
        }
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
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
        for (c, w) in cands.iter().zip(&weights) {
            if r < *w {
                return c.0;
            }
            r -= w;
        }
        cands[cands.len() - 1].0
    }

    /// llama.cpp's penalties sampler: for each distinct token seen `c` times in the window,
    /// the repetition penalty divides a positive logit (multiplies a non-positive one),
    /// then `c × frequency + presence` is subtracted.
    fn apply_penalty(&self, logits: &mut [f32]) {
        let (p, freq, pres) =
            (self.cfg.repeat_penalty, self.cfg.frequency_penalty, self.cfg.presence_penalty);
        if p == 1.0 && freq == 0.0 && pres == 0.0 {
            return;
        }
        let mut seen: Vec<u32> = self.recent.iter().copied().collect();
        seen.sort_unstable();
        for run in seen.chunk_by(|a, b| a == b) {
            if let Some(l) = logits.get_mut(run[0] as usize) {
                if p != 1.0 {
                    *l = if *l > 0.0 { *l / p } else { *l * p };
                }
                *l -= run.len() as f32 * freq + pres;
            }
        }
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

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
#[derive(Clone, Debug)]
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn seed_from_u64(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
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
        ] {
            assert!(Sampler::new(cfg).is_err());
        }
    }
}
