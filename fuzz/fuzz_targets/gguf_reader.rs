//! Fuzz the GGUF reader: arbitrary bytes must parse to a value or an error, never a
//! panic; a file that parses must be fully walkable (every metadata value, every
//! array element, every tensor view and cast) without a panic.
#![no_main]

use pagoda_core::gguf::{Gguf, Value};

fn walk_value(v: Value<'_>) {
    if let Value::Array(a) = v {
        let n = a.iter().map(walk_value).count();
        assert_eq!(n, a.len(), "array iteration yields every element");
        let _ = a.iter_str().map(|it| it.count());
        let _ = a.iter_i32().map(|it| it.count());
        let _ = a.iter_u32().map(|it| it.count());
        let _ = a.iter_f32().map(|it| it.count());
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else { return };
    let mut n_kv = 0;
    for (key, value) in g.metadata() {
        n_kv += 1;
        walk_value(value);
        assert!(g.get(key).is_some(), "every listed key can be looked up");
        let _ = (g.get_u32(key), g.get_u64(key), g.get_i32(key), g.get_f32(key));
        let _ = (g.get_bool(key), g.get_str(key), g.get_array(key));
    }
    assert_eq!(n_kv, g.metadata_len(), "metadata iteration yields every entry");
    let mut n_tensors = 0;
    for t in g.tensors() {
        n_tensors += 1;
        assert!(t.data().len() as u64 <= data.len() as u64);
        assert_eq!(g.tensor(t.name()).map(|u| u.data().as_ptr()), Ok(t.data().as_ptr()));
        let _ = t.n_elements();
        let _ = t.n_rows();
        let _ = t.try_cast::<f32>();
        let _ = t.try_cast::<u16>();
        let _ = t.try_cast::<[u8; 20]>();
    }
    assert_eq!(n_tensors, g.tensor_count(), "tensor iteration yields every tensor");
});
