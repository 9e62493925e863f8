//! Paged attention with `pagoda-core` alone and no heap: a page pool over a fixed array,
//! block tables over inline page lists, K/V pages over a stack slab; a 20-token GQA prefill
//! and decode steps read through the block table; then a fork that shares every page and
//! copies on write when it appends. Every output is checked against contiguous (naive, f64)
//! attention over the same K/V, and any mismatch is an error (non-zero exit).
//!
//! Run: `cargo run --release --example paged_attention`
use pagoda::core::attention::naive::naive_attention;
use pagoda::core::attention::{paged_decode, paged_prefill, AttnConfig};
use pagoda::core::kv::{KvConfig, KvPages};
use pagoda::core::pool::{BlockPool, PageEntry};
use pagoda::core::table::{ArrayPageList, BlockTable, CopyOnWrite, Slot};

const N_HEADS: usize = 4; // query heads
const N_KV: usize = 2; // kv heads: each serves 2 query heads (GQA)
const HD: usize = 8; // head_dim
const BS: usize = 4; // tokens per page
const N_PAGES: usize = 8;
const ROW: usize = N_KV * HD; // one token's K (or V), all kv heads
const Q: usize = N_HEADS * HD; // one token's query (or output), all query heads
const MAX_T: usize = 24;
const PROMPT: usize = 20;
const TOL: f32 = 1e-5;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// What the sequences share: the page pool, the K/V pages, the shape, the xorshift state.
struct Ctx<'a> {
    pool: BlockPool<[PageEntry; N_PAGES]>,
    kv: KvPages<f32, &'a mut [f32]>,
    cfg: AttnConfig,
    rng: u64,
}

/// xorshift64: fills `out` with deterministic values uniform in [-1, 1).
fn fill(rng: &mut u64, out: &mut [f32]) {
    for x in out {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *x = (*rng >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    }
}

/// A sequence: its block table, plus the same K/V kept contiguous for the reference.
struct Seq {
    table: BlockTable<ArrayPageList<N_PAGES>>,
    k: [f32; MAX_T * ROW],
    v: [f32; MAX_T * ROW],
}

impl Seq {
    /// Appends a token with random K/V, doing the copy-on-write first if the table asks.
    fn push(&mut self, c: &mut Ctx) -> Res<(Slot, Option<CopyOnWrite>)> {
        let n = self.table.len();
        let out = self.table.append_slot(&mut c.pool)?;
        if let Some(cow) = out.copy {
            c.kv.copy_page(cow.from, cow.to, cow.tokens)?;
        }
        let (k, v) = (&mut self.k[n * ROW..][..ROW], &mut self.v[n * ROW..][..ROW]);
        fill(&mut c.rng, k);
        fill(&mut c.rng, v);
        c.kv.write(0, out.slot.page, out.slot.slot, k, v)?;
        Ok((out.slot, out.copy))
    }

    /// Max |paged - naive| for queries `q` (the last `q.len() / Q` tokens); errors above TOL.
    fn check(&self, q: &[f32], paged: &[f32], cfg: &AttnConfig) -> Res<f32> {
        let (n, mut want) = (self.table.len(), [0.0f32; MAX_T * Q]);
        let (k, v, want) = (&self.k[..n * ROW], &self.v[..n * ROW], &mut want[..q.len()]);
        naive_attention(q, k, v, n - q.len() / Q, cfg, &mut [0.0; MAX_T], want)?;
        let err = paged.iter().zip(&*want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        if err > TOL {
            return Err(format!("paged != contiguous attention: max |diff| {err:.1e}").into());
        }
        Ok(err)
    }

    /// Appends one token and attends from it over the whole sequence.
    fn decode(&mut self, who: &str, c: &mut Ctx) -> Res<Option<CopyOnWrite>> {
        let (slot, copy) = self.push(c)?;
        let (mut q, mut out, n) = ([0.0; Q], [0.0; Q], self.table.len());
        fill(&mut c.rng, &mut q);
        paged_decode(&c.kv, 0, self.table.pages(), n, &q, &mut out, &c.cfg)?;
        let err = self.check(&q, &out, &c.cfg)?;
        let (pos, page, s) = (n - 1, slot.page.0, slot.slot);
        println!("{who} decode pos {pos}: page {page} slot {s}, err {err:.1e}");
        Ok(copy)
    }

    /// The table's pages as `id×refcount`.
    fn show(&self, c: &Ctx) -> String {
        let rc = |p| c.pool.refcount(p).unwrap_or(0);
        self.table.pages().iter().map(|&p| format!(" {}×{}", p.0, rc(p))).collect()
    }
}

fn main() -> Res<()> {
    let kc = KvConfig { block_size: BS, ..KvConfig::new(1, N_KV, HD, N_PAGES) };
    let mut slab = [0.0f32; N_PAGES * 2 * ROW * BS];
    let kv = KvPages::new(kc, &mut slab[..])?;
    let pool = BlockPool::new([PageEntry::VACANT; N_PAGES])?;
    let cfg = AttnConfig::new(N_HEADS, N_KV, HD)?;
    let mut c = Ctx { pool, kv, cfg, rng: 0x9E37_79B9_7F4A_7C15 };
    println!("{N_HEADS} query / {N_KV} kv heads, head_dim {HD}; {N_PAGES} pages of {BS} tokens");
    println!("err = max |paged - contiguous attention| (naive reference, f64)");

    let table = BlockTable::new(BS, ArrayPageList::default())?;
    let mut a = Seq { table, k: [0.0; MAX_T * ROW], v: [0.0; MAX_T * ROW] };
    for _ in 0..PROMPT {
        a.push(&mut c)?;
    }
    let (mut q, mut out) = ([0.0; PROMPT * Q], [0.0; PROMPT * Q]);
    fill(&mut c.rng, &mut q);
    paged_prefill(&c.kv, 0, a.table.pages(), PROMPT, &q, &mut out, &cfg)?;
    println!("parent prefill {PROMPT} tokens: err {:.1e}", a.check(&q, &out, &cfg)?);
    for _ in 0..2 {
        a.decode("parent", &mut c)?;
    }

    let mut b = Seq { table: a.table.fork(&mut c.pool)?, k: a.k, v: a.v };
    println!("fork at {} tokens, pages id×refcount:", a.table.len());
    println!("  parent [{} ]\n  child  [{} ]", a.show(&c), b.show(&c));
    // The last page is half full and shared: the child's append must copy it, after which
    // the parent is its sole holder and appends in place.
    let cow = b.decode("child ", &mut c)?.ok_or("expected a copy-on-write")?;
    let (from, to, n) = (cow.from.0, cow.to.0, cow.tokens);
    println!("  copy-on-write: page {from} -> page {to}, {n} tokens copied");
    assert!(a.decode("parent", &mut c)?.is_none(), "unexpected copy-on-write");
    println!("  parent [{} ]\n  child  [{} ]", a.show(&c), b.show(&c));
    c.pool.check_holders([a.table.pages(), b.table.pages()].into_iter())?;
    println!("ok: every err below {TOL:.0e}; {} of {N_PAGES} pages used", c.pool.used_count());
    a.table.free(&mut c.pool)?;
    b.table.free(&mut c.pool)?;
    assert_eq!(c.pool.free_count(), N_PAGES, "pages leaked");
    Ok(())
}
