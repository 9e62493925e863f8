//! What a chat does when its history fills the context and no `--kv-policy` was given: it
//! goes on under StreamingLLM, keeping the pages that hold the system prompt (the attention
//! sinks) and the most recent pages, and forgetting the turns in between. The cache is kept
//! as it is (`Session::switch_policy`): nothing is processed again.
//!
//! A model whose cache cannot be evicted that way (Gemma 3's sliding-window layers) forgets
//! the oldest turns instead and processes the rest again ([`first_kept_turn`]).

use pagoda_core::evict::KvPolicy;

/// The StreamingLLM policy for a context of `n_ctx` tokens in pages of `block_size`, whose
/// first `preamble_tokens` tokens are the system prompt: the sinks are the pages holding
/// them (at least one page: BOS; at most half the context's pages), the window is the rest
/// of the context's pages but two (the page being written and the window's partly filled
/// first page), so that the policy never holds more pages than the context.
///
/// `None` when the context is too small to keep a window of at least one page.
pub fn streaming_policy(
    n_ctx: usize,
    block_size: usize,
    preamble_tokens: usize,
) -> Option<KvPolicy> {
    let bs = block_size.max(1);
    let ctx_pages = n_ctx / bs;
    let sink_pages = preamble_tokens.div_ceil(bs).clamp(1, (ctx_pages / 2).max(1));
    let window_pages = ctx_pages.checked_sub(sink_pages + 2).filter(|&w| w > 0)?;
    Some(KvPolicy::SinkWindow { sink: sink_pages * bs, window: window_pages * bs })
}

/// The one line a chat prints on stderr when it falls back to `policy`.
pub fn notice(n_ctx: usize, policy: KvPolicy) -> String {
    format!(
        "context full ({n_ctx} tokens): continuing with StreamingLLM ({policy}); the system \
         prompt and the most recent turns are kept, older turns are forgotten"
    )
}

/// What a chat that cannot evict keeps when its context is full: the index of the first
/// turn to keep among `turns` (the messages after the system prompt, the last one the new
/// user message). `tokens(i)` is the size of the rendering that keeps `turns[i..]`.
///
/// The kept turns start at a user message and take at most `budget` tokens (half the
/// context, say, leaving room for replies), as many as fit; else the last user message
/// alone if it takes at most `limit`; `None` if not even that fits.
pub fn first_kept_turn<E>(
    turns: &[pagoda_cpu::chat::Message],
    budget: usize,
    limit: usize,
    mut tokens: impl FnMut(usize) -> Result<usize, E>,
) -> Result<Option<usize>, E> {
    let starts: Vec<usize> = (0..turns.len()).filter(|&i| turns[i].role == "user").collect();
    for &i in &starts {
        if tokens(i)? <= budget {
            return Ok(Some(i));
        }
    }
    match starts.last() {
        Some(&last) if tokens(last)? <= limit => Ok(Some(last)),
        _ => Ok(None),
    }
}

/// The line a chat that cannot evict prints when it forgets turns.
pub fn forget_notice(n_ctx: usize, why: &str, forgotten: usize, kept_tokens: usize) -> String {
    format!(
        "context full ({n_ctx} tokens) and the cache cannot be evicted ({why}): the {forgotten} \
         oldest messages are forgotten, the rest ({kept_tokens} tokens) processed again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagoda_core::evict::EvictionRule;

    fn pages(policy: KvPolicy, n_ctx: usize, bs: usize) -> usize {
        let rule = policy.resolve(n_ctx, bs).unwrap();
        assert!(matches!(rule, EvictionRule::SinkWindow { .. }));
        rule.max_pages(bs).unwrap()
    }

    #[test]
    fn sinks_cover_the_system_prompt_and_the_bound_is_the_context() {
        // 40 tokens of system prompt: 3 pages of 16 are sinks; 16 - 3 - 2 = 11 window pages.
        let p = streaming_policy(256, 16, 40).unwrap();
        assert_eq!(p, KvPolicy::SinkWindow { sink: 48, window: 176 });
        assert_eq!(pages(p, 256, 16), 16);
        // No system prompt: the first page (BOS) still is a sink.
        assert_eq!(
            streaming_policy(256, 16, 0),
            Some(KvPolicy::SinkWindow { sink: 16, window: 208 })
        );
        // A system prompt longer than half the context keeps half the context as sinks.
        let p = streaming_policy(256, 16, 1000).unwrap();
        assert_eq!(p, KvPolicy::SinkWindow { sink: 128, window: 96 });
        assert_eq!(pages(p, 256, 16), 16);
        // A context that is not a whole number of pages rounds down.
        assert_eq!(pages(streaming_policy(250, 16, 20).unwrap(), 250, 16), 15);
        // Too small for a window.
        assert_eq!(streaming_policy(48, 16, 0), None);
        assert_eq!(
            streaming_policy(64, 16, 0),
            Some(KvPolicy::SinkWindow { sink: 16, window: 16 })
        );
    }

    #[test]
    fn a_chat_that_cannot_evict_keeps_the_most_recent_turns_that_fit() {
        use pagoda_cpu::chat::Message;
        let turns = [
            Message::user("a"),
            Message::assistant("b"),
            Message::user("c"),
            Message::assistant("d"),
            Message::user("e"),
        ];
        // 10 tokens a message: keeping turns[i..] takes 10 × (5 - i).
        let size = |i: usize| Ok::<_, ()>(10 * (turns.len() - i));
        assert_eq!(first_kept_turn(&turns, 30, 100, size), Ok(Some(2)));
        assert_eq!(first_kept_turn(&turns, 50, 100, size), Ok(Some(0)));
        // Only the last user message fits the budget, or only the limit.
        assert_eq!(first_kept_turn(&turns, 10, 100, size), Ok(Some(4)));
        assert_eq!(first_kept_turn(&turns, 5, 10, size), Ok(Some(4)));
        // Not even the last message fits.
        assert_eq!(first_kept_turn(&turns, 5, 9, size), Ok(None));
        assert_eq!(first_kept_turn(&[], 5, 9, size), Ok(None));
        // The counter's errors come through.
        assert_eq!(first_kept_turn(&turns, 5, 9, |_| Err::<usize, _>("bad")), Err("bad"));
    }
}
