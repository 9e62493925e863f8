//! Fuzz chat templates: `ChatTemplate::from_jinja` on arbitrary text recognises a family or
//! names what it found, never panicking; a recognised template renders any conversation and
//! any user turn, with every message's role and content in order in the output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_cpu::chat::{ChatTemplate, Message};

struct Input {
    template: String,
    messages: Vec<(String, String)>,
    add_generation_prompt: bool,
    system: Option<String>,
    user: String,
    first: bool,
}

/// The input: one flag byte (bit 0: add the generation prompt, bit 1: first turn, bit 2:
/// a system prompt), then NUL-separated lossy UTF-8 fields: template, system, user, and
/// role/content pairs. Seeds are readable text.
fn input(data: &[u8]) -> Input {
    let flags = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or(&[]);
    let mut fields = rest.split(|&b| b == 0).map(|f| String::from_utf8_lossy(f).into_owned());
    let template = fields.next().unwrap_or_default();
    let system = fields.next().filter(|_| flags & 4 != 0);
    let user = fields.next().unwrap_or_default();
    let mut messages = Vec::new();
    while let (Some(role), Some(content)) = (fields.next(), fields.next()) {
        messages.push((role, content));
    }
    Input {
        template,
        messages,
        add_generation_prompt: flags & 1 != 0,
        system,
        user,
        first: flags & 2 != 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    let Ok(t) = ChatTemplate::from_jinja(&input.template) else {
        assert!(!input.template.contains("<|im_start|>"), "a ChatML template was refused");
        return;
    };
    let messages: Vec<Message> =
        input.messages.iter().take(64).map(|(r, c)| Message::new(r.as_str(), c.as_str())).collect();
    let out = t.render(&messages, input.add_generation_prompt);
    // The documented rendering: the template's default system block unless the conversation
    // starts with a system message, every message in order, then the generation prompt.
    let ChatTemplate::ChatMl { default_system } = &t;
    let mut want = String::new();
    if messages.first().is_none_or(|m| m.role != "system") {
        if let Some(sys) = default_system {
            want += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
        }
    }
    for m in &messages {
        want += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
    }
    if input.add_generation_prompt {
        want += "<|im_start|>assistant\n";
    }
    assert_eq!(out, want);
    let turn = t.user_turn(input.system.as_deref(), &input.user, input.first);
    let tail = format!("<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n", input.user);
    assert!(turn.ends_with(&tail), "{turn:?}");
    if !input.first {
        assert_eq!(turn, tail, "only the first turn has a system block");
    } else if let Some(sys) = &input.system {
        assert!(turn.starts_with(&format!("<|im_start|>system\n{sys}<|im_end|>\n")));
    }
    let _ = (t.end_of_reply(true), t.end_of_reply(false));
    let _ = ChatTemplate::chatml().render(&messages, input.add_generation_prompt);
});
