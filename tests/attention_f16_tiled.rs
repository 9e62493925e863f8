//! `pagoda_cpu::attention::paged_attention_f16_tiled` (llama.cpp's tiled flash attention,
//! what it runs for batches of ≥ 64 query rows over an f16 cache):
//! - it equals, bit for bit, a transcription of llama.cpp's loop
//!   (`ggml_compute_forward_flash_attn_ext_tiled`, ggml-cpu/ops.cpp, b11312) over a
//!   contiguous cache: tiles of 64 query rows and 64 keys, the tile skipped when no row of
//!   it sees a key, zero-padded keys and values, a row's probabilities zeroed where it sees
//!   none of the tile, the GEMMs' per-cell FMA chains, glibc's `expf` (`f32::exp`) and
//!   ggml's vector `expf`;
//! - every SIMD level, thread count, page placement and split of the rows into calls gives
//!   the same bits (a row does not depend on the other rows of its batch);
//! - it stays within f32 rounding of the exact f64 attention.
//!
//! Random GQA shapes, head dims (64, 128, 256 as Gemma 3), block sizes, sliding windows and
//! contexts that end inside a tile.

mod common;

use common::Rng;
use half::f16;
use pagoda_core::attention::naive::naive_attention;
use pagoda_core::attention::AttnConfig;
use pagoda_core::kv::{KvConfig, KvPages};
use pagoda_core::pool::PageId;
use pagoda_cpu::attention::paged_attention_f16_tiled;
use pagoda_cpu::kernels::{silu, SimdLevel};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    n_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    n_ctx: usize,
    n_new: usize,
    window: Option<usize>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1..=3usize,
        prop::sample::select(vec![1usize, 3, 4]),
        prop::sample::select(vec![64usize, 128, 256, 32]),
        prop::sample::select(vec![1usize, 5, 16, 64]),
        1..=300usize,
        1..=150usize,
        prop::option::weighted(0.3, 1..=100usize),
        any::<u64>(),
    )
        .prop_map(|(n_kv_heads, group, head_dim, block_size, n_ctx, n_new, window, seed)| {
            Case {
                n_kv_heads,
                group,
                head_dim,
                block_size,
                n_ctx,
                n_new: n_new.min(n_ctx),
                window,
                seed: seed | 1,
            }
        })
}

struct Built {
    kv: KvPages<f16, Vec<f16>>,
    pages: Vec<PageId>,
    /// K and V as stored (f16 values), `[pos][kv_head][d]`.
    k: Vec<f32>,
    v: Vec<f32>,
    q: Vec<f32>,
    cfg: AttnConfig,
}

fn build(c: &Case, reverse: bool) -> Built {
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
    let mut cfg = AttnConfig::new(c.n_kv_heads * c.group, c.n_kv_heads, c.head_dim).unwrap();
    cfg.window = c.window;
    let q: Vec<f32> = (0..c.n_new * cfg.q_len()).map(|_| 2.0 * rng.unit()).collect();
    Built { kv, pages, k, v, q, cfg }
}

/// The case's rows computed `chunk` new tokens per call (the last call fewer).
fn chunked(level: SimdLevel, c: &Case, chunk: usize, reverse: bool) -> Vec<f32> {
    let b = build(c, reverse);
    let q_len = b.cfg.q_len();
    let first = c.n_ctx - c.n_new;
    let mut out = vec![f32::NAN; b.q.len()];
    let calls = b.q.chunks(chunk * q_len).zip(out.chunks_mut(chunk * q_len));
    for (i, (qc, o)) in calls.enumerate() {
        let n_ctx = first + i * chunk + qc.len() / q_len;
        paged_attention_f16_tiled(level, &b.kv, 0, &b.pages, n_ctx, qc, o, &b.cfg).unwrap();
    }
    out
}

fn run(level: SimdLevel, c: &Case) -> Vec<f32> {
    chunked(level, c, c.n_new, false)
}

/// The first element whose bits differ, with both values (`None`: identical).
fn first_diff(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    if got.len() != want.len() {
        return Some((got.len().min(want.len()), f32::NAN, f32::NAN));
    }
    let i = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits())?;
    Some((i, got[i], want[i]))
}

/// `_mm512_reduce_add_ps` (GCC's and Rust's): lanes i + i+8, then i + i+4, i + i+2, 0 + 1.
fn reduce_add_512(l: &[f32]) -> f32 {
    let mut a = [0.0f32; 8];
    for i in 0..8 {
        a[i] = l[i] + l[i + 8];
    }
    let mut b = [0.0f32; 4];
    for i in 0..4 {
        b[i] = a[i] + a[i + 4];
    }
    let c = [b[0] + b[2], b[1] + b[3]];
    c[0] + c[1]
}

/// llama.cpp's tiled kernel, transcribed loop for loop (Q_TILE = KV_TILE = 64,
/// `simd_gemm`'s per-cell chains, `ggml_vec_soft_max_f32`'s AVX-512 form), over the
/// case's contiguous cache, the mask llama.cpp builds for one sequence (causal, and the
/// sliding window), and the rows of one query head in tiles of 64.
fn llamacpp_tiled(b: &Built, c: &Case) -> Vec<f32> {
    const QT: usize = 64;
    const KT: usize = 64;
    let (hd, nh, nkv) = (c.head_dim, b.cfg.n_heads, c.n_kv_heads);
    let first = c.n_ctx - c.n_new;
    let sees = |row: usize, key: usize| {
        let p = first + row;
        key <= p && c.window.is_none_or(|w| key + w > p)
    };
    let mut out = vec![f32::NAN; b.q.len()];
    for h in 0..nh {
        let g = h / (nh / nkv);
        for r0 in (0..c.n_new).step_by(QT) {
            let rows = QT.min(c.n_new - r0);
            let (mut s_, mut m_) = ([0.0f32; QT], [f32::NEG_INFINITY; QT]);
            let mut vkq = vec![0.0f32; QT * hd];
            let mut qf = vec![0.0f32; QT * hd];
            for t in 0..rows {
                let at = ((r0 + t) * nh + h) * hd;
                qf[t * hd..(t + 1) * hd].copy_from_slice(&b.q[at..at + hd]);
            }
            let mut kf = vec![0.0f32; hd * KT];
            let mut vf = vec![0.0f32; KT * hd];
            for ic in (0..c.n_ctx).step_by(KT) {
                let kv_tile = KT.min(c.n_ctx - ic);
                let mut mask = vec![f32::NEG_INFINITY; QT * KT];
                let mut can_skip = true;
                for t in 0..rows {
                    for j in 0..kv_tile {
                        if sees(r0 + t, ic + j) {
                            mask[t * KT + j] = 0.0;
                            can_skip = false;
                        }
                    }
                }
                if can_skip {
                    continue;
                }
                for j in 0..kv_tile {
                    for d in 0..hd {
                        kf[d * KT + j] = b.k[((ic + j) * nkv + g) * hd + d];
                    }
                }
                // KQ = Q · K (C += A·B, per cell: acc = fma(a, b, acc) over the inner dim).
                let mut kq = vec![0.0f32; QT * KT];
                for t in 0..QT {
                    for j in 0..KT {
                        let mut acc = 0.0f32;
                        for d in 0..hd {
                            acc = qf[t * hd + d].mul_add(kf[d * KT + j], acc);
                        }
                        kq[t * KT + j] = acc * b.cfg.scale;
                    }
                }
                for t in 0..QT {
                    for j in kv_tile..KT {
                        kq[t * KT + j] = f32::NEG_INFINITY;
                    }
                }
                for t in 0..rows {
                    for j in 0..KT {
                        kq[t * KT + j] += mask[t * KT + j];
                    }
                }
                let mut skip = [false; QT];
                for t in 0..QT {
                    let row = &mut kq[t * KT..(t + 1) * KT];
                    let mut tile_max = f32::NEG_INFINITY;
                    for &x in row.iter() {
                        tile_max = if tile_max > x { tile_max } else { x };
                    }
                    if tile_max == f32::NEG_INFINITY {
                        skip[t] = true;
                        continue;
                    }
                    let m_new = m_[t].max(tile_max);
                    if m_new > m_[t] {
                        let ms = (m_[t] - m_new).exp(); // glibc expf
                        vkq[t * hd..(t + 1) * hd].iter_mut().for_each(|a| *a *= ms);
                        s_[t] *= ms;
                    }
                    m_[t] = m_new;
                    let mut sum = 0.0f64;
                    for g16 in row.chunks_exact_mut(16) {
                        g16.iter_mut().for_each(|x| *x = silu::exp(*x - m_new));
                        sum += f64::from(reduce_add_512(g16));
                    }
                    s_[t] = (f64::from(s_[t]) + sum) as f32;
                }
                for j in 0..kv_tile {
                    for d in 0..hd {
                        vf[j * hd + d] = b.v[((ic + j) * nkv + g) * hd + d];
                    }
                }
                for t in 0..QT {
                    if skip[t] {
                        kq[t * KT..(t + 1) * KT].fill(0.0);
                    }
                }
                // VKQ += KQ · V, per cell from its current value.
                for t in 0..QT {
                    for d in 0..hd {
                        let mut acc = vkq[t * hd + d];
                        for j in 0..KT {
                            acc = kq[t * KT + j].mul_add(vf[j * hd + d], acc);
                        }
                        vkq[t * hd + d] = acc;
                    }
                }
            }
            for t in 0..rows {
                let inv = if s_[t] == 0.0 { 0.0 } else { 1.0 / s_[t] };
                let at = ((r0 + t) * nh + h) * hd;
                for d in 0..hd {
                    out[at + d] = vkq[t * hd + d] * inv;
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(common::proptest_config(24))]

    #[test]
    fn equals_llamacpp_loop_at_every_level_thread_count_paging_and_split(c in case()) {
        let b = build(&c, false);
        let want = llamacpp_tiled(&b, &c);
        for level in SimdLevel::available() {
            prop_assert_eq!(first_diff(&run(level, &c), &want), None, "{} vs llama.cpp's loop", level);
        }
        let level = SimdLevel::best_available();
        prop_assert_eq!(first_diff(&chunked(level, &c, c.n_new, true), &want), None, "reversed pages");
        for threads in [1usize, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool.install(|| run(level, &c));
            prop_assert_eq!(first_diff(&got, &want), None, "{} threads", threads);
        }
        for chunk in [1usize, 7, 64] {
            let got = chunked(level, &c, chunk, false);
            prop_assert_eq!(first_diff(&got, &want), None, "calls of {}", chunk);
        }
    }

    #[test]
    fn close_to_exact_attention(c in case()) {
        let b = build(&c, false);
        let got = run(SimdLevel::best_available(), &c);
        let mut scores = vec![0.0f64; c.n_ctx];
        let mut exact = vec![0.0f32; b.q.len()];
        naive_attention(&b.q, &b.k, &b.v, c.n_ctx - c.n_new, &b.cfg, &mut scores, &mut exact)
            .unwrap();
        // f32 throughout (ggml's vector exp: ~2 ulp): values in [-1, 1].
        for (i, (g, e)) in got.iter().zip(&exact).enumerate() {
            prop_assert!((g - e).abs() <= 2e-5, "element {}: {} vs exact {}", i, g, e);
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
        window: None,
        seed: 3,
    };
    let b = build(&c, false);
    let mut out = vec![0.0f32; b.q.len()];
    let call = |n_ctx, out: &mut [f32]| {
        paged_attention_f16_tiled(SimdLevel::Scalar, &b.kv, 0, &b.pages, n_ctx, &b.q, out, &b.cfg)
    };
    assert!(call(1000, &mut out).is_err(), "a context longer than the pages hold");
    assert!(call(20, &mut out[..3]).is_err(), "a wrong output length");
}
