//! Scalar `paged_decode` against the same online-softmax decode over one contiguous K/V buffer:
//! the cost of going through a block table (page lookups, one run per page) and the baseline
//! later SIMD kernels are measured against. SmolLM2-135M shape: 9 query heads, 3 kv heads,
//! head_dim 64, f32 KV, block size 16, pages in a shuffled physical order.
//!
//! `cargo bench --bench paged_attention -- --warm-up-time 1 --measurement-time 2` for a quick run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pagoda_core::attention::{paged_decode, AttnConfig};
use pagoda_core::kv::{KvConfig, KvPages, DEFAULT_BLOCK_SIZE};
use pagoda_core::pool::PageId;

const N_HEADS: usize = 9;
const N_KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const CONTEXTS: [usize; 4] = [128, 512, 2048, 8192];

/// Deterministic values in [-1, 1).
fn noise(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// The contiguous twin of `paged_decode`: identical math and loop order, K and V laid out
/// `[kv_head][token][head_dim]` with no pages.
fn contiguous_decode(
    k: &[f32],
    v: &[f32],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) {
    let hd = cfg.head_dim;
    for (h, (q_h, acc)) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
        let kvh = cfg.kv_head_of(h);
        let keys = &k[kvh * n_ctx * hd..][..n_ctx * hd];
        let values = &v[kvh * n_ctx * hd..][..n_ctx * hd];
        acc.fill(0.0);
        let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
        for (k_t, v_t) in keys.chunks_exact(hd).zip(values.chunks_exact(hd)) {
            let score = cfg.scale * q_h.iter().zip(k_t).map(|(a, b)| a * b).sum::<f32>();
            if score > max {
                let c = libm::expf(max - score);
                sum *= c;
                acc.iter_mut().for_each(|a| *a *= c);
                max = score;
            }
            let p = libm::expf(score - max);
            sum += p;
            acc.iter_mut().zip(v_t).for_each(|(a, &x)| *a += p * x);
        }
        let inv = 1.0 / sum;
        acc.iter_mut().for_each(|a| *a *= inv);
    }
}

fn bench(c: &mut Criterion) {
    let cfg = AttnConfig::new(N_HEADS, N_KV_HEADS, HEAD_DIM).unwrap();
    let mut group = c.benchmark_group("decode");
    for n_ctx in CONTEXTS {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ n_ctx as u64;
        let n_pages = n_ctx.div_ceil(DEFAULT_BLOCK_SIZE);
        let kc = KvConfig::new(1, N_KV_HEADS, HEAD_DIM, n_pages);
        let mut kv = KvPages::new(kc, vec![0.0f32; kc.slab_len().unwrap()]).unwrap();
        // Shuffled physical pages, as after a while of allocating and freeing.
        let mut pages: Vec<PageId> = (0..n_pages as u32).map(PageId).collect();
        for i in (1..n_pages).rev() {
            let j = (noise(&mut seed).abs() * (i + 1) as f32) as usize % (i + 1);
            pages.swap(i, j);
        }
        let row = N_KV_HEADS * HEAD_DIM;
        let mut k_c = vec![0.0f32; n_ctx * row];
        let mut v_c = vec![0.0f32; n_ctx * row];
        for pos in 0..n_ctx {
            let k: Vec<f32> = (0..row).map(|_| noise(&mut seed)).collect();
            let v: Vec<f32> = (0..row).map(|_| noise(&mut seed)).collect();
            let page = pages[pos / DEFAULT_BLOCK_SIZE];
            kv.write(0, page, pos % DEFAULT_BLOCK_SIZE, &k, &v).unwrap();
            for h in 0..N_KV_HEADS {
                let dst = (h * n_ctx + pos) * HEAD_DIM;
                k_c[dst..dst + HEAD_DIM].copy_from_slice(&k[h * HEAD_DIM..][..HEAD_DIM]);
                v_c[dst..dst + HEAD_DIM].copy_from_slice(&v[h * HEAD_DIM..][..HEAD_DIM]);
            }
        }
        let q: Vec<f32> = (0..cfg.q_len()).map(|_| noise(&mut seed)).collect();
        let mut out = vec![0.0f32; cfg.q_len()];

        // Both must compute the same thing before timing means anything.
        let mut check = vec![0.0f32; cfg.q_len()];
        paged_decode(&kv, 0, &pages, n_ctx, &q, &mut out, &cfg).unwrap();
        contiguous_decode(&k_c, &v_c, n_ctx, &q, &mut check, &cfg);
        assert_eq!(out, check, "paged and contiguous decode disagree at n_ctx {n_ctx}");

        group.throughput(Throughput::Elements(n_ctx as u64));
        group.bench_with_input(BenchmarkId::new("paged", n_ctx), &n_ctx, |b, &n| {
            b.iter(|| {
                paged_decode(&kv, 0, black_box(&pages), n, black_box(&q), &mut out, &cfg).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("contiguous", n_ctx), &n_ctx, |b, &n| {
            b.iter(|| contiguous_decode(&k_c, &v_c, n, black_box(&q), &mut out, &cfg))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
