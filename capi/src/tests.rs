//! The C API called from Rust as C would call it. (Unit tests: the crate builds no rlib,
//! since its library is named `pagoda` like the facade's.)

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use super::*;

fn model_path() -> String {
    std::env::var("PAGODA_MODEL").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../models/SmolLM2-135M-Instruct.Q4_1.gguf").into()
    })
}

fn last_error() -> String {
    // SAFETY: pagoda_last_error returns a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(pagoda_last_error()) }.to_str().unwrap().to_owned()
}

/// A model handle freed on drop.
struct Model(*mut pagoda_model);

impl Model {
    fn load() -> Model {
        let path = CString::new(model_path()).unwrap();
        let mut out = ptr::null_mut();
        // SAFETY: valid string and out-pointer.
        let st = unsafe { pagoda_model_load(path.as_ptr(), &mut out) };
        assert_eq!(st, PAGODA_OK, "{}", last_error());
        assert!(!out.is_null());
        Model(out)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: a live model from pagoda_model_load, freed once.
        unsafe { pagoda_model_free(self.0) };
    }
}

/// Takes over a string returned by pagoda.
fn take_string(p: *mut c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: a NUL-terminated string from pagoda, freed right after the copy.
    let s = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
    // SAFETY: as above.
    unsafe { pagoda_string_free(p) };
    s
}

/// What the token callback saw; stops after `stop_after` pieces when set.
#[derive(Default)]
struct Pieces {
    pieces: Vec<String>,
    stop_after: Option<usize>,
}

unsafe extern "C" fn collect(piece: *const c_char, len: usize, user_data: *mut c_void) -> c_int {
    // SAFETY: user_data is the &mut Pieces the test passed.
    let p = unsafe { &mut *user_data.cast::<Pieces>() };
    // SAFETY: pagoda passes len bytes plus a NUL.
    let bytes = unsafe { std::slice::from_raw_parts(piece.cast::<u8>(), len + 1) };
    assert_eq!(bytes[len], 0, "piece is NUL-terminated");
    p.pieces.push(std::str::from_utf8(&bytes[..len]).unwrap().to_owned());
    c_int::from(p.stop_after.is_some_and(|n| p.pieces.len() >= n))
}

fn greedy(n: i32) -> pagoda_options {
    pagoda_options { temperature: 0.0, max_tokens: n, ..pagoda_options_default() }
}

/// pagoda_generate with the collecting callback: status, text.
fn generate(m: &Model, prompt: &CStr, opts: &pagoda_options, pieces: &mut Pieces) -> String {
    let mut text = ptr::null_mut();
    // SAFETY: live model, valid strings, options, callback and out-pointer.
    let st = unsafe {
        pagoda_generate(
            m.0,
            prompt.as_ptr(),
            opts,
            Some(collect),
            ptr::from_mut(pieces).cast(),
            &mut text,
        )
    };
    assert_eq!(st, PAGODA_OK, "{}", last_error());
    take_string(text)
}

fn stats() -> pagoda_stats {
    let mut s = pagoda_stats { generated_tokens: 99, stop: pagoda_stop_reason::PAGODA_STOP_NONE };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { pagoda_last_stats(&mut s) }, PAGODA_OK);
    s
}

#[test]
fn default_options_are_the_facade_defaults() {
    assert_eq!(options_from(&pagoda_options_default()).unwrap(), pagoda::Options::default());
    let o = pagoda_options_default();
    assert_eq!((o.max_tokens, o.top_k, o.n_ctx, o.ignore_eos), (-1, 40, 2048, false));
    assert_eq!(o.kv_type, pagoda_kv_type::PAGODA_KV_F16 as i32);
    let o = pagoda_options { max_tokens: 7, top_k: 3, kv_type: 3, ..o };
    assert_eq!(
        options_from(&o).unwrap(),
        pagoda::Options::default().max_tokens(7).top_k(3).kv_type(KvType::Q8_0)
    );
    for bad in [
        pagoda_options { max_tokens: -2, ..o },
        pagoda_options { top_k: -1, ..o },
        pagoda_options { n_ctx: 0, ..o },
        pagoda_options { kv_type: 5, ..o },
        pagoda_options { repeat_last_n: -1, ..o },
    ] {
        assert_eq!(options_from(&bad).unwrap_err().status, PAGODA_ERR_INVALID_ARGUMENT);
    }
}

#[test]
fn null_arguments_are_refused_and_named() {
    let mut out = ptr::NonNull::<pagoda_model>::dangling().as_ptr();
    // SAFETY: NULL path is what is tested; out is valid.
    assert_eq!(unsafe { pagoda_model_load(ptr::null(), &mut out) }, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(out.is_null(), "out cleared on failure");
    assert!(last_error().contains("path"), "{}", last_error());

    let path = CString::new(model_path()).unwrap();
    // SAFETY: NULL out is what is tested.
    let st = unsafe { pagoda_model_load(path.as_ptr(), ptr::null_mut()) };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("out"), "{}", last_error());

    out = ptr::NonNull::<pagoda_model>::dangling().as_ptr();
    // SAFETY: NULL data with len > 0 is what is tested.
    let st = unsafe { pagoda_model_load_from_memory(ptr::null(), 5, &mut out) };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(out.is_null());
    assert!(last_error().contains("data"), "{}", last_error());

    // A non-NULL pointer with length 0 is accepted as empty input: not a model.
    let byte = 0u8;
    // SAFETY: valid pointer, length 0.
    let st = unsafe { pagoda_model_load_from_memory(&byte, 0, &mut out) };
    assert_eq!(st, PAGODA_ERR_MODEL, "{}", last_error());
    assert!(out.is_null());

    let prompt = c"hello";
    let mut text = ptr::NonNull::<c_char>::dangling().as_ptr();
    // SAFETY: NULL model is what is tested.
    let st = unsafe {
        pagoda_generate(ptr::null(), prompt.as_ptr(), ptr::null(), None, ptr::null_mut(), &mut text)
    };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(text.is_null());
    assert!(last_error().contains("model"), "{}", last_error());

    let mut len = 7usize;
    // SAFETY: NULL model and text are what is tested.
    let st = unsafe { pagoda_tokenize(ptr::null(), ptr::null(), ptr::null_mut(), 0, &mut len) };
    assert_eq!((st, len), (PAGODA_ERR_INVALID_ARGUMENT, 0));

    let mut session = ptr::NonNull::<pagoda_session>::dangling().as_ptr();
    // SAFETY: NULL model is what is tested.
    let st = unsafe { pagoda_session_new(ptr::null(), ptr::null(), &mut session) };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(session.is_null());
    // SAFETY: NULL session is what is tested.
    let st = unsafe {
        pagoda_session_chat(
            ptr::null_mut(),
            prompt.as_ptr(),
            ptr::null(),
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("session"), "{}", last_error());
    // SAFETY: NULL out is what is tested.
    assert_eq!(unsafe { pagoda_last_stats(ptr::null_mut()) }, PAGODA_ERR_INVALID_ARGUMENT);

    // SAFETY: NULL is allowed for every free function.
    unsafe {
        pagoda_model_free(ptr::null_mut());
        pagoda_session_free(ptr::null_mut());
        pagoda_string_free(ptr::null_mut());
    }
    // A success clears the message.
    stats();
    assert_eq!(last_error(), "");
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = c"/nonexistent/dir/missing-model.gguf";
    let mut out = ptr::null_mut();
    // SAFETY: valid string and out-pointer.
    let st = unsafe { pagoda_model_load(path.as_ptr(), &mut out) };
    assert_eq!(st, PAGODA_ERR_IO);
    assert!(out.is_null());
    assert!(last_error().contains("missing-model.gguf"), "{}", last_error());

    // Not GGUF: a model error, also naming the file.
    let path = CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    // SAFETY: valid string and out-pointer.
    let st = unsafe { pagoda_model_load(path.as_ptr(), &mut out) };
    assert_eq!(st, PAGODA_ERR_MODEL);
    assert!(last_error().contains("Cargo.toml"), "{}", last_error());
}

#[test]
fn invalid_utf8_is_refused() {
    let m = Model::load();
    let bad = b"caf\xe9\0";
    let mut len = 0;
    // SAFETY: a NUL-terminated (invalid UTF-8) string and valid out-pointers.
    let st = unsafe { pagoda_tokenize(m.0, bad.as_ptr().cast(), ptr::null_mut(), 0, &mut len) };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("text") && last_error().contains("UTF-8"), "{}", last_error());
    // SAFETY: as above.
    let st = unsafe {
        pagoda_generate(
            m.0,
            bad.as_ptr().cast(),
            ptr::null(),
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("prompt"), "{}", last_error());
}

#[test]
fn tokenize_reports_the_size_it_needs() {
    let m = Model::load();
    let text = c"The capital of France is";
    let expected = pagoda::Model::load(model_path()).unwrap().tokenize("The capital of France is");
    assert!(expected.len() > 2);

    let mut len = 0;
    // SAFETY: capacity 0 with NULL ids asks for the size.
    let st = unsafe { pagoda_tokenize(m.0, text.as_ptr(), ptr::null_mut(), 0, &mut len) };
    assert_eq!((st, len), (PAGODA_ERR_BUFFER_TOO_SMALL, expected.len()));
    assert!(last_error().contains("capacity"), "{}", last_error());

    let mut ids = vec![u32::MAX; expected.len()];
    // SAFETY: room for 2 ids.
    let st = unsafe { pagoda_tokenize(m.0, text.as_ptr(), ids.as_mut_ptr(), 2, &mut len) };
    assert_eq!((st, len), (PAGODA_ERR_BUFFER_TOO_SMALL, expected.len()));
    assert!(ids.iter().all(|&i| i == u32::MAX), "nothing written when too small");

    // SAFETY: NULL ids with capacity > 0 is refused.
    let st = unsafe { pagoda_tokenize(m.0, text.as_ptr(), ptr::null_mut(), 4, &mut len) };
    assert_eq!((st, len), (PAGODA_ERR_INVALID_ARGUMENT, 0));

    // SAFETY: room for ids.len() ids.
    let st = unsafe { pagoda_tokenize(m.0, text.as_ptr(), ids.as_mut_ptr(), ids.len(), &mut len) };
    assert_eq!((st, len), (PAGODA_OK, expected.len()));
    assert_eq!(ids, expected);

    // And back. The BOS (if any) renders as nothing.
    let mut out = ptr::null_mut();
    // SAFETY: ids.len() ids and a valid out-pointer.
    let st = unsafe { pagoda_detokenize(m.0, ids.as_ptr(), ids.len(), &mut out) };
    assert_eq!(st, PAGODA_OK, "{}", last_error());
    assert!(take_string(out).ends_with("The capital of France is"));

    // SAFETY: NULL ids with len 0 is the empty text.
    let st = unsafe { pagoda_detokenize(m.0, ptr::null(), 0, &mut out) };
    assert_eq!(st, PAGODA_OK);
    assert_eq!(take_string(out), "");

    let bad = [1u32, 10_000_000];
    // SAFETY: 2 ids.
    let st = unsafe { pagoda_detokenize(m.0, bad.as_ptr(), 2, &mut out) };
    assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
    assert!(out.is_null());
    assert!(last_error().contains("10000000"), "{}", last_error());
}

#[test]
fn generate_equals_the_rust_api() {
    let prompt = "The capital of France is";
    let expected = pagoda::Model::load(model_path())
        .unwrap()
        .generate(prompt, &pagoda::Options::greedy().max_tokens(24))
        .unwrap();
    let m = Model::load();
    let mut pieces = Pieces::default();
    let text = generate(&m, &CString::new(prompt).unwrap(), &greedy(24), &mut pieces);
    assert_eq!(text, expected);
    assert_eq!(pieces.pieces.concat(), expected);
    let s = stats();
    assert_eq!(s.generated_tokens, 24);
    assert_eq!(s.stop, pagoda_stop_reason::PAGODA_STOP_LENGTH);

    // From memory: the same text.
    let bytes = std::fs::read(model_path()).unwrap();
    let mut mem = ptr::null_mut();
    // SAFETY: bytes.len() bytes and a valid out-pointer; the bytes are copied.
    let st = unsafe { pagoda_model_load_from_memory(bytes.as_ptr(), bytes.len(), &mut mem) };
    assert_eq!(st, PAGODA_OK, "{}", last_error());
    drop(bytes);
    let mem = Model(mem);
    let text = generate(&mem, &CString::new(prompt).unwrap(), &greedy(24), &mut Pieces::default());
    assert_eq!(text, expected);

    // No callback, no out_text: fine.
    // SAFETY: live model and valid prompt.
    let st = unsafe {
        pagoda_generate(m.0, c"Hi".as_ptr(), &greedy(2), None, ptr::null_mut(), ptr::null_mut())
    };
    assert_eq!(st, PAGODA_OK);
}

#[test]
fn numerics_are_chosen_at_load_and_unknown_ones_refused() {
    let prompt = "The capital of France is";
    let opts = pagoda::Options::greedy().max_tokens(24);
    let rust = |n| {
        let m = pagoda::Model::load_with_numerics(model_path(), n).unwrap();
        assert_eq!(m.numerics(), n);
        m.generate(prompt, &opts).unwrap()
    };
    let path = CString::new(model_path()).unwrap();
    for (c, n) in [
        (pagoda_numerics::PAGODA_NUMERICS_EXACT, pagoda::Numerics::Exact),
        (pagoda_numerics::PAGODA_NUMERICS_FAST, pagoda::Numerics::Fast),
    ] {
        let mut out = ptr::null_mut();
        // SAFETY: a valid path and out-pointer.
        let st = unsafe { pagoda_model_load_with_numerics(path.as_ptr(), c as c_int, &mut out) };
        assert_eq!(st, PAGODA_OK, "{}", last_error());
        let m = Model(out);
        // SAFETY: a live model from the call above.
        assert_eq!(unsafe { &(*m.0).model }.numerics(), n);
        let text =
            generate(&m, &CString::new(prompt).unwrap(), &greedy(24), &mut Pieces::default());
        assert_eq!(text, rust(n), "{n}: the C ABI's text is the Rust API's");
    }
    for bad in [2, -1] {
        let mut out = ptr::dangling_mut();
        // SAFETY: a valid path and out-pointer.
        let st = unsafe { pagoda_model_load_with_numerics(path.as_ptr(), bad, &mut out) };
        assert_eq!(st, PAGODA_ERR_INVALID_ARGUMENT);
        assert!(out.is_null());
        let e = last_error();
        assert!(e.contains("numerics") && e.contains(&bad.to_string()), "{e}");
    }
}

#[test]
fn a_callback_returning_nonzero_stops_generation() {
    let m = Model::load();
    let prompt = c"Once upon a time";
    let full = generate(&m, prompt, &greedy(40), &mut Pieces::default());
    let mut pieces = Pieces { stop_after: Some(3), ..Pieces::default() };
    let text = generate(&m, prompt, &greedy(40), &mut pieces);
    assert_eq!(pieces.pieces.len(), 3);
    assert_eq!(text, pieces.pieces.concat());
    assert!(full.starts_with(&text) && full.len() > text.len());
    let s = stats();
    assert_eq!(s.stop, pagoda_stop_reason::PAGODA_STOP_CALLBACK);
    assert!((3..40).contains(&s.generated_tokens), "{s:?}");
}

#[test]
fn sessions_chat_like_the_rust_api_and_stop_early() {
    let opts = pagoda::Options::greedy().max_tokens(20);
    let rust = pagoda::Model::load(model_path()).unwrap();
    let mut expected = rust.session(&opts).unwrap();
    let turn1 = expected.chat("My name is Ada.", &opts).unwrap();
    let turn2 = expected.chat("What is my name?", &opts).unwrap();

    let m = Model::load();
    let mut s = ptr::null_mut();
    // SAFETY: live model, valid options and out-pointer.
    assert_eq!(unsafe { pagoda_session_new(m.0, &greedy(20), &mut s) }, PAGODA_OK);
    let chat = |user: &CStr, pieces: &mut Pieces| {
        let mut text = ptr::null_mut();
        // SAFETY: live session, valid strings, options, callback and out-pointer.
        let st = unsafe {
            pagoda_session_chat(
                s,
                user.as_ptr(),
                &greedy(20),
                Some(collect),
                ptr::from_mut(pieces).cast(),
                &mut text,
            )
        };
        assert_eq!(st, PAGODA_OK, "{}", last_error());
        take_string(text)
    };
    let mut pieces = Pieces::default();
    assert_eq!(chat(c"My name is Ada.", &mut pieces), turn1);
    assert_eq!(pieces.pieces.concat(), turn1);
    assert_eq!(chat(c"What is my name?", &mut Pieces::default()), turn2);
    let mut len = 0;
    // SAFETY: live session, valid out-pointer.
    assert_eq!(unsafe { pagoda_session_len(s, &mut len) }, PAGODA_OK);
    assert_eq!(len, expected.len());

    // Stopped from the callback: the text so far, and the session goes on.
    let mut pieces = Pieces { stop_after: Some(2), ..Pieces::default() };
    let text = chat(c"Tell me a story.", &mut pieces);
    assert_eq!(pieces.pieces.len(), 2);
    assert_eq!(text, pieces.pieces.concat());
    assert_eq!(stats().stop, pagoda_stop_reason::PAGODA_STOP_CALLBACK);
    let mut after = 0;
    // SAFETY: live session, valid out-pointer.
    assert_eq!(unsafe { pagoda_session_len(s, &mut after) }, PAGODA_OK);
    assert!(after > len);
    assert!(!chat(c"Thanks!", &mut Pieces::default()).is_empty());

    // The session outlives its model handle.
    drop(m);
    // SAFETY: live session.
    assert_eq!(unsafe { pagoda_session_reset(s) }, PAGODA_OK);
    assert_eq!(chat(c"My name is Ada.", &mut Pieces::default()), turn1);
    // SAFETY: freed once.
    unsafe { pagoda_session_free(s) };
}

#[test]
fn a_full_context_is_context_full() {
    let m = Model::load();
    let opts = pagoda_options { n_ctx: 4, ..greedy(8) };
    // SAFETY: live model, valid prompt and options.
    let st = unsafe {
        pagoda_generate(
            m.0,
            c"The capital of France is".as_ptr(),
            &opts,
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    assert_eq!(st, PAGODA_ERR_CONTEXT_FULL, "{}", last_error());
    let opts = pagoda_options { temperature: 0.8, top_p: 2.0, ..greedy(8) };
    // SAFETY: as above.
    let st = unsafe {
        pagoda_generate(m.0, c"Hi".as_ptr(), &opts, None, ptr::null_mut(), ptr::null_mut())
    };
    assert_eq!(st, PAGODA_ERR_SAMPLER, "{}", last_error());
}

#[test]
fn last_error_is_per_thread() {
    let mut out = ptr::null_mut();
    // SAFETY: NULL path is what is tested.
    unsafe { pagoda_model_load(ptr::null(), &mut out) };
    let here = last_error();
    assert!(here.contains("path"));
    let there = std::thread::spawn(|| {
        let before = last_error();
        let mut len = 0;
        // SAFETY: NULL model and text are what is tested.
        unsafe { pagoda_tokenize(ptr::null(), ptr::null(), ptr::null_mut(), 0, &mut len) };
        (before, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(there.0, "", "a new thread has no message");
    assert!(there.1.contains("model"), "{}", there.1);
    assert_eq!(last_error(), here, "the other thread's failure left this one's message");
}

#[test]
fn panics_do_not_cross_the_boundary() {
    let st = guard("test_fn", || panic!("boom"));
    assert_eq!(st, PAGODA_ERR_PANIC);
    assert!(last_error().contains("test_fn") && last_error().contains("boom"), "{}", last_error());
    assert!(!pagoda_version().is_null());
    // SAFETY: a static NUL-terminated string.
    assert_eq!(
        unsafe { CStr::from_ptr(pagoda_version()) }.to_str().unwrap(),
        env!("CARGO_PKG_VERSION")
    );
}
