//! Chat templates rendered with minijinja: the real templates of SmolLM2 (its GGUF's
//! `tokenizer.chat_template`) and Gemma 3 (`tests/data/chat_templates/gemma3-it.jinja`: the
//! 270M GGUF is the base model and has none) give exactly what transformers and llama.cpp
//! give; `raise_exception` and syntax errors are typed; hostile templates fail, never hang or
//! panic; [`Conversation`] sends each turn's new text only.

mod common;

use std::sync::OnceLock;

use pagoda::cpu::chat::{ChatTemplate, ChatTemplateError, Conversation, Message};
use pagoda::cpu::model_file::ModelFile;
use pagoda::cpu::tokenizer::Tokenizer;

/// (model file, tokenizer) of a model, loaded once.
fn load(path: std::path::PathBuf) -> (ModelFile, Tokenizer) {
    let file = ModelFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(&file.gguf()).unwrap();
    (file, tok)
}

fn smollm2() -> &'static (ModelFile, Tokenizer) {
    static M: OnceLock<(ModelFile, Tokenizer)> = OnceLock::new();
    M.get_or_init(|| load(common::model_path()))
}

fn gemma3() -> &'static (ModelFile, Tokenizer) {
    static M: OnceLock<(ModelFile, Tokenizer)> = OnceLock::new();
    M.get_or_init(|| load(common::gemma3_model_path()))
}

fn data(name: &str) -> String {
    let p = common::root().join("tests/data/chat_templates").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn gemma3_template() -> ChatTemplate {
    ChatTemplate::for_tokenizer(&data("gemma3-it.jinja"), &gemma3().1).unwrap()
}

/// system + user + assistant + user.
fn conversation() -> Vec<Message> {
    vec![
        Message::system("You are terse."),
        Message::user("Hello!"),
        Message::assistant("Hi there."),
        Message::user("What is 2+2?"),
    ]
}

#[test]
fn smollm2_template_renders_chatml() {
    let (file, tok) = smollm2();
    let t = ChatTemplate::from_model(&file.gguf(), tok).unwrap();
    assert_eq!(t.bos_token(), "<|im_start|>");
    assert_eq!(t.eos_token(), "<|im_end|>");
    // transformers' apply_chat_template(add_generation_prompt=True), and llama.cpp's
    // built-in ChatML (llm_chat_apply_template, LLM_CHAT_TEMPLATE_CHATML).
    assert_eq!(
        t.render(&conversation(), true).unwrap(),
        "<|im_start|>system\nYou are terse.<|im_end|>\n\
         <|im_start|>user\nHello!<|im_end|>\n\
         <|im_start|>assistant\nHi there.<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Without a system message the template adds its own.
    assert_eq!(
        t.render(&[Message::user("Hi")], false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn gemma3_template_folds_the_system_prompt_into_the_first_user_turn() {
    let t = gemma3_template();
    assert_eq!((t.bos_token(), t.eos_token()), ("<bos>", "<eos>"));
    let rendered = t.render(&conversation(), true).unwrap();
    // transformers; llama.cpp's LLM_CHAT_TEMPLATE_GEMMA is the same after the BOS (which it
    // leaves to the tokenizer).
    assert_eq!(
        rendered,
        "<bos><start_of_turn>user\nYou are terse.\n\nHello!<end_of_turn>\n\
         <start_of_turn>model\nHi there.<end_of_turn>\n\
         <start_of_turn>user\nWhat is 2+2?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    // Contents are trimmed, the generation prompt is optional.
    assert_eq!(
        t.render(&[Message::user("  Hi \n")], false).unwrap(),
        "<bos><start_of_turn>user\nHi<end_of_turn>\n"
    );
    // The text starts with BOS: tokenized with specials parsed it gives exactly one BOS, as
    // llama.cpp's (strip the BOS text, let the tokenizer add it).
    let tok = &gemma3().1;
    assert!(t.starts_with_bos(&rendered) && tok.add_bos());
    let ids = tok.encode(&rendered, !t.starts_with_bos(&rendered), true);
    assert_eq!(ids, tok.encode(rendered.strip_prefix("<bos>").unwrap(), true, true));
    assert_eq!(ids.iter().filter(|&&id| Some(id) == tok.bos()).count(), 1);
}

#[test]
fn a_model_without_a_template_gets_chatml() {
    let (file, tok) = gemma3();
    let t = ChatTemplate::from_model(&file.gguf(), tok).unwrap();
    assert_eq!(t.source(), ChatTemplate::chatml().source());
    assert_eq!(
        t.render(&[Message::user("Hi")], true).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(!t.starts_with_bos("<|im_start|>user"));
}

#[test]
fn raise_exception_is_a_typed_error() {
    let t = gemma3_template();
    let e = t.render(&[Message::user("a"), Message::user("b")], true).unwrap_err();
    assert_eq!(
        e,
        ChatTemplateError::Raised(
            "Conversation roles must alternate user/assistant/user/assistant/...".into()
        )
    );
    assert!(e.to_string().contains("roles must alternate"), "{e}");
    // From inside a macro too.
    let t = ChatTemplate::new(
        "{% macro check(m) %}{% if m.role == 'tool' %}{{ raise_exception('no tools: ' ~ m.content) }}{% endif %}{% endmacro %}{% for m in messages %}{{ check(m) }}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(
        t.render(&[Message::new("tool", "x")], false),
        Err(ChatTemplateError::Raised("no tools: x".into()))
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let e = ChatTemplate::new("{% for m in messages %}\n{{ m.content }\n{% endfor %}", "", "")
        .unwrap_err();
    let ChatTemplateError::Syntax { line, message } = &e else { panic!("{e:?}") };
    assert_eq!(*line, 2, "{message}");
    assert!(e.to_string().contains("line 2"), "{e}");
    let e = ChatTemplate::new("ok\n\n{% if true %}never closed", "", "").unwrap_err();
    assert!(matches!(e, ChatTemplateError::Syntax { .. }), "{e:?}");
}

#[test]
fn helpers_render_as_transformers_does() {
    let t = ChatTemplate::new(&data("llama3.1-tools.jinja"), "<|begin_of_text|>", "").unwrap();
    let before = std::time::SystemTime::now();
    let out = t.render(&[Message::system(" Be brief. "), Message::user("Hi")], true).unwrap();
    let date = |t: std::time::SystemTime| {
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        pagoda::cpu::chat::strftime("%d %b %Y", secs)
    };
    let today = [date(before), date(std::time::SystemTime::now())];
    assert!(
        today.iter().any(|d| out
            == format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                 Today Date: {d}\n\nBe brief.<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            )),
        "{out:?}"
    );
}

/// Runs `f` on a thread with a small stack (as a server's worker might have): a stack
/// overflow would abort the test binary, an error must come back instead.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap().join().unwrap()
}

#[test]
fn hostile_templates_fail_without_hanging_or_panicking() {
    let render = |src: &'static str| {
        on_small_stack(move || {
            ChatTemplate::new(src, "", "").and_then(|t| t.render(&[Message::user("x")], true))
        })
    };
    // Unbounded recursion: a macro, a recursive loop, the template including itself.
    for src in [
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for m in messages recursive %}{{ loop([m]) }}{% endfor %}",
        "{% include 'chat_template' %}",
    ] {
        let e = render(src).unwrap_err();
        assert!(matches!(e, ChatTemplateError::Render(_)), "{src}: {e:?}");
    }
    // Output bombs: capped.
    assert_eq!(
        render("{% for a in range(100000) %}{% for b in range(100000) %}{{ 'x' * 100000 }}{% endfor %}{% endfor %}"),
        Err(ChatTemplateError::OutputTooLarge { limit: pagoda::cpu::chat::MAX_OUTPUT_BYTES })
    );
    // minijinja's own caps, and things that do not exist.
    for src in [
        "{{ 'x' * 1000000000 }}",
        "{% for i in range(1000000000) %}{% endfor %}",
        // Loops that print nothing: stopped by the fuel limit, not run for hours.
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{{ messages | no_such_filter }}",
        "{{ no_such_function() }}",
        "{% include 'other.jinja' %}",
        "{% extends 'base' %}",
        "{{ 1 // 0 }}",
        "{{ messages[0].content.no_such_method() }}",
    ] {
        let e = render(src).unwrap_err();
        assert!(matches!(e, ChatTemplateError::Render(_)), "{src}: {e:?}");
    }
    // Nesting too deep to parse.
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
    let deep: &'static str = Box::leak(deep.into_boxed_str());
    assert!(render(deep).is_err());
}

#[test]
fn a_conversation_sends_only_each_turns_new_text() {
    let (_, tok) = smollm2();
    let t = ChatTemplate::chatml();
    let mut conv = Conversation::new(t.clone(), Some("Be brief."));
    let ids = conv.user_turn(tok, "Hi", false).unwrap();
    assert_eq!(
        tok.decode(&ids),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // The model ended its turn with <|im_end|>: the next turn starts after it.
    conv.reply("Hello!", Some("<|im_end|>"));
    let ids = conv.user_turn(tok, "Bye", false).unwrap();
    assert_eq!(tok.decode(&ids), "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
    // A reply cut short (no end-of-turn token): the next turn closes it.
    conv.reply("See", None);
    let ids = conv.user_turn(tok, "Wait", false).unwrap();
    assert_eq!(
        tok.decode(&ids),
        "<|im_end|>\n<|im_start|>user\nWait<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(conv.messages().len(), 6);
    // The user's words stay text: a typed special token is not the control token.
    let forged = "<|im_end|>";
    let ids = conv.user_turn(tok, forged, false).unwrap();
    let im_end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == im_end).count(), 1, "{ids:?}");
    let mut parsed = conv.clone();
    parsed.reply("ok", Some("<|im_end|>"));
    let ids = parsed.user_turn(tok, forged, true).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == im_end).count(), 2, "{ids:?}");
}

#[test]
fn a_gemma3_conversation_adds_bos_once_and_survives_trimmed_replies() {
    let (_, tok) = gemma3();
    let mut conv = Conversation::new(gemma3_template(), Some("You are terse."));
    let ids = conv.user_turn(tok, " Hello! ", false).unwrap();
    assert_eq!(ids.iter().filter(|&&id| Some(id) == tok.bos()).count(), 1);
    assert_eq!(ids[0], tok.bos().unwrap());
    assert_eq!(
        tok.decode(&ids[1..]),
        "<start_of_turn>user\nYou are terse.\n\nHello!<end_of_turn>\n<start_of_turn>model\n"
    );
    // The reply as generated ends with a newline the template trims away: the turn is the
    // rendering's new part.
    conv.reply("Hi there.\n", Some("<end_of_turn>"));
    let ids = conv.user_turn(tok, "What is 2+2?", false).unwrap();
    assert_eq!(
        tok.decode(&ids),
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    );
    // An error (roles that do not alternate) leaves the conversation as it was.
    let before = conv.messages().to_vec();
    assert!(matches!(conv.user_turn(tok, "again", false), Err(ChatTemplateError::Raised(_))));
    assert_eq!(conv.messages(), &before[..]);
}
