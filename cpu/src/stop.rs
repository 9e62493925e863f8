//! Stop strings: finding them in generated text as it streams.
//!
//! A stop string may span several tokens, so text that could still be the start of one is
//! held back until the next token decides: emitted text never contains (part of) a stop
//! string that later completes, and nothing but the stop string and what follows it is
//! lost. OpenAI's `stop` and llama.cpp's `--reverse-prompt`-style stops mean this.

/// Streams text through, cutting it before the first stop string.
///
/// ```
/// use pagoda_cpu::stop::StopMatcher;
/// let mut m = StopMatcher::new(["\n\n", "END"]);
/// assert_eq!(m.push("Hello E"), ("Hello ".to_string(), false)); // "E" may start "END"
/// assert_eq!(m.push("ND more"), (String::new(), true));        // stopped before "END"
/// assert!(m.stopped());
/// ```
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted: a suffix that is a proper prefix of a stop string.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored; no stops: text passes through).
    pub fn new<S: Into<String>>(stops: impl IntoIterator<Item = S>) -> Self {
        let stops = stops.into_iter().map(Into::into).filter(|s: &String| !s.is_empty()).collect();
        StopMatcher { stops, held: String::new(), stopped: false }
    }

    /// The stop strings.
    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Whether a stop string was found (later text is then ignored).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds `text`; returns the text that may be emitted now and whether a stop string was
    /// found in it (the emitted text then ends just before the earliest one).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.held.push_str(text);
        let first = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a proper prefix of some stop string.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        (out, false)
    }

    /// Ends the text: returns what was held back (nothing after a stop).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The whole text, cut before the earliest stop string.
    fn reference(text: &str, stops: &[String]) -> (String, bool) {
        let at = stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min();
        match at {
            Some(i) => (text[..i].to_string(), true),
            None => (text.to_string(), false),
        }
    }

    proptest! {
        /// However the text is split into pieces, the emitted text is the reference cut,
        /// and a stop is reported exactly when the text holds one.
        #[test]
        fn streamed_equals_cut_of_the_whole(
            pieces in proptest::collection::vec("[ab\\n é]{0,4}", 0..12),
            stops in proptest::collection::vec("[ab\\n é]{0,3}", 0..3),
        ) {
            let mut m = StopMatcher::new(stops.clone());
            let mut out = String::new();
            let mut stopped = false;
            for p in &pieces {
                let (o, s) = m.push(p);
                prop_assert!(!stopped || o.is_empty());
                out.push_str(&o);
                stopped |= s;
            }
            out.push_str(&m.finish());
            let whole: String = pieces.concat();
            prop_assert_eq!((out, stopped), reference(&whole, &stops));
        }
    }

    #[test]
    fn holds_back_only_possible_starts() {
        let mut m = StopMatcher::new(["</s>"]);
        assert_eq!(m.push("a <"), ("a ".into(), false));
        assert_eq!(m.push("b"), ("<b".into(), false));
        assert_eq!(m.push("</"), (String::new(), false));
        assert_eq!(m.finish(), "</");
    }
}
