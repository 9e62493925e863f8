//! `pagoda-core`: the `no_std`, heap-free heart of pagoda.
//!
//! Everything fast in `pagoda-cpu` is tested against the scalar code here.
//!
//! | module        | what it holds                                                         |
//! |---------------|-----------------------------------------------------------------------|
//! | [`pool`]      | the page allocator: fixed number of pages, O(1) alloc/free, refcounts |
//! | [`table`]     | per-sequence block tables: logical page → physical page, fork + CoW   |
//! | [`kv`]        | KV page storage over caller-provided slabs                            |
//! | [`attention`] | reference paged decode / causal prefill (online softmax, GQA)         |
//! | [`ops`]       | RMSNorm, RoPE, SiLU, softmax                                          |
//! | [`gguf`]      | zero-copy, bounds-checked GGUF reader over `&[u8]`                    |
//! | [`quant`]     | ggml block formats with scalar reference kernels                      |
//!
//! # Example
//!
//! A sequence's K/V in pages of 4 tokens, then a fork that shares its pages and copies on
//! write when it appends into the shared, half-full last page. All storage is fixed arrays.
//!
//! ```
//! use pagoda_core::kv::{KvConfig, KvPages};
//! use pagoda_core::pool::{BlockPool, PageEntry, PageId};
//! use pagoda_core::table::{ArrayPageList, BlockTable};
//!
//! let kc = KvConfig { n_layers: 1, n_kv_heads: 1, head_dim: 2, block_size: 4, n_pages: 4 };
//! let mut kv = KvPages::new(kc, [0.0f32; 64])?; // kc.slab_len() == 64
//! let mut pool = BlockPool::new([PageEntry::VACANT; 4])?;
//! let mut seq = BlockTable::new(4, ArrayPageList::<4>::default())?;
//! for t in 0..6 {
//!     let s = seq.append_slot(&mut pool)?.slot; // where token t's K and V go
//!     kv.write(0, s.page, s.slot, &[t as f32, 1.0], &[1.0, t as f32])?;
//! }
//! let mut fork = seq.fork(&mut pool)?; // shares pages 0 and 1: refcount 2 each
//! let out = fork.append_slot(&mut pool)?; // page 1 is shared: copy it to a fresh page first
//! let cow = out.copy.expect("copy-on-write");
//! kv.copy_page(cow.from, cow.to, cow.tokens)?;
//! kv.write(0, out.slot.page, out.slot.slot, &[9.0, 1.0], &[1.0, 9.0])?;
//! assert_eq!(seq.pages(), [PageId(0), PageId(1)]);
//! assert_eq!(fork.pages(), [PageId(0), PageId(2)]); // page 0 still shared, 2 is the copy
//! assert_eq!((pool.refcount(PageId(0))?, pool.refcount(PageId(1))?), (2, 1));
//! assert_eq!(kv.key(0, PageId(2), 0, 1)?, [5.0, 1.0]); // token 5, copied from page 1
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod attention;
pub mod evict;
pub mod ggml_type;
pub mod gguf;
pub mod kv;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod table;
