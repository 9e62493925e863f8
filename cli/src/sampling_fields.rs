//! The sampler fields a request may carry as JSON (a `pagoda batch` line, a server request),
//! under llama.cpp server's names: one parser for both, so a field means the same thing
//! everywhere and each error names its field.
//!
//! | field                         | [`SamplerConfig`] field              | values                      |
//! |-------------------------------|--------------------------------------|-----------------------------|
//! | `typical_p`                   | `typical_p`                          | (0, 1]                      |
//! | `repeat_penalty`              | `repeat_penalty`                     | > 0                         |
//! | `repeat_last_n`               | `repeat_last_n`                      | ≥ 0, -1 = whole context     |
//! | `presence_penalty`            | `presence_penalty`                   | finite                      |
//! | `frequency_penalty`           | `frequency_penalty`                  | finite                      |
//! | `mirostat`                    | `mirostat`                           | 0 or 2                      |
//! | `mirostat_tau`, `mirostat_eta`| `mirostat_tau`, `mirostat_eta`       | finite                      |
//! | `dry_multiplier`, `dry_base`  | `dry_multiplier`, `dry_base`         | finite                      |
//! | `dry_allowed_length`          | `dry_allowed_length`                 | ≥ 0                         |
//! | `dry_penalty_last_n`          | `dry_penalty_last_n`                 | ≥ 0, -1 = whole context     |
//! | `dry_sequence_breakers`       | `dry_sequence_breakers`              | array of strings            |
//! | `logit_bias`                  | `logit_bias`                         | `{"ID": bias}` (OpenAI) or `[[ID, bias or false]]` (llama.cpp; `false` bans) |
//!
//! The settings are checked together afterwards by [`SamplerConfig::validate`] (and the
//! token ids against the vocabulary when the sampler is built).

use pagoda_cpu::sampler::SamplerConfig;
use serde_json::{Map, Value};

/// The fields [`apply`] reads.
pub const FIELDS: &[&str] = &[
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "logit_bias",
];

/// A bad field: its name and what is wrong.
pub type FieldError = (String, String);

fn bad(field: &str, message: String) -> FieldError {
    (field.to_string(), message)
}

/// Sets `cfg`'s fields from those of [`FIELDS`] that `obj` has (`null` = absent).
pub fn apply(obj: &Map<String, Value>, cfg: &mut SamplerConfig) -> Result<(), FieldError> {
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let float = |k: &str| -> Result<Option<f32>, FieldError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(Some(x as f32)),
                _ => Err(bad(k, format!("{k} must be a finite number, got {v}"))),
            },
        }
    };
    // A count, or -1 for "the whole context" where `minus_one_is_all`.
    let count = |k: &str, minus_one_is_all: bool| -> Result<Option<usize>, FieldError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match (v.as_u64(), v.as_i64()) {
                (Some(x), _) => Ok(Some(usize::try_from(x).unwrap_or(usize::MAX))),
                (None, Some(-1)) if minus_one_is_all => Ok(Some(usize::MAX)),
                _ if minus_one_is_all => Err(bad(
                    k,
                    format!("{k} must be an integer ≥ 0, or -1 (whole context), got {v}"),
                )),
                _ => Err(bad(k, format!("{k} must be an integer ≥ 0, got {v}"))),
            },
        }
    };
    if let Some(x) = float("typical_p")? {
        cfg.typical_p = x;
    }
    if let Some(x) = float("repeat_penalty")? {
        cfg.repeat_penalty = x;
    }
    if let Some(x) = count("repeat_last_n", true)? {
        cfg.repeat_last_n = x;
    }
    if let Some(x) = float("presence_penalty")? {
        cfg.presence_penalty = x;
    }
    if let Some(x) = float("frequency_penalty")? {
        cfg.frequency_penalty = x;
    }
    if let Some(v) = get("mirostat") {
        cfg.mirostat = match v.as_u64() {
            Some(m @ (0 | 2)) => m as u8,
            Some(1) => {
                return Err(bad(
                    "mirostat",
                    "mirostat 1 is not supported (use 2, Mirostat 2.0, or 0: off)".into(),
                ))
            }
            _ => return Err(bad("mirostat", format!("mirostat must be 0 or 2, got {v}"))),
        };
    }
    if let Some(x) = float("mirostat_tau")? {
        cfg.mirostat_tau = x;
    }
    if let Some(x) = float("mirostat_eta")? {
        cfg.mirostat_eta = x;
    }
    if let Some(x) = float("dry_multiplier")? {
        cfg.dry_multiplier = x;
    }
    if let Some(x) = float("dry_base")? {
        cfg.dry_base = x;
    }
    if let Some(x) = count("dry_allowed_length", false)? {
        cfg.dry_allowed_length = x;
    }
    if let Some(x) = count("dry_penalty_last_n", true)? {
        cfg.dry_penalty_last_n = x;
    }
    if let Some(v) = get("dry_sequence_breakers") {
        let k = "dry_sequence_breakers";
        let list =
            v.as_array().ok_or_else(|| bad(k, format!("{k} must be an array of strings")))?;
        cfg.dry_sequence_breakers = list
            .iter()
            .map(|s| s.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(k, format!("{k} must be an array of strings")))?;
    }
    if let Some(v) = get("logit_bias") {
        cfg.logit_bias = logit_bias(v)?;
    }
    Ok(())
}

/// `logit_bias`: OpenAI's `{"15043": -100}` map or llama.cpp's `[[15043, -1.5], [13, false]]`
/// pairs (`false`: never this token).
fn logit_bias(v: &Value) -> Result<Vec<(u32, f32)>, FieldError> {
    let k = "logit_bias";
    let id = |t: &Value| -> Result<u32, FieldError> {
        let parsed = match t {
            Value::String(s) => s.trim().parse::<u32>().ok(),
            Value::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
            _ => None,
        };
        parsed.ok_or_else(|| bad(k, format!("{k}: {t} is not a token id")))
    };
    let value = |b: &Value| -> Result<f32, FieldError> {
        match b {
            Value::Bool(false) => Ok(f32::NEG_INFINITY),
            _ => match b.as_f64() {
                Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(x as f32),
                _ => Err(bad(k, format!("{k}: a bias must be a finite number or false, got {b}"))),
            },
        }
    };
    match v {
        Value::Object(m) => {
            m.iter().map(|(t, b)| Ok((id(&Value::String(t.clone()))?, value(b)?))).collect()
        }
        Value::Array(pairs) => pairs
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([t, b]) => Ok((id(t)?, value(b)?)),
                _ => Err(bad(k, format!("{k}: each entry must be [token id, bias], got {p}"))),
            })
            .collect(),
        _ => {
            Err(bad(k, format!("{k} must be an object {{\"ID\": bias}} or an array of [ID, bias]")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn applied(v: Value) -> Result<SamplerConfig, FieldError> {
        let mut cfg = SamplerConfig::default();
        apply(v.as_object().unwrap(), &mut cfg).map(|()| cfg)
    }

    #[test]
    fn every_field_lands_in_its_setting() {
        let cfg = applied(json!({
            "typical_p": 0.9, "repeat_penalty": 1.1, "repeat_last_n": -1,
            "presence_penalty": 0.5, "frequency_penalty": -0.25, "mirostat": 2,
            "mirostat_tau": 4.0, "mirostat_eta": 0.2, "dry_multiplier": 0.8, "dry_base": 2.0,
            "dry_allowed_length": 3, "dry_penalty_last_n": 128,
            "dry_sequence_breakers": ["\n", "."], "logit_bias": {"15043": -100, "13": 2.5},
        }))
        .unwrap();
        assert_eq!((cfg.typical_p, cfg.repeat_penalty, cfg.repeat_last_n), (0.9, 1.1, usize::MAX));
        assert_eq!((cfg.presence_penalty, cfg.frequency_penalty), (0.5, -0.25));
        assert_eq!((cfg.mirostat, cfg.mirostat_tau, cfg.mirostat_eta), (2, 4.0, 0.2));
        assert_eq!((cfg.dry_multiplier, cfg.dry_base, cfg.dry_allowed_length), (0.8, 2.0, 3));
        assert_eq!(cfg.dry_penalty_last_n, 128);
        assert_eq!(cfg.dry_sequence_breakers, ["\n", "."]);
        let mut bias = cfg.logit_bias.clone();
        bias.sort_by_key(|b| b.0);
        assert_eq!(bias, [(13, 2.5), (15043, -100.0)]);
        let pairs = applied(json!({"logit_bias": [[5, false], [7, 1.5]]})).unwrap();
        assert_eq!(pairs.logit_bias, [(5, f32::NEG_INFINITY), (7, 1.5)]);
        assert_eq!(applied(json!({"mirostat": null})).unwrap(), SamplerConfig::default());
    }

    #[test]
    fn a_bad_value_names_its_field() {
        for (v, field) in [
            (json!({"typical_p": "x"}), "typical_p"),
            (json!({"repeat_last_n": -2}), "repeat_last_n"),
            (json!({"dry_allowed_length": -1}), "dry_allowed_length"),
            (json!({"mirostat": 1}), "mirostat"),
            (json!({"mirostat": 3}), "mirostat"),
            (json!({"dry_sequence_breakers": [1]}), "dry_sequence_breakers"),
            (json!({"logit_bias": {"x": 1}}), "logit_bias"),
            (json!({"logit_bias": [[1]]}), "logit_bias"),
            (json!({"logit_bias": {"1": true}}), "logit_bias"),
            (json!({"logit_bias": 3}), "logit_bias"),
        ] {
            let (f, m) = applied(v.clone()).unwrap_err();
            assert_eq!(f, field, "{v}: {m}");
            assert!(m.contains(field), "{m}");
        }
    }
}
