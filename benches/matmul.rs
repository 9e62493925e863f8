//! Matmul throughput in GB/s of weights read, per SIMD level, weight format, batch size
//! and thread count.
//!
//! Cases (SmolLM2-135M shapes):
//! - `q4_1_1536x576`: one FFN gate/up matrix (553 KB: stays in L2, so compute-bound);
//! - `q4_1_stream`: 120 distinct 1536×576 Q4_1 matrices (66 MB, the model's Q4_1 bytes)
//!   run one after another, as a decode step does: memory-bound, the figure that matters
//!   for generation speed;
//! - `q8_0_logits_49152x576`: the tied token_embd/output matrix (30 MB);
//! - `q4_k_576x1536` etc. (`PAGODA_BENCH_MIN` mode only): every K-quant format in the FFN
//!   down projection's shape (the model's K-quant tensor in a Q4_K_M file), weights from
//!   pagoda-core's quantizer; `core` rows run pagoda-core's generic `VecDot` row by row
//!   (the generic path K-quants ran through before the kquant kernels) at 1 token, 1 thread.
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

/// The K-quant formats benchmarked, each as a 576×1536 matrix of real quantizations.
const KQUANTS: [GgmlType; 6] = [
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
];

fn kquant_bytes(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
    // 8-aligned storage for the 2-aligned blocks.
    let mut store = vec![0u64; (rows * row_bytes).div_ceil(8)];
    let v = bytemuck::cast_slice_mut::<u64, u8>(&mut store);
    for r in 0..rows {
        let x: Vec<f32> =
            (0..cols).map(|i| (((i + 31 * r) * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        pagoda::core::quant::quantize_row(ty, &x, &mut v[r * row_bytes..(r + 1) * row_bytes])
            .unwrap();
    }
    v[..rows * row_bytes].to_vec()
}

/// pagoda-core's generic dot product of every row with one token (what K-quants ran before the kquant kernels).
fn core_rows<
    W: pagoda::core::quant::VecDot<Activation = pagoda::core::quant::BlockQ8K> + bytemuck::Pod,
>(
    w: &[u8],
    rows: usize,
    x: &[f32],
    out: &mut [f32],
) {
    use pagoda::core::quant::{BlockQ8K, Quantize};
    let mut y = vec![<BlockQ8K as bytemuck::Zeroable>::zeroed(); x.len() / 256];
    BlockQ8K::quantize(x, &mut y);
    let row_bytes = w.len() / rows;
    for (r, o) in out.iter_mut().enumerate().take(rows) {
        let blocks: &[W] = bytemuck::cast_slice(&w[r * row_bytes..(r + 1) * row_bytes]);
        *o = W::vec_dot(blocks, &y);
    }
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
    // PAGODA_BENCH_KQUANT=Q4_K,Q6_K picks the K-quant formats (default all).
    let kq_pick = std::env::var("PAGODA_BENCH_KQUANT").unwrap_or_default();
    let kq: Vec<(GgmlType, Vec<u64>)> = KQUANTS
        .iter()
        .filter(|t| kq_pick.is_empty() || kq_pick.split(',').any(|p| p.trim() == t.name()))
        .map(|&t| {
            let b = kquant_bytes(t, 576, 1536);
            let mut a = vec![0u64; b.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut a)[..b.len()].copy_from_slice(&b);
            (t, a)
        })
        .collect();
    let kq: Vec<(GgmlType, &[u8])> = kq
        .iter()
        .map(|(t, a)| {
            (*t, &bytemuck::cast_slice::<u64, u8>(a)[..t.row_bytes(1536).unwrap() as usize * 576])
        })
        .collect();
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
                let xk = input(1536 * tokens);
                if !kq.is_empty() {
                    // The Q8_K activation quantization every K-quant matmul starts with
                    // (pagoda-core's `quantize_row_q8_K_ref`, the same at every level).
                    use pagoda::core::quant::{BlockQ8K, Quantize};
                    let mut y = vec![<BlockQ8K as bytemuck::Zeroable>::zeroed(); 6 * tokens];
                    report("q8_k_quantize_x1536", 0, &mut || BlockQ8K::quantize(&xk, &mut y));
                }
                for (ty, w) in &kq {
                    let m = QuantMatrix::new(*ty, 576, 1536, &w[..]).unwrap();
                    let case = format!("{}_576x1536", ty.name().to_lowercase());
                    report(&case, w.len(), &mut || {
                        k.matmul(&m, &xk, tokens, &mut out[..576 * tokens], &mut scratch).unwrap()
                    });
                }
            }
            if tokens == 1 && threads == 1 {
                let xk = input(1536);
                let mut out = vec![0.0f32; 576];
                for (ty, w) in &kq {
                    let t = best(&mut || {
                        use pagoda::core::quant::{BlockQ4K, BlockQ5K, BlockQ6K};
                        let o = &mut out[..576];
                        match ty {
                            GgmlType::Q4_K => core_rows::<BlockQ4K>(w, 576, &xk, o),
                            GgmlType::Q5_K => core_rows::<BlockQ5K>(w, 576, &xk, o),
                            GgmlType::Q6_K => core_rows::<BlockQ6K>(w, 576, &xk, o),
                            _ => {}
                        }
                    });
                    if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K) {
                        println!(
                            "{:<8} {:>3} {:>3} {:<24} {:>10.1} {:>9.2}",
                            "core",
                            1,
                            1,
                            format!("{}_576x1536", ty.name().to_lowercase()),
                            t.as_secs_f64() * 1e6,
                            w.len() as f64 / t.as_secs_f64() / 1e9
                        );
                    }
                }
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
