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
