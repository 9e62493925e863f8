//! `GET /metrics`: counters, gauges and latency histograms in Prometheus' text format.
//!
//! Handlers and the engine thread update plain atomics; rendering reads them. Gauges are
//! copied from the engine after every step (and twice a second while idle).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Every metric the server exports.
#[derive(Default)]
pub struct Metrics {
    /// Requests by how they ended (`completed`, `rejected`, `disconnected`, `cancelled`,
    /// `failed`) and HTTP errors by status.
    outcomes: Mutex<Vec<(String, u64)>>,
    /// Requests accepted whose first token has not come yet (what `--max-queue` bounds).
    pub queued: AtomicUsize,
    /// Prompt tokens of accepted requests.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated (every sample).
    pub generated_tokens: AtomicU64,
    /// Seconds from submission to a request's first token.
    pub ttft: Histogram,
    /// Seconds between consecutive tokens of one sample.
    pub itl: Histogram,
    /// The engine's state, as of its last step.
    pub gauges: Gauges,
    /// Page-pool invariant violations found (only checked with `--check-invariants`).
    pub invariant_violations: AtomicU64,
}

/// The engine's state as of its last step.
#[derive(Default)]
pub struct Gauges {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub pages_total: AtomicUsize,
    pub pages_free: AtomicUsize,
    pub pages_held: AtomicUsize,
    pub pages_cached: AtomicUsize,
    pub prefix_lookups: AtomicUsize,
    pub prefix_hits: AtomicUsize,
    pub prefill_skipped: AtomicUsize,
    pub preemptions: AtomicUsize,
    /// Grammar masks computed (`response_format` constraints), and the microseconds spent
    /// on them and waited for them after forward passes.
    pub grammar_masks: AtomicUsize,
    pub grammar_mask_us: AtomicUsize,
    pub grammar_mask_wait_us: AtomicUsize,
}

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0];

/// A latency histogram with fixed buckets (cumulative on output, as Prometheus wants).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation, in seconds.
    pub fn observe(&self, seconds: f64) {
        let i = BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

impl Metrics {
    /// Counts one request that ended as `outcome`.
    pub fn count_outcome(&self, outcome: &str) {
        let mut o = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        match o.iter_mut().find(|(k, _)| k == outcome) {
            Some((_, n)) => *n += 1,
            None => o.push((outcome.to_string(), 1)),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let g = &self.gauges;
        let u = |a: &AtomicUsize| a.load(Ordering::Relaxed).to_string();
        line(
            "pagoda_prompt_tokens_total",
            "counter",
            "Prompt tokens of accepted requests.",
            self.prompt_tokens.load(Ordering::Relaxed).to_string(),
        );
        line(
            "pagoda_generated_tokens_total",
            "counter",
            "Tokens generated, every sample.",
            self.generated_tokens.load(Ordering::Relaxed).to_string(),
        );
        line(
            "pagoda_queue_depth",
            "gauge",
            "Accepted requests waiting for their first token.",
            u(&self.queued),
        );
        line("pagoda_requests_running", "gauge", "Sequences in the running batch.", u(&g.running));
        line("pagoda_requests_waiting", "gauge", "Sequences waiting for pages.", u(&g.waiting));
        line(
            "pagoda_requests_in_flight",
            "gauge",
            "Requests the engine is working on.",
            u(&g.in_flight),
        );
        line("pagoda_kv_pages_total", "gauge", "Pages in the KV pool.", u(&g.pages_total));
        line("pagoda_kv_pages_free", "gauge", "Free pages in the KV pool.", u(&g.pages_free));
        line("pagoda_kv_pages_used", "gauge", "Pages held by sequences.", u(&g.pages_held));
        line("pagoda_kv_pages_cached", "gauge", "Pages in the prefix cache.", u(&g.pages_cached));
        line(
            "pagoda_prefix_cache_lookups_total",
            "counter",
            "Prefix-cache page lookups.",
            u(&g.prefix_lookups),
        );
        line(
            "pagoda_prefix_cache_hits_total",
            "counter",
            "Prefix-cache page hits.",
            u(&g.prefix_hits),
        );
        let (lookups, hits) =
            (g.prefix_lookups.load(Ordering::Relaxed), g.prefix_hits.load(Ordering::Relaxed));
        let rate = if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 };
        line(
            "pagoda_prefix_cache_hit_rate",
            "gauge",
            "Prefix-cache hits per lookup.",
            rate.to_string(),
        );
        line(
            "pagoda_prompt_tokens_cached_total",
            "counter",
            "Prompt tokens whose prefill the prefix cache saved.",
            u(&g.prefill_skipped),
        );
        line(
            "pagoda_preemptions_total",
            "counter",
            "Sequences preempted for pages.",
            u(&g.preemptions),
        );
        line(
            "pagoda_grammar_masks_total",
            "counter",
            "Grammar masks computed (one per constrained sample per token).",
            u(&g.grammar_masks),
        );
        let secs = |a: &AtomicUsize| (a.load(Ordering::Relaxed) as f64 / 1e6).to_string();
        line(
            "pagoda_grammar_mask_seconds_total",
            "counter",
            "Time computing grammar masks.",
            secs(&g.grammar_mask_us),
        );
        line(
            "pagoda_grammar_mask_wait_seconds_total",
            "counter",
            "Time sampling waited for grammar masks after the forward passes.",
            secs(&g.grammar_mask_wait_us),
        );
        line(
            "pagoda_invariant_violations_total",
            "counter",
            "Page-pool invariant violations (checked with --check-invariants).",
            self.invariant_violations.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP pagoda_requests_total Requests by outcome.\n# TYPE pagoda_requests_total counter"
        );
        for (k, n) in self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "pagoda_requests_total{{outcome=\"{k}\"}} {n}");
        }
        self.ttft.render(
            &mut out,
            "pagoda_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first token.",
        );
        self.itl.render(
            &mut out,
            "pagoda_inter_token_latency_seconds",
            "Seconds between consecutive tokens of a sample.",
        );
        out
    }
}
