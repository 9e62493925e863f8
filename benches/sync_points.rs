//! The cost of one *empty* rayon parallel region, of each kind the forward pass enters,
//! so that the synchronisation overhead per generated token is `regions × cost`
//! (`docs/benchmarks.md`, "Synchronisation points per token").
//!
//! The kinds, each with an empty body and as many pieces as pagoda makes at that thread
//! count:
//!
//! - `join`: `rayon::join` of two empty closures, the primitive every region below is
//!   built of (a region over `p` pieces is a tree of joins).
//! - `matmul_chunks`: `par_chunks_mut(chunk).enumerate().for_each`, a one-matrix decode
//!   matmul (`cpu/src/kernels/matmul.rs` `for_row_chunks`) over the 576 rows of
//!   SmolLM2's `attn_output`, cut as that function cuts them.
//! - `matmul_chunks_busy2us`: the same with 2 µs of busy-waiting per chunk (about a
//!   decode chunk's work), so that the other worker really steals and the caller really
//!   waits for it: an empty body is usually all run by the thread that entered the region
//!   (an un-stolen `join` costs ~20 ns), so the cost of a region both threads take part in
//!   is this one's time minus `chunks × 2 µs ÷ threads`.
//! - `matmul_tasks`: `Vec::into_par_iter().for_each` over the (matrix, row chunk) tasks of
//!   the fused q/k/v matmul (576 + 192 + 192 rows), the task list built per call as
//!   `for_row_chunks` builds it.
//! - `attention_tasks`: `par_iter().map(..).collect::<Result<Vec<_>, _>>()`, the paged
//!   attention split (`cpu/src/attention/f16_pages.rs`): a decode (one task per thread)
//!   and a 512-token prefill chunk of SmolLM2 (64 token groups × 3 KV heads).
//! - `spans`: `into_par_iter().try_for_each` over the spans of a batch, one span (one
//!   sequence), as `Llama::attention_block` runs it for every layer.
//!
//! Each runs three ways:
//!
//! - `in_pool`: called on a worker of the pool, back to back, as under `pagoda bench`
//!   (which runs the whole pass inside `pool.install`): workers are awake between regions.
//! - `from_outside`: each region entered from a thread that is not in the pool, as
//!   `pagoda run`, `chat` and `serve` call the forward pass on rayon's global pool (the
//!   job is injected and the caller blocks on a latch until it is done). Only a region
//!   that splits does this in pagoda: one with a single piece (one span; attention's one
//!   task at 1 thread) runs on the caller without entering the pool, so for `spans_1`
//!   (and `attention_tasks_decode` at 1 thread) this row overstates.
//! - `after_idle`: in the pool, but 1 ms after the previous region, when the workers have
//!   gone to sleep (rayon parks an idle worker after 32 rounds of yielding): the first
//!   region of a token after sampling, detokenizing and printing.
//!
//! Run: `cargo bench --bench sync_points` (about a minute; a filter such as `-- busy2us`
//! runs a part).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use rayon::prelude::*;
use rayon::ThreadPool;

/// `for_row_chunks`'s chunk of rows (`cpu/src/kernels/matmul.rs`): several chunks per
/// thread, a multiple of 4 rows, at least 8.
fn chunk_rows(total_rows: usize, threads: usize) -> usize {
    total_rows.div_ceil(threads * 8).max(8).next_multiple_of(4)
}

/// The fused q/k/v matmul's tasks: (matrix, first row), one per chunk of each matrix.
fn qkv_tasks(threads: usize) -> Vec<(usize, usize)> {
    let rows = [576usize, 192, 192];
    let chunk = chunk_rows(rows.iter().sum(), threads);
    let mut tasks = Vec::new();
    for (m, &r) in rows.iter().enumerate() {
        tasks.extend((0..r.div_ceil(chunk)).map(|c| (m, c * chunk)));
    }
    tasks
}

/// Busy-waits `d`: a chunk of fixed work, the same on every thread.
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// One region on the current pool.
type Region = Box<dyn Fn() + Sync>;

/// The empty regions, by name.
fn regions(threads: usize) -> Vec<(&'static str, Region)> {
    let rows = 576;
    let chunk = chunk_rows(rows, threads);
    // Decode attention: one task per thread (3 KV heads' 9 query heads cut into `threads`
    // runs); a 512-token prefill chunk: 64 groups of 8 tokens × 3 KV heads.
    let decode_tasks: Vec<usize> = (0..threads).collect();
    let prefill_tasks: Vec<usize> = (0..64 * 3).collect();
    let out = std::sync::Mutex::new(vec![0.0f32; rows]);
    let busy = std::sync::Mutex::new(vec![0.0f32; rows]);
    vec![
        (
            "join",
            Box::new(|| {
                rayon::join(|| black_box(0u8), || black_box(1u8));
            }),
        ),
        (
            "matmul_chunks",
            Box::new(move || {
                out.lock().unwrap().par_chunks_mut(chunk).enumerate().for_each(|(c, o)| {
                    black_box((c, o.len()));
                });
            }),
        ),
        (
            "matmul_chunks_busy2us",
            Box::new(move || {
                busy.lock().unwrap().par_chunks_mut(chunk).enumerate().for_each(|(c, o)| {
                    spin(Duration::from_micros(2));
                    black_box((c, o.len()));
                });
            }),
        ),
        (
            "matmul_tasks",
            Box::new(move || {
                qkv_tasks(threads).into_par_iter().for_each(|t| {
                    black_box(t);
                });
            }),
        ),
        (
            "attention_tasks_decode",
            Box::new(move || {
                let r: Result<Vec<usize>, ()> =
                    decode_tasks.par_iter().map(|&t| Ok(black_box(t))).collect();
                black_box(r.unwrap());
            }),
        ),
        (
            "attention_tasks_prefill512",
            Box::new(move || {
                let r: Result<Vec<usize>, ()> =
                    prefill_tasks.par_iter().map(|&t| Ok(black_box(t))).collect();
                black_box(r.unwrap());
            }),
        ),
        (
            "spans_1",
            Box::new(|| {
                let spans = vec![0usize];
                let r: Result<(), ()> = spans.into_par_iter().try_for_each(|s| {
                    black_box(s);
                    Ok(())
                });
                r.unwrap();
            }),
        ),
    ]
}

/// `iters` regions back to back on a worker of `pool`.
fn in_pool(pool: &ThreadPool, region: &(dyn Fn() + Sync), iters: u64) -> Duration {
    pool.install(|| {
        let start = Instant::now();
        for _ in 0..iters {
            region();
        }
        start.elapsed()
    })
}

/// `iters` regions, each entered from this thread (not in the pool).
fn from_outside(pool: &ThreadPool, region: &(dyn Fn() + Sync), iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        pool.install(region);
    }
    start.elapsed()
}

/// `iters` regions on a worker of `pool`, each timed alone after 1 ms of idleness.
fn after_idle(pool: &ThreadPool, region: &(dyn Fn() + Sync), iters: u64) -> Duration {
    pool.install(|| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            std::thread::sleep(Duration::from_millis(1));
            let start = Instant::now();
            region();
            total += start.elapsed();
        }
        total
    })
}

fn sync_points(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let regions = regions(threads);
        let mut g = c.benchmark_group(format!("sync_points_t{threads}"));
        g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(1));
        for (name, region) in &regions {
            let region = region.as_ref();
            g.bench_function(BenchmarkId::new("in_pool", name), |b| {
                b.iter_custom(|iters| in_pool(&pool, region, iters))
            });
            g.bench_function(BenchmarkId::new("from_outside", name), |b| {
                b.iter_custom(|iters| from_outside(&pool, region, iters))
            });
        }
        g.finish();

        // Each iteration sleeps 1 ms outside the measured time: a short measurement time
        // keeps the wall time to a couple of seconds per case.
        let mut g = c.benchmark_group(format!("sync_points_t{threads}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(20));
        for (name, region) in
            regions.iter().filter(|(n, _)| n.starts_with("matmul_chunks") || *n == "join")
        {
            let region = region.as_ref();
            g.bench_function(BenchmarkId::new("after_idle", name), |b| {
                b.iter_custom(|iters| after_idle(&pool, region, iters))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, sync_points);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
