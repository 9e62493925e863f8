//! The GGUF reader against malformed input: a corpus generated in code from a small
//! synthetic file (and from the real model's header when it is present). Every case
//! must give an error naming what is wrong — never a panic, never an allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pagoda::core::ggml_type::GgmlType;
use pagoda::core::gguf::{
    Gguf, GgufError, GgufErrorKind, Location, Value, ValueType, MAX_ARRAY_LEN, MAX_NESTING,
    MAX_STRING_LEN, MAX_TENSORS,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------
// Allocation counting: the parser must allocate nothing, whatever the input.

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Parses `bytes`, asserting the parse allocated nothing on this thread.
fn parse(bytes: &[u8]) -> Result<Gguf<'_>, GgufError> {
    let before = ALLOCATED.with(|a| a.get());
    let result = Gguf::parse(bytes);
    let after = ALLOCATED.with(|a| a.get());
    assert_eq!(after - before, 0, "Gguf::parse allocated {} bytes", after - before);
    result
}

fn parse_err(bytes: &[u8]) -> GgufError {
    match parse(bytes) {
        Ok(_) => panic!("malformed file of {} bytes parsed", bytes.len()),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------
// A small GGUF writer, recording section boundaries.

#[derive(Clone)]
enum V {
    Scalar(ValueType, Vec<u8>),
    Str(Vec<u8>),
    Array(ValueType, Vec<V>),
}

fn u32v(x: u32) -> V {
    V::Scalar(ValueType::U32, x.to_le_bytes().to_vec())
}
fn i32v(x: i32) -> V {
    V::Scalar(ValueType::I32, x.to_le_bytes().to_vec())
}
fn strv(s: &str) -> V {
    V::Str(s.as_bytes().to_vec())
}

struct Tensor {
    name: Vec<u8>,
    dims: Vec<u64>,
    type_id: u32,
    /// `None`: place after the previous tensor (aligned); `Some`: this raw offset.
    offset: Option<u64>,
    data: Vec<u8>,
}

fn tensor(name: &str, dims: &[u64], t: GgmlType, data: Vec<u8>) -> Tensor {
    Tensor { name: name.into(), dims: dims.into(), type_id: t.id(), offset: None, data }
}

#[derive(Default)]
struct Builder {
    version: Option<u32>,
    n_tensors_override: Option<u64>,
    n_kv_override: Option<u64>,
    kvs: Vec<(Vec<u8>, u32, V)>,
    tensors: Vec<Tensor>,
    alignment: Option<u64>,
}

/// A built file and the byte offsets where its sections end.
struct Built {
    bytes: Vec<u8>,
    boundaries: Vec<usize>,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s);
}

fn put_value(out: &mut Vec<u8>, v: &V) {
    match v {
        V::Scalar(_, b) => out.extend(b),
        V::Str(s) => put_str(out, s),
        V::Array(t, items) => {
            out.extend(t.id().to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(out, i));
        }
    }
}

fn type_of(v: &V) -> u32 {
    match v {
        V::Scalar(t, _) => t.id(),
        V::Str(_) => ValueType::String.id(),
        V::Array(..) => ValueType::Array.id(),
    }
}

impl Builder {
    fn kv(mut self, key: &str, v: V) -> Self {
        self.kvs.push((key.into(), type_of(&v), v));
        self
    }

    fn tensor(mut self, t: Tensor) -> Self {
        self.tensors.push(t);
        self
    }

    fn build(&self) -> Built {
        let align = self.alignment.unwrap_or(32) as usize;
        let mut out = b"GGUF".to_vec();
        let mut boundaries = vec![4];
        out.extend(self.version.unwrap_or(3).to_le_bytes());
        boundaries.push(out.len());
        out.extend(self.n_tensors_override.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        boundaries.push(out.len());
        out.extend(self.n_kv_override.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        boundaries.push(out.len());
        for (key, t, v) in &self.kvs {
            put_str(&mut out, key);
            boundaries.push(out.len());
            out.extend(t.to_le_bytes());
            boundaries.push(out.len());
            put_value(&mut out, v);
            boundaries.push(out.len());
        }
        let mut next = 0u64;
        let mut offsets = vec![];
        for t in &self.tensors {
            let off = t.offset.unwrap_or(next);
            offsets.push(off);
            next = (off + t.data.len() as u64).next_multiple_of(align as u64);
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.type_id.to_le_bytes());
            out.extend(off.to_le_bytes());
            boundaries.push(out.len());
        }
        if !self.tensors.is_empty() {
            out.resize(out.len().next_multiple_of(align), 0);
            boundaries.push(out.len());
            let data_start = out.len();
            for (t, off) in self.tensors.iter().zip(&offsets) {
                if t.data.is_empty() {
                    continue; // declared-only (e.g. an out-of-range offset under test)
                }
                let at = data_start + *off as usize;
                if out.len() < at + t.data.len() {
                    out.resize(at + t.data.len(), 0);
                }
                out[at..at + t.data.len()].copy_from_slice(&t.data);
                boundaries.push(at + t.data.len());
            }
        }
        Built { bytes: out, boundaries }
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A valid file using every value type, nested arrays and three tensor types; the last
/// tensor ends exactly at the end of the file.
fn sample() -> Builder {
    Builder::default()
        .kv("general.architecture", strv("llama"))
        .kv("a.u8", V::Scalar(ValueType::U8, vec![7]))
        .kv("a.i8", V::Scalar(ValueType::I8, vec![0xf9]))
        .kv("a.u16", V::Scalar(ValueType::U16, 700u16.to_le_bytes().to_vec()))
        .kv("a.i16", V::Scalar(ValueType::I16, (-700i16).to_le_bytes().to_vec()))
        .kv("a.u32", u32v(70_000))
        .kv("a.i32", i32v(-70_000))
        .kv("a.i32_positive", i32v(12))
        .kv("a.f32", V::Scalar(ValueType::F32, 1.5f32.to_le_bytes().to_vec()))
        .kv("a.bool", V::Scalar(ValueType::Bool, vec![1]))
        .kv("a.u64", V::Scalar(ValueType::U64, (1u64 << 40).to_le_bytes().to_vec()))
        .kv("a.i64", V::Scalar(ValueType::I64, (-(1i64 << 40)).to_le_bytes().to_vec()))
        .kv("a.f64", V::Scalar(ValueType::F64, 2.5f64.to_le_bytes().to_vec()))
        .kv("a.strs", V::Array(ValueType::String, vec![strv("<s>"), strv("</s>"), strv("héllo")]))
        .kv("a.i32s", V::Array(ValueType::I32, vec![i32v(1), i32v(-2), i32v(3)]))
        .kv("a.u32s", V::Array(ValueType::U32, vec![u32v(4), u32v(5)]))
        .kv(
            "a.f32s",
            V::Array(
                ValueType::F32,
                vec![V::Scalar(ValueType::F32, 0.5f32.to_le_bytes().to_vec())],
            ),
        )
        .kv(
            "a.nested",
            V::Array(
                ValueType::Array,
                vec![
                    V::Array(ValueType::U32, vec![u32v(1), u32v(2)]),
                    V::Array(ValueType::String, vec![strv("x")]),
                ],
            ),
        )
        .tensor(tensor(
            "norm.weight",
            &[8],
            GgmlType::F32,
            f32_bytes(&[1., 2., 3., 4., 5., 6., 7., 8.]),
        ))
        .tensor(tensor("blk.0.w", &[32, 2], GgmlType::Q4_1, (0..40).collect()))
        .tensor(tensor("embd", &[32, 1], GgmlType::Q8_0, vec![1; 34]))
}

// ---------------------------------------------------------------------------------
// The valid sample reads back.

#[test]
fn sample_reads_back() {
    let built = sample().build();
    let g = parse(&built.bytes).unwrap();
    assert_eq!((g.version(), g.tensor_count(), g.metadata_len()), (3, 3, 18));
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get("a.i8"), Some(Value::I8(-7)));
    assert_eq!(g.get("a.i16"), Some(Value::I16(-700)));
    assert_eq!(g.get_u32("a.u16").unwrap(), 700);
    assert_eq!(g.get_u32("a.u32").unwrap(), 70_000);
    assert_eq!(g.get_i32("a.i32").unwrap(), -70_000);
    assert_eq!(g.get_u32("a.i32_positive").unwrap(), 12, "an i32 ≥ 0 widens to u32");
    assert_eq!(g.get_u64("a.u64").unwrap(), 1 << 40);
    assert_eq!(g.get("a.i64"), Some(Value::I64(-(1 << 40))));
    assert_eq!(g.get_f32("a.f32").unwrap(), 1.5);
    assert_eq!(g.get_f32("a.f64").unwrap(), 2.5);
    assert!(g.get_bool("a.bool").unwrap());
    let strs = g.get_array("a.strs").unwrap();
    assert_eq!(strs.iter_str().unwrap().collect::<Vec<_>>(), ["<s>", "</s>", "héllo"]);
    assert_eq!(g.get_array("a.i32s").unwrap().iter_i32().unwrap().collect::<Vec<_>>(), [1, -2, 3]);
    assert_eq!(g.get_array("a.u32s").unwrap().iter_u32().unwrap().collect::<Vec<_>>(), [4, 5]);
    assert_eq!(g.get_array("a.f32s").unwrap().iter_f32().unwrap().collect::<Vec<_>>(), [0.5]);
    let nested = g.get_array("a.nested").unwrap();
    assert_eq!(nested.elem_type(), ValueType::Array);
    let inner: Vec<Value> = nested.iter().collect();
    assert!(matches!(inner[0], Value::Array(a) if a.iter_u32().unwrap().eq([1, 2])));
    assert!(matches!(inner[1], Value::Array(a) if a.iter_str().unwrap().eq(["x"])));
    let keys: Vec<&str> = g.metadata().map(|(k, _)| k).collect();
    assert_eq!(keys[..3], ["general.architecture", "a.u8", "a.i8"], "file order");

    let norm = g.tensor("norm.weight").unwrap();
    assert_eq!(norm.dims(), [8]);
    assert_eq!(norm.try_cast::<f32>().unwrap(), [1., 2., 3., 4., 5., 6., 7., 8.]);
    let w = g.tensor("blk.0.w").unwrap();
    assert_eq!(
        (w.ggml_type(), w.dims(), w.n_elements(), w.n_rows()),
        (GgmlType::Q4_1, &[32, 2][..], 64, 2)
    );
    assert_eq!(w.data(), (0..40).collect::<Vec<u8>>());
    assert_eq!(
        g.tensors().map(|t| t.name()).collect::<Vec<_>>(),
        ["norm.weight", "blk.0.w", "embd"]
    );
}

#[test]
fn typed_accessors_report_missing_wrong_type_and_range() {
    let built = sample().build();
    let g = parse(&built.bytes).unwrap();
    let e = g.get_u32("llama.block_count").unwrap_err();
    assert_eq!(e.kind, GgufErrorKind::MissingKey);
    assert_eq!(e.to_string(), "metadata key 'llama.block_count': not found");
    let e = g.get_u32("a.i32").unwrap_err();
    assert_eq!(e.to_string(), "metadata key 'a.i32': value does not fit u32");
    let e = g.get_u32("a.u64").unwrap_err();
    assert_eq!(e.kind, GgufErrorKind::OutOfRange { expected: "u32" });
    let e = g.get_str("a.u32").unwrap_err();
    assert_eq!(e.to_string(), "metadata key 'a.u32': expected string, found u32");
    let e = g.get_array("a.strs").unwrap().iter_i32().unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key 'a.strs': expected array of i32, found array of string"
    );
    let e = g.tensor("output.weight").unwrap_err();
    assert_eq!(e.to_string(), "tensor 'output.weight': not found");
}

#[test]
fn version_2_is_read() {
    let mut b = sample();
    b.version = Some(2);
    assert_eq!(parse(&b.build().bytes).unwrap().version(), 2);
}

#[test]
fn custom_alignment_places_the_data() {
    let mut b = sample().kv("general.alignment", u32v(64));
    b.alignment = Some(64);
    let built = b.build();
    let g = parse(&built.bytes).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_start() % 64, 0);
    assert_eq!(g.tensor("embd").unwrap().data(), [1; 34]);
}

// ---------------------------------------------------------------------------------
// Truncation.

#[test]
fn every_truncation_of_the_sample_is_an_error() {
    let built = sample().build();
    let len = built.bytes.len();
    assert_eq!(*built.boundaries.last().unwrap(), len, "the last tensor ends the file");
    for cut in 0..len {
        let e = parse_err(&built.bytes[..cut]);
        assert!(!e.to_string().is_empty());
    }
    for &cut in &built.boundaries[..built.boundaries.len() - 1] {
        parse_err(&built.bytes[..cut]);
    }
}

#[test]
fn truncated_string_names_offset_and_length() {
    let built = Builder::default().kv("k", strv("hello world")).build();
    // Cut inside the value string: its length prefix is at 24 + 9 (key) + 4 (type).
    let e = parse_err(&built.bytes[..built.bytes.len() - 3]);
    assert_eq!(
        e.to_string(),
        "metadata key 'k': string at offset 37 has length 11, past the end of the file (53)"
    );
}

// ---------------------------------------------------------------------------------
// Header.

fn with_header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

#[test]
fn wrong_magic() {
    let mut bytes = sample().build().bytes;
    bytes[..4].copy_from_slice(b"GGML");
    let e = parse_err(&bytes);
    assert_eq!(e.kind, GgufErrorKind::BadMagic(*b"GGML"));
    assert!(e.to_string().starts_with("header: not a GGUF file"), "{e}");
}

#[test]
fn unsupported_versions() {
    let e = parse_err(&with_header(1, 0, 0));
    assert_eq!(e.kind, GgufErrorKind::UnsupportedVersion(1));
    assert!(e.to_string().contains("GGUF version 1 is not supported"), "{e}");
    let e = parse_err(&with_header(3u32.swap_bytes(), 0, 0));
    assert!(e.to_string().contains("big-endian"), "{e}");
    for v in [0, 4, u32::MAX, 3u32.swap_bytes()] {
        assert_eq!(parse_err(&with_header(v, 0, 0)).kind, GgufErrorKind::UnsupportedVersion(v));
    }
}

#[test]
fn absurd_counts() {
    for n in [1u64 << 63, u64::MAX, MAX_TENSORS + 1] {
        let e = parse_err(&with_header(3, n, 0));
        assert!(
            matches!(e.kind, GgufErrorKind::TooMany { what: "tensors", count, .. } if count == n)
        );
    }
    let e = parse_err(&with_header(3, 0, 1 << 63));
    assert!(matches!(e.kind, GgufErrorKind::TooMany { what: "metadata entries", .. }), "{e}");
    // Counts under the caps but more than the file holds: an error at the end of the file.
    let e = parse_err(&with_header(3, MAX_TENSORS, 0));
    assert!(matches!(e.kind, GgufErrorKind::PastEnd { .. }), "{e}");
    assert!(matches!(e.location, Location::TensorInfo { index: 0 }));
}

#[test]
fn the_tensor_cap_itself_is_accepted() {
    let mut b = Builder::default();
    for i in 0..MAX_TENSORS {
        b = b.tensor(tensor(&format!("t{i}"), &[0], GgmlType::F32, vec![]));
    }
    let bytes = b.build().bytes;
    let g = parse(&bytes).unwrap();
    assert_eq!(g.tensor_count() as u64, MAX_TENSORS);
    assert_eq!(g.tensor("t16383").unwrap().n_elements(), 0);
}

#[test]
fn absurd_string_and_array_lengths() {
    // A 2^40-byte key.
    let mut bytes = with_header(3, 0, 1);
    bytes.extend((1u64 << 40).to_le_bytes());
    bytes.extend(b"abc");
    let e = parse_err(&bytes);
    assert!(matches!(e.kind, GgufErrorKind::StringTooLong { len, .. } if len == 1 << 40), "{e}");
    assert_eq!(e.location, Location::MetadataEntry { index: 0 });
    // A string just under the cap, past the end.
    let mut bytes = with_header(3, 0, 1);
    bytes.extend((MAX_STRING_LEN as u64).to_le_bytes());
    assert!(matches!(parse_err(&bytes).kind, GgufErrorKind::StringPastEnd { .. }));
    // Arrays of 2^40 and 2^62 u64, and MAX_ARRAY_LEN strings, in a tiny file.
    for (elem, len) in [
        (ValueType::U64, 1u64 << 40),
        (ValueType::U64, 1 << 62),
        (ValueType::String, MAX_ARRAY_LEN as u64),
    ] {
        let mut bytes = with_header(3, 0, 1);
        put_str(&mut bytes, b"tokenizer.ggml.tokens");
        bytes.extend(ValueType::Array.id().to_le_bytes());
        bytes.extend(elem.id().to_le_bytes());
        bytes.extend(len.to_le_bytes());
        bytes.extend([0u8; 64]);
        let e = parse_err(&bytes);
        assert!(e.to_string().starts_with("metadata key 'tokenizer.ggml.tokens': "), "{e}");
        assert!(
            matches!(e.kind, GgufErrorKind::TooMany { .. } | GgufErrorKind::PastEnd { .. }),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Metadata values.

#[test]
fn unknown_value_types() {
    let mut bytes = with_header(3, 0, 1);
    put_str(&mut bytes, b"k");
    bytes.extend(13u32.to_le_bytes());
    let e = parse_err(&bytes);
    assert_eq!(e.to_string(), "metadata key 'k': unknown metadata value type 13 at offset 33");
    let b = Builder::default().kv("k", V::Array(ValueType::U8, vec![]));
    let mut bytes = b.build().bytes;
    let at = bytes.len() - 12; // element type of the empty array
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(parse_err(&bytes).kind, GgufErrorKind::UnknownValueType { id: 99, .. }));
}

fn nested(depth: u32) -> V {
    let mut v = V::Array(ValueType::U8, vec![V::Scalar(ValueType::U8, vec![1])]);
    for _ in 1..depth {
        v = V::Array(ValueType::Array, vec![v]);
    }
    v
}

#[test]
fn array_nesting_is_capped() {
    let ok = Builder::default().kv("deep", nested(MAX_NESTING)).build();
    let g = parse(&ok.bytes).unwrap();
    let mut v = g.get("deep").unwrap();
    let mut depth = 0;
    while let Value::Array(a) = v {
        depth += 1;
        v = a.iter().next().unwrap();
    }
    assert_eq!((depth, v), (MAX_NESTING, Value::U8(1)));

    let bad = Builder::default().kv("deep", nested(MAX_NESTING + 1)).build();
    let e = parse_err(&bad.bytes);
    assert_eq!(e.kind, GgufErrorKind::NestingTooDeep { max: MAX_NESTING });
    assert!(e.to_string().starts_with("metadata key 'deep'"));
    // Far deeper than the cap: still an error, found without recursing further.
    let mut bytes = with_header(3, 0, 1);
    put_str(&mut bytes, b"deep");
    bytes.extend(ValueType::Array.id().to_le_bytes());
    for _ in 0..10_000 {
        bytes.extend(ValueType::Array.id().to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
    }
    assert!(matches!(parse_err(&bytes).kind, GgufErrorKind::NestingTooDeep { .. }));
}

#[test]
fn invalid_utf8_and_bools() {
    let e = parse_err(&Builder::default().kv("k", V::Str(vec![b'a', 0xff])).build().bytes);
    assert!(matches!(e.kind, GgufErrorKind::InvalidUtf8 { .. }), "{e}");
    assert!(e.to_string().starts_with("metadata key 'k': string at offset"));
    let arr = V::Array(ValueType::String, vec![strv("ok"), V::Str(vec![0xc3])]);
    let e = parse_err(&Builder::default().kv("tokens", arr).build().bytes);
    assert!(matches!(e.kind, GgufErrorKind::InvalidUtf8 { .. }), "{e}");
    let mut b = Builder::default();
    b.kvs.push((vec![0xfe, 0xff], ValueType::U8.id(), V::Scalar(ValueType::U8, vec![0])));
    let e = parse_err(&b.build().bytes);
    assert_eq!(e.location, Location::MetadataEntry { index: 0 });
    let e =
        parse_err(&Builder::default().kv("b", V::Scalar(ValueType::Bool, vec![2])).build().bytes);
    assert_eq!(e.to_string(), "metadata key 'b': bool at offset 37 has value 2 (must be 0 or 1)");
    let bools = V::Array(
        ValueType::Bool,
        vec![V::Scalar(ValueType::Bool, vec![0]), V::Scalar(ValueType::Bool, vec![9])],
    );
    assert!(matches!(
        parse_err(&Builder::default().kv("b", bools).build().bytes).kind,
        GgufErrorKind::InvalidBool { value: 9, .. }
    ));
}

#[test]
fn duplicates() {
    let e = parse_err(&sample().kv("a.u8", u32v(1)).build().bytes);
    assert_eq!(e.to_string(), "metadata key 'a.u8': appears more than once");
    let e =
        parse_err(&sample().tensor(tensor("embd", &[4], GgmlType::F32, vec![0; 16])).build().bytes);
    assert_eq!(e.to_string(), "tensor 'embd': appears more than once");
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48, 1 << 20] {
        let e = parse_err(&sample().kv("general.alignment", u32v(a)).build().bytes);
        assert_eq!(e.kind, GgufErrorKind::BadAlignment { value: a as u64 }, "{e}");
    }
    let e = parse_err(&sample().kv("general.alignment", u32v(3)).build().bytes);
    assert_eq!(
        e.to_string(),
        "metadata key 'general.alignment': alignment 3 is invalid (general.alignment must be a power of two from 1 to 65 536)"
    );
    let e = parse_err(&sample().kv("general.alignment", strv("32")).build().bytes);
    assert!(matches!(e.kind, GgufErrorKind::WrongType { found: "string", .. }), "{e}");
}

// ---------------------------------------------------------------------------------
// Tensor infos.

fn one_tensor(t: Tensor) -> Vec<u8> {
    Builder::default().tensor(t).build().bytes
}

#[test]
fn overflowing_and_bad_shapes() {
    let big = tensor("t", &[1 << 32, 1 << 32, 1 << 32], GgmlType::F32, vec![]);
    let e = parse_err(&one_tensor(big));
    assert_eq!(e.to_string(), "tensor 't': element count or byte size overflows 64 bits");
    let e = parse_err(&one_tensor(tensor("t", &[1 << 63], GgmlType::F32, vec![])));
    assert_eq!(e.kind, GgufErrorKind::BadDim { index: 0, value: 1 << 63 });
    // Fits i64 as elements, but the byte size overflows.
    let e = parse_err(&one_tensor(tensor("t", &[1 << 31, 1 << 31], GgmlType::F32, vec![])));
    assert_eq!(e.kind, GgufErrorKind::SizeOverflow);
    // Found by the fuzzer: zero elements per row, but a row count that overflows.
    let e = parse_err(&one_tensor(tensor("t", &[0, 1 << 32, 1 << 32], GgmlType::F32, vec![])));
    assert_eq!(e.kind, GgufErrorKind::SizeOverflow);
    let zero = one_tensor(tensor("t", &[0, 1 << 31, 1 << 31], GgmlType::F32, vec![]));
    let g = parse(&zero).unwrap();
    let t = g.tensor("t").unwrap();
    assert_eq!((t.n_elements(), t.n_rows(), t.data().len()), (0, 1 << 62, 0));
    let e = parse_err(&one_tensor(tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4])));
    assert_eq!(e.to_string(), "tensor 't': 5 dimensions, more than ggml's 4");
    let e = parse_err(&one_tensor(tensor("t", &[33], GgmlType::Q4_1, vec![0; 40])));
    assert_eq!(
        e.to_string(),
        "tensor 't': row length 33 is not a whole number of Q4_1 blocks of 32 values"
    );
}

#[test]
fn misaligned_and_out_of_range_offsets() {
    let mut t = tensor("blk.3.attn_q.weight", &[4], GgmlType::F32, vec![0; 16]);
    t.offset = Some(4);
    let e = parse_err(&one_tensor(t));
    assert_eq!(
        e.to_string(),
        "tensor 'blk.3.attn_q.weight': data offset 4 is not a multiple of the alignment 32"
    );
    let mut t = tensor("blk.3.attn_q.weight", &[4], GgmlType::F32, vec![]);
    t.offset = Some(1 << 20);
    let bytes = one_tensor(t);
    let e = parse_err(&bytes);
    let end = 96 + (1 << 20) + 16; // header 24 + info 51, padded to 96
    assert_eq!(e.kind, GgufErrorKind::DataPastEnd { end, file_len: bytes.len() as u64 });
    assert_eq!(
        e.to_string(),
        "tensor 'blk.3.attn_q.weight': data ends at byte 1 048 688, past the end of the file (96)"
    );
    let mut t = tensor("t", &[4], GgmlType::F32, vec![]);
    t.offset = Some(u64::MAX - 31);
    assert_eq!(parse_err(&one_tensor(t)).kind, GgufErrorKind::SizeOverflow);
}

#[test]
fn unknown_and_unsupported_tensor_types() {
    let mut t = tensor("t", &[4], GgmlType::F32, vec![0; 16]);
    t.type_id = 100;
    let e = parse_err(&one_tensor(t));
    assert_eq!(e.to_string(), "tensor 't': unknown ggml type id 100");
    let mut t = tensor("t", &[4], GgmlType::F32, vec![0; 16]);
    t.type_id = 4; // Q4_2, removed from ggml
    assert_eq!(parse_err(&one_tensor(t)).kind, GgufErrorKind::UnknownTensorType { id: 4 });

    // A type ggml defines but pagoda cannot compute with: listed, data refused.
    let bytes = one_tensor(tensor("iq", &[256], GgmlType::IQ2_XXS, vec![0; 66]));
    let g = parse(&bytes).unwrap();
    let t = g.tensors().next().unwrap();
    assert_eq!((t.name(), t.ggml_type(), t.data().len()), ("iq", GgmlType::IQ2_XXS, 66));
    let e = t.try_cast::<u8>().unwrap_err();
    assert_eq!(e.to_string(), "tensor 'iq': type IQ2_XXS (id 16) is not supported by pagoda");
    assert!(t.check_supported().is_err());
}

#[test]
fn casts_check_element_size_and_alignment() {
    let built = sample().build();
    let g = parse(&built.bytes).unwrap();
    let w = g.tensor("blk.0.w").unwrap();
    let e = w.try_cast::<f32>().unwrap_err();
    assert!(matches!(e.kind, GgufErrorKind::Cast { reason: "element size", size: 4, .. }), "{e}");
    assert_eq!(w.try_cast::<[u8; 20]>().unwrap().len(), 2);
    // The same file one byte off an aligned address: an alignment error, not UB.
    let mut shifted = vec![0u32; built.bytes.len() / 4 + 2];
    let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut shifted);
    raw[1..1 + built.bytes.len()].copy_from_slice(&built.bytes);
    let g = parse(&raw[1..1 + built.bytes.len()]).unwrap();
    let e = g.tensor("norm.weight").unwrap().try_cast::<f32>().unwrap_err();
    assert_eq!(e.to_string(), "tensor 'norm.weight': cannot view data as a type of size 4 and alignment 4: alignment mismatch");
}

// ---------------------------------------------------------------------------------
// Random corruption: no panic, and whatever parses can be walked.

fn walk(g: &Gguf<'_>) {
    fn walk_value(v: Value<'_>) {
        if let Value::Array(a) = v {
            assert_eq!(a.iter().map(walk_value).count(), a.len());
        }
    }
    assert_eq!(g.metadata().map(|(_, v)| walk_value(v)).count(), g.metadata_len());
    for t in g.tensors() {
        assert!(g.tensor(t.name()).is_ok());
    }
    assert_eq!(g.tensors().count(), g.tensor_count());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn corrupted_bytes_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut bytes = sample().build().bytes;
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let len = bytes.len();
        let bytes = &bytes[..len - cut.index(len / 8)];
        if let Ok(g) = parse(bytes) {
            walk(&g);
        }
    }
}
