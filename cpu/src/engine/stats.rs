//! Counters the engine keeps while it runs.

use std::time::Duration;

/// Running totals since the engine was created.
///
/// Page counts are in the pool's pages: all-layer pages, or single-layer pages under a
/// per-layer policy (PyramidKV, see [`Engine::with_policy`](super::Engine::with_policy)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Forward passes run.
    pub steps: u64,
    /// Tokens sampled (over all samples of all requests).
    pub generated_tokens: u64,
    /// Tokens that went through the forward pass (prompt chunks, decode tokens, recompute).
    pub batch_tokens: u64,
    /// Prompt tokens whose K/V was computed (a prompt recomputed after preemption counts
    /// again).
    pub prefill_computed: u64,
    /// Prompt tokens whose K/V came from the prefix cache instead.
    pub prefill_skipped: u64,
    /// Generated tokens recomputed after a preemption.
    pub recomputed_tokens: u64,
    /// Full prompt pages looked up in the prefix cache.
    pub prefix_lookups: u64,
    /// Of those, pages found.
    pub prefix_hits: u64,
    /// Sequences preempted (pages freed, re-queued, recomputed later).
    pub preemptions: u64,
    /// Requests cancelled ([`Engine::cancel`](super::Engine::cancel)) before they finished.
    pub cancelled: u64,
    /// Cached pages reclaimed from the prefix cache for new work.
    pub evictions: u64,
    /// Pages sequences let go of under the KV eviction policy (freed, or left to the prefix
    /// cache).
    pub policy_evictions: u64,
    /// Most pages in use at once (sequences and prefix cache).
    pub peak_pages: usize,
    /// Σ over steps of slots holding a token in the pages sequences hold.
    pub filled_slots: u64,
    /// Σ over steps of slots in the pages sequences hold.
    pub held_slots: u64,
    /// Grammar masks computed ([`Request::constraint`](super::Request::constraint)): one
    /// per constrained sample per sampling step.
    pub masks: u64,
    /// Total time computing them (beside the forward pass, or after it).
    pub mask_time: Duration,
    /// Of the steps' time, how long sampling waited for masks after the forward pass had
    /// finished: the grammar's cost on the critical path.
    pub mask_wait: Duration,
}

impl EngineStats {
    /// KV utilisation: slots holding tokens ÷ slots in the pages sequences hold, summed
    /// over steps (so weighted by pages held). Waste is the unfilled tail of each
    /// sequence's last page. `None` before the first step.
    pub fn kv_utilisation(&self) -> Option<f64> {
        (self.held_slots > 0).then(|| self.filled_slots as f64 / self.held_slots as f64)
    }

    /// Mean time to compute one grammar mask, in microseconds (`None` before the first).
    pub fn mask_us_per_token(&self) -> Option<f64> {
        (self.masks > 0).then(|| self.mask_time.as_secs_f64() * 1e6 / self.masks as f64)
    }

    /// Prefix-cache hit rate over full prompt pages looked up.
    pub fn prefix_hit_rate(&self) -> Option<f64> {
        (self.prefix_lookups > 0).then(|| self.prefix_hits as f64 / self.prefix_lookups as f64)
    }
}
