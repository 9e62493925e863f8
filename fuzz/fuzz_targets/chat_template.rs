//! Fuzz chat templates: `ChatTemplate::new` compiles arbitrary Jinja or names the syntax
//! error, never panicking; a compiled template renders any conversation to text or a typed
//! error (no panic, no hang: recursion and output are bounded); ChatML renders every
//! message's role and content in order; a `Conversation` over the template never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_cpu::chat::{ChatTemplate, ChatTemplateError, Message};

struct Input {
    template: String,
    bos: String,
    messages: Vec<(String, String)>,
    add_generation_prompt: bool,
}

/// The input: one flag byte (bit 0: add the generation prompt, bit 2: a system message,
/// bit 3: BOS text `<bos>`), then NUL-separated lossy UTF-8 fields: template, system, user,
/// then role/content pairs (the conversation: system, the pairs, user last). Seeds are
/// readable text (`seeds/make_seeds.py`).
fn input(data: &[u8]) -> Input {
    let flags = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or(&[]);
    let mut fields = rest.split(|&b| b == 0).map(|f| String::from_utf8_lossy(f).into_owned());
    let template = fields.next().unwrap_or_default();
    let system = fields.next().filter(|_| flags & 4 != 0);
    let user = fields.next().unwrap_or_default();
    let mut messages: Vec<(String, String)> =
        system.map(|s| ("system".to_string(), s)).into_iter().collect();
    while let (Some(role), Some(content)) = (fields.next(), fields.next()) {
        messages.push((role, content));
    }
    messages.push(("user".to_string(), user));
    let bos = if flags & 8 != 0 { "<bos>" } else { "" }.to_string();
    Input { template, bos, messages, add_generation_prompt: flags & 1 != 0 }
}

/// Whether `template` can run for a long time without failing: nested loops, macros (which
/// may recurse twice per call), includes of itself, loops over huge strings. minijinja
/// bounds recursion depth and output size, not CPU time (that needs its `fuel` feature), so
/// such templates are compiled but not rendered.
fn may_run_long(template: &str) -> bool {
    let loops = ["for", "macro", "include", "import", "extends", "call"]
        .iter()
        .map(|k| template.matches(k).count())
        .sum::<usize>();
    loops > 1 || template.contains('*') || template.len() > 4096
}

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    let messages: Vec<Message> =
        input.messages.iter().take(64).map(|(r, c)| Message::new(r.as_str(), c.as_str())).collect();

    // ChatML: the documented rendering.
    let out = ChatTemplate::chatml().render(&messages, input.add_generation_prompt).unwrap();
    let mut want = String::new();
    for m in &messages {
        want += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
    }
    if input.add_generation_prompt {
        want += "<|im_start|>assistant\n";
    }
    assert_eq!(out, want);

    let t = match ChatTemplate::new(&input.template, &input.bos, "") {
        Ok(t) => t,
        Err(ChatTemplateError::Syntax { message, .. }) => {
            assert!(!message.is_empty());
            return;
        }
        Err(e) => panic!("compiling gave a non-syntax error: {e:?}"),
    };
    if may_run_long(&input.template) {
        return;
    }
    match t.render(&messages, input.add_generation_prompt) {
        Ok(s) => {
            assert!(s.len() <= pagoda_cpu::chat::MAX_OUTPUT_BYTES);
            assert_eq!(t.starts_with_bos(&s), !input.bos.is_empty() && s.starts_with(&input.bos));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
