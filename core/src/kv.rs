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
//! `((((layer * n_pages + page) * 2 + kv) * n_kv_heads + kv_head) * block_size + slot) * head_dim + d`
//! (for a block format, replace `head_dim` by the row units and `d` by the block `d / 32`).
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
//! # Formats
//!
//! The slab is a `[F]` of *units* of a [`KvFormat`] `F`. Float element types ([`KvElement`]:
//! `f32`, `half::f16`, `half::bf16`) are units of one value; block-quantized formats are units
//! of 32 values sharing one f16 scale (`quant::BlockQ8_0`, `quant::BlockQ4_0`). The layout above
//! is the same for all of them, with `head_dim` read as `head_dim / F::VALUES_PER_UNIT` units
//! per slot ("row units"); index formulas and run lengths below count units.
//!
//! ```text
//! slot, f32 (head_dim 64):  [ x0 x1 ... x63 ]                        64 units, 256 B
//! slot, q8_0:               [ d q0 ... q31 | d q32 ... q63 ]          2 units,  68 B
//! ```
//!
//! A block never straddles two slots or two heads, so writing one token re-quantizes only
//! that token's rows and copy-on-write copies whole slots. Formats with
//! `VALUES_PER_UNIT > 1` need `head_dim` to be a multiple of it
//! ([`KvError::HeadDimNotMultiple`] otherwise).
//!
//! | format      | unit          | bytes per value | SmolLM2-135M bytes per token (30 × 3 × 64, K+V) |
//! |-------------|---------------|-----------------|--------------------------------------------------|
//! | `f32`       | `f32`         | 4               | 46 080                                           |
//! | `f16`       | `half::f16`   | 2               | 23 040                                           |
//! | `bf16`      | `half::bf16`  | 2               | 23 040                                           |
//! | `q8_0`      | `BlockQ8_0`   | 34 / 32         | 12 240                                           |
//! | `q4_0`      | `BlockQ4_0`   | 18 / 32         | 6 480                                            |

use core::fmt;
use core::marker::PhantomData;

use crate::pool::PageId;

mod format;
mod q4_0;
mod q8_0;

pub use format::{KvElement, KvFormat};

/// vLLM's default tokens per page.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

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

    /// Units of format `F` in one slot of one head: `head_dim / F::VALUES_PER_UNIT`.
    /// Errors if `head_dim` is 0 or not a multiple of `F::VALUES_PER_UNIT`.
    pub fn row_units<F: KvFormat>(&self) -> Result<usize, KvError> {
        if self.head_dim == 0 {
            return Err(KvError::ZeroDimension { name: "head_dim" });
        }
        if self.head_dim % F::VALUES_PER_UNIT != 0 {
            return Err(KvError::HeadDimNotMultiple {
                head_dim: self.head_dim,
                values_per_unit: F::VALUES_PER_UNIT,
            });
        }
        Ok(self.head_dim / F::VALUES_PER_UNIT)
    }

    /// Units of format `F` the slab must hold: [`slab_len`](Self::slab_len)` / VALUES_PER_UNIT`
    /// (equal to `slab_len` for float elements).
    pub fn slab_units<F: KvFormat>(&self) -> Result<usize, KvError> {
        let values = self.slab_len()?;
        Ok(values / self.head_dim * self.row_units::<F>()?)
    }

    /// Bytes the slab takes in format `F`.
    pub fn slab_bytes<F: KvFormat>(&self) -> Result<usize, KvError> {
        self.slab_units::<F>()?.checked_mul(core::mem::size_of::<F>()).ok_or(KvError::SizeOverflow)
    }

    /// Bytes one token takes in format `F` across all layers, K and V:
    /// `n_layers × 2 × n_kv_heads × row_units × size_of::<F>()`.
    pub fn bytes_per_token<F: KvFormat>(&self) -> Result<usize, KvError> {
        let per_page = KvConfig { n_pages: 1, ..*self }.slab_bytes::<F>()?;
        Ok(per_page / self.block_size)
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
    /// `head_dim` is not a multiple of the format's values per unit (32 for q8_0 and q4_0).
    HeadDimNotMultiple {
        /// The config's `head_dim`.
        head_dim: usize,
        /// Values one unit of the format stores.
        values_per_unit: usize,
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
            KvError::HeadDimNotMultiple { head_dim, values_per_unit } => write!(
                f,
                "KV format stores blocks of {values_per_unit} values, but head_dim {head_dim} \
                 is not a multiple of {values_per_unit}"
            ),
            KvError::RowLength { expected, got } => {
                write!(f, "K/V row has {got} elements, expected n_kv_heads × head_dim = {expected}")
            }
        }
    }
}

impl core::error::Error for KvError {}

/// Keys and values of all layers in pages, over a caller-provided slab `S` of units of the
/// format `T` (`&mut [T]`, `&[T]` for read-only use, or with `alloc` a `Vec<T>`). See the
/// module docs for the layout; all run and row slices below are in units of `T`.
#[derive(Debug)]
pub struct KvPages<T, S> {
    config: KvConfig,
    /// `head_dim / T::VALUES_PER_UNIT`, checked in `new`.
    row_units: usize,
    slab: S,
    _format: PhantomData<T>,
}

impl<T: KvFormat, S: AsRef<[T]>> KvPages<T, S> {
    /// Wraps `slab`, which must hold at least `config.slab_units::<T>()` units (extra ones are
    /// ignored; for float elements that is `config.slab_len()`). Does not clear it: slots are
    /// written before they are read. Errors on a zero dimension, a `head_dim` that is not a
    /// multiple of `T::VALUES_PER_UNIT`, or a short slab.
    pub fn new(config: KvConfig, slab: S) -> Result<Self, KvError> {
        let needed = config.slab_units::<T>()?;
        let row_units = config.row_units::<T>()?;
        let got = slab.as_ref().len();
        if got < needed {
            return Err(KvError::SlabTooSmall { needed, got });
        }
        Ok(KvPages { config, row_units, slab, _format: PhantomData })
    }

    /// The shape.
    #[inline]
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Units of `T` per slot of one head: `head_dim / T::VALUES_PER_UNIT`.
    #[inline]
    pub fn row_units(&self) -> usize {
        self.row_units
    }

    /// Units of one head's keys (or values) in one page: `block_size × row_units`.
    #[inline]
    pub fn head_run_units(&self) -> usize {
        self.config.block_size * self.row_units
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

    /// Start of `(layer, page, half, kv_head)`'s run of `block_size × row_units` units:
    /// `(((layer · n_pages + page) · 2 + half) · n_kv_heads + kv_head) · block_size · row_units`.
    /// Unchecked arithmetic: callers validate indices first.
    fn run_start(&self, layer: usize, page: usize, half: KvHalf, kv_head: usize) -> usize {
        let c = &self.config;
        (((layer * c.n_pages + page) * 2 + half as usize) * c.n_kv_heads + kv_head)
            * self.head_run_units()
    }

    /// One kv head's keys or values in one page: `block_size` slots of
    /// [`row_units`](Self::row_units) units, slot-major (`[slot][unit]`). This is the
    /// contiguous run decode streams through.
    pub fn head_run(
        &self,
        layer: usize,
        page: PageId,
        half: KvHalf,
        kv_head: usize,
    ) -> Result<&[T], KvError> {
        self.check_page(layer, page)?;
        self.check_head(kv_head)?;
        let start = self.run_start(layer, page.index(), half, kv_head);
        Ok(&self.slab.as_ref()[start..start + self.head_run_units()])
    }

    /// The key of token `slot` of `page`, for one kv head: [`row_units`](Self::row_units)
    /// units (`head_dim` elements for float formats).
    pub fn key(
        &self,
        layer: usize,
        page: PageId,
        kv_head: usize,
        slot: usize,
    ) -> Result<&[T], KvError> {
        self.row(layer, page, KvHalf::Key, kv_head, slot)
    }

    /// The value of token `slot` of `page`, for one kv head: [`row_units`](Self::row_units)
    /// units (`head_dim` elements for float formats).
    pub fn value(
        &self,
        layer: usize,
        page: PageId,
        kv_head: usize,
        slot: usize,
    ) -> Result<&[T], KvError> {
        self.row(layer, page, KvHalf::Value, kv_head, slot)
    }

    /// Decodes the key (or value) of token `slot` of `page`, one kv head, into `out`
    /// (`head_dim` f32s). For tests and debugging; attention reads rows in place.
    pub fn read_row(
        &self,
        layer: usize,
        page: PageId,
        half: KvHalf,
        kv_head: usize,
        slot: usize,
        out: &mut [f32],
    ) -> Result<(), KvError> {
        let row = self.row(layer, page, half, kv_head, slot)?;
        if out.len() != self.config.head_dim {
            return Err(KvError::RowLength { expected: self.config.head_dim, got: out.len() });
        }
        T::decode(row, out);
        Ok(())
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
        let ru = self.row_units;
        Ok(&run[slot * ru..(slot + 1) * ru])
    }
}

impl<T: KvFormat, S: AsRef<[T]> + AsMut<[T]>> KvPages<T, S> {
    /// Stores one token's keys and values for `layer` at `(page, slot)`. `k` and `v` are
    /// `[kv_head][head_dim]` rows of `n_kv_heads × head_dim` f32s, encoded into `T`
    /// (rounded, or quantized block by block: each head's row is its own blocks).
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
        let (hd, ru) = (self.config.head_dim, self.row_units);
        for (half, row) in [(KvHalf::Key, k), (KvHalf::Value, v)] {
            for (h, src) in row.chunks_exact(hd).enumerate() {
                let start = self.run_start(layer, page.index(), half, h) + slot * ru;
                T::encode(src, &mut self.slab.as_mut()[start..start + ru]);
            }
        }
        Ok(())
    }

    /// Copies slots `0..n_tokens` of every kv head, K and V, from page `from` to page `to`
    /// in one layer. For copy-on-write (see [`crate::table::CopyOnWrite`]). Copies units as
    /// they are: no re-quantization.
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
        let n = n_tokens * self.row_units;
        for half in [KvHalf::Key, KvHalf::Value] {
            for h in 0..self.config.n_kv_heads {
                let src = self.run_start(layer, from.index(), half, h);
                let dst = self.run_start(layer, to.index(), half, h);
                self.slab.as_mut().copy_within(src..src + n, dst);
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
        assert_eq!(c.bytes_per_token::<f32>(), Ok(2 * 2 * 3 * 5 * 4));
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

    #[test]
    fn block_formats_store_whole_blocks_per_slot() {
        use crate::quant::BlockQ8_0;
        let c = KvConfig { n_layers: 2, n_kv_heads: 2, head_dim: 64, block_size: 3, n_pages: 2 };
        assert_eq!(c.row_units::<BlockQ8_0>(), Ok(2));
        assert_eq!(c.slab_units::<BlockQ8_0>(), Ok(2 * 2 * 2 * 2 * 3 * 2));
        assert_eq!(c.bytes_per_token::<BlockQ8_0>(), Ok(2 * 2 * 2 * 2 * 34));
        let n = c.slab_units::<BlockQ8_0>().unwrap();
        let mut kv = KvPages::new(c, [BlockQ8_0::zero(); 96]).unwrap();
        assert_eq!(n, 96);
        let k: [f32; 128] = core::array::from_fn(|i| (i as f32 - 60.0) / 16.0);
        let v: [f32; 128] = core::array::from_fn(|i| (i as f32 * 0.7).sin());
        kv.write(1, PageId(1), 2, &k, &v).unwrap();
        let mut row = [0.0f32; 64];
        for h in 0..2 {
            kv.read_row(1, PageId(1), KvHalf::Key, h, 2, &mut row).unwrap();
            // Within half a quantization step (amax / 127 / 2, plus the f16 scale's rounding).
            let close = |got: &[f32], want: &[f32]| {
                let amax = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                got.iter().zip(want).all(|(a, b)| (a - b).abs() <= amax / 127.0 * 0.6)
            };
            assert!(close(&row, &k[h * 64..(h + 1) * 64]));
            kv.read_row(1, PageId(1), KvHalf::Value, h, 2, &mut row).unwrap();
            assert!(close(&row, &v[h * 64..(h + 1) * 64]));
            assert_eq!(kv.key(1, PageId(1), h, 2).unwrap().len(), 2);
        }
        // Other slots stay untouched (zero blocks); copy-on-write copies the blocks verbatim.
        kv.read_row(1, PageId(1), KvHalf::Key, 0, 1, &mut row).unwrap();
        assert!(row.iter().all(|&x| x == 0.0));
        kv.copy_page(PageId(1), PageId(0), 3).unwrap();
        assert_eq!(kv.key(1, PageId(0), 1, 2), kv.key(1, PageId(1), 1, 2));
        assert_eq!(kv.value(1, PageId(0), 0, 2), kv.value(1, PageId(1), 0, 2));
    }

    #[test]
    fn block_formats_need_head_dim_multiple_of_32() {
        use crate::quant::BlockQ8_0;
        let c = KvConfig { n_layers: 1, n_kv_heads: 1, head_dim: 48, block_size: 1, n_pages: 1 };
        let err = KvPages::new(c, [BlockQ8_0::zero(); 2]).unwrap_err();
        assert_eq!(err, KvError::HeadDimNotMultiple { head_dim: 48, values_per_unit: 32 });
        let mut msg = std::string::String::new();
        core::fmt::write(&mut msg, format_args!("{err}")).unwrap();
        assert!(msg.contains("head_dim 48") && msg.contains("32"), "{msg}");
        assert_eq!(c.row_units::<f32>(), Ok(48));
        assert!(matches!(
            KvPages::new(KvConfig { head_dim: 64, ..c }, [BlockQ8_0::zero(); 3]),
            Err(KvError::SlabTooSmall { needed: 4, got: 3 })
        ));
    }
}
