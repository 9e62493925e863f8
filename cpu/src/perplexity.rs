//! Perplexity, by llama.cpp's method (`llama-perplexity`, default non-strided mode).
//!
//! The token stream is cut into `⌊N / n_ctx⌋` chunks of `n_ctx` tokens. Each chunk runs
//! from an empty cache; only its second half is scored: the logits at positions
//! `n_ctx/2 .. n_ctx-2` predict tokens `n_ctx/2+1 .. n_ctx-1`. PPL = exp(mean NLL), and
//! the ± is llama.cpp's estimate `PPL · sqrt((⟨nll²⟩ − ⟨nll⟩²) / (count − 1))`. When the
//! model's tokenizer adds BOS (`tokenizer.ggml.add_bos_token`, Gemma), each chunk's first
//! token is replaced by BOS, as llama-perplexity does.
//!
//! Under a KV eviction policy ([`perplexity_with_policy`]) each chunk still starts from an
//! empty cache, but goes through the model one page at a time, the policy evicting before
//! each page: a scored token sees the tokens the policy kept, not the whole chunk.

use pagoda_core::evict::KvPolicy;

use crate::model::{Llama, ModelError, Session, SessionOptions};
use crate::tokenizer::Tokenizer;

/// The result of a perplexity run.
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// llama.cpp's standard-error estimate of `ppl`.
    pub ppl_stderr: f64,
    /// Chunks scored.
    pub chunks: usize,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Tokens scored.
    pub scored: usize,
    /// Running PPL after each chunk.
    pub running: Vec<f64>,
    /// The most KV bytes held at once while scoring a chunk.
    pub peak_kv_bytes: usize,
}

/// Tokens per forward pass with which `llama-perplexity` (defaults `-b 2048 -ub 512`, one KV
/// stream per sequence) evaluates a chunk of `n_ctx` tokens: it packs
/// `max(1, 2048 / n_ctx)` chunks into a batch and splits each 512-token ubatch equally
/// among them, so each sequence gets `512 / max(1, 2048 / n_ctx)` rows per pass (at most
/// `n_ctx`). The row count picks llama.cpp's attention kernel (tiled from
/// [`crate::attention::TILED_MIN_ROWS`] rows), so `pagoda perplexity --numerics exact`
/// uses it by default to give llama-perplexity's figures: `-c 512` 128 rows (tiled),
/// `-c 128` 32 rows (one key at a time). (llama-perplexity's last batch may hold fewer
/// chunks, so more rows each; that changes its kernel only where those cross 64 rows, e.g.
/// `-c 128` on a text whose last batch has at most 7 chunks.)
pub fn llama_perplexity_batch(n_ctx: usize) -> usize {
    let n_seq = (2048 / n_ctx.max(1)).max(1);
    (512 / n_seq).clamp(1, n_ctx.max(1))
}

/// Scores `tokens` in chunks of `opts.n_ctx`, calling `on_chunk(i, running_ppl)` after
/// each. Errors if there is not even one full chunk.
pub fn perplexity(
    model: &Llama,
    tokens: &[u32],
    opts: &SessionOptions,
    on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity, ModelError> {
    perplexity_with_policy(model, tokens, opts, KvPolicy::Full, on_chunk)
}

/// [`perplexity`] with the KV cache under `policy` (see the module docs).
pub fn perplexity_with_policy(
    model: &Llama,
    tokens: &[u32],
    opts: &SessionOptions,
    policy: KvPolicy,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity, ModelError> {
    let n_ctx = opts.n_ctx;
    if n_ctx < 4 {
        return Err(ModelError::Invalid(format!(
            "perplexity needs a context of at least 4, got {n_ctx}"
        )));
    }
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(ModelError::Invalid(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx} (use a smaller -c)",
            tokens.len()
        )));
    }
    let vocab = model.config().vocab_size;
    let first = n_ctx / 2;
    // As llama-perplexity: when the model's tokenizer adds BOS, every chunk starts with it
    // (its first token is replaced; the scored second half is unchanged).
    let bos = Tokenizer::from_gguf(&model.gguf())
        .ok()
        .filter(Tokenizer::add_bos)
        .and_then(|t| t.bos())
        .filter(|&b| (b as usize) < vocab);
    let mut chunk_buf = Vec::with_capacity(n_ctx);
    let mut session = Session::with_policy(model, opts.clone(), policy)?;
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    for i in 0..n_chunks {
        chunk_buf.clear();
        chunk_buf.extend_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk_buf[0] = b;
        }
        let chunk = &chunk_buf[..];
        session.clear();
        let logits = session.eval_all(chunk, first)?;
        // Row j of `logits` is position first + j; rows up to n_ctx - 2 predict a token.
        for (j, row) in logits.chunks_exact(vocab).take(n_ctx - 1 - first).enumerate() {
            let target = chunk[first + j + 1] as usize;
            let lp = log_softmax_at(row, target);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_chunk(i, ppl);
    }
    let mean = nll / count as f64;
    let mean2 = nll2 / count as f64;
    let var = mean2 - mean * mean;
    let ppl = mean.exp();
    let ppl_stderr =
        if var > 0.0 && count > 1 { ppl * (var / (count - 1) as f64).sqrt() } else { 0.0 };
    Ok(Perplexity {
        ppl,
        ppl_stderr,
        chunks: n_chunks,
        n_ctx,
        scored: count,
        running,
        peak_kv_bytes: session.peak_kv_bytes(),
    })
}

/// `log softmax(row)[target]`, in f64.
pub fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}
