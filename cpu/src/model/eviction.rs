//! One sequence's KV eviction state: the rule from `pagoda_core::evict`, where each cached page
//! sits in the text, and (for H2O) each page's accumulated attention mass.
//!
//! ```text
//!   text positions:  0 ... 15 | (evicted 16..47) | 48 ... 63 | 64 ... 70
//!   table pages:       p0                            p3          p4        len 39
//!   page_pos:          [0,                           48,         64]
//!   new token:       cache slot 39, RoPE position 39 + shift(32) = 71
//! ```
//!
//! Positions: a key is rotated once, when it is written, at its position in the text, and is
//! never rewritten. New tokens keep their text positions too (`shift` = tokens evicted so far),
//! so every query–key pair sees its true distance. See `docs/kv-eviction.md` for why (and for
//! what this means past the model's training context).
//!
//! Attention mass (H2O) is computed here, not in the attention kernels: after each step the
//! step's queries (recorded by the forward pass) are scored against every cached key with the
//! stored K pages (`KvFormat::dot`, f32 math), softmaxed per query and head over the keys that
//! query may see, and summed into the page holding each key, over all layers and heads.

use pagoda_core::evict::{evict_page, EvictionRule, KvPolicy, SeqView};
use pagoda_core::kv::{KvFormat, KvPages};
use pagoda_core::pool::PageId;
use rayon::prelude::*;

use super::kv_cache::{KvCache, KvStore, SeqTable};
use super::{LlamaConfig, ModelError};

/// A sequence's eviction bookkeeping (see the module docs).
#[derive(Clone, Debug)]
pub struct Evictor {
    policy: KvPolicy,
    rule: EvictionRule,
    /// Text position of the first token of each logical page.
    page_pos: Vec<usize>,
    /// Accumulated attention mass of each logical page (H2O only; else empty).
    mass: Vec<f32>,
    /// Pages given back to the pool so far.
    evicted_pages: usize,
}

impl Evictor {
    /// The state for `policy` in a context of `n_ctx` tokens with pages of `block_size`.
    pub fn new(policy: KvPolicy, n_ctx: usize, block_size: usize) -> Result<Self, ModelError> {
        let rule = policy
            .resolve(n_ctx, block_size)
            .map_err(|e| ModelError::Invalid(format!("KV policy {policy}: {e}")))?;
        Ok(Evictor { policy, rule, page_pos: Vec::new(), mass: Vec::new(), evicted_pages: 0 })
    }

    /// The policy.
    pub fn policy(&self) -> KvPolicy {
        self.policy
    }

    /// The resolved rule.
    pub fn rule(&self) -> EvictionRule {
        self.rule
    }

    /// Pages given back to the pool so far.
    pub fn evicted_pages(&self) -> usize {
        self.evicted_pages
    }

    /// Accumulated attention mass per logical page (H2O; empty otherwise).
    pub fn mass(&self) -> &[f32] {
        &self.mass
    }

    /// Evicts pages of `table` until the rule holds for the next step (which opens a new page
    /// if the last one is full). Returns how many pages went back to the pool.
    pub fn evict(
        &mut self,
        cache: &mut KvCache,
        table: &mut SeqTable,
    ) -> Result<usize, ModelError> {
        let mut n = 0;
        loop {
            let refcounts: Vec<u32> = table
                .pages()
                .iter()
                .map(|&p| cache.pool().refcount(p).unwrap_or(u32::MAX))
                .collect();
            let view = SeqView {
                block_size: table.block_size(),
                n_tokens: table.len(),
                mass: &self.mass,
                refcounts: &refcounts,
            };
            let new_page = table.len() % table.block_size() == 0;
            let Some(i) = self.rule.next_victim(&view, new_page) else { break };
            evict_page(table, i, cache.pool_mut())
                .map_err(|e| ModelError::Invalid(format!("KV eviction: {e}")))?;
            self.page_pos.remove(i);
            if i < self.mass.len() {
                self.mass.remove(i);
            }
            n += 1;
        }
        self.evicted_pages += n;
        Ok(n)
    }

    /// Records pages opened by appending `n` tokens at text positions `pos0..pos0 + n`.
    pub fn appended(&mut self, table: &SeqTable, pos0: usize, n: usize) {
        let bs = table.block_size();
        let start = table.len() - n;
        for c in start..table.len() {
            if c % bs == 0 {
                self.page_pos.push(pos0 + (c - start));
            }
        }
        if self.policy.needs_attention_mass() {
            self.mass.resize(self.page_pos.len(), 0.0);
        }
    }

    /// Cached tokens whose text position is below `n` (for truncating a sequence to `n`
    /// tokens): every page is a run of consecutive positions.
    pub fn cached_below(&self, table: &SeqTable, n: usize) -> usize {
        let bs = table.block_size();
        self.page_pos
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let held = (table.len() - i * bs).min(bs);
                n.saturating_sub(p).min(held)
            })
            .sum()
    }

    /// Forgets pages past the table's (shortened) end.
    pub fn truncated(&mut self, table: &SeqTable) {
        let pages = table.pages().len();
        self.page_pos.truncate(pages);
        self.mass.truncate(pages);
    }

    /// Adds the attention mass the last step's queries put on each page (H2O): `queries` are
    /// `[layer][token][n_heads × head_dim]` for the step's `n` tokens, which are the last `n`
    /// of `table`.
    pub fn add_mass(
        &mut self,
        cache: &KvCache,
        table: &SeqTable,
        config: &LlamaConfig,
        queries: &[f32],
        n: usize,
    ) -> Result<(), ModelError> {
        if !self.policy.needs_attention_mass() || n == 0 {
            return Ok(());
        }
        let q_dim = config.n_heads * config.head_dim;
        if queries.len() != config.n_layers * n * q_dim {
            return Err(ModelError::Invalid(format!(
                "attention mass: {} recorded query values, expected {} layers × {n} tokens × {q_dim}",
                queries.len(),
                config.n_layers
            )));
        }
        let pages = table.pages();
        let first = table.len() - n;
        let mass = match cache.store() {
            KvStore::F32(kv) => page_mass(kv, config, pages, first, n, queries),
            KvStore::F16(kv) => page_mass(kv, config, pages, first, n, queries),
            KvStore::Bf16(kv) => page_mass(kv, config, pages, first, n, queries),
            KvStore::Q8_0(kv) => page_mass(kv, config, pages, first, n, queries),
            KvStore::Q4_0(kv) => page_mass(kv, config, pages, first, n, queries),
        }?;
        self.mass.resize(pages.len(), 0.0);
        for (m, add) in self.mass.iter_mut().zip(mass) {
            *m += add;
        }
        Ok(())
    }
}

/// Attention mass per logical page: for each layer, query head and step token (at cache
/// index `first + t`), softmax of `q · k / √d` over cache indices `0..=first + t`, summed
/// into the page of each key. Layers in parallel.
fn page_mass<T: KvFormat>(
    kv: &KvPages<T, Vec<T>>,
    c: &LlamaConfig,
    pages: &[PageId],
    first: usize,
    n: usize,
    queries: &[f32],
) -> Result<Vec<f32>, ModelError> {
    let (hd, n_heads) = (c.head_dim, c.n_heads);
    let group = (n_heads / c.n_kv_heads.max(1)).max(1);
    let bs = kv.config().block_size;
    let scale = 1.0 / (hd as f32).sqrt();
    let q_layer = n * n_heads * hd;
    let per_layer: Vec<Vec<f32>> = (0..c.n_layers)
        .into_par_iter()
        .map(|l| {
            let mut mass = vec![0.0f32; pages.len()];
            let mut scores = Vec::with_capacity(first + n);
            let ql = &queries[l * q_layer..(l + 1) * q_layer];
            for t in 0..n {
                let seen = first + t + 1;
                for h in 0..n_heads {
                    let q = &ql[(t * n_heads + h) * hd..][..hd];
                    let g = h / group;
                    scores.clear();
                    for j in 0..seen {
                        let key = kv.key(l, pages[j / bs], g, j % bs)?;
                        scores.push(T::dot(q, key) * scale);
                    }
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f32;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    for (j, &s) in scores.iter().enumerate() {
                        mass[j / bs] += s * inv;
                    }
                }
            }
            Ok(mass)
        })
        .collect::<Result<_, pagoda_core::kv::KvError>>()
        .map_err(|e| ModelError::Invalid(format!("attention mass: {e}")))?;
    let mut total = vec![0.0f32; pages.len()];
    for m in per_layer {
        total.iter_mut().zip(m).for_each(|(t, m)| *t += m);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvType;
    use pagoda_core::evict::Budget;

    fn tiny() -> LlamaConfig {
        LlamaConfig {
            n_layers: 2,
            dim: 8,
            ffn_dim: 16,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            n_rot: 4,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
            vocab_size: 10,
            context_length: 64,
        }
    }

    #[test]
    fn sink_window_keeps_memory_bounded_and_positions_known() {
        let c = tiny();
        let policy = KvPolicy::SinkWindow { sink: 2, window: 8 };
        let mut ev = Evictor::new(policy, 64, 4).unwrap();
        let max = ev.rule().max_pages(4).unwrap();
        let mut cache = KvCache::new(&c, KvType::F32, max, 4).unwrap();
        let mut table = cache.new_table();
        let mut pos = 0;
        for _ in 0..100 {
            ev.evict(&mut cache, &mut table).unwrap();
            // One page-aligned step.
            let n = 4 - table.len() % 4;
            cache.append(&mut table, n).unwrap();
            ev.appended(&table, pos, n);
            pos += n;
            assert!(cache.pages_in_use() <= max);
            cache.pool().check_invariants().unwrap();
        }
        // Sink page at position 0, the rest the most recent positions, consecutive.
        assert_eq!(ev.page_pos[0], 0);
        let tail: Vec<usize> = ev.page_pos[1..].to_vec();
        let want: Vec<usize> = (0..tail.len()).map(|i| pos - 4 * (tail.len() - i)).collect();
        assert_eq!(tail, want);
        assert_eq!(ev.cached_below(&table, pos), table.len());
        assert_eq!(ev.cached_below(&table, pos - 2), table.len() - 2);
        assert_eq!(ev.evicted_pages() + table.pages().len(), pos / 4);
    }

    #[test]
    fn mass_is_one_per_query_and_head() {
        let c = tiny();
        let mut cache = KvCache::new(&c, KvType::F32, 8, 4).unwrap();
        let mut table = cache.new_table();
        cache.append(&mut table, 10).unwrap();
        if let KvStore::F32(kv) = cache.store_mut() {
            for p in 0..10 {
                let sl = table.slot(p).unwrap();
                for l in 0..2 {
                    let k = [p as f32 * 0.1, 1.0, -0.5, 0.25 * l as f32];
                    kv.write(l, sl.page, sl.slot, &k, &k).unwrap();
                }
            }
        }
        let mut ev = Evictor::new(KvPolicy::H2o(Budget::Tokens(16)), 64, 4).unwrap();
        ev.appended(&table, 0, 10);
        let n = 3;
        let queries: Vec<f32> = (0..2 * n * 8).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
        ev.add_mass(&cache, &table, &c, &queries, n).unwrap();
        // Each of 2 layers × 2 heads × 3 queries distributes mass 1.
        let total: f32 = ev.mass().iter().sum();
        assert!((total - 12.0).abs() < 1e-4, "{total}");
        assert_eq!(ev.mass().len(), 3);
        let err = ev.add_mass(&cache, &table, &c, &queries[1..], n).unwrap_err();
        assert!(err.to_string().contains("recorded query values"), "{err}");
    }
}
