//! What a chat does when its history fills the context and no `--kv-policy` was given: it
//! goes on under StreamingLLM, keeping the pages that hold the system prompt (the attention
//! sinks) and the most recent pages, and forgetting the turns in between. The cache is kept
//! as it is (`Session::switch_policy`): nothing is processed again.

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
}
