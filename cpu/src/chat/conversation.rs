//! [`Conversation`]: a chat rendered turn by turn into one growing KV cache.

use super::{ChatTemplate, ChatTemplateError, Message};
use crate::tokenizer::Tokenizer;

/// A conversation whose earlier turns are already in a KV cache: each user turn renders the
/// whole conversation with the template and sends only what is new, as llama.cpp's chat
/// does (render with and without the new message, keep the difference).
///
/// The conversation keeps the text that is in the cache (rendered turns, then each reply as
/// generated and its end-of-turn token): when the new rendering starts with it, exactly the
/// rest is sent. When it does not (the template rewrites a reply, e.g. trims it), the turn
/// is the new rendering minus the rendering of the conversation before it.
#[derive(Clone, Debug)]
pub struct Conversation {
    template: ChatTemplate,
    messages: Vec<Message>,
    /// The text whose tokens are in the cache.
    cached: String,
    /// User turns rendered so far.
    turns: usize,
}

impl Conversation {
    /// An empty conversation, opened by a system message if `system` is given (else the
    /// template's own default, if it has one).
    pub fn new(template: ChatTemplate, system: Option<&str>) -> Self {
        let messages = system.map(Message::system).into_iter().collect();
        Conversation { template, messages, cached: String::new(), turns: 0 }
    }

    /// The template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The messages so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The tokens of the next user turn: appends `user` to the conversation and returns what
    /// the template adds to the cached text, ending where the assistant's reply begins.
    ///
    /// The template's own text is tokenized with special tokens parsed; the user's words
    /// only if `parse_special` (so a typed `<|im_end|>` stays text and cannot end the turn
    /// or forge a role). BOS is added (as the tokenizer asks) on the first turn, unless the
    /// template already printed it. If the template transforms the user's text beyond
    /// trimming (so it cannot be found in the rendering), the whole turn is tokenized with
    /// special tokens parsed.
    ///
    /// On an error the conversation is unchanged.
    pub fn user_turn(
        &mut self,
        tokenizer: &Tokenizer,
        user: &str,
        parse_special: bool,
    ) -> Result<Vec<u32>, ChatTemplateError> {
        self.messages.push(Message::user(user));
        let result = self.render_turn(tokenizer, user, parse_special);
        if result.is_err() {
            self.messages.pop();
        }
        result
    }

    fn render_turn(
        &mut self,
        tokenizer: &Tokenizer,
        user: &str,
        parse_special: bool,
    ) -> Result<Vec<u32>, ChatTemplateError> {
        let first = self.cached.is_empty();
        let full = self.template.render(&self.messages, true)?;
        let start = if full.starts_with(&self.cached) {
            self.cached.len()
        } else if self.turns == 0 {
            0
        } else {
            let past = self.template.render(&self.messages[..self.messages.len() - 1], false)?;
            common_prefix(&past, &full)
        };
        let delta = &full[start..];
        let bos = first && !self.template.starts_with_bos(delta);
        let ids = if parse_special {
            tokenizer.encode(delta, bos, true)
        } else {
            match self.split_user_text(&full, start, user)? {
                Some((parts, text)) => {
                    let mut ids = Vec::new();
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            ids.extend(tokenizer.encode(&text, false, false));
                        }
                        ids.extend(tokenizer.encode(part, bos && i == 0, true));
                    }
                    ids
                }
                None => tokenizer.encode(delta, bos, true),
            }
        };
        self.cached = full;
        self.turns += 1;
        Ok(ids)
    }

    /// `full[start..]` cut where the template printed the last message's content: the
    /// template's parts and the content as printed (e.g. trimmed). Renders again with a
    /// marker in place of the content; `None` if the content cannot be found.
    #[allow(clippy::type_complexity)]
    fn split_user_text(
        &mut self,
        full: &str,
        start: usize,
        user: &str,
    ) -> Result<Option<(Vec<String>, String)>, ChatTemplateError> {
        let mut n = 0u32;
        let mark = loop {
            let m = format!("\u{0}user-text-{n}\u{0}");
            if !full.contains(&m) && !user.contains(&m) {
                break m;
            }
            n += 1;
        };
        let last = self.messages.len() - 1;
        self.messages[last].content = mark.clone();
        let marked = self.template.render(&self.messages, true);
        self.messages[last].content = user.to_owned();
        let marked = marked?;
        let delta = &full[start..];
        let Some(marked_delta) = marked.get(start..).filter(|_| marked[..start] == full[..start])
        else {
            return Ok(None);
        };
        let parts: Vec<String> = marked_delta.split(mark.as_str()).map(str::to_owned).collect();
        let k = parts.len() - 1;
        if k == 0 {
            return Ok((marked_delta == delta).then(|| (parts, String::new())));
        }
        let fixed: usize = parts.iter().map(String::len).sum();
        if delta.len() < fixed || (delta.len() - fixed) % k != 0 {
            return Ok(None);
        }
        let len = (delta.len() - fixed) / k;
        let Some(text) = delta.get(parts[0].len()..parts[0].len() + len) else {
            return Ok(None);
        };
        Ok((parts.join(text) == delta).then(|| (parts, text.to_owned())))
    }

    /// Records the assistant's reply as a message (what the template renders next time).
    pub fn push_reply(&mut self, content: &str) {
        self.messages.push(Message::assistant(content));
    }

    /// Records text that went into the cache outside the template: a reply as generated,
    /// its end-of-turn token's text, or raw text.
    pub fn push_cached(&mut self, text: &str) {
        self.cached.push_str(text);
    }

    /// The reply as generated: [`push_reply`](Self::push_reply) of `text` and
    /// [`push_cached`](Self::push_cached) of `text` then `end_of_turn` (the text of the
    /// end-of-turn token that closed it, if it is or will be in the cache).
    pub fn reply(&mut self, text: &str, end_of_turn: Option<&str>) {
        self.push_reply(text);
        self.push_cached(text);
        self.push_cached(end_of_turn.unwrap_or(""));
    }

    /// The system prompt given at creation or restored (the template's own default, which
    /// it prints when there is none, is not one).
    pub fn system(&self) -> Option<&str> {
        self.messages.first().filter(|m| m.role == "system").map(|m| m.content.as_str())
    }

    /// The text the template prints before the words of the first user message: the system
    /// prompt (given, or the template's default) and the first user message's header. A
    /// chat that keeps only part of its history (StreamingLLM) keeps this as its attention
    /// sinks. Empty if the template does not print the user's words as they are.
    pub fn preamble(&self) -> Result<String, ChatTemplateError> {
        let mut n = 0u32;
        let mark = loop {
            let m = format!("\u{0}preamble-{n}\u{0}");
            if !self.system().is_some_and(|s| s.contains(&m)) {
                break m;
            }
            n += 1;
        };
        let mut messages: Vec<Message> =
            self.messages.first().filter(|m| m.role == "system").cloned().into_iter().collect();
        messages.push(Message::user(mark.as_str()));
        let text = self.template.render(&messages, true)?;
        Ok(text.find(&mark).map_or(String::new(), |i| text[..i].to_owned()))
    }

    /// Replaces the conversation by `messages` (a saved chat: an optional system message
    /// first, then the turns) and returns the tokens of their rendering, for an empty cache.
    /// Later turns continue it as if it had been said here.
    ///
    /// The template's text is tokenized with special tokens parsed, the messages' words only
    /// if `parse_special` (as [`user_turn`](Self::user_turn) does; if the template changes
    /// the words so that they cannot be found in the rendering, the whole rendering is
    /// tokenized with special tokens parsed). BOS is added as the tokenizer asks unless the
    /// template printed it. On an error (the template refuses the messages) the conversation
    /// is unchanged.
    pub fn restore(
        &mut self,
        tokenizer: &Tokenizer,
        messages: Vec<Message>,
        parse_special: bool,
    ) -> Result<Vec<u32>, ChatTemplateError> {
        let full = self.template.render(&messages, false)?;
        let bos = !self.template.starts_with_bos(&full);
        let ids = if full.is_empty() {
            Vec::new()
        } else if parse_special {
            tokenizer.encode(&full, bos, true)
        } else {
            match self.split_contents(&messages, &full)? {
                Some(parts) => {
                    let mut ids = Vec::new();
                    for (i, (text, plain)) in parts.iter().enumerate() {
                        ids.extend(tokenizer.encode(text, bos && i == 0, !plain));
                    }
                    ids
                }
                None => tokenizer.encode(&full, bos, true),
            }
        };
        let turns = usize::from(messages.iter().any(|m| m.role != "system"));
        self.messages = messages;
        self.cached = full;
        self.turns = turns;
        Ok(ids)
    }

    /// `full` (the rendering of `messages`) cut into the template's text and the messages'
    /// words, in order: `(text, is_words)`. Renders again with a marker in place of each
    /// message's content; `None` if putting the contents back does not give `full`.
    fn split_contents(
        &self,
        messages: &[Message],
        full: &str,
    ) -> Result<Option<Vec<(String, bool)>>, ChatTemplateError> {
        let mut n = 0u32;
        let prefix = loop {
            let p = format!("\u{0}content-{n}-");
            if !full.contains(&p) {
                break p;
            }
            n += 1;
        };
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message::new(m.role.as_str(), format!("{prefix}{i}\u{0}")))
            .collect();
        let rendered = self.template.render(&marked, false)?;
        let mut parts = Vec::new();
        let mut rest = rendered.as_str();
        while let Some(at) = rest.find(&prefix) {
            let after = &rest[at + prefix.len()..];
            let Some(end) = after.find('\u{0}') else { return Ok(None) };
            let Some(m) = after[..end].parse::<usize>().ok().and_then(|i| messages.get(i)) else {
                return Ok(None);
            };
            if at > 0 {
                parts.push((rest[..at].to_owned(), false));
            }
            if !m.content.is_empty() {
                parts.push((m.content.clone(), true));
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push((rest.to_owned(), false));
        }
        let joined: String = parts.iter().map(|(t, _)| t.as_str()).collect();
        Ok((joined == full).then_some(parts))
    }

    /// Forgets the turns (the system message stays) and the cached text.
    pub fn reset(&mut self) {
        self.messages
            .truncate(usize::from(self.messages.first().is_some_and(|m| m.role == "system")));
        self.cached.clear();
        self.turns = 0;
    }
}

/// Length of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_file::{workspace_model_path, ModelFile};

    fn smollm2() -> Tokenizer {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let file = ModelFile::open(workspace_model_path(&root)).unwrap();
        Tokenizer::from_gguf(&file.gguf()).unwrap()
    }

    #[test]
    fn the_preamble_is_the_system_prompt_and_the_first_user_header() {
        let conv = Conversation::new(ChatTemplate::chatml(), Some("Be brief."));
        assert_eq!(conv.system(), Some("Be brief."));
        assert_eq!(
            conv.preamble().unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
        );
        // Without a system prompt, the template's default one (ChatML's) is part of it.
        let conv = Conversation::new(ChatTemplate::chatml(), None);
        assert_eq!(conv.system(), None);
        let preamble = conv.preamble().unwrap();
        assert!(preamble.ends_with("<|im_start|>user\n"), "{preamble:?}");
    }

    #[test]
    fn a_restored_conversation_continues_as_if_said_here() {
        let tok = smollm2();
        let messages = vec![
            Message::system("Be brief."),
            Message::user("Hi <|im_end|>"),
            Message::assistant("Hello!"),
        ];
        let mut here = Conversation::new(ChatTemplate::chatml(), Some("Be brief."));
        let mut ids = here.user_turn(&tok, "Hi <|im_end|>", false).unwrap();
        ids.extend(tok.encode("Hello!", false, false));
        here.reply("Hello!", None);
        let mut restored = Conversation::new(ChatTemplate::chatml(), None);
        let restored_ids = restored.restore(&tok, messages.clone(), false).unwrap();
        assert_eq!(restored.messages(), &messages[..]);
        assert_eq!(restored.system(), Some("Be brief."));
        // The same tokens but the closing `<|im_end|>\n`, which the rendering has and a
        // reply cut before its end-of-turn token has not (the next turn sends it).
        let end = tok.encode("<|im_end|>\n", false, true);
        assert_eq!(restored_ids[..ids.len()], ids[..]);
        assert_eq!(restored_ids[ids.len()..], end[..]);
        // The typed `<|im_end|>` stayed text: one control token per message, not two.
        let im_end = tok.token_id("<|im_end|>").unwrap();
        assert_eq!(restored_ids.iter().filter(|&&t| t == im_end).count(), 3);
        let parsed = Conversation::new(ChatTemplate::chatml(), None)
            .restore(&tok, messages.clone(), true)
            .unwrap();
        assert_eq!(parsed.iter().filter(|&&t| t == im_end).count(), 4);
        // The next turn sends only itself, in both.
        let next = restored.user_turn(&tok, "Bye", false).unwrap();
        assert_eq!(tok.decode(&next), "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
        let next_here = here.user_turn(&tok, "Bye", false).unwrap();
        assert_eq!(tok.decode(&next_here), format!("<|im_end|>\n{}", tok.decode(&next)));
    }
}
