//! Sliding-window layers on the paged cache: a windowed layer keeps only the pages that
//! hold its last `W` tokens.
//!
//! A model with windowed layers (Gemma 3: 5 of every 6 layers see the last 512 positions)
//! runs in a cache of single-layer pages with one block table per layer
//! ([`KvCache::new_per_layer`]). After every forward pass, [`drop_out_of_window`] gives back
//! the front pages of each windowed layer's table that hold none of its last `W` tokens:
//!
//! ```text
//! W = 8, 4 tokens per page, 14 tokens cached (positions 0..=13):
//!   global layer   [0-3][4-7][8-11][12-13]        every page
//!   windowed layer      [4-7][8-11][12-13]        positions 6..=13 are the last 8;
//!                                                 page 0-3 holds none of them → pool
//! ```
//!
//! **The rule**: a windowed table of `len` tokens keeps page `k` (its tokens at table indices
//! `k·P .. (k+1)·P`) iff `(k+1)·P > len - W`. The last `W` tokens are what the query of the
//! last token sees (recomputing its logits after a truncation of one token), and a superset
//! of what the next token sees. Only whole pages leave, only from the front, so a table
//! index and a position differ by the same offset for every token of the table: the
//! attention's window (in table indices, `pagoda_core::attention::AttnConfig::window`) is
//! the window in positions.
//!
//! Memory: global layers × N tokens + windowed layers × (at most `⌈W/P⌉ + 1` pages between
//! steps, plus the pages of the step being processed).

use pagoda_core::evict::drop_page;
use pagoda_core::pool::PageId;

use super::kv_cache::{KvCache, SeqTable};
use super::{LlamaConfig, ModelError};

/// Pages a windowed table of `len` tokens may give back under the rule (module docs), with
/// `P = block_size` tokens per page: the whole pages before index `len - W`.
pub fn droppable_pages(len: usize, window: usize, block_size: usize) -> usize {
    // Never the last page (the table's partial page stays): len - W < len.
    len.saturating_sub(window) / block_size
}

/// The most pages a windowed layer's table holds while a step of up to `step` new tokens is
/// processed: the `⌈W/P⌉ + 1` pages kept between steps, plus the step's (`⌈step/P⌉ + 1`,
/// one for a partly filled page).
pub fn max_window_pages(window: usize, step: usize, block_size: usize) -> usize {
    window.div_ceil(block_size) + 1 + step.div_ceil(block_size) + 1
}

/// Gives back, for each windowed layer `l` of `config`, the front pages of `tables[l]` the
/// rule no longer keeps (module docs). A page another holder shares (a fork's sibling, a
/// prefix cache) leaves this sequence's table only. Returns every page let go of; `tables`
/// must be one per layer.
pub fn drop_out_of_window(
    cache: &mut KvCache,
    tables: &mut [SeqTable],
    config: &LlamaConfig,
) -> Result<Vec<PageId>, ModelError> {
    if tables.len() != config.n_layers {
        return Err(ModelError::Invalid(format!(
            "{} block tables for a model of {} layers with sliding windows (needs one per layer)",
            tables.len(),
            config.n_layers
        )));
    }
    let mut dropped = Vec::new();
    for (l, table) in tables.iter_mut().enumerate() {
        let Some(w) = config.window(l) else { continue };
        for _ in 0..droppable_pages(table.len(), w, table.block_size()) {
            let page = drop_page(table, 0, cache.pool_mut()).map_err(|source| {
                ModelError::Evict { what: format!("sliding window, layer {l}"), source }
            })?;
            dropped.push(page);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keeps_the_pages_of_the_last_w_tokens() {
        // The module docs' picture: W 8, P 4, 14 tokens → page 0 goes.
        assert_eq!(droppable_pages(14, 8, 4), 1);
        // 16 tokens: positions 8..=15 are the last 8 → pages 0 and 1 go.
        assert_eq!(droppable_pages(16, 8, 4), 2);
        assert_eq!(droppable_pages(8, 8, 4), 0);
        assert_eq!(droppable_pages(3, 8, 4), 0);
        // A window of 1 keeps just the page of the last token.
        assert_eq!(droppable_pages(9, 1, 4), 2);
        for len in 0..200usize {
            for w in 1..40 {
                let kept_pages = len.div_ceil(4) - droppable_pages(len, w, 4);
                // Kept pages cover the last min(W, len) tokens, and no more than needed.
                assert!(kept_pages * 4 >= w.min(len), "len {len} w {w}");
                assert!(kept_pages <= w.div_ceil(4) + 1, "len {len} w {w}");
            }
        }
    }

    #[test]
    fn drop_out_of_window_frees_only_windowed_layers() {
        let mut c = LlamaConfig { vocab_size: 10, ..LlamaConfig::llama(3, 8, 16, 2, 1, 4) };
        c.layer_windows = vec![Some(8), None, Some(5)];
        let mut cache = KvCache::new_per_layer(&c, crate::model::KvType::F32, 30, 4).unwrap();
        let mut tables: Vec<SeqTable> = (0..3).map(|_| cache.new_table()).collect();
        for t in &mut tables {
            cache.append(t, 14).unwrap();
        }
        assert_eq!(cache.pages_in_use(), 12);
        let dropped = drop_out_of_window(&mut cache, &mut tables, &c).unwrap();
        // Layer 0: 14 - 8 = 6 → 1 page; layer 2: 14 - 5 = 9 → 2 pages.
        assert_eq!(dropped.len(), 3);
        assert_eq!(tables.iter().map(|t| t.len()).collect::<Vec<_>>(), vec![14 - 4, 14, 14 - 8]);
        assert_eq!(cache.pages_in_use(), 9);
        let wrong = drop_out_of_window(&mut cache, &mut tables[..1], &c);
        assert!(wrong.is_err());
    }
}
