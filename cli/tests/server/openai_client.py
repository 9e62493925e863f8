"""`pagoda serve` through the official `openai` Python package.

Run by cli/tests/cli_serve.rs (which starts the server and installs the package into a
virtual environment): python openai_client.py BASE_URL EXPECTED_GREEDY_JSON

EXPECTED_GREEDY_JSON names a file with {"prompt": ..., "text": ..., "prompt_tokens": ...}:
`pagoda run`'s greedy continuation of the prompt and `pagoda tokenize`'s count.
Every check raises AssertionError with what differed; the exit status says pass/fail.
"""

import json
import sys

import openai

base_url, expected_path = sys.argv[1], sys.argv[2]
expected = json.load(open(expected_path))
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
MODEL = client.models.list().data[0].id
checks = []


def check(name):
    def wrap(f):
        checks.append((name, f))
        return f
    return wrap


@check("completions: greedy text equals pagoda run, usage counts")
def _():
    n = expected["n_predict"]
    r = client.completions.create(model=MODEL, prompt=expected["prompt"], max_tokens=n,
                                  temperature=0)
    assert r.object == "text_completion", r
    c = r.choices[0]
    assert c.text == expected["text"], (c.text, expected["text"])
    assert c.finish_reason == "length", c.finish_reason
    u = r.usage
    assert u.prompt_tokens == expected["prompt_tokens"], u
    assert u.completion_tokens == n, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u


@check("chat: an assistant message, finish reason, usage")
def _():
    r = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=24,
        messages=[{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Name a colour."}])
    assert r.object == "chat.completion", r
    m = r.choices[0].message
    assert m.role == "assistant" and isinstance(m.content, str) and m.content, m
    assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0]
    assert 0 < r.usage.completion_tokens <= 24, r.usage
    assert r.usage.prompt_tokens > 10, r.usage


@check("streaming chat: deltas add up to the non-streamed reply; usage chunk last")
def _():
    args = dict(model=MODEL, temperature=0, max_tokens=20,
                messages=[{"role": "user", "content": "Write one sentence about the sea."}])
    whole = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **args))
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices
                and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason], finishes
    assert chunks[-1].choices == [] and chunks[-1].usage is not None, chunks[-1]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens, chunks[-1].usage
    assert all(c.usage is None for c in chunks[:-1])


@check("n=3: three samples, reproducible with a seed, different with another")
def _():
    args = dict(model=MODEL, prompt="Once upon a time", max_tokens=16, temperature=1.0,
                top_p=1.0, n=3)
    a = client.completions.create(seed=7, **args)
    b = client.completions.create(seed=7, **args)
    c = client.completions.create(seed=8, **args)
    texts = lambda r: [x.text for x in sorted(r.choices, key=lambda x: x.index)]
    assert sorted(x.index for x in a.choices) == [0, 1, 2], a.choices
    assert texts(a) == texts(b), (texts(a), texts(b))
    assert texts(a) != texts(c), texts(a)
    assert len(set(texts(a))) > 1, texts(a)
    assert 3 <= a.usage.completion_tokens <= 48, a.usage


@check("stop: the text ends before the stop string, finish_reason stop")
def _():
    full = expected["text"]
    # A stop string from the middle of the greedy text (it spans a token boundary or not).
    i = len(full) // 2
    stop = full[i:i + 3]
    cut = full[:full.index(stop)]
    r = client.completions.create(model=MODEL, prompt=expected["prompt"],
                                  max_tokens=expected["n_predict"], temperature=0, stop=[stop])
    assert r.choices[0].text == cut, (r.choices[0].text, cut, stop)
    assert r.choices[0].finish_reason == "stop", r.choices[0]
    # Streamed, the same text.
    s = client.completions.create(model=MODEL, prompt=expected["prompt"],
                                  max_tokens=expected["n_predict"], temperature=0, stop=stop,
                                  stream=True)
    chunks = list(s)
    assert "".join(c.choices[0].text for c in chunks) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


@check("logprobs: chat top_logprobs and completions logprobs")
def _():
    r = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3,
        messages=[{"role": "user", "content": "Hello"}])
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens, (len(content), r.usage)
    for t in content:
        assert len(t.top_logprobs) == 3, t
        assert t.logprob <= 0.0
        # Greedy: the chosen token is the most likely one.
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6, t
        assert t.top_logprobs[0].token == t.token, t
    c = client.completions.create(model=MODEL, prompt=expected["prompt"], max_tokens=4,
                                  temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4, lp
    assert all(len(t) <= 2 for t in lp.top_logprobs), lp.top_logprobs
    assert "".join(lp.tokens) == c.choices[0].text, (lp.tokens, c.choices[0].text)


@check("bad input: 400 naming the field, 400 context_length_exceeded")
def _():
    try:
        client.completions.create(model=MODEL, prompt="x", temperature=5)
        raise AssertionError("temperature 5 accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "temperature", e.body
    try:
        client.completions.create(model=MODEL, prompt="x " * 100, max_tokens=10_000_000)
        raise AssertionError("an over-long request accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "context_length_exceeded", e.body


failed = 0
for name, f in checks:
    try:
        f()
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, then exit 1
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")
print(f"{len(checks) - failed} of {len(checks)} checks passed")
sys.exit(1 if failed else 0)
