//! The memory behind a [`KvCache`](super::KvCache)'s pages: one anonymous memory map, asked
//! for transparent huge pages.
//!
//! Decode reads every cached page of every layer once per token, each page's K and V runs a
//! few KiB long and a whole page of all layers apart. Over 4 KiB pages nearly every run then
//! needs a page walk (94 MB of f16 KV at depth 4096 is 24k pages, against a few thousand TLB
//! entries), and the walks stall the software prefetches that keep the runs coming. 2 MiB
//! pages cover the same slab with 47 entries. `madvise(MADV_HUGEPAGE)` is a hint: where
//! transparent huge pages are off (or outside Linux) the slab is plain 4 KiB pages and
//! works the same.
//!
//! ```text
//!   KvSlab<T>:  mmap(len × size_of::<T>() bytes, anonymous, zero-filled)  ──as──▶  [T; len]
//! ```

use std::marker::PhantomData;

use bytemuck::Pod;
use memmap2::MmapMut;
use pagoda_core::kv::KvFormat;

/// `len` units of `T` in an anonymous, zero-filled memory map (see the module docs).
///
/// Invariant: the map holds exactly `len × size_of::<T>()` bytes (`len ≥ 1`), and every
/// unit starts as `T::zero()`.
pub struct KvSlab<T> {
    map: MmapMut,
    len: usize,
    _unit: PhantomData<T>,
}

impl<T: KvFormat + Pod> KvSlab<T> {
    /// `len` units of `T::zero()`. Errors if the size overflows or the map fails (out of
    /// memory).
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        let bytes = len.checked_mul(size_of::<T>()).filter(|&b| b > 0).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "slab size is 0 or overflows")
        })?;
        let map = MmapMut::map_anon(bytes)?;
        // A hint only: without transparent huge pages the slab is 4 KiB pages.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let mut slab = KvSlab { map, len, _unit: PhantomData };
        // The map reads as zero bytes; a format whose zero is another bit pattern is filled
        // (all of pagoda's formats are zero bytes, so this touches no memory).
        let zero = T::zero();
        if bytemuck::bytes_of(&zero).iter().any(|&b| b != 0) {
            slab.as_mut().fill(zero);
        }
        Ok(slab)
    }
}

impl<T: Pod> AsRef<[T]> for KvSlab<T> {
    fn as_ref(&self) -> &[T] {
        // The map is page-aligned (so aligned for T) and exactly len units long: the cast
        // cannot fail.
        bytemuck::cast_slice(&self.map[..])
    }
}

impl<T: Pod> AsMut<[T]> for KvSlab<T> {
    fn as_mut(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(&mut self.map[..])
    }
}

impl<T> std::fmt::Debug for KvSlab<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSlab").field("units", &self.len).field("bytes", &self.map.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use pagoda_core::quant::BlockQ8_0;

    #[test]
    fn zeroed_slabs_read_as_zero_units_and_keep_writes() {
        let mut s = KvSlab::<f16>::zeroed(3000).unwrap();
        assert_eq!(s.as_ref().len(), 3000);
        assert!(s.as_ref().iter().all(|&x| x == f16::ZERO));
        s.as_mut()[2999] = f16::ONE;
        assert_eq!(s.as_ref()[2999], f16::ONE);
        let q = KvSlab::<BlockQ8_0>::zeroed(7).unwrap();
        assert_eq!(q.as_ref(), &[BlockQ8_0::zero(); 7][..]);
    }

    #[test]
    fn a_zero_or_overflowing_size_is_an_error() {
        assert!(KvSlab::<f32>::zeroed(0).is_err());
        assert!(KvSlab::<f32>::zeroed(usize::MAX / 2).is_err());
    }
}
