//! The quantization presets of `llama-quantize` (llama.cpp's `llama_ftype`): their names,
//! ids, default tensor types, and parsing as `llama-quantize` parses its TYPE argument.
//!
//! A preset is a *mix*: its default type is what most 2-D weights become, and
//! [`tensor_type`](super::tensor_type) bumps or demotes single tensors from there.

use std::fmt;

use pagoda_core::quant::GgmlType;

/// A quantization preset pagoda can write (llama.cpp's `LLAMA_FTYPE_*`, the value of
/// `general.file_type` in the output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
#[non_exhaustive]
pub enum Preset {
    /// Every 2-D weight in F32.
    F32,
    /// Every 2-D weight in F16.
    F16,
    /// Every 2-D weight in BF16.
    BF16,
    /// Q4_0, with Q6_K (or Q8_0) for the output / tied embeddings.
    Q4_0,
    /// Q4_1.
    Q4_1,
    /// Q5_0.
    Q5_0,
    /// Q5_1.
    Q5_1,
    /// Q8_0.
    Q8_0,
    /// Q2_K with Q3_K/Q4_K bumps (attn_v, ffn_down, attn_output).
    Q2_K,
    /// Q3_K everywhere.
    Q3_K_S,
    /// Q3_K with Q4_K/Q5_K bumps.
    Q3_K_M,
    /// Q3_K with Q5_K bumps.
    Q3_K_L,
    /// Q4_K with Q5_K for the first layers' attn_v and ffn_down.
    Q4_K_S,
    /// Q4_K with Q6_K for half the attn_v and ffn_down tensors.
    Q4_K_M,
    /// Q5_K everywhere.
    Q5_K_S,
    /// Q5_K with Q6_K for half the attn_v and ffn_down tensors.
    Q5_K_M,
    /// Q6_K.
    Q6_K,
    /// IQ4_NL (non-linear 4-bit, 32-value blocks).
    IQ4_NL,
    /// IQ4_XS (non-linear 4-bit, 256-value super-blocks).
    IQ4_XS,
}

/// One row of `llama-quantize`'s type table (`QUANT_OPTIONS` in tools/quantize/quantize.cpp),
/// in its order: the order matters for numeric ids, the first name with an id wins.
struct Entry {
    name: &'static str,
    ftype: u32,
    preset: Option<Preset>,
}

const fn e(name: &'static str, ftype: u32, preset: Option<Preset>) -> Entry {
    Entry { name, ftype, preset }
}

/// `llama-quantize`'s table. `None`: a preset llama.cpp knows that pagoda does not write
/// (it needs an importance matrix, a format pagoda lacks, or is `COPY`).
const TABLE: &[Entry] = &[
    e("Q1_0", 40, None),
    e("Q2_0", 41, None),
    e("Q4_0", 2, Some(Preset::Q4_0)),
    e("Q4_1", 3, Some(Preset::Q4_1)),
    e("MXFP4_MOE", 38, None),
    e("Q5_0", 8, Some(Preset::Q5_0)),
    e("Q5_1", 9, Some(Preset::Q5_1)),
    e("IQ2_XXS", 19, None),
    e("IQ2_XS", 20, None),
    e("IQ2_S", 28, None),
    e("IQ2_M", 29, None),
    e("IQ1_S", 24, None),
    e("IQ1_M", 31, None),
    e("TQ1_0", 36, None),
    e("TQ2_0", 37, None),
    e("Q2_K", 10, Some(Preset::Q2_K)),
    e("Q2_K_S", 21, None),
    e("IQ3_XXS", 23, None),
    e("IQ3_S", 26, None),
    e("IQ3_M", 27, None),
    e("Q3_K", 12, Some(Preset::Q3_K_M)),
    e("IQ3_XS", 22, None),
    e("Q3_K_S", 11, Some(Preset::Q3_K_S)),
    e("Q3_K_M", 12, Some(Preset::Q3_K_M)),
    e("Q3_K_L", 13, Some(Preset::Q3_K_L)),
    e("IQ4_NL", 25, Some(Preset::IQ4_NL)),
    e("IQ4_XS", 30, Some(Preset::IQ4_XS)),
    e("Q4_K", 15, Some(Preset::Q4_K_M)),
    e("Q4_K_S", 14, Some(Preset::Q4_K_S)),
    e("Q4_K_M", 15, Some(Preset::Q4_K_M)),
    e("Q5_K", 17, Some(Preset::Q5_K_M)),
    e("Q5_K_S", 16, Some(Preset::Q5_K_S)),
    e("Q5_K_M", 17, Some(Preset::Q5_K_M)),
    e("Q6_K", 18, Some(Preset::Q6_K)),
    e("Q8_0", 7, Some(Preset::Q8_0)),
    e("F16", 1, Some(Preset::F16)),
    e("BF16", 32, Some(Preset::BF16)),
    e("F32", 0, Some(Preset::F32)),
    // After F32, so that id 0 finds F32.
    e("COPY", 0, None),
];

/// Why a TYPE argument is not a preset pagoda can write.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresetError {
    /// Neither a preset name nor a preset id `llama-quantize` knows.
    Unknown(String),
    /// A preset `llama-quantize` knows but pagoda does not write.
    Unsupported {
        /// The preset's name.
        name: &'static str,
        /// Its `llama_ftype` id.
        ftype: u32,
    },
}

impl fmt::Display for PresetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresetError::Unknown(s) => write!(
                f,
                "unknown quantization type '{}' (expected one of {}, or a llama.cpp ftype id)",
                s.escape_debug(),
                Preset::NAMES.join(", ")
            ),
            PresetError::Unsupported { name, ftype } => write!(
                f,
                "quantization type {name} (ftype {ftype}) is not supported by pagoda \
                 (expected one of {})",
                Preset::NAMES.join(", ")
            ),
        }
    }
}

impl std::error::Error for PresetError {}

impl Preset {
    /// Every preset, in id order.
    pub const ALL: [Preset; 19] = [
        Preset::F32,
        Preset::F16,
        Preset::Q4_0,
        Preset::Q4_1,
        Preset::Q8_0,
        Preset::Q5_0,
        Preset::Q5_1,
        Preset::Q2_K,
        Preset::Q3_K_S,
        Preset::Q3_K_M,
        Preset::Q3_K_L,
        Preset::Q4_K_S,
        Preset::Q4_K_M,
        Preset::Q5_K_S,
        Preset::Q5_K_M,
        Preset::Q6_K,
        Preset::IQ4_NL,
        Preset::IQ4_XS,
        Preset::BF16,
    ];

    /// The names [`parse`](Self::parse) accepts besides aliases and ids, in id order.
    pub const NAMES: [&'static str; 19] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q8_0", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
        "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "BF16",
    ];

    /// llama.cpp's name (`"Q4_K_M"`).
    pub const fn name(self) -> &'static str {
        match self {
            Preset::F32 => "F32",
            Preset::F16 => "F16",
            Preset::BF16 => "BF16",
            Preset::Q4_0 => "Q4_0",
            Preset::Q4_1 => "Q4_1",
            Preset::Q5_0 => "Q5_0",
            Preset::Q5_1 => "Q5_1",
            Preset::Q8_0 => "Q8_0",
            Preset::Q2_K => "Q2_K",
            Preset::Q3_K_S => "Q3_K_S",
            Preset::Q3_K_M => "Q3_K_M",
            Preset::Q3_K_L => "Q3_K_L",
            Preset::Q4_K_S => "Q4_K_S",
            Preset::Q4_K_M => "Q4_K_M",
            Preset::Q5_K_S => "Q5_K_S",
            Preset::Q5_K_M => "Q5_K_M",
            Preset::Q6_K => "Q6_K",
            Preset::IQ4_NL => "IQ4_NL",
            Preset::IQ4_XS => "IQ4_XS",
        }
    }

    /// The `llama_ftype` id, written as `general.file_type`.
    pub const fn ftype(self) -> u32 {
        match self {
            Preset::F32 => 0,
            Preset::F16 => 1,
            Preset::Q4_0 => 2,
            Preset::Q4_1 => 3,
            Preset::Q8_0 => 7,
            Preset::Q5_0 => 8,
            Preset::Q5_1 => 9,
            Preset::Q2_K => 10,
            Preset::Q3_K_S => 11,
            Preset::Q3_K_M => 12,
            Preset::Q3_K_L => 13,
            Preset::Q4_K_S => 14,
            Preset::Q4_K_M => 15,
            Preset::Q5_K_S => 16,
            Preset::Q5_K_M => 17,
            Preset::Q6_K => 18,
            Preset::IQ4_NL => 25,
            Preset::IQ4_XS => 30,
            Preset::BF16 => 32,
        }
    }

    /// The tensor type most 2-D weights get (`llama_ftype_get_default_type`).
    pub const fn default_type(self) -> GgmlType {
        match self {
            Preset::F32 => GgmlType::F32,
            Preset::F16 => GgmlType::F16,
            Preset::BF16 => GgmlType::BF16,
            Preset::Q4_0 => GgmlType::Q4_0,
            Preset::Q4_1 => GgmlType::Q4_1,
            Preset::Q5_0 => GgmlType::Q5_0,
            Preset::Q5_1 => GgmlType::Q5_1,
            Preset::Q8_0 => GgmlType::Q8_0,
            Preset::Q2_K => GgmlType::Q2_K,
            Preset::Q3_K_S | Preset::Q3_K_M | Preset::Q3_K_L => GgmlType::Q3_K,
            Preset::Q4_K_S | Preset::Q4_K_M => GgmlType::Q4_K,
            Preset::Q5_K_S | Preset::Q5_K_M => GgmlType::Q5_K,
            Preset::Q6_K => GgmlType::Q6_K,
            Preset::IQ4_NL => GgmlType::IQ4_NL,
            Preset::IQ4_XS => GgmlType::IQ4_XS,
        }
    }

    /// Parses a TYPE argument as `llama-quantize` does: a name from its table, any case
    /// (`q4_k_m`), including the aliases `Q3_K` = Q3_K_M, `Q4_K` = Q4_K_M, `Q5_K` =
    /// Q5_K_M; else a number read like C's `stoi` (leading spaces, a sign, the leading
    /// digits: `"15"` and `"15x"` are Q4_K_M) that is a preset's ftype id.
    pub fn parse(s: &str) -> Result<Preset, PresetError> {
        Preset::parse_named(s).map(|(p, _)| p)
    }

    /// [`parse`](Self::parse), also returning the name of the table entry that matched
    /// (`"Q4_K"` for `q4_k` and for `15`: the alias comes first), which llama-quantize
    /// uses in its default output name `ggml-model-Q4_K.gguf`.
    pub fn parse_named(s: &str) -> Result<(Preset, &'static str), PresetError> {
        let found = TABLE.iter().find(|e| e.name.eq_ignore_ascii_case(s)).or_else(|| {
            let id = stoi(s)?;
            TABLE.iter().find(|e| i64::from(e.ftype) == id)
        });
        match found {
            Some(&Entry { name, preset: Some(p), .. }) => Ok((p, name)),
            Some(&Entry { name, ftype, preset: None }) => {
                Err(PresetError::Unsupported { name, ftype })
            }
            None => Err(PresetError::Unknown(s.to_string())),
        }
    }

    /// The preset whose `general.file_type` is `ftype`, if pagoda writes it.
    pub fn from_ftype(ftype: u32) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.ftype() == ftype)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = PresetError;
    fn from_str(s: &str) -> Result<Preset, PresetError> {
        Preset::parse(s)
    }
}

/// C's `std::stoi` without its exceptions: leading whitespace, an optional sign, then at
/// least one digit; the rest of the string is ignored. `None` where `stoi` throws (no
/// digits, or outside `int`).
fn stoi(s: &str) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut v: i64 = 0;
    for b in t[..digits].bytes() {
        v = v.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
        if v > i64::from(i32::MAX) + 1 {
            return None;
        }
    }
    let v = if neg { -v } else { v };
    (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&v).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_ids_parse_as_llama_quantize() {
        assert_eq!(Preset::parse("Q4_K"), Ok(Preset::Q4_K_M));
        assert_eq!(Preset::parse("q5_k"), Ok(Preset::Q5_K_M));
        assert_eq!(Preset::parse("Q3_K"), Ok(Preset::Q3_K_M));
        assert_eq!(Preset::parse("iq4_xs"), Ok(Preset::IQ4_XS));
        assert_eq!(Preset::parse("15"), Ok(Preset::Q4_K_M));
        assert_eq!(Preset::parse(" 7"), Ok(Preset::Q8_0));
        assert_eq!(Preset::parse("0"), Ok(Preset::F32));
        assert_eq!(Preset::parse("32"), Ok(Preset::BF16));
        assert_eq!(Preset::parse_named("15"), Ok((Preset::Q4_K_M, "Q4_K")));
        assert_eq!(Preset::parse_named("q4_k_m"), Ok((Preset::Q4_K_M, "Q4_K_M")));
        for p in Preset::ALL {
            assert_eq!(Preset::parse(p.name()), Ok(p));
            assert_eq!(Preset::parse(&p.ftype().to_string()), Ok(p));
            assert_eq!(Preset::from_ftype(p.ftype()), Some(p));
        }
        assert_eq!(Preset::ALL.map(Preset::name), Preset::NAMES);
    }

    #[test]
    fn unknown_and_unsupported_types_are_named() {
        let e = Preset::parse("Q4_Z").unwrap_err();
        assert_eq!(e, PresetError::Unknown("Q4_Z".into()));
        assert!(e.to_string().contains("'Q4_Z'"), "{e}");
        let e = Preset::parse("iq2_xxs").unwrap_err();
        assert_eq!(e, PresetError::Unsupported { name: "IQ2_XXS", ftype: 19 });
        assert!(e.to_string().contains("IQ2_XXS"), "{e}");
        assert!(matches!(Preset::parse("COPY"), Err(PresetError::Unsupported { .. })));
        assert!(matches!(Preset::parse("4"), Err(PresetError::Unknown(_))));
        assert!(matches!(Preset::parse("99999999999"), Err(PresetError::Unknown(_))));
        assert!(matches!(Preset::parse(""), Err(PresetError::Unknown(_))));
    }
}
