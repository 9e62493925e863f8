// Teacher-forced logits straight from libllama: the prompt (one file, its exact bytes) tokenized
// with llama_tokenize(add_special=true, parse_special=true) (BOS where the model's add_bos_token
// says so), decoded whole in ONE llama_decode with every position's logits requested
// (batch.logits[i] = 1 for all i; n_ctx 2048, n_batch 2048, n_ubatch 512 as
// tests/data/llamacpp/logits_dev.json, prompts of at most 512 tokens so the prompt is a single
// ubatch, 1 thread, default KV type and flash-attention setting).
//
// Usage: llamacpp_logits MODEL PROMPT_FILE [TOP_K] [--no-repack]
// Prints one JSON object on stdout: prompt_ids, n_vocab and "positions": at every position i
// (the prediction for token i+1 after feeding prompt_ids[0..=i]) the top-K ids (default 10) by
// raw logit (descending, ties to the lower id), their raw logits, and the logsumexp over the
// whole vocabulary in double precision. --no-repack loads the weights without llama.cpp's
// interleaved repacking (llama_model_params.use_extra_bufts = false).
//
// Build (scripts/gen_gemma3_refs.sh does this): g++ -O2 -std=c++17 llamacpp_logits.cpp
//   -I SRC/include -I SRC/ggml/include -L BUILD/bin -lllama -lggml -lggml-base
//   -Wl,-rpath,BUILD/bin -o llamacpp_logits
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

static void quiet(ggml_log_level, const char *, void *) {}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL PROMPT_FILE [TOP_K] [--no-repack]\n", argv[0]);
        return 2;
    }
    int top_k = 10;
    llama_model_params mp = llama_model_default_params();
    for (int a = 3; a < argc; a++) {
        if (strcmp(argv[a], "--no-repack") == 0) mp.use_extra_bufts = false;
        else top_k = atoi(argv[a]);
    }
    if (!getenv("LLAMACPP_LOGITS_VERBOSE")) llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    std::ifstream in(argv[2], std::ios::binary);
    if (!in) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    std::stringstream ss; ss << in.rdbuf();
    const std::string text = ss.str();
    std::vector<llama_token> prompt(text.size() + 8);
    const int n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), prompt.data(),
                                 (int32_t) prompt.size(), true, true);
    if (n <= 0 || n > 512) { fprintf(stderr, "tokenize failed or prompt over 512 tokens\n"); return 1; }
    prompt.resize(n);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048; cp.n_batch = 2048; cp.n_ubatch = 512;
    cp.n_threads = 1; cp.n_threads_batch = 1;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }

    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = prompt[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "llama_decode failed\n"); return 1; }

    printf("{\"prompt_ids\":[");
    for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", prompt[i]);
    printf("],\"n_vocab\":%d,\"positions\":[", n_vocab);
    std::vector<int> order(n_vocab);
    for (int i = 0; i < n; i++) {
        const float * logits = llama_get_logits_ith(ctx, i);
        if (!logits) { fprintf(stderr, "no logits at %d\n", i); return 1; }
        double mx = -INFINITY;
        for (int t = 0; t < n_vocab; t++) mx = std::max(mx, (double) logits[t]);
        double sum = 0.0;
        for (int t = 0; t < n_vocab; t++) sum += std::exp((double) logits[t] - mx);
        const double lse = mx + std::log(sum);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int a, int b) {
            return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
        });
        printf("%s{\"pos\":%d,\"input_id\":%d,\"logsumexp\":%.10g,\"top_ids\":[", i ? "," : "", i, prompt[i], lse);
        for (int k = 0; k < top_k; k++) printf("%s%d", k ? "," : "", order[k]);
        printf("],\"top_logits\":[");
        for (int k = 0; k < top_k; k++) printf("%s%.9g", k ? "," : "", logits[order[k]]);
        printf("]}");
    }
    printf("]}\n");
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
