//! Memory read bandwidth, STREAM-like: the ceiling decode speed is measured against.
//!
//! Sums a 256 MB buffer of `u64` (far beyond the L3 cache, so every pass streams from
//! DRAM) with 1 and 2 threads, each thread summing one contiguous half into 8
//! independent accumulators (enough loads in flight; the compiler vectorises the
//! loop). Criterion's throughput is in bytes read, so its "GiB/s" line is the read
//! bandwidth. Decoding one token reads every weight once, so
//! `bandwidth ÷ weight bytes` bounds tokens/s from above.
//!
//! Run briefly: `cargo bench --bench bandwidth -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;

const BUFFER_BYTES: usize = 256 << 20;

/// Sum of `words` with 8 independent accumulators.
fn read_sum(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for c in &mut chunks {
        for (a, &w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(w);
        }
    }
    let tail = chunks.remainder().iter().fold(0u64, |s, &w| s.wrapping_add(w));
    acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
}

fn bandwidth(c: &mut Criterion) {
    // Distinct, non-zero contents: every page is really backed and read.
    let words: Vec<u64> = (0..BUFFER_BYTES / 8).map(|i| i as u64 ^ 0x9E37_79B9).collect();
    let expect = read_sum(&words);
    let mut g = c.benchmark_group("read_bandwidth");
    g.throughput(Throughput::Bytes(BUFFER_BYTES as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let part = words.len().div_ceil(threads);
        // The sum is checked once, so the loop cannot be optimised into nothing.
        let got =
            pool.install(|| words.par_chunks(part).map(read_sum).reduce(|| 0, u64::wrapping_add));
        assert_eq!(got, expect, "parallel read sum disagrees with the serial one");
        g.bench_function(BenchmarkId::new("256MB", format!("{threads}t")), |b| {
            b.iter(|| {
                pool.install(|| {
                    black_box(&words).par_chunks(part).map(read_sum).reduce(|| 0, u64::wrapping_add)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bandwidth);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
