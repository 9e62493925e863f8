//! `pagoda_cpu::attention::paged_attention_f16` (llama.cpp's one-key-at-a-time rounding
//! over f16 pages): every SIMD level returns the scalar level's bits; a row's result does
//! not depend on how the context is paged (page order in the slab, block size stays) nor on
//! how the prompt is chunked (prefill of n tokens = n single-token decodes); and it stays
//! within f16 rounding of the exact f64 attention. Random GQA shapes, head dims (multiples
//! of 16 take the AVX-512 kernel: 64 and 128 in one block of registers, 256 (Gemma 3) in
//! column blocks, 80 and 96 with the dot's f64 tail; 8 and 40 the portable one; AVX2 runs
//! multiples of 8 in 8-lane column blocks), block sizes and contexts; Gemma 3's shape (MQA,
//! 4 query heads of 256) and other widths at fixed prefill chunks of 1 to 40 tokens.

mod common;

use common::Rng;
use half::f16;
use pagoda_core::attention::naive::naive_attention;
use pagoda_core::attention::AttnConfig;
use pagoda_core::kv::{KvConfig, KvPages};
use pagoda_core::pool::PageId;
use pagoda_cpu::attention::{paged_attention_f16, SPLIT_MIN_KEYS};
use pagoda_cpu::kernels::SimdLevel;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    n_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    n_ctx: usize,
    n_new: usize,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1..=3usize,
        prop::sample::select(vec![1usize, 3, 4]),
        prop::sample::select(vec![64usize, 128, 8, 40, 96, 256, 80]),
        prop::sample::select(vec![1usize, 4, 16, 32]),
        1..=700usize,
        1..=12usize,
        any::<u64>(),
    )
        .prop_map(|(n_kv_heads, group, head_dim, block_size, n_ctx, n_new, seed)| Case {
            n_kv_heads,
            group,
            head_dim,
            block_size,
            n_ctx,
            n_new: n_new.min(n_ctx),
            seed: seed | 1,
        })
}

/// The case's K/V written into pages placed by `order` (`order[i]` = the slab page of
/// logical page i); returns the cache, its block table, the rounded K/V, q and the config.
#[allow(clippy::type_complexity)]
fn build(
    c: &Case,
    reverse: bool,
) -> (KvPages<f16, Vec<f16>>, Vec<PageId>, Vec<f32>, Vec<f32>, Vec<f32>, AttnConfig) {
    let mut rng = Rng(c.seed);
    let n_pages = c.n_ctx.div_ceil(c.block_size);
    let kc = KvConfig {
        n_layers: 1,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        block_size: c.block_size,
        n_pages,
    };
    let mut kv = KvPages::new(kc, vec![f16::NAN; kc.slab_len().unwrap()]).unwrap();
    let pages: Vec<PageId> = (0..n_pages as u32)
        .map(|i| PageId(if reverse { n_pages as u32 - 1 - i } else { i }))
        .collect();
    let row = kc.row_len();
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for pos in 0..c.n_ctx {
        let k_row: Vec<f32> = (0..row).map(|_| 2.0 * rng.unit()).collect();
        let v_row: Vec<f32> = (0..row).map(|_| rng.unit()).collect();
        kv.write(0, pages[pos / c.block_size], pos % c.block_size, &k_row, &v_row).unwrap();
        k.extend(k_row.iter().map(|&x| f16::from_f32(x).to_f32()));
        v.extend(v_row.iter().map(|&x| f16::from_f32(x).to_f32()));
    }
    let cfg = AttnConfig::new(c.n_kv_heads * c.group, c.n_kv_heads, c.head_dim).unwrap();
    let q: Vec<f32> = (0..c.n_new * cfg.q_len()).map(|_| rng.unit()).collect();
    (kv, pages, k, v, q, cfg)
}

fn run(level: SimdLevel, c: &Case, reverse: bool) -> Vec<f32> {
    let (kv, pages, _, _, q, cfg) = build(c, reverse);
    let mut out = vec![f32::NAN; q.len()];
    paged_attention_f16(level, &kv, 0, &pages, c.n_ctx, &q, &mut out, &cfg).unwrap();
    out
}

/// The case's rows computed one new token per call (the decode path), concatenated.
fn token_by_token(level: SimdLevel, c: &Case) -> Vec<f32> {
    chunked(level, c, 1)
}

/// The case's rows computed `chunk` new tokens per call (the last call fewer), concatenated.
fn chunked(level: SimdLevel, c: &Case, chunk: usize) -> Vec<f32> {
    let (kv, pages, _, _, q, cfg) = build(c, false);
    let q_len = cfg.q_len();
    let first = c.n_ctx - c.n_new;
    let mut out = vec![f32::NAN; q.len()];
    let calls = q.chunks(chunk * q_len).zip(out.chunks_mut(chunk * q_len));
    for (i, (qc, o)) in calls.enumerate() {
        let n_ctx = first + i * chunk + qc.len() / q_len;
        paged_attention_f16(level, &kv, 0, &pages, n_ctx, qc, o, &cfg).unwrap();
    }
    out
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #![proptest_config(common::proptest_config(32))]

    #[test]
    fn every_level_paging_and_chunking_give_the_same_bits(c in case()) {
        let want = run(SimdLevel::Scalar, &c, false);
        for level in SimdLevel::available() {
            prop_assert_eq!(bits(&run(level, &c, false)), bits(&want), "{} vs scalar", level);
        }
        let level = SimdLevel::best_available();
        prop_assert_eq!(bits(&run(level, &c, true)), bits(&want), "reversed page order");
        // Thread counts change how rows are grouped into tasks (one kv head's group, or
        // per-thread runs of heads spanning kv heads), never a row's result — except that
        // rows seeing ≥ SPLIT_MIN_KEYS keys are split into one part per thread (as
        // llama.cpp's decode): those equal the scalar level at the same thread count, and
        // the one-token-at-a-time check below runs the parts in parallel against the
        // batch's parts one after the other.
        let splits = c.n_ctx >= SPLIT_MIN_KEYS;
        for threads in [1usize, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool.install(|| run(level, &c, false));
            let scalar = pool.install(|| run(SimdLevel::Scalar, &c, false));
            prop_assert_eq!(bits(&got), bits(&scalar), "{} threads vs scalar", threads);
            if !splits {
                prop_assert_eq!(bits(&got), bits(&want), "{} threads", threads);
            }
            // Token by token in this pool: each decode splits its keys over parallel tasks.
            let tokens = pool.install(|| token_by_token(level, &c));
            prop_assert_eq!(bits(&tokens), bits(&got), "{} threads, token by token", threads);
        }

        // The same rows one token at a time (the decode path).
        prop_assert_eq!(bits(&token_by_token(level, &c)), bits(&want), "token by token");
    }

    #[test]
    fn close_to_exact_attention(c in case()) {
        let (_, _, k, v, q, cfg) = build(&c, false);
        let got = run(SimdLevel::best_available(), &c, false);
        let mut scores = vec![0.0f64; c.n_ctx];
        let mut exact = vec![0.0f32; q.len()];
        naive_attention(&q, &k, &v, c.n_ctx - c.n_new, &cfg, &mut scores, &mut exact).unwrap();
        // f16 query and an f16 running sum: a few f16 ulps (2^-11) per output, growing
        // slowly with the context; values are in [-1, 1].
        let tol = 4e-3 * (1.0 + (c.n_ctx as f32).sqrt() / 8.0);
        for (i, (g, e)) in got.iter().zip(&exact).enumerate() {
            prop_assert!((g - e).abs() <= tol, "element {}: {} vs exact {} (tol {})", i, g, e, tol);
        }
    }
}

/// Gemma 3's attention (4 query heads on one kv head of 256), MQA and GQA at the other
/// widths the AVX-512 kernel runs in column blocks (192, 512) or with the dot's f64 tail
/// (80, 48), one it leaves to the portable kernel (40: AVX2's 8-lane blocks take it), and
/// one no vector block fits (19): every level equals the scalar level at every thread
/// count, and prefill chunks of 1 to 40 tokens give the whole call's bits (contexts past
/// `SPLIT_MIN_KEYS` split their rows over the threads, both ways alike).
#[test]
fn wide_and_odd_heads_at_every_level_thread_count_and_chunk() {
    let shapes = [
        (1, 4, 256),
        (2, 2, 256),
        (1, 4, 80),
        (2, 3, 48),
        (1, 3, 192),
        (1, 2, 512),
        (1, 4, 40),
        (1, 3, 19),
    ];
    let contexts = [(1, 1, 16), (40, 40, 16), (100, 33, 32), (600, 17, 16), (530, 1, 32)];
    for (seed, &(n_kv_heads, group, head_dim)) in (1u64..).step_by(2).zip(&shapes) {
        for &(n_ctx, n_new, block_size) in &contexts {
            let c = Case { n_kv_heads, group, head_dim, block_size, n_ctx, n_new, seed };
            let what = format!("{c:?}");
            let want = run(SimdLevel::Scalar, &c, false);
            for level in SimdLevel::available() {
                assert_eq!(bits(&run(level, &c, false)), bits(&want), "{level} vs scalar, {what}");
            }
            for threads in [1usize, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let scalar = pool.install(|| run(SimdLevel::Scalar, &c, false));
                for level in SimdLevel::available() {
                    let got = pool.install(|| run(level, &c, false));
                    assert_eq!(bits(&got), bits(&scalar), "{level}, {threads} threads, {what}");
                    for chunk in [1usize, 2, 7, 40] {
                        let parts = pool.install(|| chunked(level, &c, chunk));
                        let at = format!("{level}, {threads} threads, chunks of {chunk}, {what}");
                        assert_eq!(bits(&parts), bits(&got), "{at}");
                    }
                }
            }
        }
    }
}

#[test]
fn errors_are_cores() {
    let c = Case {
        n_kv_heads: 1,
        group: 1,
        head_dim: 64,
        block_size: 16,
        n_ctx: 20,
        n_new: 1,
        seed: 3,
    };
    let (kv, pages, _, _, q, cfg) = build(&c, false);
    let mut out = vec![0.0f32; q.len()];
    // A context longer than the pages hold.
    let e = paged_attention_f16(SimdLevel::Scalar, &kv, 0, &pages, 1000, &q, &mut out, &cfg);
    assert!(e.is_err());
    // A wrong output length.
    let e = paged_attention_f16(SimdLevel::Scalar, &kv, 0, &pages, 20, &q, &mut out[..3], &cfg);
    assert!(e.is_err());
}
