//! Token sampling: greedy, or a llama.cpp-style chain
//! `repetition penalty → top-k → top-p → min-p → temperature → draw`.
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
    /// How many recent tokens the repetition penalty looks at (any value: the window only
    /// ever holds the tokens seen, so `usize::MAX` means the whole sequence).
    pub repeat_last_n: usize,
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
    /// modified in place by the repetition penalty.
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

    fn apply_penalty(&self, logits: &mut [f32]) {
        let p = self.cfg.repeat_penalty;
        if p == 1.0 {
            return;
        }
        let mut seen: Vec<u32> = self.recent.iter().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / p } else { *l * p };
            }
        }
    }
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

    fn logits() -> Vec<f32> {
        vec![0.1, 2.0, -1.0, 1.9, 0.0, 3.0, -5.0, 2.5]
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
