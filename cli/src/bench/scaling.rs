//! `pagoda bench --scaling`: the lecture's complexity table, measured.
//!
//! For each N, one greedy generation of N tokens from a one-token prompt, timed end to
//! end, twice: with the paged KV cache (each step runs one token and attends over the
//! cached pages) and with `no_kv_cache` (each step clears the cache and re-runs the
//! whole sequence). Predicted, for L layers:
//!
//! ```text
//!                  time                               KV memory
//!   paged cache    Σ_t (W + c·t)   = W·N + c·N²/2     O(N·L)
//!   no cache       Σ_t (W + w·t + c·t²)                 O(N·L) here, O(N) at best
//!                  ≈ W·N + w·N²/2 + c·N³/3
//! ```
//!
//! W is the per-step cost of reading every weight once (the dominant term for a small
//! model at small N), c the attention cost per cached token, w the per-token matmul
//! cost of a batched pass. The log-log slope therefore starts near 1 (paged) or 2 (no
//! cache) and only approaches 2 or 3 once N passes the crossover W/c (resp. w/c); the
//! report fits both terms and prints the crossover.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use pagoda_cpu::generate::{generate, GenerateOptions};
use pagoda_cpu::model::{KvType, Llama, Session, SessionOptions};
use pagoda_cpu::sampler::{Sampler, SamplerConfig};

use super::{from_pool, kv_name, median, msg, thread_pool, InPool, ModelInfo};
use crate::common::{write_atomically, write_stdout, CliResult};
use crate::plot::{loglog_svg, Series};

/// Settings of the experiment.
pub struct ScalingOptions {
    /// Generated token counts.
    pub n_list: Vec<usize>,
    /// Largest N run without a cache.
    pub no_cache_max: usize,
    /// Threads (one rayon pool).
    pub threads: usize,
    /// KV page type.
    pub kv_type: KvType,
    /// Tokens per page.
    pub block_size: usize,
    /// Tokens per forward pass (the no-cache recomputation runs in such batches).
    pub batch: usize,
    /// Where scaling.md and scaling.svg go.
    pub out_dir: PathBuf,
}

/// One generation's measurement.
#[derive(Clone, Copy, Debug)]
struct Point {
    n: usize,
    seconds: f64,
    kv_bytes: usize,
}

/// Runs below this many seconds are repeated (median of 3) to tame noise.
const REPEAT_BELOW_S: f64 = 3.0;

pub fn run(model: &Llama, info: &ModelInfo, o: &ScalingOptions) -> CliResult {
    if o.n_list.is_empty() || o.n_list.contains(&0) {
        return Err("--n-list: give positive token counts, e.g. 64,128,256".into());
    }
    let mut n_list = o.n_list.clone();
    n_list.sort_unstable();
    n_list.dedup();
    let pool = thread_pool(o.threads)?;
    let t_start = Instant::now();
    let mut paged = Vec::new();
    let mut none = Vec::new();
    for &n in &n_list {
        let p = pool.install(|| measure(model, o, n, false)).map_err(from_pool)?;
        eprintln!("scaling: N={n:5} paged    {:8.3} s  KV {} B", p.seconds, p.kv_bytes);
        paged.push(p);
        if n <= o.no_cache_max {
            let q = pool.install(|| measure(model, o, n, true)).map_err(from_pool)?;
            eprintln!("scaling: N={n:5} no-cache {:8.3} s  KV {} B", q.seconds, q.kv_bytes);
            none.push(q);
        }
    }
    let wall = t_start.elapsed().as_secs_f64();
    std::fs::create_dir_all(&o.out_dir)
        .map_err(|e| format!("cannot create '{}': {e}", o.out_dir.display()))?;
    let md = report(model, info, o, &paged, &none, wall);
    let svg = plot(&paged, &none);
    let md_path = o.out_dir.join("scaling.md");
    let svg_path = o.out_dir.join("scaling.svg");
    write_atomically(&md_path, md.as_bytes())?;
    write_atomically(&svg_path, svg.as_bytes())?;
    write_stdout(&format!("{md}\n"))?;
    eprintln!("scaling: wrote {} and {} ({wall:.0} s)", md_path.display(), svg_path.display());
    Ok(())
}

/// Times one greedy generation of `n` tokens (median of 3 if it is short).
fn measure(model: &Llama, o: &ScalingOptions, n: usize, no_kv_cache: bool) -> InPool<Point> {
    let mut times = Vec::new();
    let mut kv_bytes = 0;
    while times.len() < 3 {
        let mut session = Session::new(
            model,
            SessionOptions {
                n_ctx: (n + 1).next_multiple_of(o.block_size),
                kv_type: o.kv_type,
                block_size: o.block_size,
                n_batch: o.batch,
            },
        )
        .map_err(msg)?;
        let mut sampler = Sampler::new(SamplerConfig::greedy()).map_err(msg)?;
        let opts = GenerateOptions { n_predict: Some(n), ignore_eos: true, no_kv_cache };
        let t0 = Instant::now();
        let g =
            generate(&mut session, &mut sampler, &[1], &opts, |_| false, |_| {}).map_err(msg)?;
        let s = t0.elapsed().as_secs_f64();
        if g.tokens.len() != n {
            return Err(format!("generation stopped after {} of {n} tokens", g.tokens.len()).into());
        }
        // Pages are only added within a step (the no-cache path clears, then refills
        // the whole sequence), so the cache is at its peak after the last step.
        kv_bytes = session.kv_bytes_in_use();
        times.push(s);
        if s >= REPEAT_BELOW_S {
            break;
        }
    }
    Ok(Point { n, seconds: median(&times), kv_bytes })
}

/// Least-squares slope of ln y against ln x.
fn loglog_slope(p: &[Point]) -> f64 {
    if p.len() < 2 {
        return f64::NAN;
    }
    let xs: Vec<f64> = p.iter().map(|q| (q.n as f64).ln()).collect();
    let ys: Vec<f64> = p.iter().map(|q| q.seconds.ln()).collect();
    let mx = xs.iter().sum::<f64>() / xs.len() as f64;
    let my = ys.iter().sum::<f64>() / ys.len() as f64;
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

/// Least squares `seconds ≈ a·N^k + b·N^(k+1)` (no intercept): `(a, b)`.
fn two_term_fit(p: &[Point], k: i32) -> (f64, f64) {
    let (mut s11, mut s12, mut s22, mut s1y, mut s2y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for q in p {
        let n = q.n as f64;
        let (f1, f2) = (n.powi(k), n.powi(k + 1));
        s11 += f1 * f1;
        s12 += f1 * f2;
        s22 += f2 * f2;
        s1y += f1 * q.seconds;
        s2y += f2 * q.seconds;
    }
    let det = s11 * s22 - s12 * s12;
    if p.len() < 2 || det.abs() < f64::MIN_POSITIVE {
        return (f64::NAN, f64::NAN);
    }
    ((s1y * s22 - s2y * s12) / det, (s11 * s2y - s12 * s1y) / det)
}

fn report(
    model: &Llama,
    info: &ModelInfo,
    o: &ScalingOptions,
    paged: &[Point],
    none: &[Point],
    wall: f64,
) -> String {
    let cfg = model.config();
    // KV bytes per token are linear in the number of KV heads (same format per head).
    let model_per_token = o.kv_type.bytes_per_token(cfg).unwrap_or(0);
    let per_token = |kv_heads: usize| model_per_token / cfg.n_kv_heads.max(1) * kv_heads;
    let one_layer = |n: usize| n * model_per_token / cfg.n_layers.max(1);
    let sp = loglog_slope(paged);
    let sn = loglog_slope(none);
    let (pa, pb) = two_term_fit(paged, 1);
    // The no-cache steps read every weight once too (one batched pass per step): take
    // the paged fit's W·N off before fitting the N² and N³ terms.
    let none_less_weights: Vec<Point> =
        none.iter().map(|q| Point { seconds: q.seconds - pa * q.n as f64, ..*q }).collect();
    let (na, nb) = two_term_fit(&none_less_weights, 2);
    let mut s = String::new();
    let _ = writeln!(s, "# Generation time and KV memory vs N, measured\n");
    let _ = writeln!(
        s,
        "Made by `pagoda bench --scaling --out-dir {} --n-list {} --no-cache-max {} -t {} --kv-type {}` \
         (model `{}`, {} layers, {} query heads, {} KV heads × {} dims; SIMD level `{}`; \
         block size {}; {:.0} s wall). Each N is one greedy generation of N tokens from a \
         one-token prompt, timed end to end (median of 3 when a run takes under {REPEAT_BELOW_S} s). \
         No-cache runs stop at N = {} because their time grows as N³. The machine is a shared \
         2-core VM: expect 5–10 % noise per point.\n",
        o.out_dir.display(),
        o.n_list.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        o.no_cache_max,
        o.threads,
        kv_name(o.kv_type),
        info.name,
        cfg.n_layers,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        model.kernels().level().name(),
        o.block_size,
        wall,
        o.no_cache_max,
    );
    let _ = writeln!(s, "![generation time vs N, log-log](scaling.svg)\n");
    let _ = writeln!(
        s,
        "| N | paged: time (s) | paged: ms/token | paged: peak KV bytes | no cache: time (s) | \
         no cache: peak KV bytes | no cache / paged |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    for p in paged {
        let q = none.iter().find(|q| q.n == p.n);
        let (qt, qk, ratio) = match q {
            Some(q) => (
                format!("{:.3}", q.seconds),
                q.kv_bytes.to_string(),
                format!("{:.1}×", q.seconds / p.seconds),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.2} | {} | {qt} | {qk} | {ratio} |",
            p.n,
            p.seconds,
            1e3 * p.seconds / p.n as f64,
            p.kv_bytes
        );
    }
    let local = |pts: &[Point]| -> String {
        pts.windows(2)
            .map(|w| {
                format!(
                    "{}→{}: {:.2}",
                    w[0].n,
                    w[1].n,
                    (w[1].seconds / w[0].seconds).ln() / (w[1].n as f64 / w[0].n as f64).ln()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "\n## Log-log slopes (least squares of ln time on ln N)\n");
    let _ = writeln!(s, "| | fitted exponent | local exponents | lecture |");
    let _ = writeln!(s, "|---|---:|---|---|");
    let _ = writeln!(s, "| paged KV cache | {sp:.2} | {} | O(N²L) |", local(paged));
    let _ = writeln!(s, "| no KV cache | {sn:.2} | {} | O(N³L) |", local(none));
    let _ = writeln!(s, "\n## Where the exponents come from\n");
    let n_lo = paged.first().map_or(0, |p| p.n);
    let n_hi = paged.last().map_or(0, |p| p.n);
    let _ = writeln!(
        s,
        "The lecture's exponents count only the attention term. Every decoding step also reads \
         all weights once ({:.1} MB here) whatever N is, so a paged generation costs \
         `W·N + c·N²/2` rather than `c·N²`: slope 1 while the weight term dominates, 2 once \
         attention does. A least-squares fit of that form to the paged points gives \
         W ≈ {:.2} ms per step and c/2 ≈ {:.5} ms per token²; the two terms are equal at \
         N* = W/(c/2) ≈ {:.0} (measured range {n_lo}…{n_hi}). {}\n",
        info.bytes as f64 / 1e6,
        pa * 1e3,
        pb * 1e3,
        pa / pb,
        crossover_sentence(pa / pb, n_lo, n_hi, 1.0, sp),
    );
    let (m_lo, m_hi) = (none.first().map_or(0, |p| p.n), none.last().map_or(0, |p| p.n));
    let _ = writeln!(
        s,
        "Without a cache, step t re-runs t tokens as one batched prompt: W for reading the \
         weights once, `w·t` for the multiplications, `c·t²` for attention, so the total is \
         `W·N + w·N²/2 + c·N³/3`: slope below 2 while the weight reads still count, 2 while \
         the multiplications dominate, 3 once attention does. Taking off W·N with the paged \
         fit's W, the fit of the rest gives w/2 ≈ {:.4} ms per token² and c/3 ≈ {:.6} ms per token³, equal \
         at N* ≈ {:.0} (measured range {m_lo}…{m_hi}). {}\n",
        na * 1e3,
        nb * 1e3,
        na / nb,
        crossover_sentence(na / nb, m_lo, m_hi, 2.0, sn),
    );
    let _ = writeln!(
        s,
        "The ratio no-cache / paged (last column of the table) is the price of recomputing \
         the prefix at every step; the lecture predicts it grows about linearly in N (N³ over \
         N²). Measured: {}.\n",
        none.iter()
            .filter_map(|q| paged.iter().find(|p| p.n == q.n).map(|p| (q.n, q.seconds / p.seconds)))
            .map(|(n, r)| format!("{r:.1}× at N = {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let _ = writeln!(s, "## Memory\n");
    let _ = writeln!(
        s,
        "Peak KV bytes are read from the page pool after the last step (pages are only added \
         within a step). The paged cache holds K and V for every layer: {} bytes per token \
         ({} layers × 2 × {} KV heads × {} dims in {}), allocated a page of {} tokens at \
         a time — O(N·L). pagoda's `--no-kv-cache` mode reuses the same paged cache as scratch \
         for the attention inside each recomputation, so its measured peak equals the paged \
         one; a no-cache forward pass that keeps only the current layer's K and V would need \
         `2·N·kv_dim·bytes` = {} bytes at N = {} — the lecture's O(N) — in exchange for \
         the N-fold recomputation.\n",
        per_token(cfg.n_kv_heads),
        cfg.n_layers,
        cfg.n_kv_heads,
        cfg.head_dim,
        kv_name(o.kv_type),
        o.block_size,
        one_layer(none.last().map_or(0, |p| p.n)),
        none.last().map_or(0, |p| p.n),
    );
    let measured_per_token = paged.last().map_or(0.0, |p| p.kv_bytes as f64 / p.n as f64);
    let _ = writeln!(s, "## GQA saving\n");
    let _ = writeln!(
        s,
        "| KV heads | KV bytes per token ({}) | at N = {} |",
        kv_name(o.kv_type),
        paged.last().map_or(0, |p| p.n)
    );
    let _ = writeln!(s, "|---:|---:|---:|");
    let n_last = paged.last().map_or(0, |p| p.n);
    for h in [cfg.n_kv_heads, cfg.n_heads] {
        let tag =
            if h == cfg.n_kv_heads { " (the model, GQA)" } else { " (one per query head, MHA)" };
        let _ = writeln!(s, "| {h}{tag} | {} | {} |", per_token(h), per_token(h) * n_last);
    }
    let _ = writeln!(
        s,
        "\nGrouped-query attention shares each K/V head among {} query heads, so the cache is \
         {}× smaller than multi-head attention would make it. Measured: {:.0} bytes per token \
         at N = {n_last} (page rounding included).",
        cfg.n_heads / cfg.n_kv_heads.max(1),
        cfg.n_heads / cfg.n_kv_heads.max(1),
        measured_per_token,
    );
    s
}

/// What the crossover `n_star` means for the measured slope over `lo..=hi`, where the
/// low-N exponent is `k` and the high-N one `k + 1`.
fn crossover_sentence(n_star: f64, lo: usize, hi: usize, k: f64, slope: f64) -> String {
    let (lo, hi) = (lo as f64, hi as f64);
    if !n_star.is_finite() || n_star <= 0.0 {
        format!(
            "The fit is degenerate (noise, or too few points); the fitted slope {slope:.2} \
             stands on its own."
        )
    } else if n_star < lo {
        format!(
            "The higher-order term already dominates at the smallest N, so the fitted slope \
             {slope:.2} is close to {:.0}; it stays a little below because the lower-order \
             term is still there.",
            k + 1.0
        )
    } else if n_star > hi {
        format!(
            "The lower-order term dominates over the whole range, so the fitted slope \
             {slope:.2} stays near {k:.0}; the higher exponent would show only past N ≈ {n_star:.0}."
        )
    } else {
        format!(
            "The crossover lies inside the range, so the fitted slope {slope:.2} sits between \
             {k:.0} and {:.0}, and the local exponents rise with N, up to the noise of a shared machine.",
            k + 1.0
        )
    }
}

fn plot(paged: &[Point], none: &[Point]) -> String {
    let pts = |p: &[Point]| p.iter().map(|q| (q.n as f64, q.seconds)).collect::<Vec<_>>();
    let a = pts(paged);
    let b = pts(none);
    // Reference slopes through the first measured point of each curve.
    let guide = |p: &[(f64, f64)], k: i32, to: f64| -> Vec<(f64, f64)> {
        p.first().map_or(Vec::new(), |&(x, y)| vec![(x, y), (to, y * (to / x).powi(k))])
    };
    let x_end = a.last().map_or(1.0, |p| p.0);
    let g1 = guide(&a, 1, x_end);
    let g2 = guide(&a, 2, x_end);
    let g3 = guide(&b, 3, b.last().map_or(1.0, |p| p.0));
    loglog_svg(
        "pagoda: time to generate N tokens",
        "N (generated tokens)",
        "seconds",
        &[
            Series { label: "paged KV cache", color: "#1f77b4", points: &a, dashed: false },
            Series { label: "no KV cache", color: "#d62728", points: &b, dashed: false },
            Series { label: "∝ N", color: "#9ecae1", points: &g1, dashed: true },
            Series { label: "∝ N²", color: "#6baed6", points: &g2, dashed: true },
            Series { label: "∝ N³", color: "#fc9272", points: &g3, dashed: true },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(f: impl Fn(f64) -> f64) -> Vec<Point> {
        [64, 128, 256, 512]
            .into_iter()
            .map(|n| Point { n, seconds: f(n as f64), kv_bytes: 0 })
            .collect()
    }

    #[test]
    fn slope_of_a_power_law_is_its_exponent() {
        assert!((loglog_slope(&pts(|n| 3e-6 * n * n)) - 2.0).abs() < 1e-9);
        assert!((loglog_slope(&pts(|n| 1e-9 * n.powi(3))) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn two_term_fit_recovers_its_coefficients() {
        let (a, b) = two_term_fit(&pts(|n| 0.01 * n + 2e-5 * n * n), 1);
        assert!((a - 0.01).abs() < 1e-9 && (b - 2e-5).abs() < 1e-12, "{a} {b}");
    }
}
