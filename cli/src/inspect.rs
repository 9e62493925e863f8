//! `pagoda inspect`: a GGUF file's metadata and tensor table, like llama.cpp's gguf-dump.
//!
//! Each tensor's type is in the table; a last line gives the type mix (`types: 210 × Q4_1,
//! 61 × F32, 1 × Q8_0`, [`TypeMix`]). Text output summarises long arrays
//! (`[49152 strings: "<|endoftext|>", "<|im_start|>", …]`) and long strings. `--json` prints
//! one JSON object for scripts:
//!
//! ```text
//! { "file": path, "version": 3, "alignment": 32, "data_start": bytes, "file_bytes": bytes,
//!   "metadata": { key: scalar | string | {"array": elem type, "len": n, "head": [≤ 16 values]} },
//!   "tensors": [ {"name", "type", "shape" (ggml order), "n_elements", "n_bytes", "offset"} ],
//!   "types": [ {"type", "count"} ] (the type mix, most common first) }
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use pagoda_core::gguf::{ArrayView, Gguf, Value};
use pagoda_cpu::model_file::{default_model_path, ModelFile, ModelFileError};
use pagoda_cpu::quantize::TypeMix;
use serde_json::{json, Map, Value as Json};

use crate::common::{escape, quoted};

/// Arguments of `pagoda inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// GGUF model file [default: $PAGODA_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Print JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Elements shown of a long array in text output.
const TEXT_HEAD: usize = 3;
/// Elements listed under `"head"` for an array in JSON output.
const JSON_HEAD: usize = 16;
/// Characters of a string value shown in text output.
const TEXT_STR_CHARS: usize = 60;

/// Runs the command; `Err` is a one-line message for stderr.
pub fn run(args: &InspectArgs) -> Result<String, String> {
    let path = args.model.clone().unwrap_or_else(default_model_path);
    let model = ModelFile::open(&path).map_err(|e| {
        let missing_default = args.model.is_none()
            && matches!(&e, ModelFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
        if missing_default {
            format!("{e} (run scripts/fetch-model.sh to fetch the default model, or pass -m MODEL)")
        } else {
            e.to_string()
        }
    })?;
    let g = model.gguf();
    Ok(if args.json { to_json(&model, &g) } else { to_text(&model, &g) })
}

fn to_text(model: &ModelFile, g: &Gguf<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", model.path().display());
    let _ = writeln!(
        out,
        "GGUF v{}, {} metadata entries, {} tensors, alignment {}, data at byte {}, {} bytes",
        g.version(),
        g.metadata_len(),
        g.tensor_count(),
        g.alignment(),
        g.data_start(),
        model.bytes().len()
    );
    let _ = writeln!(out, "\nmetadata:");
    // Keys and tensor names come from the file: escaped like string values.
    let key_width = g.metadata().map(|(k, _)| escape(k).chars().count()).max().unwrap_or(0);
    for (i, (key, value)) in g.metadata().enumerate() {
        let key = escape(key);
        let _ = writeln!(
            out,
            "{i:>4}  {key:<key_width$}  {:<6}  {}",
            value.value_type().name(),
            text_value(value)
        );
    }
    let _ = writeln!(out, "\ntensors:");
    let name_width =
        g.tensors().map(|t| escape(t.name()).chars().count()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:>4}  {:<name_width$}  {:<7}  {:<16}  {:>12}",
        "#", "name", "type", "shape", "bytes"
    );
    let mut total = 0u64;
    for (i, t) in g.tensors().enumerate() {
        let shape = t.dims().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ");
        let _ = writeln!(
            out,
            "{i:>4}  {:<name_width$}  {:<7}  {shape:<16}  {:>12}",
            escape(t.name()),
            t.ggml_type().name(),
            t.data().len()
        );
        total += t.data().len() as u64;
    }
    let _ = writeln!(out, "{} tensors, {total} bytes of tensor data", g.tensor_count());
    let _ = writeln!(out, "types: {}", TypeMix::of_gguf(g));
    out
}

fn text_value(v: Value<'_>) -> String {
    match v {
        Value::Str(s) => quoted(s, TEXT_STR_CHARS),
        Value::Array(a) => text_array(a),
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Bool(b) => b.to_string(),
        v => v.as_integer().map(|n| n.to_string()).unwrap_or_default(),
    }
}

fn text_array(a: ArrayView<'_>) -> String {
    let elem = a.elem_type().name();
    let mut items: Vec<String> = a
        .iter()
        .take(TEXT_HEAD)
        .map(|v| match v {
            Value::Str(s) => quoted(s, 20),
            Value::Array(inner) => format!("[{} {}]", inner.len(), inner.elem_type().name()),
            v => text_value(v),
        })
        .collect();
    if a.len() > TEXT_HEAD {
        items.push("…".into());
    }
    let plural = if elem == "string" && a.len() != 1 { "strings" } else { elem };
    format!("[{} {plural}: {}]", a.len(), items.join(", "))
}

fn json_value(v: Value<'_>) -> Json {
    match v {
        Value::Str(s) => json!(s),
        Value::F32(x) => json!(x as f64),
        Value::F64(x) => json!(x),
        Value::Bool(b) => json!(b),
        Value::Array(a) => json!({
            "array": a.elem_type().name(),
            "len": a.len(),
            "head": a.iter().take(JSON_HEAD).map(json_value).collect::<Vec<_>>(),
        }),
        v => match v.as_integer() {
            Some(n) if n >= 0 => json!(n as u64),
            Some(n) => json!(n as i64),
            None => Json::Null,
        },
    }
}

fn to_json(model: &ModelFile, g: &Gguf<'_>) -> String {
    let mut metadata = Map::new();
    for (key, value) in g.metadata() {
        metadata.insert(key.to_string(), json_value(value));
    }
    let tensors: Vec<Json> = g
        .tensors()
        .map(|t| {
            json!({
                "name": t.name(),
                "type": t.ggml_type().name(),
                "shape": t.dims(),
                "n_elements": t.n_elements(),
                "n_bytes": t.data().len(),
                "offset": t.offset(),
            })
        })
        .collect();
    let doc = json!({
        "file": model.path().display().to_string(),
        "version": g.version(),
        "alignment": g.alignment(),
        "data_start": g.data_start(),
        "file_bytes": model.bytes().len(),
        "metadata": metadata,
        "tensors": tensors,
        "types": TypeMix::of_gguf(g)
            .counts()
            .iter()
            .map(|(ty, n)| json!({ "type": ty.name(), "count": n }))
            .collect::<Vec<_>>(),
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
