#!/usr/bin/env python3
"""Load generator and report for scripts/bench-server.sh (Python standard library only).

Subcommands (each prints or writes JSON; the shell script strings them together):

  prompts  --pagoda BIN -m MODEL -p P --out F
           Calibrates the benchmark prompt: "NNNNNN." (six digits, one token each for
           SmolLM2) followed by English filler, trimmed until `pagoda tokenize` counts
           exactly P tokens, then checked with other numbers. Also a ~500-token system
           prompt for the prefix-cache test. Writes {"filler", "system", ...} to F.
  health   --url URL --pid PID --timeout S
           Waits until GET URL/health answers 200 (exits 1 after S seconds, 2 at once
           when process PID is gone).
  load     --url URL --clients C --requests R --prompt-tokens P --gen-tokens N
           --prompts F --first ID --out F
           One round: C client threads, each sending R streaming /v1/completions requests
           one after another (prompt "ID." + filler, ID distinct per request so no prefix
           is shared; max_tokens N, temperature 0, ignore_eos). Per request: TTFT (send ->
           first SSE chunk with text), inter-token latencies (between consecutive chunks
           with text), generated tokens (usage.completion_tokens, else chunks), prompt
           tokens (usage). Aggregate tok/s = generated tokens / wall time of the round.
  prefix   --url URL --prompts F --requests K --round I --out F
           Prefix-cache test: a ~500-token system prompt shared by K chat requests, each
           with its own short question, sent one after another after one warm-up request
           (which fills the cache); TTFT of each.
  report   --dir D --levels 1,4,16 ... (see --help)
           Medians over rounds, Markdown tables and ratios.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

FILLER = (
    "The old lighthouse keeper climbed the narrow stairs every evening to light the lamp. "
    "From the top he could see the fishing boats returning to the harbour, the gulls "
    "circling above the nets and the long shadow of the cliffs across the water. "
    "He kept a small notebook in which he wrote the weather, the names of the boats and "
    "anything unusual that happened along the coast. Over forty years the notebooks filled "
    "a whole shelf in the kitchen, and the people of the village often came to ask him "
    "what the sea had been like on a certain day, long ago. "
)

SYSTEM = (
    "You are a careful assistant for a public library. You answer questions about the "
    "library's opening hours, its collections, membership, events and services. Keep "
    "answers short, friendly and accurate; when you do not know something, say so and "
    "suggest asking the front desk. The library opens at nine in the morning and closes at "
    "eight in the evening on weekdays, at five on Saturdays, and stays closed on Sundays and "
    "public holidays. Membership is free for residents of the city; others pay a small yearly "
    "fee. Members may borrow up to twelve items at once for three weeks, and may renew each "
    "item twice unless someone else has reserved it. Late returns cost a few cents a day. "
    "The collections include fiction, non-fiction, children's books, comics, magazines, "
    "newspapers, music, films and a local history archive that can be consulted on request. "
)


def log(msg):
    print(f"bench_server_load: {msg}", file=sys.stderr, flush=True)


def tokenize(pagoda, model, text):
    out = subprocess.run([pagoda, "tokenize", "-m", model, text], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def words_to(text, n):
    return " ".join(text.split()[:n])


def cmd_prompts(a):
    tag = lambda i: f"{i:06d}."  # noqa: E731
    pool = (FILLER * (a.prompt_tokens // 40 + 4)).split()
    # Trim the filler word by word (English words are mostly one token) until the count is
    # exactly P; a few tokenize calls (each loads the model).
    n_words = min(len(pool), a.prompt_tokens)
    seen, extra, count = {}, "", -1
    for _ in range(12):
        filler = " " + " ".join(pool[:n_words]) + extra
        count = len(tokenize(a.pagoda, a.model, tag(0) + filler))
        if count == a.prompt_tokens:
            break
        seen[n_words] = count
        if count < a.prompt_tokens and seen.get(n_words + 1, 0) > a.prompt_tokens:
            extra += " the"  # a two-token word in the way: pad with a one-token word
            continue
        n_words += a.prompt_tokens - count
        if not 1 <= n_words <= len(pool):
            break
    if count != a.prompt_tokens:
        sys.exit(f"bench_server_load: could not make a prompt of exactly {a.prompt_tokens} "
                 f"tokens (last: {count})")
    for i in (7, 123456, 987654):
        c = len(tokenize(a.pagoda, a.model, tag(i) + filler))
        if c != a.prompt_tokens:
            sys.exit(f"bench_server_load: prompt id {i} gives {c} tokens, not {a.prompt_tokens}: "
                     "this model does not split digits one token each")
    system = SYSTEM * 8
    sys_words = system.split()
    n = 450
    for _ in range(8):
        s = " ".join(sys_words[:n])
        c = len(tokenize(a.pagoda, a.model, s))
        if abs(c - a.system_tokens) <= 4:
            break
        n = max(10, n + (a.system_tokens - c))
    with open(a.out, "w") as f:
        json.dump({"prompt_tokens": a.prompt_tokens, "filler": filler, "system": s,
                   "system_tokens": c}, f)
    log(f"prompt: 6-digit id + {len(filler.split())} filler words = {a.prompt_tokens} tokens; "
        f"system prompt {c} tokens")


def cmd_health(a):
    deadline = time.monotonic() + a.timeout
    u = urllib.parse.urlsplit(a.url)
    while time.monotonic() < deadline:
        if a.pid:
            try:
                os.kill(a.pid, 0)
            except ProcessLookupError:
                sys.exit(2)
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    sys.exit(1)


def stream_request(url, path, body, timeout):
    """Sends one streaming request; returns (ttft, [itl], chunks, usage, error)."""
    u = urllib.parse.urlsplit(url)
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            return None, [], 0, None, f"HTTP {r.status}: {r.read()[:200]!r}"
        ttft, last, itl, chunks, usage = None, None, [], 0, None
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            now = time.perf_counter()
            ev = json.loads(payload)
            if "error" in ev:
                return None, [], chunks, usage, f"error event: {ev['error']}"
            if ev.get("usage"):
                usage = ev["usage"]
            text = ""
            for ch in ev.get("choices") or []:
                text += ch.get("text") or (ch.get("delta") or {}).get("content") or ""
            if not text:
                continue
            chunks += 1
            if ttft is None:
                ttft = now - t0
            else:
                itl.append(now - last)
            last = now
        return ttft, itl, chunks, usage, None
    except (OSError, ValueError, http.client.HTTPException) as e:
        return None, [], 0, None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def cmd_load(a):
    with open(a.prompts) as f:
        filler = json.load(f)["filler"]
    results, lock = [], threading.Lock()
    barrier = threading.Barrier(a.clients)

    def client(ci):
        barrier.wait()
        for j in range(a.requests):
            pid = a.first + ci * a.requests + j
            body = {"model": "bench", "prompt": f"{pid:06d}." + filler, "max_tokens": a.gen_tokens,
                    "temperature": 0, "stream": True, "ignore_eos": True,
                    "stream_options": {"include_usage": True}}
            res = stream_request(a.url, "/v1/completions", body, a.timeout)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    errors = [r[4] for r in results if r[4]]
    ok = [r for r in results if not r[4] and r[0] is not None]
    gen, prompt_counts, short = 0, [], 0
    for ttft, itl, chunks, usage, _ in ok:
        n = (usage or {}).get("completion_tokens") or chunks
        gen += n
        if n != a.gen_tokens:
            short += 1
        if usage and usage.get("prompt_tokens") is not None:
            prompt_counts.append(usage["prompt_tokens"])
    out = {
        "clients": a.clients, "requests": len(results), "ok": len(ok), "errors": errors[:5],
        "n_errors": len(errors), "wall_s": wall, "gen_tokens": gen, "tok_s": gen / wall,
        "ttft": [r[0] for r in ok], "itl": [x for r in ok for x in r[1]],
        "not_n_tokens": short, "prompt_tokens": sorted(set(prompt_counts)),
    }
    with open(a.out, "w") as f:
        json.dump(out, f)
    log(f"{a.clients} clients x {a.requests} requests: {gen} tokens in {wall:.1f} s = "
        f"{gen / wall:.1f} tok/s, {len(errors)} errors"
        + (f", {short} requests not {a.gen_tokens} tokens" if short else "")
        + (f", prompt tokens {out['prompt_tokens']}" if prompt_counts else ""))
    if errors:
        log(f"first error: {errors[0]}")
    if not ok:
        sys.exit(1)


def cmd_prefix(a):
    with open(a.prompts) as f:
        system = json.load(f)["system"]
    system = f"Session {a.round}. " + system  # a new shared prefix each round
    ttfts, errors = [], []
    for j in range(a.requests + 1):
        body = {"model": "bench", "max_tokens": a.gen_tokens, "temperature": 0, "stream": True,
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": f"Question {a.round}-{j}: is the "
                              f"library open on day {j + 1} of the month?"}]}
        ttft, _, _, _, err = stream_request(a.url, "/v1/chat/completions", body, a.timeout)
        if err or ttft is None:
            errors.append(err or "no text")
        elif j > 0:  # request 0 is the warm-up that fills the cache
            ttfts.append(ttft)
    with open(a.out, "w") as f:
        json.dump({"ttft": ttfts, "errors": errors[:5], "n_errors": len(errors)}, f)
    log(f"prefix: {len(ttfts)} requests, median TTFT "
        f"{1000 * statistics.median(ttfts) if ttfts else float('nan'):.1f} ms, "
        f"{len(errors)} errors")
    if not ttfts:
        sys.exit(1)


def pct(v, p):
    """Percentile p (0-100) of v, linear between closest ranks."""
    if not v:
        return float("nan")
    v = sorted(v)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def med(v):
    v = [x for x in v if x == x]
    return statistics.median(v) if v else float("nan")


def load_json(path):
    with open(path) as f:
        return json.load(f)


def read_bench(path):
    """The row of `pagoda bench --batch B -o jsonl` (one JSON object per line)."""
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()][-1]


def cmd_report(a):
    servers = [("pagoda", "pagoda serve"), ("llama", "llama-server")]
    lines = [f"# pagoda serve vs llama-server ({a.date})", ""]
    lines += [f"- machine: {a.machine} ({a.cores} cores), 1-minute load average before the "
              f"run: {a.loadavg}", f"- model: {a.model}",
              f"- pagoda commit: {a.commit}", f"- llama.cpp: {a.llamacpp}",
              f"- llama.cpp build flags: `{a.llamacpp_flags}`",
              f"- pagoda serve: `{a.pagoda_cmd}`", f"- llama-server: `{a.llama_cmd}`",
              f"- load: streaming /v1/completions, {a.prompt_tokens}-token prompts (distinct "
              f"per request), max_tokens {a.gen_tokens}, temperature 0, ignore_eos; "
              f"{a.rounds} rounds per level, servers alternated round by round (ABAB); "
              "medians over rounds (TTFT/ITL percentiles are per round, then the median "
              "over rounds)", ""]
    warnings = []
    try:
        if float(a.loadavg) >= 1.0:
            warnings.append(f"the machine was busy before the run (load average {a.loadavg}): "
                            "timings are not representative; llama.cpp's spinning worker "
                            "threads suffer most from shared cores")
    except ValueError:
        pass
    agg16 = None
    for c in a.levels.split(","):
        c = int(c)
        row = {}
        for key, name in servers:
            rs = [load_json(os.path.join(a.dir, f"{key}.c{c}.r{r}.json"))
                  for r in range(1, a.rounds + 1)
                  if os.path.exists(os.path.join(a.dir, f"{key}.c{c}.r{r}.json"))]
            if not rs:
                continue
            row[key] = {
                "tok_s": med([r["tok_s"] for r in rs]),
                "ttft50": med([pct(r["ttft"], 50) for r in rs]),
                "ttft99": med([pct(r["ttft"], 99) for r in rs]),
                "itl50": med([pct(r["itl"], 50) for r in rs]),
                "itl99": med([pct(r["itl"], 99) for r in rs]),
                "reqs": sum(r["requests"] for r in rs),
                "errors": sum(r["n_errors"] for r in rs),
            }
            n_bad = sum(r["not_n_tokens"] for r in rs)
            ptoks = sorted({p for r in rs for p in r["prompt_tokens"]})
            if row[key]["errors"]:
                warnings.append(f"{name}, {c} clients: {row[key]['errors']} failed requests "
                                f"(first: {next(e for r in rs for e in r['errors'])})")
            if n_bad:
                warnings.append(f"{name}, {c} clients: {n_bad} requests did not generate "
                                f"exactly {a.gen_tokens} tokens")
            if ptoks and ptoks != [a.prompt_tokens]:
                warnings.append(f"{name}, {c} clients: prompt tokens reported {ptoks}, "
                                f"not {a.prompt_tokens}")
        if c == 16 and "pagoda" in row:
            agg16 = row["pagoda"]["tok_s"]
        lines += [f"## {c} concurrent client{'s' if c > 1 else ''}", "",
                  "| server | agg tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms "
                  "| requests |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for key, name in servers:
            if key in row:
                x = row[key]
                lines.append(f"| {name} | {x['tok_s']:.1f} | {1000 * x['ttft50']:.1f} | "
                             f"{1000 * x['ttft99']:.1f} | {1000 * x['itl50']:.2f} | "
                             f"{1000 * x['itl99']:.2f} | {x['reqs']} |")
        if "pagoda" in row and "llama" in row:
            p, q = row["pagoda"], row["llama"]
            lines += ["", f"pagoda / llama-server: aggregate tok/s **{p['tok_s'] / q['tok_s']:.2f}×**"
                      f" (higher is better), TTFT p50 **{p['ttft50'] / q['ttft50']:.2f}×**, "
                      f"TTFT p99 {p['ttft99'] / q['ttft99']:.2f}× (lower is better)"]
        lines.append("")
    ovs = [read_bench(os.path.join(a.dir, f"overhead.r{r}.json"))
           for r in range(1, a.rounds + 1)
           if os.path.exists(os.path.join(a.dir, f"overhead.r{r}.json"))]
    if ovs:
        b, p, n = ovs[0]["batch"], ovs[0]["n_prompt"], ovs[0]["n_gen"]
        # The engine's end-to-end rate: B prompts prefilled, then B*(N-1) more tokens decoded.
        e2e = med([b * n / (b * p / e["pp_tps_median"] + b * (n - 1) / e["tg_tps_median"])
                   for e in ovs])
        pp, tg = med([e["pp_tps_median"] for e in ovs]), med([e["tg_tps_median"] for e in ovs])
        lines += ["## Server overhead (pagoda only)", "",
                  f"`pagoda bench --batch {b} -p {p} -n {n}` (the engine alone, once per round "
                  f"after the 16-client rounds): PP {pp:.1f} tok/s, TG {tg:.1f} tok/s; end to end "
                  f"(generated tokens / prefill + generation time) **{e2e:.1f} tok/s**.", ""]
        if agg16 is not None:
            lines.append(f"pagoda serve at 16 clients: {agg16:.1f} tok/s = **{100 * agg16 / e2e:.1f}%** "
                         f"of the engine end to end (target ≥ 95%); {100 * agg16 / tg:.1f}% "
                         "of the engine's generation-only rate.")
        lines.append("")
    pc = [os.path.join(a.dir, f"prefix.{k}.r{r}.json") for k in ("cache", "nocache")
          for r in range(1, a.rounds + 1)]
    if all(os.path.exists(x) for x in pc):
        with_c = [pct(load_json(os.path.join(a.dir, f"prefix.cache.r{r}.json"))["ttft"], 50)
                  for r in range(1, a.rounds + 1)]
        without = [pct(load_json(os.path.join(a.dir, f"prefix.nocache.r{r}.json"))["ttft"], 50)
                   for r in range(1, a.rounds + 1)]
        wc, nc = med(with_c), med(without)
        lines += ["## Prefix cache (pagoda only)", "",
                  f"{a.prefix_requests} chat requests per round, one after another after a "
                  f"warm-up, sharing a {a.system_tokens}-token system prompt (a short distinct "
                  "question each, max_tokens 8); median TTFT over the requests, median over "
                  "rounds.", "",
                  "| pagoda serve | TTFT p50 ms |", "|---|---:|",
                  f"| prefix cache (default) | {1000 * wc:.1f} |",
                  f"| --no-prefix-cache | {1000 * nc:.1f} |", "",
                  f"TTFT without / with the cache: **{nc / wc:.1f}×** (target ≥ 3×)", ""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("prompts")
    s.add_argument("--pagoda", required=True)
    s.add_argument("-m", "--model", required=True)
    s.add_argument("-p", "--prompt-tokens", type=int, default=128)
    s.add_argument("--system-tokens", type=int, default=500)
    s.add_argument("--out", required=True)
    s = sub.add_parser("health")
    s.add_argument("--url", required=True)
    s.add_argument("--pid", type=int, default=0)
    s.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("load")
    s.add_argument("--url", required=True)
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--requests", type=int, required=True, help="requests per client")
    s.add_argument("--prompt-tokens", type=int, default=128)
    s.add_argument("--gen-tokens", type=int, default=128)
    s.add_argument("--prompts", required=True)
    s.add_argument("--first", type=int, default=0, help="id of the first prompt")
    s.add_argument("--timeout", type=float, default=300, help="socket timeout per request")
    s.add_argument("--out", required=True)
    s = sub.add_parser("prefix")
    s.add_argument("--url", required=True)
    s.add_argument("--prompts", required=True)
    s.add_argument("--requests", type=int, default=8)
    s.add_argument("--gen-tokens", type=int, default=8)
    s.add_argument("--round", type=int, default=1)
    s.add_argument("--timeout", type=float, default=120)
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--dir", required=True)
    s.add_argument("--levels", required=True)
    s.add_argument("--rounds", type=int, required=True)
    s.add_argument("--prompt-tokens", type=int, required=True)
    s.add_argument("--gen-tokens", type=int, required=True)
    s.add_argument("--prefix-requests", type=int, default=8)
    s.add_argument("--system-tokens", type=int, default=0)
    for k in ("loadavg", "date", "machine", "cores", "model", "commit", "llamacpp", "llamacpp-flags",
              "pagoda-cmd", "llama-cmd"):
        s.add_argument(f"--{k}", default="?")
    s.add_argument("--out", default="")
    a = ap.parse_args()
    {"prompts": cmd_prompts, "health": cmd_health, "load": cmd_load, "prefix": cmd_prefix,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
