//! One sequence's KV eviction state: the rule from `pagoda_core::evict`, where each cached page
//! sits in the text, and (for H2O and PyramidKV) each page's accumulated attention mass.
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
//!
//! PyramidKV keeps a different set of pages per layer: the sequence then has one block table
//! per layer (in a cache of single-layer pages, [`KvCache::new_per_layer`]), and every piece
//! of state here (rule, page positions, mass) is kept per table; layer `l`'s mass counts
//! layer `l`'s attention only.

use pagoda_core::evict::{drop_page, EvictionRule, KvPolicy, SeqView};
use pagoda_core::kv::{KvFormat, KvPages};
use pagoda_core::pool::PageId;
use rayon::prelude::*;

use super::kv_cache::{KvCache, KvStore, SeqTable};
use super::kv_slab::KvSlab;
use super::{LlamaConfig, ModelError};

/// A sequence's eviction bookkeeping (see the module docs).
///
/// Its state is per *table*: a sequence has one table shared by every layer, or (a
/// per-layer policy, PyramidKV, in a cache of single-layer pages) one table per layer, each
/// with its own rule, page positions and attention mass. Every method takes the sequence's
/// tables in that order (`std::slice::from_mut(&mut table)` for one).
#[derive(Clone, Debug)]
pub struct Evictor {
    policy: KvPolicy,
    tables: Vec<TableState>,
    /// Pages let go of so far (freed, or left to their other holders).
    evicted_pages: usize,
}

/// One table's eviction state.
#[derive(Clone, Debug)]
struct TableState {
    rule: EvictionRule,
    /// Text position of the first token of each logical page.
    page_pos: Vec<usize>,
    /// Accumulated attention mass of each logical page (H2O, PyramidKV; else empty).
    mass: Vec<f32>,
}

impl Evictor {
    /// The state for `policy` in a context of `n_ctx` tokens with pages of `block_size`, for
    /// a model of `n_layers` layers: one table per layer if the policy is per layer
    /// ([`KvPolicy::per_layer`]), else one table.
    pub fn new(
        policy: KvPolicy,
        n_ctx: usize,
        block_size: usize,
        n_layers: usize,
    ) -> Result<Self, ModelError> {
        let n_tables = if policy.per_layer() { n_layers } else { 1 };
        let tables = (0..n_tables)
            .map(|l| {
                let rule = policy
                    .resolve_layer(n_ctx, block_size, l, n_layers)
                    .map_err(|source| ModelError::Policy { policy: policy.to_string(), source })?;
                Ok(TableState { rule, page_pos: Vec::new(), mass: Vec::new() })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(Evictor { policy, tables, evicted_pages: 0 })
    }

    /// The policy.
    pub fn policy(&self) -> KvPolicy {
        self.policy
    }

    /// Tables the sequence has: 1, or one per layer.
    pub fn n_tables(&self) -> usize {
        self.tables.len()
    }

    /// Table `i`'s resolved rule.
    pub fn rule(&self, i: usize) -> Option<EvictionRule> {
        self.tables.get(i).map(|t| t.rule)
    }

    /// Whether the policy evicts at all.
    pub fn evicts(&self) -> bool {
        self.policy.evicts()
    }

    /// The most pages the sequence holds at once over all its tables (`None`: unbounded).
    pub fn max_pages(&self, block_size: usize) -> Option<usize> {
        self.tables.iter().map(|t| t.rule.max_pages(block_size)).sum()
    }

    /// Pages let go of so far over all tables (freed, or left to their other holders).
    pub fn evicted_pages(&self) -> usize {
        self.evicted_pages
    }

    /// Accumulated attention mass per logical page of table `i` (H2O, PyramidKV; empty
    /// otherwise).
    pub fn mass(&self, i: usize) -> &[f32] {
        self.tables.get(i).map_or(&[], |t| &t.mass)
    }

    /// Forgets everything (the sequence's tables were emptied, e.g. by preemption).
    pub fn reset(&mut self) {
        for t in &mut self.tables {
            t.page_pos.clear();
            t.mass.clear();
        }
    }

    /// Evicts pages of each table until its rule holds for the next step (which opens a new
    /// page if the last one is full). Returns how many pages the tables let go of.
    pub fn evict(
        &mut self,
        cache: &mut KvCache,
        tables: &mut [SeqTable],
    ) -> Result<usize, ModelError> {
        Ok(self.evict_pages(cache, tables)?.len())
    }

    /// [`evict`](Self::evict), returning every page let go of.
    ///
    /// A sequence evicts the pages it would evict alone, whoever else holds them: a page a
    /// fork's sibling or a prefix cache holds too is dropped from this sequence's tables
    /// only ([`drop_page`]) and stays allocated to its other holders, so the caller can tell
    /// a prefix cache its page may have become unused. This keeps a sequence's attention,
    /// and so its tokens, independent of what it shares (a fork under a policy gives the
    /// tokens it gives alone).
    pub fn evict_pages(
        &mut self,
        cache: &mut KvCache,
        tables: &mut [SeqTable],
    ) -> Result<Vec<PageId>, ModelError> {
        self.check(tables)?;
        let mut dropped = Vec::new();
        for (st, table) in self.tables.iter_mut().zip(tables.iter_mut()) {
            loop {
                // The rule sees every page as this sequence's own (see above).
                let refcounts = vec![1u32; table.pages().len()];
                let view = SeqView {
                    block_size: table.block_size(),
                    n_tokens: table.len(),
                    mass: &st.mass,
                    refcounts: &refcounts,
                };
                let new_page = table.len() % table.block_size() == 0;
                let Some(i) = st.rule.next_victim(&view, new_page) else { break };
                let victim = drop_page(table, i, cache.pool_mut())
                    .map_err(|source| ModelError::Evict { what: "KV eviction".into(), source })?;
                st.page_pos.remove(i);
                if i < st.mass.len() {
                    st.mass.remove(i);
                }
                dropped.push(victim);
            }
        }
        self.evicted_pages += dropped.len();
        Ok(dropped)
    }

    fn check_tables(&self, tables: &[SeqTable]) -> Result<(), ModelError> {
        if tables.len() != self.tables.len() {
            return Err(ModelError::Invalid(format!(
                "KV policy {}: {} block tables given, the sequence has {}",
                self.policy,
                tables.len(),
                self.tables.len()
            )));
        }
        Ok(())
    }

    /// Checks the state describes `tables`: one entry per table, one position per page
    /// (and one mass per page where the policy scores pages).
    pub fn check(&self, tables: &[SeqTable]) -> Result<(), ModelError> {
        self.check_tables(tables)?;
        let mass = self.policy.needs_attention_mass();
        for (i, (st, t)) in self.tables.iter().zip(tables).enumerate() {
            let pages = t.pages().len();
            if st.page_pos.len() != pages || (mass && st.mass.len() != pages) {
                return Err(ModelError::Invalid(format!(
                    "KV eviction state of table {i} is out of step: {pages} pages, {} positions, \
                     {} masses",
                    st.page_pos.len(),
                    st.mass.len()
                )));
            }
        }
        Ok(())
    }

    /// Records pages opened by appending `n` tokens at text positions `pos0..pos0 + n` to
    /// every table.
    pub fn appended(&mut self, tables: &[SeqTable], pos0: usize, n: usize) {
        let mass = self.policy.needs_attention_mass();
        for (st, table) in self.tables.iter_mut().zip(tables) {
            let bs = table.block_size();
            let start = table.len() - n;
            for c in start..table.len() {
                if c % bs == 0 {
                    st.page_pos.push(pos0 + (c - start));
                }
            }
            if mass {
                st.mass.resize(st.page_pos.len(), 0.0);
            }
        }
    }

    /// Cached tokens of table `i` whose text position is below `n` (for truncating a
    /// sequence to `n` tokens): every page is a run of consecutive positions.
    pub fn cached_below(&self, i: usize, table: &SeqTable, n: usize) -> usize {
        let bs = table.block_size();
        let Some(st) = self.tables.get(i) else { return 0 };
        st.page_pos
            .iter()
            .enumerate()
            .map(|(j, &p)| {
                let held = (table.len() - j * bs).min(bs);
                n.saturating_sub(p).min(held)
            })
            .sum()
    }

    /// Forgets pages past the tables' (shortened) ends.
    pub fn truncated(&mut self, tables: &[SeqTable]) {
        for (st, table) in self.tables.iter_mut().zip(tables) {
            let pages = table.pages().len();
            st.page_pos.truncate(pages);
            st.mass.truncate(pages);
        }
    }

    /// Adds the attention mass the last step's queries put on each page (H2O, PyramidKV):
    /// `queries` are `[layer][token][n_heads × head_dim]` for the step's `n` tokens, which
    /// are the last `n` of every table. With one table, a page's mass is summed over all
    /// layers; with one table per layer, table `l` gets layer `l`'s mass only.
    pub fn add_mass(
        &mut self,
        cache: &KvCache,
        tables: &[SeqTable],
        config: &LlamaConfig,
        queries: &[f32],
        n: usize,
    ) -> Result<(), ModelError> {
        if !self.policy.needs_attention_mass() || n == 0 {
            return Ok(());
        }
        self.check_tables(tables)?;
        let q_dim = config.n_heads * config.head_dim;
        if queries.len() != config.n_layers * n * q_dim {
            return Err(ModelError::Invalid(format!(
                "attention mass: {} recorded query values, expected {} layers × {n} tokens × {q_dim}",
                queries.len(),
                config.n_layers
            )));
        }
        let per_layer = tables.len() > 1 || cache.per_layer();
        let job = MassJob { config, tables, n, queries, per_layer };
        let masses = match cache.store() {
            KvStore::F32(kv) => page_mass(kv, &job),
            KvStore::F16(kv) => page_mass(kv, &job),
            KvStore::Bf16(kv) => page_mass(kv, &job),
            KvStore::Q8_0(kv) => page_mass(kv, &job),
            KvStore::Q4_0(kv) => page_mass(kv, &job),
        }?;
        for ((st, table), add) in self.tables.iter_mut().zip(tables).zip(masses) {
            st.mass.resize(table.pages().len(), 0.0);
            for (m, add) in st.mass.iter_mut().zip(add) {
                *m += add;
            }
        }
        Ok(())
    }
}

/// What [`page_mass`] scores: the step's `n` queries of every layer against `tables`.
struct MassJob<'a> {
    config: &'a LlamaConfig,
    tables: &'a [SeqTable],
    n: usize,
    queries: &'a [f32],
    /// Table `l` holds layer `l`'s pages, in slab layer 0.
    per_layer: bool,
}

/// Attention mass per logical page of each table: for each layer, query head and step token
/// (at cache index `first + t` of the layer's table), softmax of `q · k / √d` over cache
/// indices `0..=first + t`, summed into the page of each key; over all layers into the one
/// table, or each layer into its own. Layers in parallel.
fn page_mass<T: KvFormat + bytemuck::Pod>(
    kv: &KvPages<T, KvSlab<T>>,
    job: &MassJob<'_>,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let c = job.config;
    let n = job.n;
    let (hd, n_heads) = (c.head_dim, c.n_heads);
    let group = (n_heads / c.n_kv_heads.max(1)).max(1);
    let bs = kv.config().block_size;
    let scale = 1.0 / (hd as f32).sqrt();
    let q_layer = n * n_heads * hd;
    let per_layer: Vec<Vec<f32>> = (0..c.n_layers)
        .into_par_iter()
        .map(|l| {
            let (table, kl) = if job.per_layer { (&job.tables[l], 0) } else { (&job.tables[0], l) };
            let pages = table.pages();
            let first = table.len() - n;
            let mut mass = vec![0.0f32; pages.len()];
            let mut scores = Vec::with_capacity(first + n);
            let ql = &job.queries[l * q_layer..(l + 1) * q_layer];
            for t in 0..n {
                let seen = first + t + 1;
                for h in 0..n_heads {
                    let q = &ql[(t * n_heads + h) * hd..][..hd];
                    let g = h / group;
                    scores.clear();
                    for j in 0..seen {
                        let key = kv.key(kl, pages[j / bs], g, j % bs)?;
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
        .map_err(|source| ModelError::Kv { what: "attention mass".into(), source })?;
    if job.per_layer {
        return Ok(per_layer);
    }
    let mut total = vec![0.0f32; job.tables[0].pages().len()];
    for m in per_layer {
        total.iter_mut().zip(m).for_each(|(t, m)| *t += m);
    }
    Ok(vec![total])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvType;
    use pagoda_core::evict::Budget;

    fn tiny() -> LlamaConfig {
        LlamaConfig { vocab_size: 10, context_length: 64, ..LlamaConfig::llama(2, 8, 16, 2, 1, 4) }
    }

    #[test]
    fn sink_window_keeps_memory_bounded_and_positions_known() {
        let c = tiny();
        let policy = KvPolicy::SinkWindow { sink: 2, window: 8 };
        let mut ev = Evictor::new(policy, 64, 4, 2).unwrap();
        let max = ev.max_pages(4).unwrap();
        let mut cache = KvCache::new(&c, KvType::F32, max, 4).unwrap();
        let mut table = cache.new_table();
        let mut pos = 0;
        for _ in 0..100 {
            ev.evict(&mut cache, std::slice::from_mut(&mut table)).unwrap();
            // One page-aligned step.
            let n = 4 - table.len() % 4;
            cache.append(&mut table, n).unwrap();
            ev.appended(std::slice::from_ref(&table), pos, n);
            pos += n;
            assert!(cache.pages_in_use() <= max);
            cache.pool().check_invariants().unwrap();
        }
        // Sink page at position 0, the rest the most recent positions, consecutive.
        let page_pos = &ev.tables[0].page_pos;
        assert_eq!(page_pos[0], 0);
        let tail: Vec<usize> = page_pos[1..].to_vec();
        let want: Vec<usize> = (0..tail.len()).map(|i| pos - 4 * (tail.len() - i)).collect();
        assert_eq!(tail, want);
        assert_eq!(ev.cached_below(0, &table, pos), table.len());
        assert_eq!(ev.cached_below(0, &table, pos - 2), table.len() - 2);
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
        let mut ev = Evictor::new(KvPolicy::H2o(Budget::Tokens(16)), 64, 4, 2).unwrap();
        let tables = std::slice::from_ref(&table);
        ev.appended(tables, 0, 10);
        let n = 3;
        let queries: Vec<f32> = (0..2 * n * 8).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
        ev.add_mass(&cache, tables, &c, &queries, n).unwrap();
        // Each of 2 layers × 2 heads × 3 queries distributes mass 1.
        let total: f32 = ev.mass(0).iter().sum();
        assert!((total - 12.0).abs() < 1e-4, "{total}");
        assert_eq!(ev.mass(0).len(), 3);
        let err = ev.add_mass(&cache, tables, &c, &queries[1..], n).unwrap_err();
        assert!(err.to_string().contains("recorded query values"), "{err}");
    }
}
