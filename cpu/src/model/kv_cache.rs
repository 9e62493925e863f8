//! The paged KV cache of a model: one page pool, one slab of K/V pages, any number of
//! sequences (block tables) drawing pages from it.
//!
//! ```text
//!  BlockPool (refcounts, free list)      KvPages (all layers' K and V, page-major)
//!      │ hands out PageIds                   ▲ read/written at (layer, page, slot)
//!      ▼                                     │
//!  BlockTable per sequence: logical page i → PageId, token count
//! ```
//!
//! Two page shapes ([`KvCache::new`], [`KvCache::new_per_layer`]):
//!
//! ```text
//!   shared (default): a page holds bs tokens of EVERY layer; one table per sequence
//!       slab = [layer 0: page 0 | page 1 | …] [layer 1: page 0 | page 1 | …] …
//!   per layer (PyramidKV): a page holds bs tokens of ONE layer; one table per layer
//!       slab = [page 0 | page 1 | …]      (KvPages with n_layers = 1: every layer's
//!                                          table draws from the same pool)
//! ```
//!
//! The per-layer shape lets each layer keep a different set of pages: a page one layer drops
//! goes back to the common pool, and any layer can take it next.

use half::{bf16, f16};
use pagoda_core::attention::{AttnConfig, AttnError};
use pagoda_core::kv::{KvConfig, KvFormat, KvPages};
use pagoda_core::pool::{BlockPool, PageEntry, PageId};
use pagoda_core::quant::{BlockQ4_0, BlockQ8_0};
use pagoda_core::table::{BlockTable, CopyOnWrite};

use super::kv_slab::KvSlab;
use super::{KvTransform, LlamaConfig, ModelError};
use crate::kernels::SimdLevel;

/// Storage format of the KV pages (`--kv-type`).
///
/// | name   | stores                                   | bytes per value |
/// |--------|------------------------------------------|-----------------|
/// | `f32`  | f32                                      | 4               |
/// | `f16`  | IEEE half (llama.cpp's default)          | 2               |
/// | `bf16` | bfloat16 (f32's range, 8 mantissa bits)  | 2               |
/// | `q8_0` | ggml Q8_0: 32 i8 + one f16 scale         | 34 / 32         |
/// | `q4_0` | ggml Q4_0: 32 nibbles + one f16 scale    | 18 / 32         |
///
/// The block formats need `head_dim` to be a multiple of 32, and store every key and value
/// row in the model's calibrated [`KvTransform`] basis: keys less a per-channel offset and
/// rescaled per channel (queries inversely), then keys and values rotated by the orthonormal
/// Walsh–Hadamard transform of each head (`pagoda_core::ops::Hadamard`: runs of the largest power of two
/// dividing `head_dim`) before quantizing. The model moves the queries into the same basis
/// and the attention output back, so the transform changes only the rounding (an outlier
/// coordinate, or an offset every token shares, no longer sets a block's scale). See
/// [`KvType::rotates`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// 4 bytes per value.
    F32,
    /// 2 bytes per value (llama.cpp's default).
    #[default]
    F16,
    /// 2 bytes per value, bfloat16.
    Bf16,
    /// 34 bytes per 32 values.
    Q8_0,
    /// 18 bytes per 32 values.
    Q4_0,
}

impl KvType {
    /// Every type, in the order of [`KvType::NAMES`].
    pub const ALL: [KvType; 5] =
        [KvType::F32, KvType::F16, KvType::Bf16, KvType::Q8_0, KvType::Q4_0];
    /// The names [`from_name`](Self::from_name) accepts.
    pub const NAMES: [&'static str; 5] = ["f32", "f16", "bf16", "q8_0", "q4_0"];

    /// Whether pages of this type hold rows in the [`KvTransform`] basis (Hadamard-rotated;
    /// the block formats, q8_0 and q4_0): see the type's docs.
    pub fn rotates(self) -> bool {
        matches!(self, KvType::Q8_0 | KvType::Q4_0)
    }

    /// Parses `f32` / `f16` / `bf16` / `q8_0` / `q4_0`.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::NAMES.iter().position(|&n| n == s).map(|i| Self::ALL[i])
    }

    /// The name [`from_name`](Self::from_name) parses.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|&t| t == self).expect("ALL lists every type")]
    }

    /// KV bytes one token takes in a model of shape `c`, all layers, K and V:
    /// `n_layers × 2 × n_kv_heads × (bytes of head_dim values)`. Errors if `head_dim` does
    /// not fit the format's blocks.
    pub fn bytes_per_token(self, c: &LlamaConfig) -> Result<usize, ModelError> {
        let kc = KvConfig::new(c.n_layers, c.n_kv_heads, c.head_dim, 1);
        let r = match self {
            KvType::F32 => kc.bytes_per_token::<f32>(),
            KvType::F16 => kc.bytes_per_token::<f16>(),
            KvType::Bf16 => kc.bytes_per_token::<bf16>(),
            KvType::Q8_0 => kc.bytes_per_token::<BlockQ8_0>(),
            KvType::Q4_0 => kc.bytes_per_token::<BlockQ4_0>(),
        };
        r.map_err(|e| kv_error(self, e))
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn kv_error(t: KvType, e: pagoda_core::kv::KvError) -> ModelError {
    ModelError::Kv { what: format!("KV cache ({t} pages)"), source: e }
}

/// The page slab, by format. Every arm is a [`KvPages`]; the forward pass is generic over
/// the format and dispatches once per call.
#[derive(Debug)]
pub enum KvStore {
    /// f32 pages.
    F32(KvPages<f32, KvSlab<f32>>),
    /// f16 pages.
    F16(KvPages<f16, KvSlab<f16>>),
    /// bf16 pages.
    Bf16(KvPages<bf16, KvSlab<bf16>>),
    /// q8_0 pages (blocks of 32 values).
    Q8_0(KvPages<BlockQ8_0, KvSlab<BlockQ8_0>>),
    /// q4_0 pages (blocks of 32 values).
    Q4_0(KvPages<BlockQ4_0, KvSlab<BlockQ4_0>>),
}

/// A causal paged attention over pages of format `T`, with the contract of
/// [`crate::attention::paged_attention`] (`level`, `kv`, `layer`, `pages`, `n_ctx`, `q`, `out`,
/// `cfg`): the forward pass takes one per format.
pub(crate) type AttentionFn<T> = fn(
    SimdLevel,
    &KvPages<T, KvSlab<T>>,
    usize,
    &[PageId],
    usize,
    &[f32],
    &mut [f32],
    &AttnConfig,
) -> Result<(), AttnError>;

/// How the forward pass attends over pages of format `T`: the exact numerics' kernel (and
/// the one it takes for batches of at least [`crate::attention::TILED_MIN_ROWS`] rows, as
/// llama.cpp does, where it has one), whether fast numerics' aligned kernel ([`crate::attention::paged_attention_aligned`]) runs instead,
/// and the basis the pages' rows are stored in ([`KvType::rotates`], [`KvTransform`]):
/// queries, keys and values move into it before the kernel, its output moves back.
pub(crate) struct Attention<'t, T> {
    pub exact: AttentionFn<T>,
    pub exact_batched: Option<AttentionFn<T>>,
    pub fast: bool,
    pub transform: Option<&'t KvTransform>,
}

impl<T> Clone for Attention<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Attention<'_, T> {}

/// A sequence's block table, growable.
pub type SeqTable = BlockTable<Vec<PageId>>;

/// Pool + page storage for one model.
#[derive(Debug)]
pub struct KvCache {
    pool: BlockPool<Vec<PageEntry>>,
    store: KvStore,
    config: KvConfig,
    kv_type: KvType,
    page_bytes: usize,
    per_layer: bool,
    /// The model's layers (a sequence's table count under `per_layer`).
    n_layers: usize,
}

fn slab<T: KvFormat + bytemuck::Pod>(
    config: KvConfig,
    t: KvType,
) -> Result<KvPages<T, KvSlab<T>>, ModelError> {
    let len = config.slab_units::<T>().map_err(|e| kv_error(t, e))?;
    let bytes = len.saturating_mul(size_of::<T>());
    let slab = KvSlab::zeroed(len).map_err(|e| {
        ModelError::Invalid(format!("KV cache ({t} pages): cannot map {bytes} bytes: {e}"))
    })?;
    KvPages::new(config, slab).map_err(|e| kv_error(t, e))
}

impl KvCache {
    /// A cache of `n_pages` pages of `block_size` tokens for model shape `c`; a page holds
    /// its tokens' K/V in every layer, and a sequence has one table.
    pub fn new(
        c: &LlamaConfig,
        kv_type: KvType,
        n_pages: usize,
        block_size: usize,
    ) -> Result<Self, ModelError> {
        Self::with_shape(c, kv_type, n_pages, block_size, false)
    }

    /// A cache of `n_pages` single-layer pages of `block_size` tokens for model shape `c`: a
    /// sequence has one table per layer, all drawing from this pool (see the module docs).
    pub fn new_per_layer(
        c: &LlamaConfig,
        kv_type: KvType,
        n_pages: usize,
        block_size: usize,
    ) -> Result<Self, ModelError> {
        Self::with_shape(c, kv_type, n_pages, block_size, true)
    }

    fn with_shape(
        c: &LlamaConfig,
        kv_type: KvType,
        n_pages: usize,
        block_size: usize,
        per_layer: bool,
    ) -> Result<Self, ModelError> {
        if n_pages == 0 || block_size == 0 || c.n_layers == 0 {
            return Err(ModelError::Invalid(
                "KV cache needs at least one page of one slot and one layer".into(),
            ));
        }
        let slab_layers = if per_layer { 1 } else { c.n_layers };
        let mut config = KvConfig::new(slab_layers, c.n_kv_heads, c.head_dim, n_pages);
        config.block_size = block_size;
        let store = match kv_type {
            KvType::F32 => KvStore::F32(slab(config, kv_type)?),
            KvType::F16 => KvStore::F16(slab(config, kv_type)?),
            KvType::Bf16 => KvStore::Bf16(slab(config, kv_type)?),
            KvType::Q8_0 => KvStore::Q8_0(slab(config, kv_type)?),
            KvType::Q4_0 => KvStore::Q4_0(slab(config, kv_type)?),
        };
        let page_bytes = kv_type.bytes_per_token(c)? / c.n_layers * slab_layers * block_size;
        let mut entries = Vec::new();
        entries.try_reserve_exact(n_pages).map_err(|_| ModelError::OutOfMemory {
            what: format!("the KV page table of {n_pages} pages"),
            bytes: n_pages.checked_mul(size_of::<PageEntry>()),
        })?;
        entries.resize(n_pages, PageEntry::default());
        let pool =
            BlockPool::new(entries).map_err(|e| ModelError::Invalid(format!("KV cache: {e}")))?;
        Ok(KvCache { pool, store, config, kv_type, page_bytes, per_layer, n_layers: c.n_layers })
    }

    /// Whether pages are single-layer (one table per layer, [`new_per_layer`](Self::new_per_layer)).
    pub fn per_layer(&self) -> bool {
        self.per_layer
    }

    /// Block tables per sequence: one per layer for single-layer pages, else one.
    pub fn table_groups(&self) -> usize {
        if self.per_layer {
            self.n_layers
        } else {
            1
        }
    }

    /// The slab layer holding model layer `layer`'s K/V: `layer`, or 0 for single-layer pages.
    pub fn slab_layer(&self, layer: usize) -> usize {
        if self.per_layer {
            0
        } else {
            layer
        }
    }

    /// A new, empty sequence table.
    pub fn new_table(&self) -> SeqTable {
        BlockTable::new(self.config.block_size, Vec::new()).expect("block size checked in new")
    }

    /// The page pool.
    pub fn pool(&self) -> &BlockPool<Vec<PageEntry>> {
        &self.pool
    }

    /// The page pool, mutably: for this crate's page operations only (the engine's
    /// [`KvManager`](crate::engine::KvManager), eviction, sliding windows). Outside it the
    /// pool is read-only, so its refcounts always match the holders the manager knows.
    pub(crate) fn pool_mut(&mut self) -> &mut BlockPool<Vec<PageEntry>> {
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

    /// Storage format.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Tokens per page.
    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    /// Bytes of one page (K and V) across all layers, or of one layer for single-layer pages.
    pub fn page_bytes(&self) -> usize {
        self.page_bytes
    }

    /// Bytes one token takes in one page (K and V): `page_bytes / block_size` (all layers,
    /// or one layer for single-layer pages).
    pub fn bytes_per_token(&self) -> usize {
        self.page_bytes / self.config.block_size
    }

    /// Appends `n` token slots to `table`, taking pages from the pool and performing
    /// copy-on-write of a shared last page. All or nothing: on error the table is
    /// truncated back to its old length.
    pub fn append(&mut self, table: &mut SeqTable, n: usize) -> Result<(), ModelError> {
        let old = table.len();
        let bs = self.block_size();
        // Pages the append takes (a copy-on-write copy of a shared last page not counted).
        let needed = (old + n).div_ceil(bs).saturating_sub(table.pages().len());
        let free = self.pool.free_count();
        for _ in 0..n {
            match table.append_slot(&mut self.pool) {
                Ok(outcome) => {
                    if let Some(cow) = outcome.copy {
                        self.copy_page(cow);
                    }
                }
                Err(_) => {
                    let _ = table.truncate(old, &mut self.pool);
                    return Err(ModelError::OutOfPages { needed: needed.max(1), free });
                }
            }
        }
        Ok(())
    }

    fn copy_page(&mut self, cow: CopyOnWrite) {
        let r = match &mut self.store {
            KvStore::F32(p) => p.copy_page(cow.from, cow.to, cow.tokens),
            KvStore::F16(p) => p.copy_page(cow.from, cow.to, cow.tokens),
            KvStore::Bf16(p) => p.copy_page(cow.from, cow.to, cow.tokens),
            KvStore::Q8_0(p) => p.copy_page(cow.from, cow.to, cow.tokens),
            KvStore::Q4_0(p) => p.copy_page(cow.from, cow.to, cow.tokens),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's attention shape: 30 layers, 3 kv heads of 64.
    fn smollm2() -> LlamaConfig {
        LlamaConfig {
            rope_base: 100_000.0,
            vocab_size: 49_152,
            context_length: 8192,
            ..LlamaConfig::llama(30, 576, 1536, 9, 3, 64)
        }
    }

    #[test]
    fn names_round_trip() {
        for t in KvType::ALL {
            assert_eq!(KvType::from_name(t.name()), Some(t));
        }
        assert_eq!(KvType::from_name("q8"), None);
        assert_eq!(KvType::from_name("F16"), None);
    }

    #[test]
    fn bytes_per_token_of_each_format() {
        let c = smollm2();
        let got = KvType::ALL.map(|t| t.bytes_per_token(&c).unwrap());
        // 30 × 2 × 3 = 180 rows of 64 values per token.
        assert_eq!(got, [180 * 256, 180 * 128, 180 * 128, 180 * 68, 180 * 36]);
        let cache = KvCache::new(&c, KvType::Q8_0, 2, 16).unwrap();
        assert_eq!(cache.page_bytes(), 16 * 180 * 68);
        assert_eq!(cache.bytes_per_token(), 180 * 68);
    }

    #[test]
    fn per_layer_pages_hold_one_layer() {
        let c = smollm2();
        let shared = KvCache::new(&c, KvType::F16, 4, 16).unwrap();
        let per_layer = KvCache::new_per_layer(&c, KvType::F16, 4 * 30, 16).unwrap();
        assert!(!shared.per_layer() && per_layer.per_layer());
        assert_eq!(per_layer.page_bytes() * 30, shared.page_bytes());
        assert_eq!(per_layer.config().n_layers, 1);
        assert_eq!((shared.slab_layer(7), per_layer.slab_layer(7)), (7, 0));
        // The same bytes for the same tokens.
        let slab = |k: &KvCache| match k.store() {
            KvStore::F16(p) => p.config().slab_bytes::<half::f16>().unwrap(),
            _ => unreachable!("f16 cache"),
        };
        assert_eq!(slab(&shared), slab(&per_layer));
    }

    #[test]
    fn block_formats_reject_head_dims_not_a_multiple_of_32() {
        let c = LlamaConfig { head_dim: 48, ..smollm2() };
        let err = KvCache::new(&c, KvType::Q8_0, 2, 16).unwrap_err().to_string();
        assert!(err.contains("q8_0") && err.contains("head_dim 48"), "{err}");
        assert!(KvCache::new(&c, KvType::Bf16, 2, 16).is_ok());
    }
}
