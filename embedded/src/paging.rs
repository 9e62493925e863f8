//! Part 1: page pool, block tables, fork and copy-on-write, with the KV data moved along.
//!
//! ```text
//! A: 10 tokens  [p0 p1 p2]        p2 holds slots 0..2
//! B = fork(A)   [p0 p1 p2]        refcounts 2 2 2
//! B.append      [p0 p1 p3]        p2 shared and partly filled: copy slots 0..2 to p3 (CoW)
//! A.append      [p0 p1 p2]        p2 private again: written in place
//! ```
//!
//! Checked along the way: refcounts, `check_invariants`, `check_holders` against the live
//! tables, the copied K/V rows equal the originals bit for bit, the two sequences' new
//! tokens do not see each other, an oversized request fails all-or-nothing, and freeing
//! both tables returns every page.

use core::fmt::Write;

use pagoda_core::kv::{KvConfig, KvHalf, KvPages};
use pagoda_core::pool::{BlockPool, PageEntry, PageId, PoolError};
use pagoda_core::table::{ArrayPageList, BlockTable, CopyOnWrite};

use crate::{ensure, fnv1a, write_pages, Error, XorShift32};

/// Pages in this part's pool.
pub const N_PAGES: usize = 8;
/// Tokens per page.
pub const BLOCK_SIZE: usize = 4;
/// The KV shape: 2 layers, 2 kv heads of 16 values.
pub const KV: KvConfig =
    KvConfig { n_layers: 2, n_kv_heads: 2, head_dim: 16, block_size: BLOCK_SIZE, n_pages: N_PAGES };
/// f32s in the KV slab.
pub const KV_LEN: usize = 2 * N_PAGES * 2 * 2 * BLOCK_SIZE * 16;
/// f32s of one token's K (or V) row, all kv heads.
const ROW: usize = 2 * 16;

/// A block table with room for 8 pages, stored inline.
type Table = BlockTable<ArrayPageList<8>>;

/// This part's static memory.
pub struct Buffers {
    /// Page pool entries.
    pub entries: [PageEntry; N_PAGES],
    /// KV slab (f32 pages).
    pub kv: [f32; KV_LEN],
}

impl Buffers {
    /// Vacant entries, zeroed slab.
    pub const fn new() -> Self {
        Buffers { entries: [PageEntry::VACANT; N_PAGES], kv: [0.0; KV_LEN] }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends one token to `table`, carrying out a copy-on-write in `kv` if the append asks for
/// one, and writes random K/V for every layer. Returns the copy, if any.
fn append_token<S>(
    table: &mut Table,
    pool: &mut BlockPool<S>,
    kv: &mut KvPages<f32, &mut [f32]>,
    rng: &mut XorShift32,
) -> Result<Option<CopyOnWrite>, Error>
where
    S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
{
    let outcome = table.append_slot(pool)?;
    if let Some(c) = outcome.copy {
        kv.copy_page(c.from, c.to, c.tokens)?;
    }
    let (mut k, mut v) = ([0.0f32; ROW], [0.0f32; ROW]);
    for layer in 0..KV.n_layers {
        rng.fill(&mut k, 1.0);
        rng.fill(&mut v, 1.0);
        kv.write(layer, outcome.slot.page, outcome.slot.slot, &k, &v)?;
    }
    Ok(outcome.copy)
}

/// Hash of every K and V row (all layers and heads) of `table`'s tokens, read back through
/// the table.
fn table_hash(table: &Table, kv: &KvPages<f32, &mut [f32]>) -> Result<u32, Error> {
    let mut h = 0u32;
    let mut row = [0.0f32; 16];
    for pos in 0..table.len() {
        let slot = table.slot(pos).ok_or(Error::Check("slot of a held position"))?;
        for layer in 0..KV.n_layers {
            for half in [KvHalf::Key, KvHalf::Value] {
                for head in 0..KV.n_kv_heads {
                    kv.read_row(layer, slot.page, half, head, slot.slot, &mut row)?;
                    h = h.rotate_left(5) ^ fnv1a(&row);
                }
            }
        }
    }
    Ok(h)
}

/// Whether token slot `a` of one page and slot `b` of another hold the same K and V rows in
/// every layer and head.
fn same_rows(
    kv: &KvPages<f32, &mut [f32]>,
    a: (PageId, usize),
    b: (PageId, usize),
) -> Result<bool, Error> {
    for layer in 0..KV.n_layers {
        for head in 0..KV.n_kv_heads {
            if kv.key(layer, a.0, head, a.1)? != kv.key(layer, b.0, head, b.1)?
                || kv.value(layer, a.0, head, a.1)? != kv.value(layer, b.0, head, b.1)?
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Runs part 1 and writes its lines.
pub fn run<W: Write>(buf: &mut Buffers, out: &mut W) -> Result<(), Error> {
    let mut pool = BlockPool::new(&mut buf.entries[..])?;
    let mut kv = KvPages::<f32, _>::new(KV, &mut buf.kv[..])?;
    let mut rng = XorShift32::new(0x0A11_0C01);
    writeln!(
        out,
        "pool: {} pages of {} tokens, KV {} layers x {} kv heads x {} dims f32, slab {} bytes",
        pool.capacity(),
        BLOCK_SIZE,
        KV.n_layers,
        KV.n_kv_heads,
        KV.head_dim,
        KV.slab_bytes::<f32>()?
    )?;

    let mut a = Table::new(BLOCK_SIZE, ArrayPageList::default())?;
    for _ in 0..10 {
        let copy = append_token(&mut a, &mut pool, &mut kv, &mut rng)?;
        ensure(copy.is_none(), "a private table never copies")?;
    }
    pool.check_invariants()?;
    pool.check_holders([a.pages()].into_iter())?;
    ensure(a.pages().len() == 3 && pool.used_count() == 3, "10 tokens take 3 pages")?;
    let hash_a = table_hash(&a, &kv)?;
    write!(out, "table A: {} tokens, pages ", a.len())?;
    write_pages(out, a.pages())?;
    writeln!(
        out,
        ", used {} free {}, kv hash 0x{hash_a:08x}",
        pool.used_count(),
        pool.free_count()
    )?;

    let mut b = a.fork(&mut pool)?;
    for &p in a.pages() {
        ensure(pool.refcount(p)? == 2, "forked pages have refcount 2")?;
    }
    ensure(pool.used_count() == 3, "a fork takes no new page")?;
    ensure(table_hash(&b, &kv)? == hash_a, "the fork reads the same K/V")?;
    pool.check_holders([a.pages(), b.pages()].into_iter())?;

    // B appends into the shared, partly filled last page: copy-on-write.
    let shared_last = a.pages()[2];
    let copy = append_token(&mut b, &mut pool, &mut kv, &mut rng)?
        .ok_or(Error::Check("appending to a shared partial page copies it"))?;
    ensure(copy.from == shared_last && copy.tokens == 2, "the copy covers the 2 filled slots")?;
    ensure(b.pages()[2] == copy.to && copy.to != copy.from, "B now holds the fresh page")?;
    ensure(pool.refcount(shared_last)? == 1, "A holds the old page alone")?;
    ensure(pool.refcount(copy.to)? == 1, "B holds the copy alone")?;
    ensure(pool.refcount(a.pages()[0])? == 2, "full pages stay shared")?;
    for slot in 0..copy.tokens {
        ensure(same_rows(&kv, (copy.from, slot), (copy.to, slot))?, "CoW copied the K/V rows")?;
    }
    write!(
        out,
        "fork B + 1 token: copy-on-write page {} -> {} ({} slots), B pages ",
        copy.from.0, copy.to.0, copy.tokens
    )?;
    write_pages(out, b.pages())?;
    writeln!(out, ", used {}", pool.used_count())?;

    // A appends in place: its last page is private again.
    let copy_a = append_token(&mut a, &mut pool, &mut kv, &mut rng)?;
    ensure(copy_a.is_none() && a.pages()[2] == shared_last, "A writes its own page in place")?;
    ensure(!same_rows(&kv, (a.pages()[2], 2), (b.pages()[2], 2))?, "A and B diverge at slot 10")?;
    ensure(table_hash(&a, &kv)? != table_hash(&b, &kv)?, "A and B differ")?;
    for pos in 0..10 {
        let (sa, sb) = (a.slot(pos), b.slot(pos));
        let (Some(sa), Some(sb)) = (sa, sb) else {
            return Err(Error::Check("shared prefix positions exist"));
        };
        ensure(same_rows(&kv, (sa.page, sa.slot), (sb.page, sb.slot))?, "shared prefix equal")?;
    }
    pool.check_invariants()?;
    pool.check_holders([a.pages(), b.pages()].into_iter())?;
    writeln!(
        out,
        "A + 1 token in place; A hash 0x{:08x}, B hash 0x{:08x}, used {} free {}",
        table_hash(&a, &kv)?,
        table_hash(&b, &kv)?,
        pool.used_count(),
        pool.free_count()
    )?;

    // All or nothing: asking for more pages than are free takes none.
    let free = pool.free_count();
    let mut many = [PageId(0); N_PAGES];
    let refused = pool.try_alloc_many(&mut many[..free + 1]);
    ensure(
        refused == Err(PoolError::OutOfPages { requested: free + 1, free }),
        "an oversized request is refused",
    )?;
    ensure(pool.free_count() == free, "a refused request takes no page")?;
    pool.check_invariants()?;

    b.free(&mut pool)?;
    ensure(pool.refcount(a.pages()[0])? == 1, "B's release leaves A's pages")?;
    a.free(&mut pool)?;
    pool.check_invariants()?;
    ensure(pool.free_count() == N_PAGES, "every page is back")?;
    writeln!(
        out,
        "refused {} pages with {} free; freed both tables: free {} of {}, invariants ok",
        free + 1,
        free,
        pool.free_count(),
        pool.capacity()
    )?;
    Ok(())
}
