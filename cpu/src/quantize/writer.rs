//! The GGUF header llama-quantize writes (ggml/src/gguf.cpp, `gguf_write_out`), byte for
//! byte:
//!
//! ```text
//! | "GGUF" | version 3: u32 | tensor count: i64 | metadata count: i64 |
//! | metadata: the input's entries in file order, minus general.quantization_version,
//! |           general.file_type and split.*; then quantization_version = 2 (u32) and
//! |           general.file_type = the preset's ftype (u32), in that order
//! | tensor infos: name | n_dims: u32 (ggml_n_dims: trailing 1s dropped) | ne: i64 × n_dims
//! |               | type: i32 | offset into the data section: u64
//! | zeros to the alignment |
//! | data: each tensor, then zeros to the alignment (the last one too) |
//! ```
//!
//! The metadata is what `gguf_set_kv` then `gguf_set_val_u32` build: setting a key
//! removes it and appends it, which is why those two keys move to the end. Values are
//! re-encoded from the parsed input; arrays are copied as their validated element bytes,
//! whose encoding GGUF v2 and v3 share.

use std::io::{self, Write};

use pagoda_core::gguf::{Gguf, Value, ValueType};
use pagoda_core::quant::GgmlType;

/// The version written.
pub const VERSION: u32 = 3;
/// `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Keys the writer sets itself or drops (split files are written whole).
const REPLACED: [&str; 5] = [
    "general.quantization_version",
    "general.file_type",
    "split.no",
    "split.count",
    "split.tensors.count",
];

/// One tensor of the output, as its info entry describes it.
#[derive(Clone, Copy, Debug)]
pub struct TensorInfo<'a> {
    /// The name.
    pub name: &'a str,
    /// The shape, ggml order, padded with 1s.
    pub ne: [u64; 4],
    /// The output type.
    pub ty: GgmlType,
    /// Bytes of data (before padding).
    pub size: u64,
}

/// `n` rounded up to a multiple of `align` (a power of two).
pub fn pad(n: u64, align: u64) -> u64 {
    n.next_multiple_of(align)
}

/// The whole header and tensor infos, padded to `alignment`: everything before the data.
/// Tensor offsets are assigned in order, each padded to `alignment`.
pub fn header(
    input: &Gguf<'_>,
    ftype: u32,
    tensors: &[TensorInfo<'_>],
    alignment: u64,
) -> io::Result<Vec<u8>> {
    let mut w = Vec::new();
    w.write_all(b"GGUF")?;
    w.write_all(&VERSION.to_le_bytes())?;
    let kept: Vec<(&str, Value<'_>)> =
        input.metadata().filter(|(k, _)| !REPLACED.contains(k)).collect();
    w.write_all(&(tensors.len() as i64).to_le_bytes())?;
    w.write_all(&((kept.len() + 2) as i64).to_le_bytes())?;
    for (key, value) in &kept {
        write_str(&mut w, key)?;
        write_value(&mut w, value)?;
    }
    for (key, v) in
        [("general.quantization_version", QUANTIZATION_VERSION), ("general.file_type", ftype)]
    {
        write_str(&mut w, key)?;
        write_value(&mut w, &Value::U32(v))?;
    }
    let mut offset = 0u64;
    for t in tensors {
        write_str(&mut w, t.name)?;
        let n_dims = (1..4).rev().find(|&i| t.ne[i] > 1).map_or(1, |i| i + 1);
        w.write_all(&(n_dims as u32).to_le_bytes())?;
        for &d in &t.ne[..n_dims] {
            w.write_all(&(d as i64).to_le_bytes())?;
        }
        w.write_all(&(t.ty.id() as i32).to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        offset += pad(t.size, alignment);
    }
    let len = pad(w.len() as u64, alignment) as usize;
    w.resize(len, 0);
    Ok(w)
}

fn write_str(w: &mut Vec<u8>, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_type(w: &mut Vec<u8>, t: ValueType) -> io::Result<()> {
    w.write_all(&t.id().to_le_bytes())
}

/// A value with its type id (arrays: `ARRAY`, element type, count, elements).
fn write_value(w: &mut Vec<u8>, v: &Value<'_>) -> io::Result<()> {
    write_type(w, v.value_type())?;
    match *v {
        Value::U8(x) => w.write_all(&[x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(x)]),
        Value::Str(s) => write_str(w, s),
        Value::Array(a) => {
            write_type(w, a.elem_type())?;
            w.write_all(&(a.len() as u64).to_le_bytes())?;
            w.write_all(a.raw_bytes())
        }
        // A value type this writer does not know (the enum is non-exhaustive).
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "unknown GGUF value type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_the_reader() {
        // A header with one array and one string, read back by pagoda's parser.
        let mut src = Vec::new();
        src.extend_from_slice(b"GGUF");
        src.extend_from_slice(&3u32.to_le_bytes());
        src.extend_from_slice(&0u64.to_le_bytes());
        src.extend_from_slice(&3u64.to_le_bytes());
        let kv = |w: &mut Vec<u8>, k: &str| write_str(w, k).unwrap();
        kv(&mut src, "general.file_type");
        write_value(&mut src, &Value::U32(3)).unwrap();
        kv(&mut src, "general.name");
        write_value(&mut src, &Value::Str("x")).unwrap();
        kv(&mut src, "a.list");
        write_type(&mut src, ValueType::Array).unwrap();
        write_type(&mut src, ValueType::I32).unwrap();
        src.extend_from_slice(&2u64.to_le_bytes());
        src.extend_from_slice(&7i32.to_le_bytes());
        src.extend_from_slice(&(-1i32).to_le_bytes());
        let g = Gguf::parse(&src).unwrap();

        let t = [
            TensorInfo { name: "a", ne: [32, 1, 1, 1], ty: GgmlType::F32, size: 128 },
            TensorInfo { name: "b", ne: [32, 2, 1, 1], ty: GgmlType::Q8_0, size: 68 },
        ];
        let mut out = header(&g, 15, &t, 32).unwrap();
        assert_eq!(out.len() % 32, 0);
        out.resize(out.len() + 128 + 96, 0);
        let h = Gguf::parse(&out).unwrap();
        let keys: Vec<&str> = h.metadata().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["general.name", "a.list", "general.quantization_version", "general.file_type"]
        );
        assert_eq!(h.get_u32("general.file_type").unwrap(), 15);
        let a: Vec<i32> = h.get_array("a.list").unwrap().iter_i32().unwrap().collect();
        assert_eq!(a, [7, -1]);
        let tensors: Vec<_> = h.tensors().map(|t| (t.dims().len(), t.offset())).collect();
        assert_eq!(tensors, [(1, 0), (2, 128)]);
    }
}
