//! The sampler's settings ([`SamplerConfig`]), their llama.cpp defaults and their ranges.

use std::fmt;

/// Sampling settings, llama.cpp's (`common_params_sampling`) under the same names.
///
/// `temperature <= 0` means greedy: the logit bias, the penalties and DRY still apply, then
/// the most likely token is taken (among those typical-p keeps, when it is on), as llama.cpp
/// does. With `mirostat == 2` the chain is llama.cpp's Mirostat chain instead: logit bias,
/// temperature, Mirostat 2.0; the penalties, DRY, top-k, typical-p, top-p and min-p are not
/// applied (as in llama.cpp).
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
    /// Locally typical sampling (`1.0` = off): keep the tokens whose surprise `−ln p` is
    /// closest to the distribution's entropy, in that order, until their probability
    /// exceeds `typical_p` (at least one). llama.cpp's `--typical`.
    pub typical_p: f32,
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
    /// DRY ("don't repeat yourself") multiplier (`0.0` = off): a token that would extend a
    /// sequence already seen `n >= dry_allowed_length` tokens long has its logit lowered by
    /// `dry_multiplier × dry_base^(n − dry_allowed_length)`.
    pub dry_multiplier: f32,
    /// DRY's exponential base (`>= 1`).
    pub dry_base: f32,
    /// Repeated sequences up to this many tokens are not penalized by DRY.
    pub dry_allowed_length: usize,
    /// How many recent tokens DRY scans for repeats (`0` = off; `usize::MAX` = the whole
    /// sequence: llama.cpp's `-1`).
    pub dry_penalty_last_n: usize,
    /// Strings that end a repeated sequence for DRY (a repeat never spans one). They are
    /// matched against the vocabulary's tokens, so a sampler with DRY on and breakers needs
    /// the vocabulary: [`Sampler::with_vocabulary`](super::Sampler::with_vocabulary).
    pub dry_sequence_breakers: Vec<String>,
    /// Mirostat version: `0` off, `2` Mirostat 2.0 (version 1 is not implemented).
    pub mirostat: u8,
    /// Mirostat's target surprise τ in bits (llama.cpp's `--mirostat-ent`); μ starts at 2τ.
    pub mirostat_tau: f32,
    /// Mirostat's learning rate η (llama.cpp's `--mirostat-lr`).
    pub mirostat_eta: f32,
    /// `(token, bias)` pairs added to the logits before anything else (each pair adds, so a
    /// token listed twice gets both); `f32::NEG_INFINITY` bans the token. Tokens outside
    /// the logits are ignored by [`Sampler::new`](super::Sampler::new) and refused by
    /// [`Sampler::with_vocabulary`](super::Sampler::with_vocabulary).
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random generator.
    pub seed: u64,
}

/// llama.cpp's default DRY sequence breakers: newline, colon, double quote, asterisk.
pub const DEFAULT_DRY_SEQUENCE_BREAKERS: [&str; 4] = ["\n", ":", "\"", "*"];

impl Default for SamplerConfig {
    /// llama.cpp's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05, typical-p off,
    /// no penalties (window 64), DRY off (base 1.75, allowed length 2, the whole sequence,
    /// breakers `\n : " *`), Mirostat off (τ 5, η 0.1), no logit bias; a fixed seed, so runs
    /// are reproducible unless a seed is given.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: usize::MAX,
            dry_sequence_breakers: DEFAULT_DRY_SEQUENCE_BREAKERS.map(String::from).to_vec(),
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            logit_bias: Vec::new(),
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
    /// DRY is on with sequence breakers, which are strings: the sampler needs the
    /// vocabulary ([`Sampler::with_vocabulary`](super::Sampler::with_vocabulary)).
    NeedsVocabulary,
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerError::InvalidSetting(m) => write!(f, "invalid sampler setting: {m}"),
            SamplerError::NeedsVocabulary => write!(
                f,
                "DRY sequence breakers are strings: the sampler needs the model's vocabulary \
                 (Sampler::with_vocabulary), or no breakers"
            ),
        }
    }
}

impl std::error::Error for SamplerError {}

impl SamplerConfig {
    /// Greedy decoding (temperature 0, no penalty).
    pub fn greedy() -> Self {
        Self { temperature: 0.0, repeat_penalty: 1.0, ..Self::default() }
    }

    /// Whether DRY changes anything: a non-zero multiplier and a non-zero window (llama.cpp's
    /// condition; the base is `>= 1` in any valid configuration), and Mirostat off (its chain
    /// has no DRY).
    pub fn dry_enabled(&self) -> bool {
        self.dry_multiplier != 0.0
            && self.dry_base >= 1.0
            && self.dry_penalty_last_n != 0
            && self.mirostat == 0
    }

    /// Check every setting is in range; the error names the first bad one.
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
        if !(0.0..=1.0).contains(&self.typical_p) {
            return bad(format!("typical-p must be in [0, 1], got {}", self.typical_p));
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
        if !(self.dry_multiplier.is_finite() && self.dry_multiplier >= 0.0) {
            return bad(format!("DRY multiplier must be >= 0, got {}", self.dry_multiplier));
        }
        if !(self.dry_base.is_finite() && self.dry_base >= 1.0) {
            return bad(format!("DRY base must be >= 1, got {}", self.dry_base));
        }
        match self.mirostat {
            0 | 2 => {}
            1 => return bad("mirostat 1 (Mirostat v1) is not implemented: use 2".into()),
            m => return bad(format!("mirostat must be 0 (off) or 2 (Mirostat 2.0), got {m}")),
        }
        if !(self.mirostat_tau.is_finite() && self.mirostat_tau >= 0.0) {
            return bad(format!("mirostat tau (entropy) must be >= 0, got {}", self.mirostat_tau));
        }
        if !(self.mirostat_eta.is_finite() && self.mirostat_eta >= 0.0) {
            return bad(format!(
                "mirostat eta (learning rate) must be >= 0, got {}",
                self.mirostat_eta
            ));
        }
        if let Some(&(token, bias)) =
            self.logit_bias.iter().find(|(_, b)| b.is_nan() || *b == f32::INFINITY)
        {
            return bad(format!(
                "logit bias of token {token} must be finite or -inf (a ban), got {bias}"
            ));
        }
        Ok(())
    }
}
