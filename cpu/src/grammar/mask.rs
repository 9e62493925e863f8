//! The set of tokens allowed at one position.

use llguidance::toktrie::SimpleVob;

/// The tokens a grammar allows as the next token: a bit per token id.
///
/// `Send`, so it can be computed on one thread (while the forward pass runs on others) and
/// applied on another.
#[derive(Clone, Debug)]
pub struct Mask {
    bits: SimpleVob,
    vocab_size: usize,
}

impl Mask {
    pub(crate) fn new(bits: SimpleVob, vocab_size: usize) -> Self {
        Mask { bits, vocab_size }
    }

    /// Whether token `id` is allowed (`false` outside the vocabulary).
    pub fn is_allowed(&self, id: u32) -> bool {
        (id as usize) < self.vocab_size && self.bits.is_allowed(id)
    }

    /// Number of allowed tokens.
    pub fn count(&self) -> usize {
        self.bits.num_set()
    }

    /// Whether no token at all is allowed (the grammar has no continuation and cannot end:
    /// it was unsatisfiable from this point).
    pub fn is_empty(&self) -> bool {
        self.bits.is_zero()
    }

    /// The allowed ids, ascending.
    pub fn allowed(&self) -> Vec<u32> {
        self.bits.to_list()
    }

    /// Sets every disallowed token's logit to `-inf`, leaving allowed ones as they are.
    /// Logits past the vocabulary (a model whose output rows are padded) are disallowed too.
    pub fn apply(&self, logits: &mut [f32]) {
        let words = self.bits.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let mut word = words.get(w).copied().unwrap_or(0);
            if w * 32 + chunk.len() > self.vocab_size {
                // Bits past the vocabulary are never set; clear them anyway.
                let keep = self.vocab_size.saturating_sub(w * 32).min(32);
                word &= if keep == 32 { u32::MAX } else { (1u32 << keep) - 1 };
            }
            if word == u32::MAX {
                continue;
            }
            if word == 0 {
                // Most words of a grammar's mask: nothing allowed in these 32 tokens.
                chunk.fill(f32::NEG_INFINITY);
                continue;
            }
            for (bit, l) in chunk.iter_mut().enumerate() {
                if word & (1 << bit) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}
