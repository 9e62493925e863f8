//! A file's type mix: how many tensors of each type (`30 × Q5_0, 30 × Q4_K, 61 × F32`),
//! the one-line fingerprint of a quantization preset that `pagoda inspect` prints.

use std::borrow::Borrow;
use std::fmt;

use pagoda_core::gguf::Gguf;
use pagoda_core::quant::GgmlType;

/// Tensor counts by type: most common first, ties in type id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeMix {
    counts: Vec<(GgmlType, usize)>,
}

impl TypeMix {
    /// The mix of a list of tensor types.
    pub fn from_types(types: impl IntoIterator<Item = GgmlType>) -> TypeMix {
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        for ty in types {
            match counts.iter_mut().find(|(t, _)| *t == ty) {
                Some((_, n)) => *n += 1,
                None => counts.push((ty, 1)),
            }
        }
        counts.sort_by(|(ta, na), (tb, nb)| nb.cmp(na).then(ta.id().cmp(&tb.id())));
        TypeMix { counts }
    }

    /// The mix of a GGUF file's tensors; takes `model.gguf()` or `&gguf`.
    pub fn of_gguf<'a>(g: impl Borrow<Gguf<'a>>) -> TypeMix {
        TypeMix::from_types(g.borrow().tensors().map(|t| t.ggml_type()))
    }

    /// `(type, tensor count)` pairs, most common first.
    pub fn counts(&self) -> &[(GgmlType, usize)] {
        &self.counts
    }

    /// How many tensors have type `ty`.
    pub fn count(&self, ty: GgmlType) -> usize {
        self.counts.iter().find(|(t, _)| *t == ty).map_or(0, |&(_, n)| n)
    }
}

impl fmt::Display for TypeMix {
    /// `30 × Q5_0, 30 × Q4_K, 61 × F32` (`none` without tensors).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.counts.is_empty() {
            return f.write_str("none");
        }
        for (i, (ty, n)) in self.counts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n} × {ty}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_common_first_ties_by_id() {
        use GgmlType::*;
        let mix = TypeMix::from_types([Q4_K, F32, Q5_0, F32, Q4_K, Q5_0, F32]);
        assert_eq!(mix.to_string(), "3 × F32, 2 × Q5_0, 2 × Q4_K");
        assert_eq!(mix.count(Q4_K), 2);
        assert_eq!(mix.count(Q8_0), 0);
        assert_eq!(TypeMix::from_types([]).to_string(), "none");
    }
}
