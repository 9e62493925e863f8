//! Structured output through `pagoda batch`, `pagoda serve` and `pagoda run`: 20 JSON
//! schemas × 3 seeds sampled at temperature 0.9 all complete (`finish: stop`) and validate
//! with the Python `jsonschema` package; an arithmetic GBNF grammar's samples all parse;
//! malformed and unsatisfiable constraints fail with one clear line (exit 1, a failed result
//! line, or an HTTP 400), never a panic.

mod common;

use std::path::PathBuf;

use serde_json::{json, Value};

fn grammars_dir() -> PathBuf {
    common::root().join("tests").join("data").join("grammars")
}

/// The 20 schemas of `tests/data/grammars/schemas`, by file stem, in name order.
fn schemas() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(grammars_dir().join("schemas"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let schema = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (name, schema)
        })
        .collect()
}

/// Runs `pagoda batch` on `lines` (plus `args`); returns the result lines by id, and stderr.
fn batch(name: &str, lines: &[Value], args: &[&str]) -> (std::process::Output, Vec<Value>) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let file = common::temp_file(name, &text);
    let mut all = vec!["batch", "-f", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = common::run(&all);
    let results = common::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out, results)
}

#[test]
fn twenty_schemas_sampled_complete_and_validate_with_jsonschema() {
    let schemas = schemas();
    assert_eq!(schemas.len(), 20, "tests/data/grammars/schemas holds 20 schemas");
    let seeds = [1u64, 2, 3];
    let mut lines = Vec::new();
    for (name, schema) in &schemas {
        for seed in seeds {
            lines.push(json!({
                "id": format!("{name}/{seed}"),
                "prompt": "Answer with a single JSON value only.\n",
                "json_schema": schema,
                "temperature": 0.9,
                "seed": seed,
                "n_predict": 160,
            }));
        }
    }
    let (out, results) = batch("schemas.jsonl", &lines, &[]);
    common::assert_success(&out);
    eprintln!("{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("grammar masks"), "{}", common::stderr(&out));
    assert_eq!(results.len(), lines.len());
    let mut cases = Vec::new();
    for r in &results {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["finish"], "stop", "{id}: the grammar did not complete: {r}");
        let name = id.split('/').next().unwrap();
        let schema = &schemas.iter().find(|(n, _)| n == name).unwrap().1;
        cases.push(json!({ "case": id, "schema": schema, "output": r["text"] }));
    }
    let cases_file = common::temp_file("schema-cases.json", &Value::from(cases).to_string());
    let python = common::python_venv("jsonschema-venv", &["jsonschema==4.23.0"]);
    let checker = common::root().join("cli/tests/grammar/validate_json.py");
    let check = std::process::Command::new(python).arg(checker).arg(&cases_file).output().unwrap();
    let report = common::stdout(&check);
    eprintln!("{report}");
    assert!(check.status.success(), "{report}{}", common::stderr(&check));
    assert!(report.contains("60 of 60 valid"), "{report}");
}

/// A recursive-descent parser of `arithmetic.gbnf`'s language: whether `s` is one
/// expression (at most 4 terms of at most 3 factors, an optional minus per factor, numbers
/// of at most 5 digits without leading zeros, at most one space around operators and
/// inside parentheses).
fn parses_as_arithmetic(s: &str) -> bool {
    struct P<'a> {
        b: &'a [u8],
        i: usize,
    }
    impl P<'_> {
        fn eat(&mut self, c: u8) -> bool {
            let ok = self.b.get(self.i) == Some(&c);
            self.i += ok as usize;
            ok
        }
        fn ws(&mut self) {
            self.eat(b' ');
        }
        fn expr(&mut self) -> bool {
            self.binary(b"+-", 3, Self::term)
        }
        fn term(&mut self) -> bool {
            self.binary(b"*/", 2, Self::factor)
        }
        /// `operand (ws op ws operand){0,most}`, backtracking over a trailing space.
        fn binary(&mut self, ops: &[u8], most: usize, operand: fn(&mut Self) -> bool) -> bool {
            if !operand(self) {
                return false;
            }
            for _ in 0..most {
                let save = self.i;
                self.ws();
                if !ops.iter().any(|&o| self.eat(o)) {
                    self.i = save;
                    return true;
                }
                self.ws();
                if !operand(self) {
                    return false;
                }
            }
            true
        }
        fn factor(&mut self) -> bool {
            self.eat(b'-');
            if self.eat(b'(') {
                self.ws();
                let ok = self.expr();
                self.ws();
                return ok && self.eat(b')');
            }
            let start = self.i;
            while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = &self.b[start..self.i];
            !digits.is_empty() && digits.len() <= 5 && (digits.len() == 1 || digits[0] != b'0')
        }
    }
    let mut p = P { b: s.as_bytes(), i: 0 };
    p.expr() && p.i == s.len()
}

#[test]
fn the_recursive_descent_checker_accepts_and_refuses() {
    for ok in ["1", "12 + 3", "(1+2)*-3", "( 4 / 2 ) - 7", "-5", "10000", "1+2+3+4", "1*2*3"] {
        assert!(parses_as_arithmetic(ok), "{ok}");
    }
    for bad in
        ["", "1 +", "(1", "01", "1  + 2", "123456", "a", "1)", "+1", "--5", "1+2+3+4+5", "1*2*3*4"]
    {
        assert!(!parses_as_arithmetic(bad), "{bad}");
    }
}

#[test]
fn arithmetic_gbnf_samples_all_parse() {
    let grammar = grammars_dir().join("arithmetic.gbnf");
    let lines: Vec<Value> = (1..=12u64)
        .map(|seed| {
            json!({
                "id": seed,
                "prompt": "<|im_start|>user\nWrite a short arithmetic expression.<|im_end|>\n\
                           <|im_start|>assistant\n",
                "temperature": 1.0,
                "seed": seed,
                "n_predict": 160,
            })
        })
        .collect();
    let (out, results) = batch("arith.jsonl", &lines, &["--grammar", grammar.to_str().unwrap()]);
    common::assert_success(&out);
    assert_eq!(results.len(), 12);
    for r in &results {
        let text = r["text"].as_str().unwrap();
        eprintln!("{} {text:?}", r["finish"]);
        assert_eq!(r["finish"], "stop", "{r}");
        assert!(parses_as_arithmetic(text), "does not parse: {text:?} ({r})");
    }
}

#[test]
fn bad_constraints_fail_with_one_clear_line() {
    let malformed = common::temp_file("malformed.gbnf", "root ::= \"a\" (\"b\" | \"c\"\n");
    let req = common::temp_file("one.jsonl", "{\"prompt\": \"hi\"}\n");
    let r = req.to_str().unwrap();
    let o = common::run(&["batch", "-f", r, "--grammar", malformed.to_str().unwrap()]);
    common::assert_error(&o, 1, "malformed grammar: expecting ')' at line 2, column 1");
    assert!(common::stderr(&o).contains(&format!("--grammar {}", malformed.display())));
    assert_eq!(common::stderr(&o).trim().lines().count(), 1, "{}", common::stderr(&o));

    let o = common::run(&[
        "batch",
        "-f",
        r,
        "--json-schema",
        r#"{"type":"integer","minimum":5,"maximum":1}"#,
    ]);
    common::assert_error(&o, 1, "--json-schema: unsatisfiable");
    let o = common::run(&["batch", "-f", r, "--json-schema", r#"{"enum": []}"#]);
    common::assert_error(&o, 1, "unsatisfiable");
    let o = common::run(&["batch", "-f", r, "--json-schema", "{not json"]);
    common::assert_error(&o, 1, "--json-schema: not valid JSON");
    let o = common::run(&["batch", "-f", r, "--json-schema", "no/such/schema.json"]);
    common::assert_error(&o, 1, "--json-schema no/such/schema.json: cannot read");
    let o = common::run(&["batch", "-f", r, "--grammar", "no/such.gbnf", "--json-object"]);
    common::assert_error(&o, 2, "cannot be used with");
    let undefined = common::temp_file("undefined.gbnf", "root ::= item+\n");
    let o = common::run(&["batch", "-f", r, "--grammar", undefined.to_str().unwrap()]);
    common::assert_error(&o, 1, "undefined rule 'item' at line 1, column 10");

    // Per line: failed result lines naming the line, the rest run.
    let lines = [
        json!({"id": "bad-gbnf", "prompt": "x", "grammar": "root ::= [a-"}),
        json!({"id": "unsat", "prompt": "x", "json_schema": {"type": "string", "minLength": 3, "maxLength": 1}}),
        json!({"id": "two", "prompt": "x", "grammar": "root ::= \"a\"", "json_schema": {}}),
        json!({"id": "fmt", "prompt": "x", "response_format": {"type": "xml"}}),
        json!({"id": "good", "prompt": "x", "grammar": "root ::= \"yes\" | \"no\"", "n_predict": 8}),
        json!({"id": "obj", "prompt": "x", "response_format": {"type": "json_object"}, "n_predict": 48, "temperature": 0}),
    ];
    let (o, results) = batch("lines.jsonl", &lines, &[]);
    common::assert_error(&o, 1, "4 of 6 requests failed");
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    let err = |id: &str| by_id(id)["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err("bad-gbnf").contains("line 1 (id \"bad-gbnf\"): GBNF grammar: malformed grammar"),
        "{}",
        err("bad-gbnf")
    );
    assert!(err("unsat").contains("JSON schema: unsatisfiable"), "{}", err("unsat"));
    assert!(err("two").contains("at most one of"), "{}", err("two"));
    assert!(err("fmt").contains("unknown response_format.type \"xml\""), "{}", err("fmt"));
    for id in ["bad-gbnf", "unsat", "two", "fmt"] {
        assert_eq!(err(id).lines().count(), 1, "{}", err(id));
    }
    let good = by_id("good");
    assert!(["yes", "no"].contains(&good["text"].as_str().unwrap()), "{good}");
    assert_eq!(good["finish"], "stop");
    let obj = by_id("obj");
    let v: Value = serde_json::from_str(obj["text"].as_str().unwrap()).unwrap_or(Value::Null);
    assert!(v.is_object() || obj["finish"] == "length", "{obj}");
}

#[test]
fn server_response_format_json_object_and_json_schema() {
    let server = common::Server::start(&[]);
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "population": {"type": "integer", "minimum": 0, "maximum": 100000000}},
        "required": ["city", "population"],
        "additionalProperties": false
    });
    let r = server.post(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": "Give a city and its population as JSON."}],
            "max_tokens": 64,
            "temperature": 0.8,
            "seed": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}},
        }),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    let body: Value = serde_json::from_str(&r.1).unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(v["city"].as_str().is_some_and(|c| c.chars().count() <= 12), "{v}");
    let pop = v["population"].as_i64().unwrap();
    assert!((0..=100_000_000).contains(&pop), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");

    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "JSON: ", "max_tokens": 48, "temperature": 0, "response_format": {"type": "json_object"}}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    let body: Value = serde_json::from_str(&r.1).unwrap();
    let text = body["choices"][0]["text"].as_str().unwrap();
    if body["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()), "{text}");
    } else {
        assert!(text.starts_with('{'), "{text}");
    }

    // Bad schemas and shapes: 400 with OpenAI's error object naming the field.
    for (format, param, needle) in [
        (
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "integer", "minimum": 5, "maximum": 1}}}),
            "response_format",
            "unsatisfiable",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": 3}}),
            "response_format.json_schema.schema",
            "must be a JSON schema",
        ),
        (json!({"type": "json_schema"}), "response_format.json_schema", "must be an object"),
        (json!({"type": "yaml"}), "response_format.type", "unknown response_format.type"),
        (json!("json"), "response_format", "must be an object"),
    ] {
        let r = server.post("/v1/completions", &json!({"prompt": "x", "response_format": format}));
        assert_eq!(r.0, 400, "{format}: {}", r.1);
        let e: Value = serde_json::from_str(&r.1).unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert_eq!(e["error"]["param"], param, "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{e}");
    }
    // The masks' cost is in /metrics.
    let metrics = server.get("/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    let masks = value("pagoda_grammar_masks_total");
    assert!(masks >= 2.0, "{metrics}");
    let seconds = value("pagoda_grammar_mask_seconds_total");
    assert!(seconds > 0.0 && seconds / masks < 0.05, "{seconds} s for {masks} masks");
    eprintln!("server: {masks} masks, {:.1} µs each", seconds / masks * 1e6);
    // {"type": "text"}: free text.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 4, "response_format": {"type": "text"}}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
}

#[test]
fn run_follows_a_json_schema_and_a_gbnf_grammar() {
    let schema = grammars_dir().join("schemas").join("01_person.json");
    let o = common::run(&[
        "run",
        "-p",
        "<|im_start|>user\nA person as JSON.<|im_end|>\n<|im_start|>assistant\n",
        "-n",
        "64",
        "--temp",
        "0",
        "--json-schema",
        schema.to_str().unwrap(),
        "--json",
    ]);
    common::assert_success(&o);
    let v: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(v["finish_reason"], "stop", "{v}");
    let person: Value = serde_json::from_str(v["text"].as_str().unwrap()).unwrap();
    let name = person["name"].as_str().unwrap();
    assert!((1..=20).contains(&name.chars().count()), "{person}");
    assert!(person["age"].as_i64().is_some_and(|a| (0..=120).contains(&a)), "{person}");
    assert_eq!(person.as_object().unwrap().len(), 2, "{person}");

    let grammar = grammars_dir().join("arithmetic.gbnf");
    let o = common::run(&[
        "run",
        "-p",
        "<|im_start|>user\nWrite a short arithmetic expression.<|im_end|>\n<|im_start|>assistant\n",
        "-n",
        "96",
        "--temp",
        "0",
        "--grammar",
        grammar.to_str().unwrap(),
        "--json",
    ]);
    common::assert_success(&o);
    let v: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(v["finish_reason"], "stop", "{v}");
    let text = v["text"].as_str().unwrap();
    assert!(parses_as_arithmetic(text), "{text:?}");

    let bad = common::temp_file("run-bad.gbnf", "root ::= [a-\n");
    let o = common::run(&["run", "-p", "x", "--grammar", bad.to_str().unwrap()]);
    common::assert_error(&o, 1, "malformed grammar");
}

#[test]
fn serve_flags_set_the_default_constraint() {
    let server = common::Server::start(&["--json-object"]);
    let r = server
        .post("/v1/completions", &json!({"prompt": "Data: ", "max_tokens": 48, "temperature": 0}));
    assert_eq!(r.0, 200, "{}", r.1);
    let body: Value = serde_json::from_str(&r.1).unwrap();
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with('{'), "{text}");
    if body["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()), "{text}");
    }
    // {"type": "text"} lifts it for one request.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": "Data: ", "max_tokens": 8, "temperature": 0,
                "response_format": {"type": "text"}}),
    );
    let body: Value = serde_json::from_str(&r.1).unwrap();
    assert!(!body["choices"][0]["text"].as_str().unwrap().starts_with('{'), "{body}");
    drop(server);

    let bad = common::temp_file("serve-bad.gbnf", "root ::= (\"a\"\n");
    let o = common::run(&["serve", "--port", "0", "--grammar", bad.to_str().unwrap()]);
    common::assert_error(&o, 1, "malformed grammar");
}
