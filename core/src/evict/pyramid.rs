//! PyramidKV's per-layer page budgets (Cai et al. 2024, "PyramidKV: Dynamic KV Cache
//! Compression based on Pyramidal Information Funneling", §3.3), at page granularity.
//!
//! Attention spreads widely in the lower layers and funnels onto few tokens in the upper
//! ones, so the lower layers get more of the cache. Every layer keeps the same protected
//! recent window of `R` pages; the pages chosen by attention mass on top of it form an
//! arithmetic sequence over the layers, from `b` at layer 0 down to `t` at the last layer,
//! averaging `M`:
//!
//! ```text
//!   P = ⌊BUDGET / block_size⌋ pages (the average budget, as H2O's), at least 2
//!   R = ⌈P / 2⌉                    recent pages, every layer (H2O's split)
//!   M = P − R                      average selected pages per layer (≥ 1)
//!   t = max(1, ⌊M / β⌋), β = 20    top layer   (paper: k^{m−1} = k^r / β)
//!   b = 2M − t                     bottom layer (paper: k^0 = 2 k^r − k^{m−1})
//!   a_l = b − (b − t) · l / (L − 1)   layer l of L (paper: k^l = k^0 − (k^0 − k^{m−1}) l / (m − 1))
//!
//!   pages of layer l = R + s_l,  s_l = ⌊a_l⌋ + (1 if l < r),  r = L·M − Σ ⌊a_l⌋
//! ```
//!
//! The `a_l` sum to exactly `L·M`; flooring them loses `r < L` pages, which go one each to
//! the lowest layers, so the budgets are whole pages, never increase with depth, and sum to
//! exactly `L·P` (the same memory as H2O's `P` pages in every layer). As in the paper's
//! code, when the context cannot use `b` pages (`R + b` more than the `C` pages of the
//! context), the bottom is lowered to `C − R` and the top raised to `2M − b` so the average
//! stays `M` (the rounding may still give layer 0 one page more).
//!
//! ```text
//!   SmolLM2 (30 layers), -c 2048, pyramid:50%:  P = 64, R = 32, M = 32, t = 1, b = 63
//!   layer:   0    1    2  …  27   28   29
//!   pages:  96   93   91  …  37   35   33        Σ = 30 × 64 = 1920
//!   pyramid:20% (P = 25, R = 13, M = 12, t = 1, b = 23):  37 36 35 … 15 14 14, Σ = 750
//! ```

use super::{EvictionRule, PolicyError};

/// PyramidKV's β: the top layer selects `1/β` of the average (the paper's default, 20).
pub const PYRAMID_BETA: usize = 20;

/// The most layers [`PyramidBudgets`] plans for (real models have at most a few hundred):
/// building the budgets sums over the layers, and the integer formula multiplies by them.
pub const PYRAMID_MAX_LAYERS: usize = 1 << 16;

/// The largest average budget [`PyramidBudgets`] accepts, in pages, so that
/// `budget × layers` cannot overflow: 2^46 pages on 64-bit targets (far past any memory),
/// 2^14 on 32-bit ones.
pub const PYRAMID_MAX_BUDGET_PAGES: usize = usize::MAX / (4 * PYRAMID_MAX_LAYERS) + 1;

/// The per-layer page budgets of PyramidKV (see the module docs for the formula).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyramidBudgets {
    n_layers: usize,
    recent_pages: usize,
    /// Selected pages of layer 0 (`b`, before rounding up).
    bottom: usize,
    /// Selected pages of the last layer (`t`).
    top: usize,
    /// Layers below this one get one extra page (the remainder of the flooring).
    extra_below: usize,
}

impl PyramidBudgets {
    /// Budgets averaging `budget_pages` pages per layer over `n_layers` layers, for a context
    /// of `ctx_pages` pages.
    pub fn new(
        budget_pages: usize,
        n_layers: usize,
        ctx_pages: usize,
    ) -> Result<Self, PolicyError> {
        if budget_pages < 2 {
            return Err(PolicyError::OutOfRange { what: "a pyramid budget (at least 2 pages)" });
        }
        if budget_pages > PYRAMID_MAX_BUDGET_PAGES {
            return Err(PolicyError::OutOfRange { what: "a pyramid budget (at most 2^40 pages)" });
        }
        if n_layers == 0 || n_layers > PYRAMID_MAX_LAYERS {
            return Err(PolicyError::OutOfRange { what: "the number of layers (1 to 65 536)" });
        }
        let recent_pages = budget_pages.div_ceil(2);
        let m = budget_pages - recent_pages;
        let mut top = (m / PYRAMID_BETA).max(1);
        let mut bottom = 2 * m - top;
        // The paper's clamp: no layer plans for more pages than the context holds.
        let room = ctx_pages.saturating_sub(recent_pages);
        if room >= m && bottom > room {
            bottom = room;
            top = 2 * m - bottom;
        }
        let mut b = PyramidBudgets { n_layers, recent_pages, bottom, top, extra_below: 0 };
        let floors: usize = (0..n_layers).map(|l| b.floor(l)).sum();
        b.extra_below = n_layers * m - floors;
        Ok(b)
    }

    /// `⌊a_l⌋ = ⌊(b (L−1) − (b − t) l) / (L−1)⌋`, in integers.
    fn floor(&self, l: usize) -> usize {
        if self.n_layers == 1 {
            return (self.bottom + self.top) / 2; // the average, M
        }
        let d = self.n_layers - 1;
        (self.bottom * d - (self.bottom - self.top) * l) / d
    }

    /// Layers.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// Recent pages every layer protects (`R`).
    pub fn recent_pages(&self) -> usize {
        self.recent_pages
    }

    /// Pages layer `layer` holds at most (`R + s_l`), or `None` past the last layer.
    pub fn layer_pages(&self, layer: usize) -> Option<usize> {
        (layer < self.n_layers)
            .then(|| self.recent_pages + self.floor(layer) + usize::from(layer < self.extra_below))
    }

    /// Pages all layers hold at most together: `n_layers × budget_pages`.
    pub fn total_pages(&self) -> usize {
        (0..self.n_layers).filter_map(|l| self.layer_pages(l)).sum()
    }

    /// Layer `layer`'s rule: heavy hitters within its pages, the last `R` protected.
    pub fn rule(&self, layer: usize) -> Option<EvictionRule> {
        let budget_pages = self.layer_pages(layer)?;
        Some(EvictionRule::HeavyHitters { budget_pages, recent_pages: self.recent_pages })
    }
}
