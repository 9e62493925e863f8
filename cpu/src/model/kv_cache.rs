//! The paged KV cache of a model: one page pool, one slab of K/V pages, any number of
//! sequences (block tables) drawing pages from it.
//!
//! ```text
//!  BlockPool (refcounts, free list)      KvPages (all layers' K and V, page-major)
//!      │ hands out PageIds                   ▲ read/written at (layer, page, slot)
//!      ▼                                     │
//!  BlockTable per sequence: logical page i → PageId, token count
//! ```

use half::f16;
use pagoda_core::kv::{KvConfig, KvElement, KvPages};
use pagoda_core::pool::{BlockPool, PageEntry, PageId};
use pagoda_core::table::{BlockTable, CopyOnWrite};

use super::{LlamaConfig, ModelError};

/// Element type of the KV pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// 4 bytes per value.
    F32,
    /// 2 bytes per value (llama.cpp's default).
    #[default]
    F16,
}

impl KvType {
    /// Parses `f32` / `f16`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(KvType::F32),
            "f16" => Some(KvType::F16),
            _ => None,
        }
    }

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
}

/// The page slab, by element type.
#[derive(Debug)]
pub enum KvStore {
    /// f32 pages.
    F32(KvPages<f32, Vec<f32>>),
    /// f16 pages.
    F16(KvPages<f16, Vec<f16>>),
}

/// A sequence's block table, growable.
pub type SeqTable = BlockTable<Vec<PageId>>;

/// Pool + page storage for one model.
#[derive(Debug)]
pub struct KvCache {
    pool: BlockPool<Vec<PageEntry>>,
    store: KvStore,
    config: KvConfig,
    kv_type: KvType,
}

fn slab<T: KvElement>(config: KvConfig) -> Result<KvPages<T, Vec<T>>, ModelError> {
    let len = config.slab_len().map_err(|e| ModelError::Invalid(format!("KV cache: {e}")))?;
    KvPages::new(config, vec![T::default(); len])
        .map_err(|e| ModelError::Invalid(format!("KV cache: {e}")))
}

impl KvCache {
    /// A cache of `n_pages` pages of `block_size` tokens for model shape `c`.
    pub fn new(
        c: &LlamaConfig,
        kv_type: KvType,
        n_pages: usize,
        block_size: usize,
    ) -> Result<Self, ModelError> {
        if n_pages == 0 || block_size == 0 {
            return Err(ModelError::Invalid("KV cache needs at least one page of one slot".into()));
        }
        let mut config = KvConfig::new(c.n_layers, c.n_kv_heads, c.head_dim, n_pages);
        config.block_size = block_size;
        let store = match kv_type {
            KvType::F32 => KvStore::F32(slab(config)?),
            KvType::F16 => KvStore::F16(slab(config)?),
        };
        let pool = BlockPool::new(vec![PageEntry::default(); n_pages])
            .map_err(|e| ModelError::Invalid(format!("KV cache: {e}")))?;
        Ok(KvCache { pool, store, config, kv_type })
    }

    /// A new, empty sequence table.
    pub fn new_table(&self) -> SeqTable {
        BlockTable::new(self.config.block_size, Vec::new()).expect("block size checked in new")
    }

    /// The page pool.
    pub fn pool(&self) -> &BlockPool<Vec<PageEntry>> {
        &self.pool
    }

    /// The page pool, mutably (for tables to take and give back pages).
    pub fn pool_mut(&mut self) -> &mut BlockPool<Vec<PageEntry>> {
        &mut self.pool
    }

    /// The page storage.
    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// The page storage, mutably (the forward pass writes K/V).
    pub fn store_mut(&mut self) -> &mut KvStore {
        &mut self.store
    }

    /// The storage layout.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Element type.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Tokens per page.
    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    /// Bytes of one page across all layers (K and V).
    pub fn page_bytes(&self) -> usize {
        2 * self.config.n_layers
            * self.config.n_kv_heads
            * self.config.head_dim
            * self.config.block_size
            * self.kv_type.bytes()
    }

    /// Appends `n` token slots to `table`, taking pages from the pool and performing
    /// copy-on-write of a shared last page. All or nothing: on error the table is
    /// truncated back to its old length.
    pub fn append(&mut self, table: &mut SeqTable, n: usize) -> Result<(), ModelError> {
        let old = table.len();
        for _ in 0..n {
            match table.append_slot(&mut self.pool) {
                Ok(outcome) => {
                    if let Some(cow) = outcome.copy {
                        self.copy_page(cow);
                    }
                }
                Err(e) => {
                    let _ = table.truncate(old, &mut self.pool);
                    return Err(ModelError::KvFull(format!(
                        "no free KV page for token {} of the sequence ({e}; {} pages of {} tokens)",
                        table.len() + 1,
                        self.pool.capacity(),
                        self.block_size()
                    )));
                }
            }
        }
        Ok(())
    }

    fn copy_page(&mut self, cow: CopyOnWrite) {
        let r = match &mut self.store {
            KvStore::F32(p) => p.copy_page(cow.from, cow.to, cow.tokens),
            KvStore::F16(p) => p.copy_page(cow.from, cow.to, cow.tokens),
        };
        r.expect("pages handed out by this cache's pool are in range");
    }

    /// Gives every page of `table` back (pages still shared stay allocated).
    pub fn free(&mut self, table: &mut SeqTable) {
        let _ = table.free(&mut self.pool);
    }

    /// Shrinks `table` to `n` tokens, giving back the pages it no longer needs.
    pub fn truncate(&mut self, table: &mut SeqTable, n: usize) {
        let _ = table.truncate(n, &mut self.pool);
    }

    /// Pages in use (held by at least one table).
    pub fn pages_in_use(&self) -> usize {
        self.pool.used_count()
    }

    /// Bytes of the pages in use.
    pub fn bytes_in_use(&self) -> usize {
        self.pages_in_use() * self.page_bytes()
    }
}
