//! Paged attention for the SmolLM2 shape (9 query heads, 3 kv heads, head_dim 64):
//!
//! - `decode/{f32,f16}/{core_scalar,simd}/CTX`: core's scalar `paged_decode` against
//!   `pagoda_cpu::attention::paged_attention` at the detected SIMD level, one query token.
//! - `paging/{f32,f16}/{paged16,contiguous}/CTX`: the same kernel (no flash-decoding split,
//!   so both do identical work) on block_size 16 pages in a shuffled order against one page
//!   holding the whole context: the overhead of paging.
//! - `prefill/{f32,f16}/{core_scalar,simd}/512`: a 512-token causal chunk.
//!
//! Throughput is the KV bytes read per call (`n_ctx × 3 heads × 64 × 2 (K and V) × size`);
//! criterion prints it as bytes/s. Run briefly, one thread for per-thread ratios:
//! `RAYON_NUM_THREADS=1 cargo bench --bench attention -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use pagoda::core::attention::{paged_decode, paged_prefill, AttnConfig};
use pagoda::core::kv::{KvConfig, KvElement, KvPages};
use pagoda::core::pool::PageId;
use pagoda::cpu::attention::{paged_attention, paged_attention_split, Split};
use pagoda::cpu::kernels::simd_level;

const N_HEADS: usize = 9;
const N_KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const CONTEXTS: [usize; 5] = [128, 512, 2048, 8192, 16384];

/// A one-layer cache of `n_ctx` random tokens in `block_size` pages, physical order
/// reversed (so consecutive logical pages are not adjacent), plus the block table.
fn cache<T: KvElement>(n_ctx: usize, block_size: usize) -> (KvPages<T, Vec<T>>, Vec<PageId>) {
    let n_pages = n_ctx.div_ceil(block_size);
    let kc =
        KvConfig { n_layers: 1, n_kv_heads: N_KV_HEADS, head_dim: HEAD_DIM, block_size, n_pages };
    let mut kv = KvPages::new(kc, vec![T::default(); kc.slab_len().unwrap()]).unwrap();
    let pages: Vec<PageId> = (0..n_pages as u32).rev().map(PageId).collect();
    let row = kc.row_len();
    let mut x = 0x9e37_79b9_u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x >> 8) as f32 / (1 << 24) as f32 - 0.5
    };
    for pos in 0..n_ctx {
        let k: Vec<f32> = (0..row).map(|_| next()).collect();
        let v: Vec<f32> = (0..row).map(|_| next()).collect();
        kv.write(0, pages[pos / block_size], pos % block_size, &k, &v).unwrap();
    }
    (kv, pages)
}

fn query(n_tokens: usize) -> Vec<f32> {
    (0..n_tokens * N_HEADS * HEAD_DIM).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn kv_bytes<T>(n_ctx: usize) -> u64 {
    (n_ctx * N_KV_HEADS * HEAD_DIM * 2 * size_of::<T>()) as u64
}

fn decode<T: KvElement>(c: &mut Criterion, name: &str) {
    let cfg = AttnConfig::new(N_HEADS, N_KV_HEADS, HEAD_DIM).unwrap();
    let level = simd_level();
    let q = query(1);
    let mut out = vec![0.0f32; q.len()];
    let mut g = c.benchmark_group(format!("decode/{name}"));
    for n_ctx in CONTEXTS {
        let (kv, pages) = cache::<T>(n_ctx, 16);
        g.throughput(Throughput::Bytes(kv_bytes::<T>(n_ctx)));
        g.bench_function(BenchmarkId::new("core_scalar", n_ctx), |b| {
            b.iter(|| paged_decode(&kv, 0, &pages, n_ctx, black_box(&q), &mut out, &cfg).unwrap())
        });
        g.bench_function(BenchmarkId::new(format!("simd_{level}"), n_ctx), |b| {
            b.iter(|| {
                paged_attention(level, &kv, 0, &pages, n_ctx, black_box(&q), &mut out, &cfg)
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn paging<T: KvElement>(c: &mut Criterion, name: &str) {
    let cfg = AttnConfig::new(N_HEADS, N_KV_HEADS, HEAD_DIM).unwrap();
    let level = simd_level();
    let q = query(1);
    let mut out = vec![0.0f32; q.len()];
    let mut g = c.benchmark_group(format!("paging/{name}"));
    for n_ctx in CONTEXTS {
        g.throughput(Throughput::Bytes(kv_bytes::<T>(n_ctx)));
        for (label, block_size) in [("paged16", 16), ("contiguous", n_ctx)] {
            let (kv, pages) = cache::<T>(n_ctx, block_size);
            g.bench_function(BenchmarkId::new(label, n_ctx), |b| {
                b.iter(|| {
                    let q = black_box(&q);
                    let split = Split::Ranges(1);
                    paged_attention_split(level, &kv, 0, &pages, n_ctx, q, &mut out, &cfg, split)
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn prefill<T: KvElement>(c: &mut Criterion, name: &str) {
    let cfg = AttnConfig::new(N_HEADS, N_KV_HEADS, HEAD_DIM).unwrap();
    let level = simd_level();
    let n = 512;
    let q = query(n);
    let mut out = vec![0.0f32; q.len()];
    let (kv, pages) = cache::<T>(n, 16);
    let mut g = c.benchmark_group(format!("prefill/{name}"));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("core_scalar", n), |b| {
        b.iter(|| paged_prefill(&kv, 0, &pages, n, black_box(&q), &mut out, &cfg).unwrap())
    });
    g.bench_function(BenchmarkId::new(format!("simd_{level}"), n), |b| {
        b.iter(|| paged_attention(level, &kv, 0, &pages, n, black_box(&q), &mut out, &cfg).unwrap())
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    decode::<f32>(c, "f32");
    decode::<f16>(c, "f16");
    paging::<f32>(c, "f32");
    paging::<f16>(c, "f16");
    prefill::<f32>(c, "f32");
    prefill::<f16>(c, "f16");
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = bench
}
criterion_main!(benches);
