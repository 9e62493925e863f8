//! Matmul throughput in GB/s of weights read, per SIMD level, weight format, batch size
//! and thread count.
//!
//! Cases (SmolLM2-135M shapes):
//! - `q4_1_1536x576`: one FFN gate/up matrix (553 KB: stays in L2, so compute-bound);
//! - `q4_1_stream`: 120 distinct 1536×576 Q4_1 matrices (66 MB, the model's Q4_1 bytes)
//!   run one after another, as a decode step does: memory-bound, the figure that matters
//!   for generation speed;
//! - `q8_0_logits_49152x576`: the tied token_embd/output matrix (30 MB).
//!
//! Each at 1 and 64 tokens (prompt processing reads each weight once per 64 tokens; its
//! "GB/s" counts the weight bytes once), 1 and 2 threads, every available level (scalar
//! only at 1 token: it is slow). Run briefly:
//! `cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 2`.

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use pagoda::core::ggml_type::GgmlType;
use pagoda::cpu::kernels::{Kernels, MatmulScratch, QuantMatrix, SimdLevel};

fn bytes(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    let block_bytes = ty.type_size().unwrap();
    let mut s = seed | 1;
    let mut v: Vec<u8> = (0..rows * row_bytes)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    // Finite, small f16 scales (0x2000 ≈ 0.0078) in every block header.
    for blk in v.chunks_exact_mut(block_bytes) {
        blk[0] = 0x00;
        blk[1] = 0x20;
        if ty == GgmlType::Q4_1 {
            blk[2] = 0x00;
            blk[3] = 0xA0;
        }
    }
    v
}

fn input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
}

fn bench(c: &mut Criterion) {
    let levels = SimdLevel::available();
    let q4 = bytes(GgmlType::Q4_1, 1536, 576, 1);
    let logits = bytes(GgmlType::Q8_0, 49152, 576, 2);
    let stream: Vec<Vec<u8>> = (0..120).map(|i| bytes(GgmlType::Q4_1, 1536, 576, 3 + i)).collect();
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for tokens in [1usize, 64] {
            let mut g = c.benchmark_group(format!("matmul_t{threads}_n{tokens}"));
            g.sample_size(10)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(2));
            for &level in &levels {
                if level == SimdLevel::Scalar && tokens > 1 {
                    continue;
                }
                let k = Kernels::new(level).unwrap();
                let mut scratch = MatmulScratch::new();

                let m = QuantMatrix::new(GgmlType::Q4_1, 1536, 576, &q4).unwrap();
                let x = input(576 * tokens);
                let mut out = vec![0.0; 1536 * tokens];
                g.throughput(Throughput::BytesDecimal(q4.len() as u64));
                g.bench_function(BenchmarkId::new("q4_1_1536x576", level), |b| {
                    pool.install(|| {
                        b.iter(|| k.matmul(&m, &x, tokens, &mut out, &mut scratch).unwrap())
                    })
                });

                if tokens == 1 {
                    let ms: Vec<QuantMatrix<'_>> = stream
                        .iter()
                        .map(|d| QuantMatrix::new(GgmlType::Q4_1, 1536, 576, d).unwrap())
                        .collect();
                    g.throughput(Throughput::BytesDecimal(
                        stream.iter().map(|d| d.len() as u64).sum(),
                    ));
                    g.bench_function(BenchmarkId::new("q4_1_stream", level), |b| {
                        pool.install(|| {
                            b.iter(|| {
                                for m in &ms {
                                    k.matmul(m, &x, 1, &mut out, &mut scratch).unwrap();
                                }
                            })
                        })
                    });
                }

                let m = QuantMatrix::new(GgmlType::Q8_0, 49152, 576, &logits).unwrap();
                let mut out = vec![0.0; 49152 * tokens];
                g.throughput(Throughput::BytesDecimal(logits.len() as u64));
                g.bench_function(BenchmarkId::new("q8_0_logits_49152x576", level), |b| {
                    pool.install(|| {
                        b.iter(|| k.matmul(&m, &x, tokens, &mut out, &mut scratch).unwrap())
                    })
                });
            }
            g.finish();
        }
    }
}

/// `PAGODA_BENCH_MIN=1`: instead of criterion, print the best of many repetitions of
/// each case — on a shared, loaded machine the minimum is the least disturbed run.
fn min_of_runs() {
    let levels = SimdLevel::available();
    let q4 = bytes(GgmlType::Q4_1, 1536, 576, 1);
    let logits = bytes(GgmlType::Q8_0, 49152, 576, 2);
    let stream: Vec<Vec<u8>> = (0..120).map(|i| bytes(GgmlType::Q4_1, 1536, 576, 3 + i)).collect();
    let budget = Duration::from_millis(
        std::env::var("PAGODA_BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500),
    );
    let best = |f: &mut (dyn FnMut() + Send)| {
        let start = std::time::Instant::now();
        let mut best = Duration::MAX;
        let mut n = 0;
        while n < 3 || start.elapsed() < budget {
            let t = std::time::Instant::now();
            f();
            best = best.min(t.elapsed());
            n += 1;
        }
        best
    };
    println!(
        "{:<8} {:>3} {:>3} {:<24} {:>10} {:>9}",
        "level", "thr", "tok", "case", "best_us", "GB/s"
    );
    // Calibration: plain read bandwidth over 256 MB (sum of u64, vectorized by rustc).
    let big: Vec<u64> = (0..32u64 << 20).collect();
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let t = pool.install(|| {
            best(&mut || {
                use rayon::prelude::*;
                let s: u64 = big
                    .par_chunks(1 << 20)
                    .map(|c| c.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
                    .sum();
                std::hint::black_box(s);
            })
        });
        println!(
            "{:<8} {:>3} {:>3} {:<24} {:>10.1} {:>9.2}",
            "-",
            threads,
            "-",
            "read_256MB",
            t.as_secs_f64() * 1e6,
            (big.len() * 8) as f64 / t.as_secs_f64() / 1e9
        );
    }
    drop(big);
    // PAGODA_BENCH_TOKENS=1,4,16,64 picks the batch sizes (default 1 and 64).
    let token_counts: Vec<usize> = std::env::var("PAGODA_BENCH_TOKENS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 64]);
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for &tokens in &token_counts {
            for &level in &levels {
                if level == SimdLevel::Scalar && tokens > 1 {
                    continue;
                }
                let k = Kernels::new(level).unwrap();
                let mut scratch = MatmulScratch::new();
                let x = input(576 * tokens);
                let mut out = vec![0.0; 49152 * tokens];
                let report = |case: &str, bytes: usize, f: &mut (dyn FnMut() + Send)| {
                    let t = pool.install(|| best(f));
                    println!(
                        "{:<8} {:>3} {:>3} {:<24} {:>10.1} {:>9.2}",
                        level.name(),
                        threads,
                        tokens,
                        case,
                        t.as_secs_f64() * 1e6,
                        bytes as f64 / t.as_secs_f64() / 1e9
                    );
                };
                let m = QuantMatrix::new(GgmlType::Q4_1, 1536, 576, &q4).unwrap();
                report("q4_1_1536x576", q4.len(), &mut || {
                    k.matmul(&m, &x, tokens, &mut out[..1536 * tokens], &mut scratch).unwrap()
                });
                if tokens == 1 {
                    let ms: Vec<QuantMatrix<'_>> = stream
                        .iter()
                        .map(|d| QuantMatrix::new(GgmlType::Q4_1, 1536, 576, d).unwrap())
                        .collect();
                    report("q4_1_stream", stream.iter().map(Vec::len).sum(), &mut || {
                        for m in &ms {
                            k.matmul(m, &x, 1, &mut out[..1536], &mut scratch).unwrap();
                        }
                    });
                }
                let m = QuantMatrix::new(GgmlType::Q8_0, 49152, 576, &logits).unwrap();
                report("q8_0_logits_49152x576", logits.len(), &mut || {
                    k.matmul(&m, &x, tokens, &mut out, &mut scratch).unwrap()
                });
            }
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("PAGODA_BENCH_MIN").is_some() {
        min_of_runs();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
