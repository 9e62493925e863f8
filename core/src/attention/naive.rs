//! Naive causal attention over contiguous K/V with materialised scores, in f64.
//!
//! The plainest form of the math, used by tests as the ground truth for
//! [`paged_decode`](super::paged_decode) and [`paged_prefill`](super::paged_prefill):
//! scores for every visible token are written to a buffer, softmaxed (max subtracted), and
//! the values summed with those weights. f64 throughout, so its own rounding error is far
//! below the f32 paged code's.

use super::{AttnConfig, AttnError};

/// Causal attention for `n_q` query tokens at positions `first_pos .. first_pos + n_q` over
/// `n_kv` contiguous tokens (positions `0..n_kv`); query `i` sees positions `0..=first_pos + i`,
/// or under a sliding window `W` ([`AttnConfig::window`]) `max(0, p + 1 - W) ..= p` for
/// `p = first_pos + i`: masked positions get no score at all (they are not in the max).
///
/// Layouts: `q`, `out`: `[n_q][n_heads][head_dim]`; `k`, `v`: `[n_kv][n_kv_heads][head_dim]`.
/// `scores` is scratch of at least `first_pos + n_q` entries (the longest visible prefix,
/// whatever the window).
pub fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    first_pos: usize,
    cfg: &AttnConfig,
    scores: &mut [f64],
    out: &mut [f32],
) -> Result<(), AttnError> {
    cfg.validate()?;
    let hd = cfg.head_dim;
    let q_len = cfg.q_len();
    let row = cfg.n_kv_heads * hd;
    if q.len() % q_len != 0 || q.is_empty() {
        return Err(AttnError::Length { what: "q (whole tokens)", expected: q_len, got: q.len() });
    }
    if out.len() != q.len() {
        return Err(AttnError::Length { what: "out", expected: q.len(), got: out.len() });
    }
    if k.len() % row != 0 {
        return Err(AttnError::Length { what: "k (whole tokens)", expected: row, got: k.len() });
    }
    if v.len() != k.len() {
        return Err(AttnError::Length { what: "v", expected: k.len(), got: v.len() });
    }
    let n_q = q.len() / q_len;
    let n_kv = k.len() / row;
    let visible_max = first_pos + n_q;
    if visible_max > n_kv {
        return Err(AttnError::ChunkLongerThanContext { n_new: n_q, n_ctx: n_kv });
    }
    if scores.len() < visible_max {
        return Err(AttnError::Length { what: "scores", expected: visible_max, got: scores.len() });
    }
    let scale = f64::from(cfg.scale);
    for i in 0..n_q {
        let pos = first_pos + i;
        // Written out rather than via `cfg.first_visible`, so the spec checks that helper:
        // the key at `t` is masked when `pos - t ≥ W`.
        let lo = match cfg.window {
            Some(w) if pos >= w => pos - w + 1,
            _ => 0,
        };
        for h in 0..cfg.n_heads {
            // Written out rather than via `cfg.kv_head_of`, so the spec checks that helper.
            let kvh = h / (cfg.n_heads / cfg.n_kv_heads);
            let q_h = &q[i * q_len + h * hd..][..hd];
            // scores[j] is the key at position lo + j.
            let scores = &mut scores[..pos + 1 - lo];
            for (j, s) in scores.iter_mut().enumerate() {
                let t = lo + j;
                let k_t = &k[t * row + kvh * hd..][..hd];
                let dot: f64 =
                    q_h.iter().zip(k_t).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                *s = scale * dot;
            }
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = libm::exp(*s - max);
                sum += *s;
            }
            let out_h = &mut out[i * q_len + h * hd..][..hd];
            for (d, o) in out_h.iter_mut().enumerate() {
                let acc: f64 = scores
                    .iter()
                    .enumerate()
                    .map(|(j, &p)| p * f64::from(v[(lo + j) * row + kvh * hd + d]))
                    .sum();
                *o = (acc / sum) as f32;
            }
        }
    }
    Ok(())
}
