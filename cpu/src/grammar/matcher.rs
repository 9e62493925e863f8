//! Following a compiled grammar token by token, for one sample.

use std::time::{Duration, Instant};

use super::error::{first_line, GrammarError};
use super::mask::Mask;

/// One sample's position in a grammar: which tokens may come next, and the tokens taken.
///
/// Made by [`Grammar::matcher`](super::Grammar::matcher). The loop of a sampler is
///
/// ```text
///   mask = matcher.compute_mask()?      // may run on another thread during the forward pass
///   mask.apply(&mut logits)             // disallowed tokens: -inf
///   token = sample(logits)
///   matcher.commit(token)?
///   if matcher.is_finished() { stop }   // the grammar is complete: only EOS could follow
/// ```
///
/// `Send`: a single-sequence generator can compute step t+1's mask on a scoped thread
/// (`std::thread::scope(|s| { let m = s.spawn(|| matcher.compute_mask()); forward(); m.join() })`)
/// right after committing token t, so the mask costs nothing on the critical path when it
/// takes less time than the forward pass.
pub struct Matcher {
    inner: llguidance::Matcher,
    vocab_size: usize,
    stats: MaskStats,
}

/// Time spent computing masks, for reporting a constraint's cost per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaskStats {
    /// Masks computed.
    pub masks: u64,
    /// Total wall time in [`Matcher::compute_mask`].
    pub total: Duration,
    /// The longest single computation.
    pub max: Duration,
}

impl MaskStats {
    /// Adds another matcher's figures.
    pub fn add(&mut self, other: &MaskStats) {
        self.masks += other.masks;
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Mean time per mask, in microseconds (0 when none).
    pub fn mean_us(&self) -> f64 {
        if self.masks == 0 {
            0.0
        } else {
            self.total.as_secs_f64() * 1e6 / self.masks as f64
        }
    }
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("finished", &self.is_finished())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Clone for Matcher {
    /// An independent matcher at the same position (for a forked sample), with zeroed stats.
    fn clone(&self) -> Self {
        Matcher {
            inner: self.inner.deep_clone(),
            vocab_size: self.vocab_size,
            stats: MaskStats::default(),
        }
    }
}

impl Matcher {
    pub(crate) fn new(inner: llguidance::Matcher, vocab_size: usize) -> Self {
        Matcher { inner, vocab_size, stats: MaskStats::default() }
    }

    /// The tokens allowed next. Once the grammar is finished ([`Matcher::is_finished`]) the
    /// mask holds the end-of-generation tokens only.
    ///
    /// # Errors
    /// [`GrammarError::Rejected`] if the matcher failed (an earlier commit was refused, or
    /// llguidance hit one of its limits).
    pub fn compute_mask(&mut self) -> Result<Mask, GrammarError> {
        let start = Instant::now();
        let bits = self.inner.compute_mask_or_eos().map_err(rejected)?;
        let took = start.elapsed();
        self.stats.masks += 1;
        self.stats.total += took;
        self.stats.max = self.stats.max.max(took);
        Ok(Mask::new(bits, self.vocab_size))
    }

    /// Takes `token` as the next token of the text.
    ///
    /// An end-of-generation token where the grammar may end finishes it
    /// ([`Matcher::is_finished`] becomes true).
    ///
    /// # Errors
    /// [`GrammarError::Rejected`] if the grammar does not allow `token` here (the matcher
    /// is then unusable).
    pub fn commit(&mut self, token: u32) -> Result<(), GrammarError> {
        if token as usize >= self.vocab_size {
            return Err(GrammarError::Rejected {
                message: format!("token {token} is outside the vocabulary"),
            });
        }
        self.inner.consume_token(token).map_err(rejected)
    }

    /// Whether the grammar is complete: the text matches and nothing may follow but the end
    /// of generation (or an end-of-generation token was committed). A sample ends here.
    pub fn is_finished(&self) -> bool {
        self.inner.is_stopped() && !self.inner.is_error()
    }

    /// Whether the text so far is a complete match (it may end here, though it could also
    /// go on).
    pub fn is_accepting(&mut self) -> bool {
        self.inner.is_accepting().unwrap_or(false)
    }

    /// Whether the matcher failed (see [`Matcher::compute_mask`]).
    pub fn is_failed(&self) -> bool {
        self.inner.is_error()
    }

    /// Mask computation time so far.
    pub fn stats(&self) -> MaskStats {
        self.stats
    }
}

fn rejected(e: impl std::fmt::Display) -> GrammarError {
    GrammarError::Rejected { message: first_line(&e.to_string()) }
}
