//! A bounds-checked little-endian reader over the file bytes.
//!
//! Every read returns a `Result`: a read past the end is a [`GgufErrorKind::PastEnd`]
//! naming what was read, the offset and the file length. Positions are absolute
//! offsets into the whole file so errors can point at the byte.

use super::error::GgufErrorKind;
use super::MAX_STRING_LEN;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn file(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn file_len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, or `PastEnd` if fewer remain.
    pub(crate) fn read(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufErrorKind> {
        if n > self.remaining() {
            return Err(GgufErrorKind::PastEnd {
                what,
                offset: self.pos as u64,
                needed: n as u64,
                file_len: self.bytes.len() as u64,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Skips `n` bytes (a `u64` count from the file, so it is checked before narrowing).
    pub(crate) fn skip(&mut self, n: u64, what: &'static str) -> Result<(), GgufErrorKind> {
        if n > self.remaining() as u64 {
            return Err(GgufErrorKind::PastEnd {
                what,
                offset: self.pos as u64,
                needed: n,
                file_len: self.bytes.len() as u64,
            });
        }
        self.pos += n as usize;
        Ok(())
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], GgufErrorKind> {
        let b = self.read(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, GgufErrorKind> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, GgufErrorKind> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, GgufErrorKind> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: `u64` length, then that many bytes (not NUL-terminated).
    /// Returns the raw bytes; checks the length cap and the file end.
    pub(crate) fn string_bytes(&mut self) -> Result<&'a [u8], GgufErrorKind> {
        let offset = self.pos as u64;
        let len = self.u64("string length")?;
        if len > MAX_STRING_LEN as u64 {
            return Err(GgufErrorKind::StringTooLong { offset, len, max: MAX_STRING_LEN as u64 });
        }
        if len > self.remaining() as u64 {
            return Err(GgufErrorKind::StringPastEnd {
                offset,
                len,
                file_len: self.bytes.len() as u64,
            });
        }
        self.read(len as usize, "string")
    }

    /// A GGUF string that must be UTF-8.
    pub(crate) fn string(&mut self) -> Result<&'a str, GgufErrorKind> {
        let bytes = self.string_bytes()?;
        core::str::from_utf8(bytes)
            .map_err(|_| GgufErrorKind::InvalidUtf8 { offset: (self.pos - bytes.len()) as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let bytes = [1u8, 0, 0, 0, 2];
        let mut c = Cursor::new(&bytes, 0);
        assert_eq!(c.u32("x"), Ok(1));
        assert_eq!(
            c.u32("y"),
            Err(GgufErrorKind::PastEnd { what: "y", offset: 4, needed: 4, file_len: 5 })
        );
        assert_eq!(c.pos(), 4, "a failed read does not move the cursor");
        assert!(c.skip(u64::MAX, "z").is_err());
        assert_eq!(c.u8("w"), Ok(2));
    }

    #[test]
    fn absurd_string_length_is_an_error_not_an_allocation() {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let mut c = Cursor::new(&bytes, 0);
        assert!(
            matches!(c.string(), Err(GgufErrorKind::StringTooLong { len, .. }) if len == 1 << 40)
        );
        bytes[..8].copy_from_slice(&5u64.to_le_bytes());
        let mut c = Cursor::new(&bytes, 0);
        assert_eq!(
            c.string(),
            Err(GgufErrorKind::StringPastEnd { offset: 0, len: 5, file_len: 12 })
        );
    }
}
