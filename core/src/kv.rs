//! KV page storage: the keys and values of every layer, in pages, over one caller-provided slab.
//!
//! # Layout
//!
//! ```text
//! slab = [layer 0 | layer 1 | ... ]                         n_layers
//! layer = [page 0 | page 1 | ... ]                          n_pages   (physical PageId order)
//! page  = [ K | V ]                                         2 halves, K first
//! K (and V) = [kv_head 0 | kv_head 1 | ... ]                n_kv_heads
//! kv_head   = [slot 0 | slot 1 | ... | slot bs-1]           block_size token slots
//! slot      = [d 0 | d 1 | ... | d head_dim-1]              head_dim elements
//!
//! one (layer, page):        ┌──────────── K ────────────┐┌──────────── V ────────────┐
//!                           │ h0: t0 t1 .. t15 │ h1: ... ││ h0: t0 t1 .. t15 │ h1: ... │
//!                           └───────────────────────────┘└───────────────────────────┘
//!                              └─ 16 × head_dim contiguous: what decode streams
//! ```
//!
//! Element index of `(layer, page, K|V, kv_head, slot, d)`:
//! `((((layer * n_pages + page) * 2 + kv) * n_kv_heads + kv_head) * block_size + slot) * head_dim + d`.
//!
//! # Why this order
//!
//! The hot loop is decode: for one layer and one kv head, walk the sequence's pages and, per
//! page, dot the query with every key then accumulate every value. With `[kv_head][slot][d]`
//! inside a page, the keys (and then the values) that loop needs are one contiguous run of
//! `block_size × head_dim` elements (16 × 64 × 4 B = 4 KiB for SmolLM2 in f32): sequential,
//! prefetch-friendly, and all `n_heads / n_kv_heads` query heads of the group reuse it while it
//! sits in L1. K and V of one page are adjacent, so a page's whole working set is one region.
//! The cost is on the write side: one token scatters into `n_kv_heads` rows of `head_dim`,
//! which happens once per token and layer, against every later decode step reading it.
//! Layers outermost keeps each layer's pages in one region (the forward pass runs layer by
//! layer), and a page copy for copy-on-write is `2 × n_kv_heads` short `copy_within`s per layer.
//!
//! # Element types
//!
//! [`KvElement`] is implemented for `f32` and `half::f16` (convert on write, widen to f32 on
//! read). `bf16` fits the same trait. A block-quantized page (q8_0: 32 values share a scale)
//! does not have one element per value; it would be a separate storage type with the same
//! layout above, where `head_dim` is stored as `head_dim / 32` blocks per slot.

use core::fmt;
use core::marker::PhantomData;

use crate::pool::PageId;

/// vLLM's default tokens per page.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// An element type a KV page can store: converts to and from `f32`.
pub trait KvElement: Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Widens to `f32` (exact for `f32` and `f16`).
    fn to_f32(self) -> f32;
    /// Narrows from `f32` (round to nearest for `f16`).
    fn from_f32(x: f32) -> Self;
}

impl KvElement for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl KvElement for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

/// Whether a row is a key or a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvHalf {
    /// Keys (first half of a page).
    Key = 0,
    /// Values (second half of a page).
    Value = 1,
}

/// The shape of a KV cache. All sizes in elements unless the name says bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// Transformer layers.
    pub n_layers: usize,
    /// Key/value heads per layer (fewer than query heads under GQA/MQA).
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Tokens per page ([`DEFAULT_BLOCK_SIZE`] unless chosen otherwise).
    pub block_size: usize,
    /// Physical pages (the pool's capacity).
    pub n_pages: usize,
}

impl KvConfig {
    /// A config with the default block size of 16.
    pub fn new(n_layers: usize, n_kv_heads: usize, head_dim: usize, n_pages: usize) -> Self {
        KvConfig { n_layers, n_kv_heads, head_dim, block_size: DEFAULT_BLOCK_SIZE, n_pages }
    }

    /// Elements of one K row or V row for one token: `n_kv_heads × head_dim`.
    pub fn row_len(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Elements of one head's keys (or values) in one page: `block_size × head_dim`.
    pub fn head_run_len(&self) -> usize {
        self.block_size * self.head_dim
    }

    /// Elements of the K half (or V half) of one page of one layer.
    pub fn half_page_len(&self) -> usize {
        self.n_kv_heads * self.head_run_len()
    }

    /// Elements the slab must hold: `n_layers × n_pages × 2 × n_kv_heads × block_size × head_dim`.
    /// Checks every dimension is non-zero and the product fits `usize`.
    pub fn slab_len(&self) -> Result<usize, KvError> {
        let dims =
            [self.n_layers, self.n_pages, 2, self.n_kv_heads, self.block_size, self.head_dim];
        if let Some(pos) = dims.iter().position(|&d| d == 0) {
            let name = ["n_layers", "n_pages", "", "n_kv_heads", "block_size", "head_dim"][pos];
            return Err(KvError::ZeroDimension { name });
        }
        dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(KvError::SizeOverflow)
    }

    /// Bytes the slab takes with element type `T`.
    pub fn slab_bytes<T>(&self) -> Result<usize, KvError> {
        self.slab_len()?.checked_mul(core::mem::size_of::<T>()).ok_or(KvError::SizeOverflow)
    }

    /// Start of `(layer, page, half, kv_head)`'s run of `block_size × head_dim` elements.
    /// Unchecked arithmetic: callers validate indices first.
    fn run_start(&self, layer: usize, page: usize, half: KvHalf, kv_head: usize) -> usize {
        (((layer * self.n_pages + page) * 2 + half as usize) * self.n_kv_heads + kv_head)
            * self.head_run_len()
    }
}

/// What went wrong with KV storage: a bad index or shape, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    /// A config dimension is 0.
    ZeroDimension {
        /// The field's name.
        name: &'static str,
    },
    /// The slab size does not fit `usize`.
    SizeOverflow,
    /// The slab is shorter than [`KvConfig::slab_len`].
    SlabTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements given.
        got: usize,
    },
    /// `layer >= n_layers`.
    LayerOutOfRange {
        /// The index given.
        layer: usize,
        /// The number of layers.
        n_layers: usize,
    },
    /// `page >= n_pages`.
    PageOutOfRange {
        /// The id given.
        page: PageId,
        /// The number of pages.
        n_pages: usize,
    },
    /// `slot >= block_size` (or a token count above `block_size`).
    SlotOutOfRange {
        /// The slot or count given.
        slot: usize,
        /// Tokens per page.
        block_size: usize,
    },
    /// `kv_head >= n_kv_heads`.
    HeadOutOfRange {
        /// The head given.
        kv_head: usize,
        /// Number of kv heads.
        n_kv_heads: usize,
    },
    /// A K or V row does not have `n_kv_heads × head_dim` elements.
    RowLength {
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KvError::ZeroDimension { name } => write!(f, "KV config: {name} must be at least 1"),
            KvError::SizeOverflow => write!(f, "KV config: slab size overflows usize"),
            KvError::SlabTooSmall { needed, got } => {
                write!(f, "KV slab has {got} elements, the config needs {needed}")
            }
            KvError::LayerOutOfRange { layer, n_layers } => {
                write!(f, "KV layer {layer} out of range (n_layers = {n_layers})")
            }
            KvError::PageOutOfRange { page, n_pages } => {
                write!(f, "KV {page} out of range (n_pages = {n_pages})")
            }
            KvError::SlotOutOfRange { slot, block_size } => {
                write!(f, "KV slot {slot} out of range (block_size = {block_size})")
            }
            KvError::HeadOutOfRange { kv_head, n_kv_heads } => {
                write!(f, "KV head {kv_head} out of range (n_kv_heads = {n_kv_heads})")
            }
            KvError::RowLength { expected, got } => {
                write!(f, "K/V row has {got} elements, expected n_kv_heads × head_dim = {expected}")
            }
        }
    }
}

impl core::error::Error for KvError {}

/// Keys and values of all layers in pages, over a caller-provided slab `S`
/// (`&mut [T]`, `&[T]` for read-only use, or with `alloc` a `Vec<T>`). See the module docs
/// for the layout.
#[derive(Debug)]
pub struct KvPages<T, S> {
    config: KvConfig,
    slab: S,
    _element: PhantomData<T>,
}

impl<T: KvElement, S: AsRef<[T]>> KvPages<T, S> {
    /// Wraps `slab`, which must hold at least `config.slab_len()` elements (extra ones are
    /// ignored). Does not clear it: slots are written before they are read.
    pub fn new(config: KvConfig, slab: S) -> Result<Self, KvError> {
        let needed = config.slab_len()?;
        let got = slab.as_ref().len();
        if got < needed {
            return Err(KvError::SlabTooSmall { needed, got });
        }
        Ok(KvPages { config, slab, _element: PhantomData })
    }

    /// The shape.
    #[inline]
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Gives the slab back.
    pub fn into_slab(self) -> S {
        self.slab
    }

    /// Checks `layer` and `page` against the config.
    pub fn check_page(&self, layer: usize, page: PageId) -> Result<(), KvError> {
        let c = &self.config;
        if layer >= c.n_layers {
            return Err(KvError::LayerOutOfRange { layer, n_layers: c.n_layers });
        }
        if page.index() >= c.n_pages {
            return Err(KvError::PageOutOfRange { page, n_pages: c.n_pages });
        }
        Ok(())
    }

    fn check_head(&self, kv_head: usize) -> Result<(), KvError> {
        if kv_head >= self.config.n_kv_heads {
            return Err(KvError::HeadOutOfRange { kv_head, n_kv_heads: self.config.n_kv_heads });
        }
        Ok(())
    }

    fn check_slot(&self, slot: usize) -> Result<(), KvError> {
        if slot >= self.config.block_size {
            return Err(KvError::SlotOutOfRange { slot, block_size: self.config.block_size });
        }
        Ok(())
    }

    /// One kv head's keys or values in one page: `block_size × head_dim` elements,
    /// slot-major (`[slot][d]`). This is the contiguous run decode streams through.
    pub fn head_run(
        &self,
        layer: usize,
        page: PageId,
        half: KvHalf,
        kv_head: usize,
    ) -> Result<&[T], KvError> {
        self.check_page(layer, page)?;
        self.check_head(kv_head)?;
        let start = self.config.run_start(layer, page.index(), half, kv_head);
        Ok(&self.slab.as_ref()[start..start + self.config.head_run_len()])
    }

    /// The key of token `slot` of `page`, for one kv head: `head_dim` elements.
    pub fn key(
        &self,
        layer: usize,
        page: PageId,
        kv_head: usize,
        slot: usize,
    ) -> Result<&[T], KvError> {
        self.row(layer, page, KvHalf::Key, kv_head, slot)
    }

    /// The value of token `slot` of `page`, for one kv head: `head_dim` elements.
    pub fn value(
        &self,
        layer: usize,
        page: PageId,
        kv_head: usize,
        slot: usize,
    ) -> Result<&[T], KvError> {
        self.row(layer, page, KvHalf::Value, kv_head, slot)
    }

    fn row(
        &self,
        layer: usize,
        page: PageId,
        half: KvHalf,
        kv_head: usize,
        slot: usize,
    ) -> Result<&[T], KvError> {
        self.check_slot(slot)?;
        let run = self.head_run(layer, page, half, kv_head)?;
        let hd = self.config.head_dim;
        Ok(&run[slot * hd..(slot + 1) * hd])
    }
}

impl<T: KvElement, S: AsRef<[T]> + AsMut<[T]>> KvPages<T, S> {
    /// Stores one token's keys and values for `layer` at `(page, slot)`. `k` and `v` are
    /// `[kv_head][head_dim]` rows of `n_kv_heads × head_dim` f32s, converted to `T`.
    pub fn write(
        &mut self,
        layer: usize,
        page: PageId,
        slot: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KvError> {
        self.check_page(layer, page)?;
        self.check_slot(slot)?;
        let expected = self.config.row_len();
        for got in [k.len(), v.len()] {
            if got != expected {
                return Err(KvError::RowLength { expected, got });
            }
        }
        let c = self.config;
        let slab = self.slab.as_mut();
        for (half, row) in [(KvHalf::Key, k), (KvHalf::Value, v)] {
            for (h, src) in row.chunks_exact(c.head_dim).enumerate() {
                let start = c.run_start(layer, page.index(), half, h) + slot * c.head_dim;
                for (d, &x) in slab[start..start + c.head_dim].iter_mut().zip(src) {
                    *d = T::from_f32(x);
                }
            }
        }
        Ok(())
    }

    /// Copies slots `0..n_tokens` of every kv head, K and V, from page `from` to page `to`
    /// in one layer. For copy-on-write (see [`crate::table::CopyOnWrite`]).
    pub fn copy_page_layer(
        &mut self,
        layer: usize,
        from: PageId,
        to: PageId,
        n_tokens: usize,
    ) -> Result<(), KvError> {
        self.check_page(layer, from)?;
        self.check_page(layer, to)?;
        if n_tokens > self.config.block_size {
            return Err(KvError::SlotOutOfRange {
                slot: n_tokens,
                block_size: self.config.block_size,
            });
        }
        let c = self.config;
        let n = n_tokens * c.head_dim;
        let slab = self.slab.as_mut();
        for half in [KvHalf::Key, KvHalf::Value] {
            for h in 0..c.n_kv_heads {
                let src = c.run_start(layer, from.index(), half, h);
                let dst = c.run_start(layer, to.index(), half, h);
                slab.copy_within(src..src + n, dst);
            }
        }
        Ok(())
    }

    /// [`copy_page_layer`](Self::copy_page_layer) for every layer.
    pub fn copy_page(&mut self, from: PageId, to: PageId, n_tokens: usize) -> Result<(), KvError> {
        for layer in 0..self.config.n_layers {
            self.copy_page_layer(layer, from, to, n_tokens)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn cfg() -> KvConfig {
        KvConfig { n_layers: 2, n_kv_heads: 3, head_dim: 5, block_size: 4, n_pages: 3 }
    }

    #[test]
    fn sizes() {
        let c = cfg();
        assert_eq!(c.slab_len(), Ok(2 * 3 * 2 * 3 * 4 * 5));
        assert_eq!(c.slab_bytes::<f16>(), Ok(2 * 720));
        let zero = KvConfig { head_dim: 0, ..c };
        assert_eq!(zero.slab_len(), Err(KvError::ZeroDimension { name: "head_dim" }));
        let huge = KvConfig { n_pages: usize::MAX, ..c };
        assert_eq!(huge.slab_len(), Err(KvError::SizeOverflow));
        assert_eq!(KvConfig::new(1, 1, 1, 1).block_size, 16);
    }

    #[test]
    fn write_then_read_back_and_layout_is_as_documented() {
        let c = cfg();
        let mut slab = [0.0f32; 720];
        let mut kv = KvPages::new(c, &mut slab[..]).unwrap();
        let k: [f32; 15] = core::array::from_fn(|i| i as f32);
        let v: [f32; 15] = core::array::from_fn(|i| 100.0 + i as f32);
        kv.write(1, PageId(2), 3, &k, &v).unwrap();
        assert_eq!(kv.key(1, PageId(2), 1, 3).unwrap(), &k[5..10]);
        assert_eq!(kv.value(1, PageId(2), 2, 3).unwrap(), &v[10..15]);
        // Documented index formula for (layer 1, page 2, V, head 2, slot 3, d 4).
        let (layer, page, half, head, slot, d) = (1, 2, 1, 2, 3, 4);
        let idx = ((((layer * 3 + page) * 2 + half) * 3 + head) * 4 + slot) * 5 + d;
        assert_eq!(kv.into_slab()[idx], 114.0);
    }

    #[test]
    fn copy_page_copies_only_the_prefix() {
        let c = cfg();
        let mut kv = KvPages::new(c, [f16::ZERO; 720]).unwrap();
        let row: [f32; 15] = core::array::from_fn(|i| i as f32 * 0.5);
        for layer in 0..2 {
            for slot in 0..4 {
                kv.write(layer, PageId(0), slot, &row, &row).unwrap();
            }
        }
        kv.copy_page(PageId(0), PageId(1), 2).unwrap();
        for layer in 0..2 {
            for h in 0..3 {
                assert_eq!(kv.key(layer, PageId(1), h, 1), kv.key(layer, PageId(0), h, 1));
                assert_eq!(kv.value(layer, PageId(1), h, 1), kv.value(layer, PageId(0), h, 1));
                assert!(kv.key(layer, PageId(1), h, 2).unwrap().iter().all(|x| *x == f16::ZERO));
            }
        }
    }

    #[test]
    fn bad_indices_are_errors() {
        let mut kv = KvPages::new(cfg(), [0.0f32; 720]).unwrap();
        let row = [0.0f32; 15];
        assert!(matches!(
            kv.write(2, PageId(0), 0, &row, &row),
            Err(KvError::LayerOutOfRange { .. })
        ));
        assert!(matches!(
            kv.write(0, PageId(3), 0, &row, &row),
            Err(KvError::PageOutOfRange { .. })
        ));
        assert!(matches!(
            kv.write(0, PageId(0), 4, &row, &row),
            Err(KvError::SlotOutOfRange { .. })
        ));
        assert!(matches!(
            kv.write(0, PageId(0), 0, &row[1..], &row),
            Err(KvError::RowLength { .. })
        ));
        assert!(matches!(kv.key(0, PageId(0), 3, 0), Err(KvError::HeadOutOfRange { .. })));
        assert!(matches!(
            kv.copy_page(PageId(0), PageId(1), 5),
            Err(KvError::SlotOutOfRange { .. })
        ));
        assert!(matches!(
            KvPages::new(cfg(), [0.0f32; 719]),
            Err(KvError::SlabTooSmall { needed: 720, got: 719 })
        ));
    }
}
