//! llama.cpp's GBNF grammar syntax, translated to llguidance's Lark dialect.
//!
//! GBNF (llama.cpp `grammars/README.md`): rules `name ::= alternatives`, one per line (a
//! rule continues on the next line after `|` or inside parentheses); `root` is where
//! generation starts. Items: `"literal"`, character classes `[a-z0-9_]` / `[^"\\]`, `.`
//! (any character), rule names, `( ... )` groups; each may be followed by `*`, `+`, `?`,
//! `{m}`, `{m,}` or `{m,n}`. Escapes in literals and classes: `\n \r \t \\ \" \[ \] \-`,
//! `\xHH`, `\uHHHH`, `\UHHHHHHHH`. `#` starts a comment.
//!
//! Each rule becomes a Lark rule; literals become Lark strings and character classes
//! regular expressions, so every terminal is a literal or one character and llguidance's
//! longest-match lexer accepts exactly the strings the GBNF grammar does, except for
//! grammars where, at one position, a literal and a longer literal starting with it both
//! fit and only the shorter one leads to a complete text (llguidance's lexer takes the
//! longer one first).

use super::error::GrammarError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Translates a GBNF grammar to llguidance's Lark dialect (start rule `start`, which is
/// GBNF's `root`).
///
/// # Errors
/// [`GrammarError::Malformed`] naming the line and column of the first syntax error, a
/// rule used but not defined, a rule defined twice, or a missing `root` rule.
///
/// ```
/// use pagoda_cpu::grammar::gbnf_to_lark;
/// let lark = gbnf_to_lark("root ::= \"yes\" | \"no\"\n").unwrap();
/// assert!(lark.starts_with("start: g-root\n"));
/// assert!(gbnf_to_lark("root ::= (\"a\"\n").is_err());
/// ```
pub fn gbnf_to_lark(source: &str) -> Result<String, GrammarError> {
    let rules = Parser { src: source.chars().collect(), pos: 0 }.grammar()?;
    let mut defined = BTreeMap::new();
    for rule in &rules {
        if defined.insert(rule.name.as_str(), rule.at).is_some() {
            return Err(malformed(
                source,
                rule.at,
                &format!("rule '{}' is defined twice", rule.name),
            ));
        }
    }
    if !defined.contains_key("root") {
        return Err(GrammarError::Malformed {
            message: "no 'root' rule (generation starts at root)".into(),
        });
    }
    let mut used = BTreeSet::new();
    for rule in &rules {
        rule.body.references(&mut used);
    }
    for (name, at) in &used {
        if !defined.contains_key(name.as_str()) {
            return Err(malformed(source, *at, &format!("undefined rule '{name}'")));
        }
    }
    let mut out = String::from("start: g-root\n");
    for rule in &rules {
        let _ = writeln!(out, "{}: {}", lark_name(&rule.name), rule.body.to_lark());
    }
    Ok(out)
}

/// One `name ::= body` line.
struct Rule {
    name: String,
    /// Character offset of the name in the source.
    at: usize,
    body: Node,
}

/// A GBNF expression.
enum Node {
    /// Alternatives, each a sequence.
    Choice(Vec<Vec<Node>>),
    Literal(String),
    /// A character class: negated or not, inclusive ranges.
    Class(bool, Vec<(char, char)>),
    /// `.`: any one character.
    Any,
    /// A rule name and its offset in the source.
    Ref(String, usize),
    /// `node{min,max}` (`max` `None`: unbounded).
    Repeat(Box<Node>, u32, Option<u32>),
}

impl Node {
    fn references(&self, out: &mut BTreeSet<(String, usize)>) {
        match self {
            Node::Choice(alts) => alts.iter().flatten().for_each(|n| n.references(out)),
            Node::Ref(name, at) => {
                out.insert((name.clone(), *at));
            }
            Node::Repeat(inner, _, _) => inner.references(out),
            Node::Literal(_) | Node::Class(..) | Node::Any => {}
        }
    }

    /// As an item of a sequence: a group of alternatives in parentheses.
    fn to_lark_item(&self) -> String {
        match self {
            Node::Choice(alts) if alts.len() > 1 => format!("({})", self.to_lark()),
            _ => self.to_lark(),
        }
    }

    fn to_lark(&self) -> String {
        match self {
            Node::Choice(alts) => alts
                .iter()
                .map(|seq| {
                    if seq.is_empty() {
                        "\"\"".to_string()
                    } else {
                        seq.iter().map(Node::to_lark_item).collect::<Vec<_>>().join(" ")
                    }
                })
                .collect::<Vec<_>>()
                .join(" | "),
            Node::Literal(s) => lark_string(s),
            Node::Class(negated, ranges) => {
                let mut rx = String::from("/[");
                if *negated {
                    rx.push('^');
                }
                for &(a, b) in ranges {
                    push_regex_char(&mut rx, a);
                    if b != a {
                        rx.push('-');
                        push_regex_char(&mut rx, b);
                    }
                }
                rx.push_str("]/");
                rx
            }
            Node::Any => "/(?s:.)/".to_string(),
            Node::Ref(name, _) => lark_name(name),
            Node::Repeat(inner, min, max) => {
                let inner = format!("({})", inner.to_lark());
                match (min, max) {
                    (_, Some(0)) => "\"\"".to_string(),
                    (0, None) => format!("{inner}*"),
                    (1, None) => format!("{inner}+"),
                    (0, Some(1)) => format!("{inner}?"),
                    (m, None) => format!("{inner}{{{m},}}"),
                    (m, Some(n)) if m == n => format!("{inner}{{{m}}}"),
                    (m, Some(n)) => format!("{inner}{{{m},{n}}}"),
                }
            }
        }
    }
}

/// A GBNF rule name as a Lark rule name: `g-` then the name, with `_` written `__` and an
/// upper-case letter `X` written `_x` (Lark rule names are lower case; the map is one to one).
fn lark_name(name: &str) -> String {
    let mut out = String::from("g-");
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            c if c.is_ascii_uppercase() => {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            }
            c => out.push(c),
        }
    }
    out
}

/// A Lark (JSON-syntax) string literal.
fn lark_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One character inside a regex class, escaped unless it is an ASCII letter or digit.
fn push_regex_char(rx: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        rx.push(c);
    } else {
        let _ = write!(rx, "\\x{{{:x}}}", c as u32);
    }
}

fn malformed(src: &str, at: usize, what: &str) -> GrammarError {
    let (mut line, mut col) = (1, 1);
    for c in src.chars().take(at) {
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    GrammarError::Malformed { message: format!("{what} at line {line}, column {col}") }
}

/// A recursive-descent parser of llama.cpp's GBNF (as `llama-grammar.cpp` parses it).
struct Parser {
    src: Vec<char>,
    pos: usize,
}

/// Repetition bounds above this are refused (llama.cpp's own limit is similar in spirit:
/// each bound expands the grammar).
const MAX_REPEAT: u32 = 100_000;

impl Parser {
    fn err(&self, what: &str) -> GrammarError {
        let src: String = self.src.iter().collect();
        malformed(&src, self.pos, what)
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos).copied()
    }

    /// Skips blanks and `#` comments, and newlines too when `newlines`.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.pos += 1;
                    }
                }
                '\r' | '\n' if newlines => self.pos += 1,
                _ => break,
            }
        }
    }

    fn is_name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }

    fn name(&mut self) -> Result<String, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(Self::is_name_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expecting a rule name"));
        }
        Ok(self.src[start..self.pos].iter().collect())
    }

    fn grammar(mut self) -> Result<Vec<Rule>, GrammarError> {
        let mut rules = Vec::new();
        self.space(true);
        while self.peek().is_some() {
            rules.push(self.rule()?);
            self.space(true);
        }
        Ok(rules)
    }

    fn rule(&mut self) -> Result<Rule, GrammarError> {
        let at = self.pos;
        let name = self.name()?;
        self.space(false);
        if !self.src[self.pos..].starts_with(&[':', ':', '=']) {
            return Err(self.err("expecting ::="));
        }
        self.pos += 3;
        self.space(true);
        let body = self.alternatives(false)?;
        match self.peek() {
            None | Some('\n') | Some('\r') => Ok(Rule { name, at, body }),
            Some(')') => Err(self.err("unmatched ')'")),
            Some(_) => Err(self.err("expecting newline or end")),
        }
    }

    fn alternatives(&mut self, nested: bool) -> Result<Node, GrammarError> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(Node::Choice(alts))
    }

    fn sequence(&mut self, nested: bool) -> Result<Vec<Node>, GrammarError> {
        let mut seq = Vec::new();
        loop {
            let item = match self.peek() {
                Some('"') => {
                    self.pos += 1;
                    let mut s = String::new();
                    loop {
                        match self.peek() {
                            None | Some('\n') | Some('\r') => {
                                return Err(self.err("unterminated string literal"))
                            }
                            Some('"') => break,
                            Some(_) => s.push(self.char_in_literal()?),
                        }
                    }
                    self.pos += 1;
                    Node::Literal(s)
                }
                Some('[') => {
                    self.pos += 1;
                    let negated = self.peek() == Some('^');
                    if negated {
                        self.pos += 1;
                    }
                    let mut ranges = Vec::new();
                    loop {
                        match self.peek() {
                            None | Some('\n') | Some('\r') => {
                                return Err(self.err("unterminated character class"))
                            }
                            Some(']') => break,
                            Some(_) => {
                                let a = self.char_in_literal()?;
                                let b = if self.peek() == Some('-')
                                    && self.src.get(self.pos + 1).is_some_and(|&c| c != ']')
                                {
                                    self.pos += 1;
                                    let b = self.char_in_literal()?;
                                    if b < a {
                                        return Err(self.err("character range out of order"));
                                    }
                                    b
                                } else {
                                    a
                                };
                                ranges.push((a, b));
                            }
                        }
                    }
                    self.pos += 1;
                    if ranges.is_empty() && !negated {
                        return Err(self.err("empty character class"));
                    }
                    Node::Class(negated, ranges)
                }
                Some('.') => {
                    self.pos += 1;
                    Node::Any
                }
                Some('(') => {
                    self.pos += 1;
                    self.space(true);
                    let inner = self.alternatives(true)?;
                    if self.peek() != Some(')') {
                        return Err(self.err("expecting ')'"));
                    }
                    self.pos += 1;
                    inner
                }
                Some(c) if Self::is_name_char(c) => {
                    let at = self.pos;
                    let name = self.name()?;
                    self.space(nested);
                    if self.src[self.pos..].starts_with(&[':', ':', '=']) {
                        // The next rule started on this line: the previous one lacks a newline.
                        self.pos = at;
                        return Err(self.err("expecting newline before the next rule"));
                    }
                    self.pos = at + name.chars().count();
                    Node::Ref(name, at)
                }
                Some('*' | '+' | '?' | '{') => {
                    return Err(self.err("expecting an item before the repetition operator"))
                }
                _ => break,
            };
            self.space(nested);
            let item = self.repetition(item, nested)?;
            seq.push(item);
        }
        Ok(seq)
    }

    /// A postfix `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` after `item`, if any.
    fn repetition(&mut self, item: Node, nested: bool) -> Result<Node, GrammarError> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                self.space(false);
                let min = self.number()?;
                self.space(false);
                let max = if self.peek() == Some(',') {
                    self.pos += 1;
                    self.space(false);
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(self.number()?)
                    }
                } else {
                    Some(min)
                };
                self.space(false);
                if self.peek() != Some('}') {
                    return Err(self.err("expecting '}'"));
                }
                if max.is_some_and(|m| m < min) {
                    return Err(self.err("repetition {m,n} with n < m"));
                }
                (min, max)
            }
            _ => return Ok(item),
        };
        self.pos += 1;
        self.space(nested);
        Ok(Node::Repeat(Box::new(item), min, max))
    }

    fn number(&mut self) -> Result<u32, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.src[start..self.pos].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT => Ok(n),
            Ok(_) | Err(_) if !digits.is_empty() => {
                self.pos = start;
                Err(self.err(&format!("repetition bound above {MAX_REPEAT}")))
            }
            _ => Err(self.err("expecting a number")),
        }
    }

    /// One character of a literal or class (its escape sequence decoded).
    fn char_in_literal(&mut self) -> Result<char, GrammarError> {
        let c = self.peek().ok_or_else(|| self.err("unexpected end of grammar"))?;
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let e = self.peek().ok_or_else(|| self.err("unexpected end of grammar after '\\'"))?;
        self.pos += 1;
        let hex = |p: &mut Self, n: usize| -> Result<char, GrammarError> {
            let start = p.pos;
            let digits: String = p.src.get(start..start + n).unwrap_or(&[]).iter().collect();
            let code = (digits.len() == n)
                .then(|| u32::from_str_radix(&digits, 16).ok())
                .flatten()
                .and_then(char::from_u32);
            match code {
                Some(c) => {
                    p.pos += n;
                    Ok(c)
                }
                None => Err(p.err(&format!("expecting {n} hex digits of a character code"))),
            }
        };
        match e {
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            '\\' | '"' | '[' | ']' | '-' | '^' => Ok(e),
            'x' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            _ => {
                self.pos -= 2;
                Err(self.err(&format!("unknown escape '\\{e}'")))
            }
        }
    }
}
